"""Speed of the face pipeline: extraction images/s, embedding faces/s, clustering seconds.

    python benchmarks/bench_faces.py [--photos DIR] [--sizes 10000,100000] [--dims 128,512]

Extraction and embedding run on real photos (``../shared/data/faces`` by default, or any
folder). Clustering runs on synthetic identity-like unit vectors (groups of 2–8 around
random centres plus 30% singletons), deterministic (seed 0, float32), graph build timed
apart from HDBSCAN; the hdbscan package on raw vectors at 20k is printed beside it as the
ratio to beat. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def identity_like(n: int, dim: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < 0.7 * n:
        sizes.append(int(rng.integers(2, 9)))
    centres = rng.normal(size=(len(sizes), dim)).astype(np.float32)
    X = np.repeat(centres, sizes, axis=0)
    X = X + 0.35 * rng.normal(size=X.shape).astype(np.float32)
    X = np.vstack([X, rng.normal(size=(n - len(X), dim)).astype(np.float32)])
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_pipeline(photos: Path, workers: int) -> None:
    from analysis.embed import default_workers, embed_faces, load_embedder
    from analysis.extract import extract_faces
    from analysis.images import find_images
    from analysis.store import FaceStore

    n_img = len(find_images(str(photos)))
    tmp = Path(tempfile.mkdtemp())
    try:
        store = FaceStore(tmp / "faces")
        t = time.perf_counter()
        s = extract_faces(str(photos), store, workers=workers, progress=False)
        dt = time.perf_counter() - t
        print(f"extract-faces  {n_img} images, {s['faces']} faces, workers={workers}: "
              f"{dt:.1f} s = {n_img / dt:.1f} images/s")
        t = time.perf_counter()
        again = extract_faces(str(photos), store, workers=workers, progress=False)
        print(f"re-run (nothing changed): {time.perf_counter() - t:.2f} s, {again['processed']} processed")
        faces = store.load_faces()
        for embed_workers in sorted({1, default_workers(load_embedder("dlib"))}):
            shutil.rmtree(store.root / "embeddings", ignore_errors=True)
            t = time.perf_counter()
            embed_faces(store, faces, load_embedder("dlib"), progress=False, workers=embed_workers)
            dt = time.perf_counter() - t
            print(f"embed dlib     {len(faces)} faces: {dt:.1f} s = {len(faces) / dt:.1f} faces/s "
                  f"({embed_workers} process{'es' if embed_workers > 1 else ''})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_cluster(sizes: list[int], dims: list[int], raw_n: int) -> None:
    from analysis.cluster import HDBSCAN
    from analysis.neighbors import knn_graph

    for dim in dims:
        for n in sizes:
            X = identity_like(n, dim)
            t = time.perf_counter()
            g = knn_graph(X, 15)
            t_graph = time.perf_counter() - t
            t = time.perf_counter()
            labels = HDBSCAN(2, 1).fit(X, graph=g).labels_
            t_cl = time.perf_counter() - t
            print(f"cluster n={n:>7} d={dim}: kNN graph ({g.method}) {t_graph:6.1f} s, "
                  f"HDBSCAN {t_cl:5.1f} s, {labels.max() + 1} clusters, peak RSS {peak_mb():.0f} MB")
    if raw_n:
        import hdbscan

        X = identity_like(raw_n, 512)
        t = time.perf_counter()
        hdbscan.HDBSCAN(min_cluster_size=2, min_samples=1).fit(X)
        t_raw = time.perf_counter() - t
        g0 = time.perf_counter()
        HDBSCAN(2, 1).fit(X)
        t_ours = time.perf_counter() - g0
        print(f"raw-vector hdbscan package n={raw_n} d=512: {t_raw:.1f} s; ours (graph + HDBSCAN): "
              f"{t_ours:.1f} s; ratio {t_raw / t_ours:.0f}x")


def main(argv=None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=str(here.parent / "shared" / "data" / "faces"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--raw-n", type=int, default=20000, help="size for the raw-vector hdbscan baseline (0: skip)")
    args = ap.parse_args(argv)
    if Path(args.photos).exists():
        bench_pipeline(Path(args.photos), args.workers)
    else:
        print(f"no photos at {args.photos}: extraction/embedding skipped", file=sys.stderr)
    bench_cluster([int(s) for s in args.sizes.split(",") if s], [int(d) for d in args.dims.split(",")], args.raw_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
