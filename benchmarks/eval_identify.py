"""Open-set identification on labelled face sets: top-1 of enrolled people and the share of
unenrolled faces flagged unknown, across thresholds and margins, per face and pooled over
clusters (dlib embeddings).

    python benchmarks/eval_identify.py [--work scratch/eval] [--sets faces,lfw-dev,celeba-dev]

faces/ is identified against ../shared/data/references, lfw-dev/faces against
lfw-dev/references (150 of 594 people enrolled with one photo each), celeba-dev/faces against
celeba-dev/references (45 of 292 people enrolled, one photo each). Pooled: over the default
clustering. The default threshold and margin were calibrated on lfw-dev: celeba-dev is the set
they were not chosen on. The last table gives, per setting, the worse set's figures.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.eval_clustering import load_set  # noqa: E402

REFS = {"faces": "references", "lfw-dev": "lfw-dev/references", "celeba-dev": "celeba-dev/references"}
THRESHOLDS = (0.05, 0.055, 0.06, 0.065, 0.07, 0.075, 0.08, 0.09, 0.10)
MARGINS = (0.0, 0.005, 0.01, 0.02)


def main() -> None:
    from analysis.cluster import make_clusterer
    from analysis.identify import embed_references, identify_faces, load_references, pooled_identify, save_references
    from analysis.neighbors import knn_graph
    from analysis.identify import default_margin, default_threshold
    from analysis.pipeline import cluster_params, default_algorithm

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="scratch/eval")
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--sets", default="faces,lfw-dev,celeba-dev")
    args = ap.parse_args()
    shared, work = Path(args.shared), Path(args.work)
    algorithm = default_algorithm("dlib")
    scores = {}  # (set, threshold, margin) -> (per-face top-1, unknown, pooled top-1, unknown)
    for name in args.sets.split(","):
        X, truth = load_set(name, shared, work)
        h5 = work / name / "refs.h5"
        if not h5.exists():
            save_references(embed_references(shared / REFS[name], progress=False), h5)
        refs = load_references(h5)
        enrolled = np.isin(truth, refs.people)
        labels = make_clusterer(algorithm, **cluster_params(algorithm)).fit(
            X, graph=knn_graph(X, min(15, len(X) - 1), "exact")).labels_
        print(f"\n{name}: {len(X)} faces, {enrolled.sum()} of enrolled people, {(~enrolled).sum()} unenrolled; "
              f"{len(refs.people)} people in the library; pooled over {algorithm}")
        print(f"{'threshold':>9} {'margin':>6} | {'per face top-1':>14} {'unknown':>7} | {'pooled top-1':>12} {'unknown':>7}")
        for t in THRESHOLDS:
            for m in MARGINS:
                row = []
                for r in (identify_faces(X, refs, t, m), pooled_identify(X, labels, refs, t, m)):
                    lab = r["label"].to_numpy()
                    row += [(lab[enrolled] == truth[enrolled]).mean(), (lab[~enrolled] == "unknown").mean()]
                scores[name, t, m] = row
                print(f"{t:9.3f} {m:6.3f} | {row[0]:14.3f} {row[1]:7.3f} | {row[2]:12.3f} {row[3]:7.3f}")
    dev = [n for n in args.sets.split(",") if n != "faces"]
    if len(dev) > 1:
        print(f"\nWorse of {' and '.join(dev)} (goal: top-1 >= 0.95 and unknown >= 0.95); default threshold "
              f"{default_threshold('dlib')}, margin {default_margin('dlib')}")
        print(f"{'threshold':>9} {'margin':>6} | {'per face top-1':>14} {'unknown':>7} | {'pooled top-1':>12} {'unknown':>7}")
        for t in THRESHOLDS:
            for m in MARGINS:
                w = np.min([scores[n, t, m] for n in dev], axis=0)
                print(f"{t:9.3f} {m:6.3f} | {w[0]:14.3f} {w[1]:7.3f} | {w[2]:12.3f} {w[3]:7.3f}")

if __name__ == "__main__":
    main()
