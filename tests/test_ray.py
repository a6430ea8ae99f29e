"""--backend ray (issue 17): a local Ray cluster on 127.0.0.1 runs extraction and embedding; the
dataset is the same as the local pool's, either backend re-runs the other's incrementally, and a
killed worker loses nothing."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from crowdsort.cli import main
from crowdsort.storage.store import FaceStore
from test_frames import HAMILTON, videos  # noqa: F401  (fixture: the clips)

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def cluster():
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # this module is not importable on the workers
    # one GPU declared (none is there): actors are placed and given CUDA_VISIBLE_DEVICES as on a GPU
    # node, while ONNX Runtime's CPU build goes on computing on the CPU
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(need_shared, videos, tmp_path_factory):  # noqa: F811
    """12 photos of faces/ and one video, in a folder of their own."""
    src = tmp_path_factory.mktemp("ray-inputs")
    photos = sorted(p for p in need_shared("faces").rglob("*.jpg"))[:12]
    for p in photos:
        shutil.copy(p, src / f"{p.parent.name}-{p.name}")
    shutil.copy(videos / HAMILTON, src / HAMILTON)
    return src


def _faces(ds):
    return FaceStore(ds / "faces").load_faces().sort_values("face_id").reset_index(drop=True)


def test_ray_gives_the_local_dataset_and_each_resumes_the_other(cluster, inputs, tmp_path, capsys):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["-q", "extract-faces", "-d", str(local), "--from", str(inputs), "--workers", "2"]) == 0
    capsys.readouterr()
    assert main(["extract-faces", "-d", str(remote), "--from", str(inputs), "--workers", "2",
                 "--backend", "ray"]) == 0
    frames = re.findall(r"video frames: (\d+)", capsys.readouterr().err)  # progress inside the video too
    assert frames and int(frames[-1]) > 0, frames
    a, b = _faces(local), _faces(remote)
    assert len(a) == len(b) > 12 and (a["face_id"] == b["face_id"]).all()
    box = ["x0", "y0", "x1", "y1"]
    assert np.abs(a[box].to_numpy() - b[box].to_numpy()).max() <= 1.0
    assert (a[["frame", "shot", "track", "crop_path"]] == b[["frame", "shot", "track", "crop_path"]]).all().all()
    capsys.readouterr()
    # a dataset made by Ray re-runs incrementally in the local pool, and the other way round
    assert main(["-q", "extract-faces", "-d", str(remote), "--from", str(inputs)]) == 0
    assert "0 processed, 13 unchanged" in capsys.readouterr().out
    assert main(["-q", "extract-faces", "-d", str(local), "--from", str(inputs), "--backend", "ray"]) == 0
    assert "0 processed, 13 unchanged" in capsys.readouterr().out
    # embedding on Ray: the local vectors
    assert main(["-q", "cluster", "-d", str(local)]) == 0
    assert main(["-q", "cluster", "-d", str(remote), "--backend", "ray", "--workers", "2"]) == 0
    ia, Va = FaceStore(local / "faces").load_embeddings("mobilefacenet", 192)
    ib, Vb = FaceStore(remote / "faces").load_embeddings("mobilefacenet", 192)
    oa, ob = np.argsort(ia), np.argsort(ib)
    assert len(ia) == len(ib) and (np.asarray(ia)[oa] == np.asarray(ib)[ob]).all()
    assert np.abs(Va[oa] - Vb[ob]).max() < 1e-5


def _die_once(task):
    """Kills its worker the first time it sees a task (a marker file says it was seen)."""
    marker, value = task
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return value * 2


def _always_die(task):
    os._exit(1)


def test_a_killed_worker_loses_nothing(cluster, tmp_path):
    from crowdsort.scale.ray_backend import run_ordered

    tasks = [(str(tmp_path / f"seen-{i}"), i) for i in range(6)]
    got = list(run_ordered(tasks, _die_once, actors=2))
    assert [r for _, r in got] == [2 * i for i in range(6)]  # every task, in order, after restarts
    # a task that kills every worker it meets comes back as its error; the others still finish
    mixed = [(str(tmp_path / "x"), 1)]
    bad = list(run_ordered(mixed, _always_die, actors=1))
    assert len(bad) == 1 and isinstance(bad[0][1], BaseException)


def _gpu_ids(task):
    return ray.get_gpu_ids()


def test_embedding_actors_share_the_clusters_gpus(cluster):
    from crowdsort.scale.ray_backend import gpus_per_actor, run_ordered

    assert gpus_per_actor(ray, 2) == 0.5 and gpus_per_actor(ray, 1) == 1.0
    assert gpus_per_actor(ray, 2, requested=0) == 0.0
    got = [r for _, r in run_ordered(range(4), _gpu_ids, actors=2, num_gpus=0.5)]
    assert all(len(ids) == 1 for ids in got)  # each actor holds its share of the GPU
    assert [r for _, r in run_ordered(range(2), _gpu_ids, actors=1)] == [[], []]


DRIVER = """
import sys
from crowdsort.extract import extract_faces
from crowdsort.storage.store import FaceStore
extract_faces(sys.argv[1], FaceStore(sys.argv[2]), workers=2, progress=False, checkpoint_every=2,
              backend="ray", ray_address=sys.argv[3])
"""


def test_a_killed_ray_run_resumes(cluster, inputs, tmp_path):
    """kill -9 of the driver once a checkpoint is written; the next run (Ray again) finishes the
    rest, and the dataset equals a local run's."""
    from crowdsort.extract import extract_faces

    photos = [str(p) for p in sorted(Path(inputs).glob("*.jpg"))]
    local, remote = tmp_path / "local" / "faces", tmp_path / "ray" / "faces"
    extract_faces(photos, FaceStore(local), workers=2, progress=False)
    address = ray.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(inputs / "*.jpg"), str(remote), address],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((remote / "parts").glob("*-images.parquet")) and time.monotonic() < deadline:
            assert proc.poll() is None, "the Ray run ended before its first checkpoint"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
    finally:
        proc.kill()
    kept = FaceStore(remote).load_images()
    assert 0 < len(kept) < len(photos)  # killed mid-run, some work kept
    s = extract_faces(photos, FaceStore(remote), workers=2, progress=False, backend="ray")
    assert s["unchanged"] == len(kept) and s["processed"] == len(photos) - len(kept)
    a, b = FaceStore(local).load_faces(), FaceStore(remote).load_faces()
    a, b = (f.sort_values("face_id").reset_index(drop=True) for f in (a, b))
    assert (a["face_id"] == b["face_id"]).all() and (a["crop_path"] == b["crop_path"]).all()
    assert not (remote / "parts").exists()


def test_whole_images_on_ray_give_the_local_clusters(cluster, need_shared, tmp_path):
    """cluster --model efficientnet --backend ray: the local vectors and assignments; a file that
    does not decode is reported, not the end of the run."""
    import pandas as pd

    photos = tmp_path / "photos"
    shutil.copytree(need_shared("images"), photos, ignore=shutil.ignore_patterns("*.md"))
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    runs = {}
    for backend in ("local", "ray"):
        ds = tmp_path / backend
        assert main(["-q", "cluster", "-d", str(ds), "--from", str(photos), "--model", "efficientnet",
                     "--backend", backend, "--workers", "2"]) == 0
        a = pd.read_csv(ds / "cluster" / "assignments.csv").sort_values("item_id").reset_index(drop=True)
        ids, V = FaceStore(ds / "images").load_embeddings("efficientnet-lite0")
        order = np.argsort(ids)
        runs[backend] = a, np.asarray(ids)[order], V[order]
    (a, ia, Va), (b, ib, Vb) = runs["local"], runs["ray"]
    assert len(a) >= 10 and (a["item_id"] == b["item_id"]).all() and (a["cluster"] == b["cluster"]).all()
    assert (ia == ib).all() and np.abs(Va - Vb).max() < 1e-5
    assert len(b) == 12 and not b["source_image"].str.endswith("broken.jpg").any()
