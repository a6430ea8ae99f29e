"""Time to build a cluster's detail (what a click on a cluster waits for on the server), with
and without a reference library: the median over the largest clusters, the first one apart.

    python benchmarks/bench_open_cluster.py DATASET [--refs REFS] [--n 10]

Prints figures; the browser adds the transfer and drawing (benchmarks/bench_dashboard.py).
"""
from __future__ import annotations

import argparse
import statistics
import time

from crowdsort.review.opening import open_review
from crowdsort.review.app import Dashboard


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset")
    ap.add_argument("--refs", default=None)
    ap.add_argument("--n", type=int, default=10)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    session = open_review(args.dataset, refs=args.refs, progress=False)
    dash = Dashboard(session)
    print(f"{len(session.ids)} items, {session.summary()['clusters']} clusters; open + first clustering "
          f"{time.perf_counter() - t:.1f} s")
    times = []
    for c in session.clusters()["cluster"][: args.n]:
        t = time.perf_counter()
        dash.selected = int(c)
        dash.detail()
        times.append(time.perf_counter() - t)
    print(f"detail: first {1000 * times[0]:.0f} ms, median of the next {len(times) - 1} "
          f"{1000 * statistics.median(times[1:]):.0f} ms, max {1000 * max(times[1:]):.0f} ms")
    for label, fn in [("people page", dash.people), ("map", dash.map_view), ("cluster list", dash.cluster_table)]:
        t = time.perf_counter()
        fn()
        print(f"{label}: {1000 * (time.perf_counter() - t):.0f} ms")


if __name__ == "__main__":
    main()
