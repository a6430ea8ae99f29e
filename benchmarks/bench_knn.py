"""The kNN graph (K=15) by each method: seconds, peak memory, recall on a sample.

    python benchmarks/bench_knn.py [--sizes 100000,1000000] [--dims 128,512]
        [--methods exact,faiss,faiss-ivf,faiss-hnsw,pynndescent] [--sample 1000] [--probe P]

Each (size, dim, method) runs in a fresh process, as a `crowdsort cluster` does, so
pynndescent's numba compilation is counted, and the peak RSS is that run's own. Vectors are
the synthetic identity-like unit vectors of bench_faces.py (seed 0, float32). Recall: for
``--sample`` rows, the share of their true 15 nearest neighbours (brute force) the graph lists,
and of those within cosine distance 0.5 (the same identity in these vectors).
``exact`` and ``faiss`` (flat up to 50k rows, IVF above) are skipped above 200k rows (n² work; IVF
has its own name, ``faiss-ivf``). Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
K = 15
CLOSE = 0.5


def one(n: int, dim: int, method: str, sample: int, probe: int | None = None) -> dict:
    import resource
    import time

    import numpy as np

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from bench_faces import identity_like

    from crowdsort.clustering import neighbors
    from crowdsort.clustering.neighbors import knn_graph

    if probe:
        neighbors.IVF_PROBE = probe

    X = identity_like(n, dim)
    t = time.perf_counter()
    g = knn_graph(X, K, method)
    secs = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # the graph's, not the check's
    rows = np.random.default_rng(1).choice(n, min(sample, n), replace=False)
    truth, close = [], []
    for chunk in np.array_split(rows, max(1, len(rows) // 100)):  # brute force, 100 rows at a time
        sim = X[chunk] @ X.T
        sim[np.arange(len(chunk)), chunk] = -np.inf
        top = np.argpartition(-sim, K - 1, axis=1)[:, :K]
        truth += list(top)
        # The neighbours clustering acts on: those within cosine distance CLOSE (same identity here);
        # the rest of a true top 15 are near-ties among strangers, and which of them is listed hardly matters.
        close += [set(t[s[t] > 1 - CLOSE]) for t, s in zip(top, sim)]
    recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(truth, g.indices[rows])]))
    found = sum(len(c & set(b)) for c, b in zip(close, g.indices[rows]))
    close_recall = found / max(1, sum(map(len, close)))
    return {"n": n, "dim": dim, "method": g.method, "seconds": secs, "recall": recall, "close_recall": close_recall,
            "peak_gb": peak}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--methods", default="exact,faiss,faiss-ivf,faiss-hnsw,pynndescent")
    ap.add_argument("--sample", type=int, default=1000)
    ap.add_argument("--probe", type=int, default=None, help="faiss-ivf: cells searched (default neighbors.IVF_PROBE)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # n,dim,method: run in this process
    a = ap.parse_args(argv)
    if a.one:
        n, dim, method = a.one.split(",")
        print(json.dumps(one(int(n), int(dim), method, a.sample, a.probe)))
        return 0
    print(f"| n | dim | method | seconds | peak GB | recall@{K} | recall, distance < {CLOSE} |\n|---|---|---|---|---|---|---|")
    for n in map(int, a.sizes.split(",")):
        for dim in map(int, a.dims.split(",")):
            for method in a.methods.split(","):
                if method in ("exact", "faiss") and n > 200_000:
                    continue
                extra = ["--probe", str(a.probe)] if a.probe else []
                out = subprocess.run([sys.executable, __file__, "--one", f"{n},{dim},{method}", "--sample",
                                      str(a.sample), *extra], capture_output=True, text=True)
                if out.returncode:
                    print(f"| {n} | {dim} | {method} | failed: {out.stderr.strip().splitlines()[-1:]} | | | |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {n:,} | {dim} | {method} | {r['seconds']:.1f} | {r['peak_gb']:.2f} | {r['recall']:.4f} | {r['close_recall']:.4f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
