"""Graph build and every clustering algorithm at scale: seconds and peak memory.

    python benchmarks/bench_cluster.py [--sizes 10000,100000,1000000] [--dims 128,512]
        [--algorithms hdbscan,rnn-dbscan,...] [--loop-n 10000]

Synthetic identity-like unit vectors (groups of 2–8 around random centres plus 30%
singletons; seed 0, float32). The kNN graph (K=15) is built once per size and timed apart;
pynndescent's first call includes numba compilation. ``--loop-n`` times the pure-Python
RNN-DBSCAN loop (the paper's pseudo-code, as in tests/test_algorithms.py) against ours on
the same graph. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def main(argv=None) -> int:
    from bench_faces import identity_like

    from crowdsort.clustering.cluster import make_clusterer
    from crowdsort.clustering.neighbors import knn_graph
    from crowdsort.pipeline import cluster_params

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--dims", default="128,512")
    ap.add_argument("--algorithms", default="snn-whispers,hdbscan,rnn-dbscan,dbscan,agglomerative,chinese-whispers")
    ap.add_argument("--loop-n", type=int, default=10000)
    args = ap.parse_args(argv)
    for dim in [int(d) for d in args.dims.split(",")]:
        for n in [int(s) for s in args.sizes.split(",")]:
            X = identity_like(n, dim)
            t = time.perf_counter()
            g = knn_graph(X, 15)
            print(f"n={n:>8} d={dim}: kNN graph ({g.method}) {time.perf_counter() - t:7.1f} s, peak RSS {peak_gb():.2f} GB")
            for algo in args.algorithms.split(","):
                t = time.perf_counter()
                labels = make_clusterer(algo, **cluster_params(algo)).fit(X, graph=g).labels_
                print(f"    {algo:<17} {time.perf_counter() - t:7.1f} s  {labels.max() + 1:>7} clusters  "
                      f"noise {np.mean(labels < 0):.2f}  peak RSS {peak_gb():.2f} GB")
            del X, g
    if args.loop_n:
        from test_algorithms import rnn_dbscan_reference

        from crowdsort.clustering.cluster import rnn_dbscan_labels

        X = identity_like(args.loop_n, 128)
        g = knn_graph(X, 5)
        t = time.perf_counter()
        ours = rnn_dbscan_labels(g, 5)[0]
        t_ours = time.perf_counter() - t
        t = time.perf_counter()
        ref = rnn_dbscan_reference(g.indices, g.distances, 5)
        t_loop = time.perf_counter() - t
        from sklearn.metrics import adjusted_rand_score

        print(f"RNN-DBSCAN K=5 at n={args.loop_n}: pure-Python loop {t_loop:.2f} s, ours {t_ours:.4f} s, "
              f"{t_loop / t_ours:.0f}x; same labels: {adjusted_rand_score(ref, ours) == 1.0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
