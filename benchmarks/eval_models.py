"""Identity models side by side on the dev sets: verification, default clustering, open-set
identification, speed; and the grid that chose MobileFaceNet's clustering default.

    python benchmarks/eval_models.py [--work scratch/eval] [--models dlib,mobilefacenet] [--grid]

The most prominent face of each photo (cached under --work, as eval_clustering.py does), the
same crops for every model. Printed per set and model:

* TAR at FAR 1e-3 over all pairs (the threshold from the different-person pairs);
* BCubed F over people with >= 3 photos / over all faces for the model's default clustering
  (pipeline.default_algorithm and pipeline.model_cluster_params);
* identification per face and pooled over that clustering, at the default threshold
  (calibrated for the library's size, identify.threshold_for) and margin: top-1 of enrolled
  people / share of unenrolled faces called unknown;
* embedding faces/s of the whole step (crops read, alignment, network) on this machine.

For MobileFaceNet also the alignment it needs (``--alignment``): TAR with the four detector
points fitted to the ArcFace template against ONet's five points. ``--grid``: snn-whispers
over threshold × mutual gap × shared-neighbour scale, judged by the worse of lfw-dev and
celeba-dev (the rule that chose the default).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

REFS = {"faces": "references", "lfw-dev": "lfw-dev/references", "celeba-dev": "celeba-dev/references"}
SETS = ("faces", "lfw-dev", "celeba-dev")


def tar_at_far(X: np.ndarray, ident: np.ndarray, far: float = 1e-3) -> float:
    S = X @ X.T
    i, j = np.triu_indices(len(X), 1)
    s, same = S[i, j], ident[i] == ident[j]
    return float((s[same] > np.quantile(s[~same], 1 - far)).mean())


def vectors(name: str, model: str, shared: Path, work: Path):
    """``(X, identity, faces/s or None when cached)`` of one set."""
    from eval_clustering import dev_faces

    from crowdsort.faces.embed import embed_faces, load_embedder

    store, faces, ident = dev_faces(name, shared, work)
    embedder = load_embedder(model)
    _, found = store.vectors(embedder.name, faces["face_id"].tolist())
    t = time.perf_counter()
    X = embed_faces(store, faces, embedder, progress=False)
    rate = len(X) / (time.perf_counter() - t) if not found.any() else None
    return X, ident, rate, store, faces


def default_labels(X, model: str) -> np.ndarray:
    from crowdsort.clustering.cluster import make_clusterer
    from crowdsort.clustering.neighbors import knn_graph
    from crowdsort.pipeline import cluster_params, default_algorithm, model_cluster_params

    algo = default_algorithm(model)
    params = {**model_cluster_params(model, algo), **cluster_params(algo)}
    return make_clusterer(algo, **params).fit(X, graph=knn_graph(X, 15)).labels_


def bcubed_pair(ident, labels) -> tuple[float, float]:
    from crowdsort.clustering.metrics import bcubed

    keep = (pd.Series(ident).value_counts()[ident] >= 3).to_numpy()
    return bcubed(ident[keep], labels[keep])[2], bcubed(ident, labels)[2]


def identification(name, model, X, ident, labels, shared: Path, work: Path) -> tuple[float, ...]:
    from crowdsort.naming.identify import (UNKNOWN, embed_references, identify_faces, load_references, pooled_identify,
                                   save_references)

    h5 = work / name / f"refs-{model}.h5"
    if not h5.exists():
        save_references(embed_references(shared / REFS[name], model, progress=False), h5)
    refs = load_references(h5)
    enrolled = np.isin(ident, refs.people)
    out = []
    for r in (identify_faces(X, refs), pooled_identify(X, labels, refs)):
        lab = r["label"].to_numpy()
        out += [(lab[enrolled] == ident[enrolled]).mean(), (lab[~enrolled] == UNKNOWN).mean()]
    return tuple(out)


def alignment(store, faces, ident) -> tuple[float, float]:
    """MobileFaceNet's TAR at FAR 1e-3 on the four detector points and on ONet's five."""
    from crowdsort.faces.align import ARCFACE_4, estimate_norm, warp
    from crowdsort.faces.embed import _read_crops, load_embedder

    emb = load_embedder("mobilefacenet").prepare()
    crops = _read_crops([store.crop_file(p) for p in faces["crop_path"]])
    four = np.stack([warp(c, estimate_norm(np.asarray(lm, np.float64).reshape(-1, 2), ARCFACE_4), 112)
                     for c, lm in zip(crops, faces["crop_landmarks"])])
    X4 = np.vstack([emb.embed_prepared(four[i:i + 64]) for i in range(0, len(four), 64)])
    X5 = np.vstack([emb.embed(crops[i:i + 64]) for i in range(0, len(crops), 64)])
    return tar_at_far(X4, ident), tar_at_far(X5, ident)


def grid(sets: dict) -> None:
    from crowdsort.clustering.cluster import make_clusterer
    from crowdsort.clustering.neighbors import knn_graph

    graphs = {n: knn_graph(X, 15) for n, (X, _) in sets.items()}
    rows = []
    for scale in (0.1, 0.3, 0.5, 0.6):
        for t in (0.30, 0.32, 0.34, 0.36, 0.38, 0.40, 0.42):
            for gap in (0.03, 0.06):
                p = dict(threshold=t, mutual_threshold=round(t + gap, 3), scale=scale)
                r = {n: bcubed_pair(ident, make_clusterer("snn-whispers", **p).fit(X, graph=graphs[n]).labels_)
                     for n, (X, ident) in sets.items()}
                worse = (min(r["lfw-dev"][0], r["celeba-dev"][0]), min(r["lfw-dev"][1], r["celeba-dev"][1]))
                rows.append((max(0.98 - worse[0], 0) + max(0.97 - worse[1], 0), p, r, worse))
    rows.sort(key=lambda x: x[0])
    print("\nsnn-whispers grid (mobilefacenet), best first by the shortfall of the worse set from F 0.98 / 0.97:")
    for _, p, r, worse in rows[:15]:
        cells = "  ".join(f"{n} {f3:.3f}/{fa:.3f}" for n, (f3, fa) in r.items())
        print(f"  {str(p):<62} {cells}  worse {worse[0]:.3f}/{worse[1]:.3f}")


def main(argv=None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "eval"))
    ap.add_argument("--models", default="dlib,mobilefacenet")
    ap.add_argument("--sets", default=",".join(SETS))
    ap.add_argument("--alignment", action="store_true")
    ap.add_argument("--grid", action="store_true")
    args = ap.parse_args(argv)
    shared, work = Path(args.shared), Path(args.work)
    print(f"{'set':<11}{'model':<15}{'TAR@1e-3':>9}{'F>=3':>7}{'F all':>7}{'top-1':>7}{'unknown':>8}"
          f"{'pooled':>8}{'unknown':>8}{'faces/s':>9}")
    keep_for_grid = {}
    for name in args.sets.split(","):
        for model in args.models.split(","):
            X, ident, rate, store, faces = vectors(name, model, shared, work)
            labels = default_labels(X, model)
            f3, fa = bcubed_pair(ident, labels)
            ids = identification(name, model, X, ident, labels, shared, work)
            print(f"{name:<11}{model:<15}{tar_at_far(X, ident):>9.3f}{f3:>7.3f}{fa:>7.3f}"
                  + "".join(f"{v:>8.3f}" for v in ids) + (f"{rate:>9.1f}" if rate else f"{'cached':>9}"), flush=True)
            if model == "mobilefacenet":
                keep_for_grid[name] = (X, ident)
                if args.alignment:
                    a4, a5 = alignment(store, faces, ident)
                    print(f"{'':<11}{'  alignment':<15} TAR four points {a4:.3f}, ONet's five {a5:.3f}")
    if args.grid and {"lfw-dev", "celeba-dev"} <= set(keep_for_grid):
        grid(keep_for_grid)
    return 0


if __name__ == "__main__":
    sys.exit(main())
