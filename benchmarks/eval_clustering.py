"""BCubed F of every clustering algorithm on labelled face sets (dlib embeddings).

    python benchmarks/eval_clustering.py [--work scratch/eval] [--sets faces,lfw-dev]

Extracts the most prominent face of each photo (cached under --work, so re-runs only
cluster), embeds with dlib, clusters every face, and prints BCubed P/R/F over identities
with ≥ 3 photos and over all faces (one-photo people included), for a grid of parameters
per algorithm. Group photos are left out (no per-face labels).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

GRID = {
    "snn-whispers": [dict(threshold=t, mutual_threshold=t + 0.01) for t in (0.05, 0.055, 0.06, 0.065)],
    "hdbscan": [dict(min_cluster_size=m, min_samples=s) for m, s in [(2, 1), (2, 2), (3, 1), (3, 2), (5, 2)]],
    "rnn-dbscan": [dict(n_neighbors=k) for k in (2, 3, 4, 5, 8)],
    "dbscan": [dict(eps=e, min_samples=2) for e in (0.05, 0.06, 0.07, 0.08)],
    "optics": [dict(eps=e, min_samples=2) for e in (0.06, 0.07)],
    "agglomerative": [dict(distance_threshold=t) for t in (0.05, 0.06, 0.07, 0.08, 0.09)],
    "chinese-whispers": [dict(threshold=t) for t in (0.05, 0.06, 0.07, 0.08)],
}


def dev_faces(name: str, shared: Path, work: Path):
    """``(store, faces, identity of each face)``: the most prominent face of each photo of a dev
    set (cached under ``work``), group photos left out."""
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    src = shared / ("faces" if name == "faces" else f"{name}/faces")
    store = FaceStore(work / name / "faces")
    extract_faces(str(src), store, ExtractParams(max_faces=1), workers=2, progress=False)
    faces = store.load_faces()
    faces = faces[~faces["image_path"].str.contains("/group/")].reset_index(drop=True)
    return store, faces, faces["image_path"].map(lambda p: Path(p).parent.name).to_numpy()


def load_set(name: str, shared: Path, work: Path):
    from crowdsort.faces.embed import embed_faces, load_embedder

    store, faces, ident = dev_faces(name, shared, work)
    return embed_faces(store, faces, load_embedder("dlib"), progress=True), ident


def main(argv=None) -> int:
    from crowdsort.clustering.cluster import make_clusterer
    from crowdsort.clustering.metrics import bcubed
    from crowdsort.clustering.neighbors import knn_graph

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "eval"))
    ap.add_argument("--sets", default="faces,lfw-dev")
    args = ap.parse_args(argv)
    for name in args.sets.split(","):
        X, ident = load_set(name, Path(args.shared), Path(args.work))
        counts = pd.Series(ident).value_counts()
        keep = (counts[ident] >= 3).to_numpy()
        graph = knn_graph(X, 15)
        print(f"\n{name}: {len(X)} faces, {ident.size and len(set(ident))} identities, "
              f"{keep.sum()} faces of identities with >= 3 photos")
        print(f"{'algorithm':<18}{'parameters':<42}{'clusters':>9}{'noise':>7}{'F>=3':>7}{'P>=3':>7}{'R>=3':>7}{'F all':>7}{'s':>7}")
        for algo, grid in GRID.items():
            for params in grid:
                t = time.perf_counter()
                labels = make_clusterer(algo, **params).fit(X, graph=graph).labels_
                dt = time.perf_counter() - t
                p3, r3, f3 = bcubed(ident[keep], labels[keep])
                f_all = bcubed(ident, labels)[2]
                ps = ", ".join(f"{k}={v}" for k, v in params.items())
                print(f"{algo:<18}{ps:<42}{labels.max() + 1:>9}{np.mean(labels < 0):>7.2f}"
                      f"{f3:>7.3f}{p3:>7.3f}{r3:>7.3f}{f_all:>7.3f}{dt:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
