"""kill -9 at ten random points of extract-faces, cluster and the dashboard's save, then a re-run:
the result equals a clean run's and nothing is left behind (issue 11)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
KILLS = 10

EXTRACT = """
import sys
sys.path.insert(0, sys.argv[3])
from crowdsort.extract import extract_faces
from crowdsort.storage.store import FaceStore
extract_faces(sys.argv[1], FaceStore(sys.argv[2]), workers=2, progress=False, checkpoint_every=6)
"""


@pytest.fixture(scope="module")
def photos(tmp_path_factory, example_photos):
    """The example photos twice over (52 files), so that a kill lands mid-batch."""
    from crowdsort.example import build_example

    root = tmp_path_factory.mktemp("crash")
    build_example(root / "one")
    for k in range(2):
        shutil.copytree(root / "one", root / "photos" / f"copy{k}")
    return root / "photos"


def leftovers(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.startswith((".tmp-", ".crowdsort-tmp-")) or p.name == "parts"
            or p.name.endswith(".parts") and any(p.iterdir())]


def faces_view(store_root: Path) -> pd.DataFrame:
    from crowdsort.storage.store import FaceStore

    f = FaceStore(store_root).load_faces(include_gone=True)
    return f[["face_id", "image_path", "face_index", "x0", "y0", "x1", "y1", "crop_path", "gone"]].sort_values(
        "face_id").reset_index(drop=True)


def run_killed(cmd: list[str], delay: float, cwd=ROOT) -> bool:
    """Start ``cmd``, kill -9 it after ``delay`` s; True if it was still running then."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def test_extract_faces_killed_ten_times(photos, tmp_path):
    clean = tmp_path / "clean" / "faces"
    duration = timed([sys.executable, "-c", EXTRACT, str(photos), str(clean), str(ROOT)])
    expected = faces_view(clean)
    crops = sorted(p.name for p in (clean / "crops").iterdir())
    rng = np.random.default_rng(11)
    killed = 0
    for k in range(KILLS):
        store = tmp_path / f"k{k}" / "faces"
        killed += run_killed([sys.executable, "-c", EXTRACT, str(photos), str(store), str(ROOT)],
                             rng.uniform(0.5, 0.8 * duration))
        subprocess.run([sys.executable, "-c", EXTRACT, str(photos), str(store), str(ROOT)], check=True, cwd=ROOT,
                       capture_output=True)
        pd.testing.assert_frame_equal(faces_view(store), expected)
        assert sorted(p.name for p in (store / "crops").iterdir()) == crops
        assert not leftovers(store.parent)
    assert killed >= KILLS // 2  # the kills landed while it ran (a loaded machine can be slower)


def test_cluster_killed_ten_times(photos, tmp_path):
    from crowdsort.extract import extract_faces
    from crowdsort.storage.store import FaceStore

    base = tmp_path / "base"
    extract_faces(str(photos / "copy0"), FaceStore(base / "faces"), workers=1, progress=False)
    cmd = [sys.executable, "-m", "crowdsort.cli", "-q", "cluster", "--workers", "1", "--clean", "-d"]
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    duration = timed(cmd + [str(clean)])
    expected = pd.read_csv(clean / "cluster" / "assignments.csv").drop(columns=["crop_path"])
    rng = np.random.default_rng(12)
    for k in range(KILLS):
        ds = tmp_path / f"k{k}"
        shutil.copytree(base, ds)
        run_killed(cmd + [str(ds)], rng.uniform(0.5, duration))
        subprocess.run(cmd + [str(ds)], check=True, cwd=ROOT, capture_output=True)
        got = pd.read_csv(ds / "cluster" / "assignments.csv").drop(columns=["crop_path"])
        pd.testing.assert_frame_equal(got, expected)
        assert not leftovers(ds), leftovers(ds)


SAVE = """
import sys
sys.path.insert(0, sys.argv[2])
import numpy as np
from crowdsort.review.session import Annotations
ann = Annotations.load(sys.argv[1])
for i in range(400):
    ann.record(names={f"f{j:03d}": f"person {i}" for j in range(i % 7, 300, 7)}, rejected=[f"f{i % 300:03d}"])
"""


def test_dashboard_save_killed_ten_times(tmp_path):
    """The corrections log after a kill holds exactly the corrections made before it."""
    from crowdsort.review.session import Annotations

    rng = np.random.default_rng(13)
    clean = tmp_path / "clean.jsonl"
    duration = timed([sys.executable, "-c", SAVE, str(clean), str(ROOT)])
    full = [json.loads(line) for line in clean.read_text().splitlines()]
    for k in range(KILLS):
        path = tmp_path / f"k{k}.jsonl"
        run_killed([sys.executable, "-c", SAVE, str(path), str(ROOT)], rng.uniform(0.2, duration))
        ann = Annotations.load(path)  # never an error: a torn last line is ignored
        n = len(ann.ops)
        replay = Annotations(tmp_path / "none")
        replay._take([dict(op) for op in full[:n]])
        ops_as_made = [{k2: v for k2, v in op.items() if k2 != "id"} for op in ann.ops]
        assert ops_as_made == [{k2: v for k2, v in op.items() if k2 != "id"} for op in full[:n]]
        assert (ann.names, ann.rejected) == (replay.names, replay.rejected)
        ann.record(names={"f000": "after"})  # the next save leaves a clean log
        assert all(json.loads(line) for line in path.read_text().splitlines())
        assert Annotations.load(path).names["f000"] == "after"


def test_the_temporary_file_of_a_merge_killed_mid_write_is_removed_by_the_next_merge(tmp_path):
    """A kill while the merged vector file was written leaves `.tmp-<pid>-…` beside it (the fresh-clone
    CI saw one after kill -9 in test_cluster_killed_ten_times); the next merge removes it, and
    leaves a live writer's alone."""
    from crowdsort.storage.store import FaceStore

    store = FaceStore(tmp_path / "faces")
    store.save_embeddings("dlib", ["a"], np.ones((1, 4), np.float32) / 2)
    folder = store._embedding_path("dlib").parent
    dead = folder / ".tmp-4194999-abc.parquet"  # above Linux's largest pid: no such process
    live = folder / f".tmp-{os.getpid()}-def.parquet"
    dead.write_bytes(b"half")
    live.write_bytes(b"being written")
    store.compact_embeddings("dlib")
    assert not dead.exists() and live.exists()
