"""Speed of the face pipeline: extraction images/s, embedding faces/s, clustering seconds.

    python benchmarks/bench_faces.py [--photos DIR] [--sizes 10000,100000] [--dims 128,512]

Extraction and embedding run on real photos (``../shared/data/faces`` by default, or any
folder, e.g. ``../shared/data/lfw-dev/faces`` for ~1k faces): dlib's ResNet on the same chips
run by dlib (one process) and by ONNX Runtime (the default), their ratio and cosine, the
embedding step as crowdsort runs it, and photos/s from photos to clusters. Clustering runs
on synthetic identity-like unit vectors (groups of 2–8 around random centres plus 30%
singletons), deterministic (seed 0, float32), graph build timed
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


def bench_dlib_networks(store, faces, native_max: int) -> None:
    """dlib's ResNet on the same chips: dlib's own, single process, and the ONNX Runtime graph."""
    import os

    from crowdsort.faces.embed import DlibEmbedder, DlibOnnxEmbedder, _read_crops

    crops = _read_crops([store.crop_file(p) for p in faces["crop_path"]])
    native = DlibEmbedder().prepare()
    t = time.perf_counter()
    chips = [native.chip(np.ascontiguousarray(c)) for c in crops]
    dt_chips = time.perf_counter() - t
    onnx = DlibOnnxEmbedder().prepare()
    onnx.embed_prepared(np.stack(chips[:8]))  # warm-up: the first run plans the kernels
    t = time.perf_counter()
    got = np.vstack([onnx.embed_prepared(np.stack(chips[i:i + 64])) for i in range(0, len(chips), 64)])
    dt_onnx = time.perf_counter() - t
    n_native = min(native_max, len(chips))
    t = time.perf_counter()
    want = np.array([np.asarray(v) for v in native._net.compute_face_descriptor(chips[:n_native])])
    dt_native = time.perf_counter() - t
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    cos = (got[:n_native] * want).sum(axis=1)
    fps_onnx, fps_native = len(chips) / dt_onnx, n_native / dt_native
    print(f"chips (dlib 5-point + get_face_chip) {len(chips)}: {len(chips) / dt_chips:.0f} chips/s, one thread")
    print(f"dlib ResNet, network only, same chips: dlib single process {fps_native:.1f} faces/s ({n_native} faces); "
          f"ONNX Runtime ({onnx._session.get_providers()[0]}, {os.cpu_count()} cores) {fps_onnx:.1f} faces/s; "
          f"ratio {fps_onnx / fps_native:.1f}x")
    print(f"  cosine ONNX vs dlib: median {np.median(cos):.7f}, worst {cos.min():.7f}")


def bench_pipeline(photos: Path, workers: int, native_max: int) -> None:
    from crowdsort.faces.embed import default_workers, embed_faces, load_embedder
    from crowdsort.extract import extract_faces
    from crowdsort.storage.images import find_images
    from crowdsort.pipeline import cluster_faces
    from crowdsort.storage.store import FaceStore

    n_img = len(find_images(str(photos)))
    tmp = Path(tempfile.mkdtemp())
    try:
        store = FaceStore(tmp / "faces")
        t = time.perf_counter()
        s = extract_faces(str(photos), store, workers=workers, progress=False)
        dt_extract = time.perf_counter() - t
        print(f"extract-faces  {n_img} images, {s['faces']} faces, workers={workers}: "
              f"{dt_extract:.1f} s = {n_img / dt_extract:.1f} images/s")
        t = time.perf_counter()
        again = extract_faces(str(photos), store, workers=workers, progress=False)
        print(f"re-run (nothing changed): {time.perf_counter() - t:.2f} s, {again['processed']} processed")
        faces = store.load_faces()
        bench_dlib_networks(store, faces, native_max)
        # the whole embedding step (crops read, chips, network, cache written) as crowdsort runs it
        runs = [("dlib-native", w) for w in sorted({1, default_workers(load_embedder("dlib-native"))})]
        for model, embed_workers in runs + [("dlib", None)]:
            shutil.rmtree(store.root / "embeddings", ignore_errors=True)
            embedder = load_embedder(model)
            embedder.prepare()  # the ONNX model converted (once) or loaded: not what is timed
            embed_workers = default_workers(embedder) if embed_workers is None else embed_workers
            t = time.perf_counter()
            embed_faces(store, faces, embedder, progress=False, workers=embed_workers)
            dt = time.perf_counter() - t
            print(f"embed {model:<12} {len(faces)} faces: {dt:.1f} s = {len(faces) / dt:.1f} faces/s "
                  f"({type(embedder).__name__}, {embed_workers} process{'es' if embed_workers > 1 else ''})")
        dt_embed = dt  # the default embedder ran last: its vectors are cached for the clustering
        t = time.perf_counter()
        c = cluster_faces(tmp, "faces", "cluster", model="dlib", progress=False)
        dt_cluster = time.perf_counter() - t
        total = dt_extract + dt_embed + dt_cluster
        print(f"cluster        {len(faces)} faces: {dt_cluster:.1f} s, {c.get('n_clusters', '?')} clusters")
        print(f"end to end (extract + embed with the default model + cluster): {total:.1f} s = "
              f"{n_img / total:.1f} photos/s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_cluster(sizes: list[int], dims: list[int], raw_n: int) -> None:
    from crowdsort.clustering.cluster import HDBSCAN
    from crowdsort.clustering.neighbors import knn_graph

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
    ap.add_argument("--native-max", type=int, default=400,
                    help="faces given to dlib's own network for the ratio (it runs ~8 faces/s per core)")
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--raw-n", type=int, default=20000, help="size for the raw-vector hdbscan baseline (0: skip)")
    args = ap.parse_args(argv)
    if Path(args.photos).exists():
        bench_pipeline(Path(args.photos), args.workers, args.native_max)
    else:
        print(f"no photos at {args.photos}: extraction/embedding skipped", file=sys.stderr)
    bench_cluster([int(s) for s in args.sizes.split(",") if s], [int(d) for d in args.dims.split(",")], args.raw_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
