"""One default clustering for every set (issue 13): candidates scored on lfw-dev AND celeba-dev.

    python benchmarks/eval_defaults.py [--work scratch/eval-defaults] [--k 15] [--quick]

Extracts the most prominent face of each photo (cached under --work/<set>/faces), embeds with
dlib (cached), labels each face by its folder (``faces/<identity>/``), builds one kNN graph per
set and scores every candidate with BCubed P/R/F over people with >= 3 photos and over all faces
(one-photo people included). A candidate is judged by the WORSE of the two sets; the winner has
the largest min(worse F>=3 - 0.97, worse F all - 0.95), the smaller margin to issue 13's goal.

Candidates are small numpy/scipy functions over (X, graph) defined here, so that the best can be
moved into analysis/clustering/cluster.py as an estimator:

* baselines through crowdsort.clustering.cluster.make_clusterer (HDBSCAN, average linkage, Chinese whispers)
  and the shared-neighbour Chinese whispers (``snn-whispers``, the default) around its setting,
  and with the split of chained clusters (``split_threshold``, off by default) around the
  split's threshold and group size; the split's variant that drops strays to noise, and noise faces
  attached by their neighbours' clusters (``vote_attach``);
* ``agglo``: average/centroid linkage over kNN-adjacent clusters with a size-aware threshold
  (one threshold when either side is a single face, another when both sides hold >= 2 faces),
  optionally started from another clustering's partition (two-stage);
* ``purity``: members farther than a threshold from their cluster's normalised centroid go back
  to noise;
* ``mutual-cw``: Chinese whispers over mutual-kNN edges under a threshold.
"""
from __future__ import annotations

import argparse
import heapq
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NOISE = -1
SETS = ("lfw-dev", "celeba-dev")


# -- data ----------------------------------------------------------------------------------------
def load_set(name: str, shared: Path, work: Path):
    from crowdsort.faces.embed import embed_faces, load_embedder
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    store = FaceStore(work / name / "faces")
    extract_faces(str(shared / name / "faces"), store, ExtractParams(max_faces=1), workers=2, progress=False)
    faces = store.load_faces()
    faces = faces[faces["image_path"].map(lambda p: Path(p).parent.parent.name == "faces")].reset_index(drop=True)
    X = embed_faces(store, faces, load_embedder("dlib"), progress=False)
    ident = faces["image_path"].map(lambda p: Path(p).parent.name).to_numpy()
    return np.asarray(X, dtype=np.float32), ident


def unit(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def dense(labels: np.ndarray) -> np.ndarray:
    """Noise (-1) kept; clusters renumbered 0..m-1."""
    out = np.full(len(labels), NOISE, dtype=np.int64)
    ok = labels >= 0
    out[ok] = np.unique(labels[ok], return_inverse=True)[1]
    return out


def small_to_noise(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return labels
    ok = labels >= 0
    counts = np.bincount(labels[ok], minlength=1)
    out = labels.copy()
    out[ok & (counts[np.maximum(labels, 0)] < min_size)] = NOISE
    return dense(out)


# -- candidates ----------------------------------------------------------------------------------
def agglo(X, graph, t_single, t_group, linkage="average", init=None, min_group=2, min_size=2):
    """Greedy agglomeration over kNN-adjacent clusters, closest pair first.

    Linkage between clusters A, B with member sums SA, SB (unit rows):
      average:  1 - SA·SB / (|A| |B|)       (mean pairwise cosine distance)
      centroid: 1 - SA·SB / (‖SA‖ ‖SB‖)     (cosine distance of the mean vectors)
    A pair merges when its linkage is below t_single if either side holds fewer than
    ``min_group`` faces, else below t_group. ``init``: starting partition (noise = own cluster).
    Clusters smaller than ``min_size`` end as noise.
    """
    U = unit(X)
    n = len(U)
    if init is None:
        start = np.arange(n)
    else:
        start = np.where(init >= 0, init, init.max() + 1 + np.arange(n))
        start = np.unique(start, return_inverse=True)[1]
    m = start.max() + 1
    sums = np.zeros((m, U.shape[1]))
    np.add.at(sums, start, U)
    size = np.bincount(start, minlength=m).astype(np.float64)
    a, b, _ = graph.undirected_edges()
    ca, cb = start[a], start[b]
    ok = ca != cb
    pairs = np.unique(np.minimum(ca[ok], cb[ok]).astype(np.int64) * m + np.maximum(ca[ok], cb[ok]))
    pa, pb = pairs // m, pairs % m
    adj: list[set[int]] = [set() for _ in range(m)]
    for i, j in zip(pa.tolist(), pb.tolist()):
        adj[i].add(j)
        adj[j].add(i)

    def link(i_arr, j):  # linkage of clusters i_arr (array) to cluster j
        dot = sums[i_arr] @ sums[j]
        if linkage == "average":
            return 1.0 - dot / (size[i_arr] * size[j])
        return 1.0 - dot / (np.linalg.norm(sums[i_arr], axis=1) * np.linalg.norm(sums[j]))

    def thr(i_arr, j):
        return np.where(np.minimum(size[i_arr], size[j]) >= min_group, t_group, t_single)

    version = np.zeros(m, dtype=np.int64)
    heap = []
    if len(pa):
        dot = np.einsum("ij,ij->i", sums[pa], sums[pb])
        if linkage == "average":
            d = 1.0 - dot / (size[pa] * size[pb])
        else:
            d = 1.0 - dot / (np.linalg.norm(sums[pa], axis=1) * np.linalg.norm(sums[pb], axis=1))
        t = np.where(np.minimum(size[pa], size[pb]) >= min_group, t_group, t_single)
        keep = d < t
        heap = [(w, i, j, 0, 0) for w, i, j in zip(d[keep].tolist(), pa[keep].tolist(), pb[keep].tolist())]
        heapq.heapify(heap)
    parent = np.arange(m)
    alive = np.ones(m, dtype=bool)
    while heap:
        w, i, j, vi, vj = heapq.heappop(heap)
        if not (alive[i] and alive[j]) or version[i] != vi or version[j] != vj:
            continue
        if len(adj[i]) < len(adj[j]):
            i, j = j, i
        parent[j] = i
        alive[j] = False
        sums[i] += sums[j]
        size[i] += size[j]
        version[i] += 1
        adj[i] |= adj[j]
        adj[i].discard(i)
        adj[i].discard(j)
        for q in adj[j]:
            if q != i:
                adj[q].discard(j)
                adj[q].add(i)
        adj[j] = set()
        if adj[i]:
            nb = np.fromiter(adj[i], dtype=np.int64)
            d = link(nb, i)
            t = thr(nb, i)
            for q, dq in zip(nb[d < t].tolist(), d[d < t].tolist()):
                lo, hi = (i, q) if i < q else (q, i)
                heapq.heappush(heap, (dq, lo, hi, int(version[lo]), int(version[hi])))
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    labels = np.unique(root[start], return_inverse=True)[1].astype(np.int64)
    return small_to_noise(labels, min_size)


def purity(X, labels, t, min_size=3, rounds=1):
    """Members of clusters of >= ``min_size`` faces whose cosine distance to the cluster's
    normalised mean exceeds ``t`` become noise (repeated ``rounds`` times)."""
    U = unit(X)
    labels = labels.copy()
    for _ in range(rounds):
        ok = labels >= 0
        if not ok.any():
            break
        m = labels[ok].max() + 1
        sums = np.zeros((m, U.shape[1]))
        np.add.at(sums, labels[ok], U[ok])
        cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
        size = np.bincount(labels[ok], minlength=m)
        d = np.full(len(U), 0.0)
        d[ok] = 1.0 - np.einsum("ij,ij->i", U[ok], cent[labels[ok]])
        drop = ok & (size[np.maximum(labels, 0)] >= min_size) & (d > t)
        if not drop.any():
            break
        labels[drop] = NOISE
    return small_to_noise(dense(labels), 2)


def mutual_cw(graph, t, k=None, min_size=2):
    """Chinese whispers (dlib) over mutual-kNN edges (each lists the other among its first k)
    shorter than t, weighted by similarity."""
    import dlib

    n = len(graph)
    k = graph.n_neighbors if k is None else k
    src, dst, d = graph.edges(k)
    key = src.astype(np.int64) * n + dst
    rev = dst.astype(np.int64) * n + src
    mutual = np.isin(rev, key) & (src < dst) & (d < t)
    edges = [(int(i), int(j), float(1 - w)) for i, j, w in zip(src[mutual], dst[mutual], d[mutual])]
    edges.append((n - 1, n - 1, 1e-6))
    labels = np.asarray(dlib.chinese_whispers(edges), dtype=np.int64)
    return small_to_noise(dense(labels), min_size)


def attach_noise(X, labels, graph, t, margin=0.0):
    """Noise faces join the cluster whose normalised mean is nearest (among the clusters of
    their kNN) when that distance is below t and beats the runner-up by ``margin``."""
    U = unit(X)
    labels = labels.copy()
    ok = labels >= 0
    if not ok.any():
        return labels
    m = labels[ok].max() + 1
    sums = np.zeros((m, U.shape[1]))
    np.add.at(sums, labels[ok], U[ok])
    cent = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    noise = np.flatnonzero(~ok)
    nb = graph.indices[noise]
    cl = np.where(nb >= 0, labels[np.maximum(nb, 0)], NOISE)
    new = labels.copy()
    for r, i in enumerate(noise):
        cs = np.unique(cl[r][cl[r] >= 0])
        if not len(cs):
            continue
        d = 1.0 - cent[cs] @ U[i]
        o = np.argsort(d)
        second = d[o[1]] if len(o) > 1 else np.inf
        if d[o[0]] < t and second - d[o[0]] >= margin:
            new[i] = cs[o[0]]
    return new


def split_to_noise(X, graph, labels, t):
    """Average linkage up to t inside each cluster (over its own kNN edges); pieces of one
    face become noise (the variant of crowdsort.clustering.cluster.split_chained that drops strays)."""
    from crowdsort.clustering.cluster import _average_linkage
    from crowdsort.clustering.neighbors import KNNGraph

    ind = graph.indices
    inside = (ind >= 0) & (labels[:, None] >= 0) & (labels[np.maximum(ind, 0)] == labels[:, None])
    sub = _average_linkage(X, KNNGraph(np.where(inside, ind, -1), graph.distances, graph.method), t)
    return small_to_noise(dense(np.where(labels >= 0, sub, NOISE)), 2)


def vote_attach(graph, labels, votes, t):
    """A noise face joins the cluster holding most of its kNN when that is >= ``votes`` of
    them at a mean distance <= t."""
    out = labels.copy()
    for i in np.flatnonzero(labels < 0):
        nb, d = graph.indices[i], graph.distances[i]
        cl = np.where(nb >= 0, labels[np.maximum(nb, 0)], NOISE)
        if not (cl >= 0).any():
            continue
        ids, counts = np.unique(cl[cl >= 0], return_counts=True)
        best = ids[counts.argmax()]
        if counts.max() >= votes and d[cl == best].mean() <= t:
            out[i] = best
    return out


# -- grid ----------------------------------------------------------------------------------------
def candidates(quick: bool):
    from crowdsort.clustering.cluster import make_clusterer

    def est(algo, **p):
        return lambda X, g: make_clusterer(algo, **p).fit(X, graph=g).labels_

    C = []  # (method, parameters, fn(X, graph) -> labels)
    C.append(("hdbscan", "mcs=2, ms=1", est("hdbscan", min_cluster_size=2, min_samples=1)))
    # shared-neighbour Chinese whispers (crowdsort.clustering.cluster.SharedNeighborWhispers, the default)
    grid = [(w, t, mt, 2) for w in (0.0, 0.2, 0.3, 0.4) for t in (0.055, 0.06, 0.065) for mt in (0.065, 0.07, 0.075)
            if mt > t] + [(0.3, 0.06, 0.07, r) for r in (1, 3)]
    if quick:
        grid = [(w, 0.06, 0.07, 2) for w in (0.0, 0.3)]
    for w, t, mt, r in grid:
        C.append(("snn-whispers" + (" (default)" if (w, t, mt, r) == (0.3, 0.06, 0.07, 2) else ""),
                  f"w={w}, t={t}, mutual t={mt}, rank<{r}",
                  est("snn-whispers", threshold=t, mutual_threshold=mt, mutual_rank=r, shared_weight=w,
                      split_threshold=None)))
    # the default snn-whispers (w=0.3, t=0.06, mutual 0.07, rank<2) then split_chained, over
    # the split's threshold and group size
    splits = [(0.0725, 4)] if quick else [(st, mg) for st in (0.065, 0.0675, 0.07, 0.0725, 0.075, 0.08)
                                           for mg in (3, 4, 5, 6)]
    for st, mg in splits:
        C.append(("snn-whispers + split", f"split t={st}, min group={mg}",
                  est("snn-whispers", split_threshold=st, min_group=mg)))
    if not quick:
        base = est("snn-whispers", split_threshold=None)
        for st in (0.07, 0.08, 0.085, 0.09):  # strays dropped to noise instead of reassigned
            C.append(("snn-whispers + split, strays to noise", f"average linkage t={st} inside clusters",
                      lambda X, g, st=st: split_to_noise(X, g, base(X, g), st)))
        for v, ta in ((4, 0.07), (5, 0.08), (6, 0.08)):
            C.append(("snn-whispers + vote attach", f"noise joins a cluster holding >= {v} of its kNN, mean d <= {ta}",
                      lambda X, g, v=v, ta=ta: vote_attach(g, base(X, g), v, ta)))
    for t in (0.05, 0.06, 0.07, 0.08, 0.09):
        C.append(("agglomerative", f"t={t}", est("agglomerative", distance_threshold=t, min_cluster_size=2)))
    for t in (0.05, 0.06, 0.07):
        C.append(("chinese-whispers", f"t={t}", est("chinese-whispers", threshold=t, min_cluster_size=2)))
    ts = (0.05, 0.06) if quick else (0.045, 0.05, 0.055, 0.06, 0.065)
    tg_avg = (0.07, 0.08, 0.09) if quick else (0.07, 0.075, 0.08, 0.085, 0.09, 0.10)
    tg_cen = (0.03, 0.04, 0.05) if quick else (0.02, 0.03, 0.035, 0.04, 0.045, 0.05, 0.06)
    for s in ts:
        for g in tg_avg:
            C.append(("size-aware avg", f"t1={s}, t2={g}",
                      lambda X, gr, s=s, g=g: agglo(X, gr, s, g, "average")))
    for s in ts:
        for g in tg_cen:
            C.append(("avg->centroid", f"avg t1={s}; centroid t2={g} (>=2 each)",
                      lambda X, gr, s=s, g=g: agglo(X, gr, -1.0, g, "centroid", init=agglo(X, gr, s, s, "average"))))
    for s in (0.03, 0.035, 0.04, 0.045):
        C.append(("centroid", f"t={s}", lambda X, gr, s=s: agglo(X, gr, s, s, "centroid")))
    for g in tg_cen:
        C.append(("hdbscan->centroid", f"hdbscan(2,1); centroid t2={g} (>=2 each)",
                  lambda X, gr, g=g: agglo(X, gr, -1.0, g, "centroid",
                                           init=make_clusterer("hdbscan", min_cluster_size=2, min_samples=1)
                                           .fit(X, graph=gr).labels_)))
    for t in (0.05, 0.06, 0.07):
        C.append(("mutual-cw", f"t={t}", lambda X, gr, t=t: mutual_cw(gr, t)))
    # three stages: a tight base clustering, centroid merges of clusters (>= 2 faces each),
    # then noise faces attach to the nearest cluster mean (of the clusters in their kNN)
    bases = {"cw": lambda t: est("chinese-whispers", threshold=t, min_cluster_size=2),
             "avg": lambda t: est("agglomerative", distance_threshold=t, min_cluster_size=2)}
    for bname, bts in (("cw", (0.05, 0.055, 0.06)), ("avg", (0.06,))):
        for bt in bts:
            for g in (0.02, 0.03, 0.04):
                for ta in (0.045, 0.05):
                    for mg in (0.0,):
                        C.append((f"{bname}->centroid->attach",
                                  f"{bname} t={bt}; centroid t2={g}; attach t={ta}, margin={mg}",
                                  lambda X, gr, b=bases[bname](bt), g=g, ta=ta, mg=mg:
                                  attach_noise(X, agglo(X, gr, -1.0, g, "centroid", init=b(X, gr)), gr, ta, mg)))
    return C


def with_purity(C, settings):
    """Add purity-filtered copies of the named candidates."""
    out = []
    for method, params, fn in C:
        for base, tp in settings:
            if (method, params) == base:
                out.append((method + "+purity", f"{params}; purity t={tp}",
                            lambda X, g, fn=fn, tp=tp: purity(X, fn(X, g), tp)))
    return out


def score(ident, labels, keep):
    from crowdsort.clustering.metrics import bcubed

    return bcubed(ident[keep], labels[keep]), bcubed(ident, labels)


def main(argv=None) -> int:
    from crowdsort.clustering.neighbors import knn_graph

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "eval-defaults"))
    ap.add_argument("--k", type=int, default=15, help="neighbours in the kNN graph")
    ap.add_argument("--quick", action="store_true", help="a smaller grid")
    args = ap.parse_args(argv)

    data = {}
    for name in SETS:
        X, ident = load_set(name, Path(args.shared), Path(args.work))
        counts = pd.Series(ident).value_counts()
        keep = (counts[ident] >= 3).to_numpy()
        t = time.perf_counter()
        graph = knn_graph(X, args.k)
        data[name] = (X, ident, keep, graph)
        print(f"{name}: {len(X)} faces, {len(counts)} people, {keep.sum()} faces of {int((counts >= 3).sum())} "
              f"people with >= 3 photos; kNN graph k={args.k} in {time.perf_counter() - t:.2f} s")

    C = candidates(args.quick)
    rows = []

    def run(cands):
        for method, params, fn in cands:
            r = {"method": method, "parameters": params}
            secs = []
            for name in SETS:
                X, ident, keep, graph = data[name]
                t = time.perf_counter()
                labels = fn(X, graph)
                secs.append(time.perf_counter() - t)
                (p3, r3, f3), (pa, ra, fa) = score(ident, labels, keep)
                r[name] = (p3, r3, f3, pa, ra, fa)
            r["worse3"] = min(r[s][2] for s in SETS)
            r["worseall"] = min(r[s][5] for s in SETS)
            r["secs"] = secs
            rows.append(r)

    run(C)
    # purity on the five best by min(worse3, worseall)
    best = sorted(rows, key=lambda r: -min(r["worse3"], r["worseall"]))[:5]
    run(with_purity(C, [((r["method"], r["parameters"]), tp) for r in best for tp in (0.06, 0.07, 0.08)]
                    + [(("hdbscan", "mcs=2, ms=1"), tp) for tp in (0.04, 0.05, 0.06)]))

    def f(v):
        return f"{v[0]:.3f}/{v[1]:.3f}/{v[2]:.3f}"

    print()
    print("| method | parameters | lfw >=3 P/R/F | lfw all P/R/F | celeba >=3 P/R/F | celeba all P/R/F "
          "| worse-set F>=3 | worse-set F all | seconds (lfw, celeba) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        lf, ce = r["lfw-dev"], r["celeba-dev"]
        print(f"| {r['method']} | {r['parameters']} | {f(lf[:3])} | {f(lf[3:])} | {f(ce[:3])} | {f(ce[3:])} "
              f"| {r['worse3']:.3f} | {r['worseall']:.3f} | {r['secs'][0]:.2f}, {r['secs'][1]:.2f} |")
    def margin(r):  # the shortfall from the goal on its worse side: one figure, no gate on a third decimal
        return min(r["worse3"] - 0.97, r["worseall"] - 0.95)

    print("\nSelection: the largest min(worse-set F>=3 - 0.97, worse-set F all - 0.95), i.e. the candidate "
          "whose worse figure comes nearest to (or furthest past) the goal.")
    top = sorted(rows, key=lambda r: -margin(r))[:10]
    win = top[0]
    goal = margin(win) >= 0
    print(f"Winner: {win['method']} [{win['parameters']}]: worse-set F>=3 {win['worse3']:.3f}, F all "
          f"{win['worseall']:.3f} (goal F>=3 >= 0.97 and F all >= 0.95 {'met' if goal else 'NOT met'})")
    ties = [r for r in rows if abs(margin(r) - margin(win)) < 5e-5]
    if len(ties) > 1:  # a plateau: pick its middle, not the edge the candidate order lists first
        print(f"{len(ties)} candidates tie at that margin (to 4 decimals): " + "; ".join(
            f"{r['method']} [{r['parameters']}]" for r in ties))
    default = next((r for r in rows if r["method"].endswith("(default)")), None)
    if default is not None and default is not win:
        # the rule is not the whole choice: the split's 0.0009 comes from lfw-dev alone (celeba-dev,
        # the worse set, is unchanged) and its pieces name more strangers when identification
        # pools over clusters (lfw-dev unknown .947 -> .940, benchmarks/eval_identify.py)
        print(f"The default, {default['method']} [{default['parameters']}]: F>=3 {default['worse3']:.4f}, F all "
              f"{default['worseall']:.4f}, margin {margin(default):+.4f} ({margin(win) - margin(default):.4f} "
              "behind; kept, see SharedNeighborWhispers' docstring)")
    print("\nTen best by that margin (4 decimals: the table's 3 hide the differences):")
    for r in top:
        print(f"  {r['method']:<32} {r['parameters']:<55} F>=3 {r['worse3']:.4f}  F all {r['worseall']:.4f}  "
              f"margin {margin(r):+.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
