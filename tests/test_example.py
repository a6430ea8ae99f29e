"""The example's source photos without scikit-image or matplotlib: rows of the model registry read
out of pinned wheels (real pip download, and faked), the same photos built either way."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from crowdsort import example
from crowdsort.models import install as model_install
from crowdsort.models.install import install
from crowdsort.models.files import MODEL_FILES, ModelNotFoundError

ROOT = Path(__file__).resolve().parents[1]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p.read_bytes()) for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CROWDSORT_CACHE", str(cache))
    for var in ("CROWDSORT_OFFLINE", *(s.env for s in MODEL_FILES.values())):
        monkeypatch.delenv(var, raising=False)
    return cache


# Built in a fresh Python where neither package can be imported (as if not installed): counts the
# pip downloads and says which of the two got imported.
BLOCKED = """
import json, subprocess, sys
for name in ("skimage", "matplotlib"):
    sys.modules[name] = None  # import fails, importlib.util.find_spec finds nothing
calls = []
real = subprocess.run
def counting(cmd, *a, **kw):
    if "download" in cmd:
        calls.append(" ".join(map(str, cmd)))
    return real(cmd, *a, **kw)
subprocess.run = counting
from crowdsort.cli import main
rc = main(["example", sys.argv[1]])
imported = [m for m in sys.modules if m.split(".")[0] in ("skimage", "matplotlib") and sys.modules[m] is not None]
print(json.dumps({"rc": rc, "downloads": calls, "imported": imported}))
"""


def test_example_without_skimage_or_matplotlib_comes_from_the_wheels_and_is_the_same(tmp_path, cache):
    """Two pip downloads (scikit-image 0.17.1's and matplotlib 1.5.0's wheels, 16.5 MB), nothing of
    either imported, and the same 26 files as the example built from the installed packages."""
    pytest.importorskip("skimage")
    pytest.importorskip("matplotlib")
    files = example.photo_files(notify=pytest.fail)  # installed copies: nothing downloaded
    assert files["eileen_collins"].parts[-3:] == ("skimage", "data", "astronaut.png")
    assert files["grace_hopper"].parts[-4:] == ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg")
    assert not cache.exists()
    example.build_example(tmp_path / "installed", notify=pytest.fail)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "CROWDSORT_CACHE": str(cache)}
    r = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "wheels")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.splitlines()[-1])
    if got["rc"] != 0 and "could not be downloaded" in r.stderr and os.environ.get("CI") != "true":
        pytest.skip(f"PyPI cannot be reached through pip here: {r.stderr.strip()}")
    assert got["rc"] == 0, r.stderr
    assert got["imported"] == []
    assert len(got["downloads"]) == 2, got["downloads"]
    assert "scikit-image==0.17.1" in got["downloads"][0] and "matplotlib==1.5.0" in got["downloads"][1]
    progress = [line for line in r.stderr.splitlines() if line.startswith("example photos")]
    assert len(progress) == 2 and all("pip download" in line for line in progress), r.stderr
    assert sorted(p.name for p in cache.iterdir()) == sorted(MODEL_FILES[k].filename for k in example.PHOTOS.values())
    for key in example.PHOTOS.values():
        assert sha((cache / MODEL_FILES[key].filename).read_bytes()) == MODEL_FILES[key].sha256
    assert tree_hashes(tmp_path / "wheels") == tree_hashes(tmp_path / "installed")
    assert len(tree_hashes(tmp_path / "installed")) == 26

    # once cached, nothing more is fetched, packages or not
    r = subprocess.run([sys.executable, "-c", BLOCKED, str(tmp_path / "again")], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=600, check=False)
    got = json.loads(r.stdout.splitlines()[-1])
    assert got["rc"] == 0 and got["downloads"] == [] and "example photos" not in r.stderr
    assert tree_hashes(tmp_path / "again") == tree_hashes(tmp_path / "installed")


def fake_pip(tmp_path: Path, whl: Path | None) -> str:
    """A `pip` that copies ``whl`` to --dest (fails without one) and logs each call."""
    script = tmp_path / "bin" / "pip"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import shutil, sys
open({str(tmp_path / 'pip-calls')!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if {whl is None}:
    print("ERROR: Could not find a version that satisfies the requirement", file=sys.stderr)
    sys.exit(1)
shutil.copy({str(whl)!r}, sys.argv[sys.argv.index("--dest") + 1])
""")
    script.chmod(0o755)
    return str(script)


@pytest.fixture
def fake_rows(tmp_path, cache, monkeypatch):
    """The example reads one photo (astronaut), pinned to b"good photo" in a generated wheel, its
    package a folder on sys.path whose copy of the file is wrong; returns the wheel."""
    good = b"good photo"
    row = MODEL_FILES["example-astronaut"]
    whl = tmp_path / "wheel-src" / row.wheel.filename
    whl.parent.mkdir()
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(row.wheel.member, good)
    pkg = tmp_path / "site" / "fake_skimage_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / row.filename).write_bytes(b"another photo")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(MODEL_FILES, "example-astronaut", dataclasses.replace(
        row, sha256=sha(good), size=len(good), package="fake_skimage_pkg",
        wheel=dataclasses.replace(row.wheel, wheel_sha256=sha(whl.read_bytes()))))
    monkeypatch.setattr(example, "PHOTOS", {"eileen_collins": "example-astronaut"})
    return whl


def test_an_installed_copy_with_another_checksum_is_not_used(tmp_path, cache, monkeypatch, fake_rows):
    monkeypatch.setattr(model_install, "install", functools.partial(install, pip=fake_pip(tmp_path, fake_rows)))
    lines = []
    files = example.photo_files(notify=lines.append)
    assert files == {"eileen_collins": cache / "astronaut.png"}
    assert (cache / "astronaut.png").read_bytes() == b"good photo"
    assert len((tmp_path / "pip-calls").read_text().splitlines()) == 1
    assert lines == [("example photos astronaut.png: pip download scikit-image==0.17.1 (a wheel, 10.6 MB, read, "
                      "not installed)")]
    # a right installed copy is used where it lies, with no download
    (tmp_path / "site" / "fake_skimage_pkg" / "data" / "astronaut.png").write_bytes(b"good photo")
    (cache / "astronaut.png").unlink()
    assert example.photo_files(notify=pytest.fail)["eileen_collins"] == (
        tmp_path / "site" / "fake_skimage_pkg" / "data" / "astronaut.png")


def test_failed_download_is_one_line_with_the_fix(tmp_path, cache, monkeypatch, fake_rows, capsys):
    monkeypatch.setattr(model_install, "install", functools.partial(install, pip=fake_pip(tmp_path, None)))
    with pytest.raises(ModelNotFoundError) as e:
        example.photo_files(notify=lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg and "could not be downloaded" in msg and "exit 1: ERROR: Could not find" in msg
    assert (f"pip download scikit-image==0.17.1 --no-deps --only-binary :all: --platform win32 --python-version 3.6 "
            f"--implementation cp --abi cp36m && unzip -j scikit_image-0.17.1-cp36-cp36m-win32.whl "
            f"skimage/data/astronaut.png -d {cache}") in msg
    assert not cache.exists() or not any(cache.iterdir())


def test_offline_the_command_says_how_to_do_it_by_hand(tmp_path, cache, monkeypatch, capsys):
    from crowdsort.cli import main

    for key in example.PHOTOS.values():  # as if neither package were installed
        monkeypatch.setitem(MODEL_FILES, key, dataclasses.replace(MODEL_FILES[key], package=None))
    monkeypatch.setenv("CROWDSORT_OFFLINE", "1")
    assert main(["example", str(tmp_path / "images")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("crowdsort example: error: the example's photos astronaut.png, coffee.png, chelsea.png, "
                          "rocket.jpg, grace_hopper.jpg are not here and could not be downloaded (downloads are off")
    assert "pip download scikit-image==0.17.1 " in err and "pip download matplotlib==1.5.0 " in err
    assert "unzip -j matplotlib-1.5.0-cp34-none-win32.whl matplotlib/mpl-data/sample_data/grace_hopper.jpg" in err
    assert not (tmp_path / "images").exists()


def test_example_rows_are_listed_as_example_photos(cache, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="crowdsort")
    model_install.ModelsCommand.register_subcommand(parser.add_subparsers())
    args = parser.parse_args(["models", "list"])
    assert args.command.run(args) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    for key in example.PHOTOS.values():
        assert " example photo " in rows[key] and MODEL_FILES[key].licence in rows[key]
        assert MODEL_FILES[key].wheel.size is not None
    # shipped by installed scikit-image, else its pinned wheel
    assert "pypi:scikit-image" in rows["example-coffee"]
    assert "CC0" in MODEL_FILES["example-coffee"].licence and "public domain" in MODEL_FILES["example-rocket"].licence
    assert model_install._names(["example"]) == ["example-astronaut", "example-coffee", "example-chelsea",
                                                 "example-rocket", "example-grace-hopper"]
