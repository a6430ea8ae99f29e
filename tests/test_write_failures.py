"""A full disk, a read-only mount and the umask (issue 32): one line naming the place and the
fix, nothing of the dataset lost, outputs with the modes a plain write would give."""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest

from crowdsort.cli import main


@pytest.fixture(scope="module")
def small_dataset(tmp_path_factory, example_photos):
    """The example's photos extracted and clustered once (vectors cached)."""
    root = tmp_path_factory.mktemp("wf")
    assert main(["-q", "example", str(root / "ds" / "images")]) == 0
    assert main(["-q", "extract-faces", "-d", str(root / "ds"), "--from", "images"]) == 0
    assert main(["-q", "cluster", "-d", str(root / "ds")]) == 0
    return root / "ds"


@pytest.fixture
def tmpfs():
    """A small tmpfs of our own (root only; elsewhere the test says why it cannot run)."""
    where = Path("/tmp") / f"cs-tmpfs-{uuid.uuid4().hex[:8]}"
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or 'mount failed'}): needs root")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)
    shutil.rmtree(where, ignore_errors=True)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def _fill(folder: Path) -> None:
    """Take every free byte of the file system under ``folder``."""
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 20))
        except OSError:
            pass
    try:  # the last partial block, so a small write fails too
        with open(folder / "filler2", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
    except OSError:
        pass


def test_a_full_disk_is_one_line_and_the_dataset_survives(small_dataset, tmpfs, capsys):
    ds = tmpfs / "ds"
    shutil.copytree(small_dataset, ds, symlinks=True)
    before = pd.read_csv(ds / "cluster" / "assignments.csv")
    _fill(tmpfs)
    code = main(["-q", "cluster", "-d", str(ds), "--to", "again"])
    err = _one_line(capsys)
    assert code == 1 and "no space left" in err and str(ds) in err and "free some space" in err
    (tmpfs / "filler").unlink()
    (tmpfs / "filler2").unlink(missing_ok=True)
    assert pd.read_csv(ds / "cluster" / "assignments.csv").equals(before)  # the earlier run is intact
    assert not (ds / "again").exists() and not [p for p in ds.iterdir() if p.name.startswith(".")
                                                and p.name != ".crowdsort.lock"]
    assert main(["-q", "cluster", "-d", str(ds), "--to", "again"]) == 0, capsys.readouterr().err  # space back: it runs


def test_a_read_only_dataset_is_one_line(small_dataset, tmpfs, capsys):
    ds = tmpfs / "ds"
    shutil.copytree(small_dataset, ds, symlinks=True)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        code = main(["-q", "cluster", "-d", str(ds), "--to", "again"])
        err = _one_line(capsys)
        assert code == 1 and "read-only" in err and str(ds) in err
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)


def test_a_read_only_dataset_is_read_for_outputs_elsewhere(small_dataset, tmpfs, tmp_path, capsys):
    """identify and label-clusters with --to outside a read-only dataset: written there, exit 0
    (the embedding cache's parts are read as they are, no lock taken inside the dataset)."""
    refs = tmp_path / "refs"
    for person in ("grace_hopper", "eileen_collins"):
        (refs / person).mkdir(parents=True)
        for p in sorted((small_dataset / "images" / person).glob("*.jpg"))[:2]:
            shutil.copy(p, refs / person / p.name)
    ds = tmpfs / "ds"
    shutil.copytree(small_dataset, ds, symlinks=True)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        assert main(["-q", "identify", "-d", str(ds), "--refs", str(refs), "--to", str(tmp_path / "ids.csv")]) == 0, \
            capsys.readouterr().err
        assert main(["-q", "label-clusters", "-d", str(ds), "--refs", str(refs),
                     "--to", str(tmp_path / "labels.csv")]) == 0, capsys.readouterr().err
        ids = pd.read_csv(tmp_path / "ids.csv")
        assert len(ids) == len(pd.read_parquet(ds / "faces" / "faces.parquet"))
        assert set(ids.loc[ids.known, "label"]) == {"grace_hopper", "eileen_collins"}
        code = main(["-q", "identify", "-d", str(ds), "--refs", str(refs)])  # its default output is inside
        err = _one_line(capsys)
        assert code == 1 and "read-only" in err and "--to" in err
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_outputs_follow_the_umask(small_dataset, tmp_path, mask):
    ds = tmp_path / "ds"
    shutil.copytree(small_dataset, ds, symlinks=True)
    old = os.umask(mask)
    try:
        import crowdsort.storage.store

        crowdsort.storage.store._umask.cache_clear()
        assert main(["-q", "cluster", "-d", str(ds), "--to", "c2"]) == 0
    finally:
        os.umask(old)
        crowdsort.storage.store._umask.cache_clear()
    assert (ds / "c2" / "assignments.csv").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (ds / "c2").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (ds / "faces" / "faces.parquet").stat().st_mode & 0o777 == 0o666 & ~0o022  # made at extraction
