"""Clustering estimators over a kNN graph (scikit-learn API) and cluster prototypes.

HDBSCAN here never sees an N×N matrix: core distances come from the kNN graph, the minimum
spanning tree of mutual reachability is taken over the graph's edges, and condense.py builds,
condenses and selects the tree as the hdbscan package does (the package itself only for the
selections other than its default). Components the graph leaves
disconnected are joined at a distance larger than any edge, so they split first.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree
from sklearn.base import BaseEstimator, ClusterMixin

from .neighbors import KNNGraph, knn_graph

NOISE = -1
# Cosine distance below which two faces count as the same picture (dlib same-person pairs
# sit at 0.03-0.15; re-encoded copies of one photo below 0.005).
DISTANCE_FLOOR = 0.01


def _mst_edges(graph: KNNGraph, min_samples: int) -> np.ndarray:
    """Minimum spanning tree of mutual reachability over the kNN edges, as sorted (i, j, w)."""
    n, k = graph.indices.shape
    core = graph.distances[:, min(min_samples, k) - 1].astype(np.float64)
    rows, cols, d = graph.edges()
    # Distances below the floor are treated as equal: otherwise exact duplicates (the same
    # photo twice) get near-infinite density and split off as clusters of their own.
    w = np.maximum(np.maximum(np.maximum(core[rows], core[cols]), d.astype(np.float64)), DISTANCE_FLOOR)
    g = coo_matrix((w, (rows, cols)), shape=(n, n)).tocsr()
    mst = minimum_spanning_tree(g).tocoo()
    edges = np.column_stack([mst.row, mst.col, mst.data]).astype(np.float64)
    n_comp, comp = connected_components(mst, directed=False)
    if n_comp > 1:
        reps = np.array([np.flatnonzero(comp == c)[0] for c in range(n_comp)])
        top = (edges[:, 2].max() if len(edges) else 1.0) * 2 + 1.0
        bridges = np.column_stack([reps[:-1], reps[1:], np.full(n_comp - 1, top)])
        edges = np.vstack([edges, bridges])
    return edges[np.argsort(edges[:, 2], kind="stable")]


def _check_vectors(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or len(X) < 2:
        raise ValueError(f"expected a 2-D array of at least 2 vectors, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("input contains NaN or infinite values")
    return X


class HDBSCAN(ClusterMixin, BaseEstimator):
    """HDBSCAN over a kNN graph (cosine distance on normalised vectors).

    ``min_samples`` counts neighbours excluding the point itself, as the hdbscan package
    does. ``fit(X, graph=...)`` reuses a precomputed :class:`KNNGraph`.
    """

    def __init__(self, min_cluster_size=5, min_samples=None, *, n_neighbors=15, ann="auto",
                 cluster_selection_method="eom", cluster_selection_epsilon=0.0,
                 allow_single_cluster=False, random_state=0):
        self.min_cluster_size = min_cluster_size
        self.min_samples = min_samples
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.cluster_selection_method = cluster_selection_method
        self.cluster_selection_epsilon = cluster_selection_epsilon
        self.allow_single_cluster = allow_single_cluster
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None, single_linkage_tree=None):
        """``single_linkage_tree``: the ``single_linkage_tree_`` of an earlier fit on the same
        graph with the same ``min_samples``; only ``min_cluster_size`` and the selection
        differ, so the MST is skipped (the dashboard's sliders)."""
        from .condense import eom_labels, single_linkage

        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be at least 2, got {self.min_cluster_size}")
        min_samples = self.min_cluster_size if self.min_samples is None else self.min_samples
        if min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {min_samples}")
        graph = _graph_for(self, X, graph, max(self.n_neighbors, min_samples))
        n = len(graph)
        self.graph_ = graph
        tree = single_linkage_tree if single_linkage_tree is not None else single_linkage(_mst_edges(graph, min_samples))
        self.single_linkage_tree_ = tree
        if self.cluster_selection_method == "eom" and not self.allow_single_cluster and not self.cluster_selection_epsilon:
            labels, probs, condensed = eom_labels(tree, self.min_cluster_size)
        else:
            try:
                from hdbscan.hdbscan_ import _tree_to_labels
            except ImportError:
                raise ImportError("HDBSCAN's leaf selection, cluster_selection_epsilon and allow_single_cluster "
                                  "need the hdbscan package, an optional extra: pip install 'crowdsort[hdbscan]'") from None
            labels, probs, _, condensed, _ = _tree_to_labels(
                None, tree, min_cluster_size=self.min_cluster_size,
                cluster_selection_method=self.cluster_selection_method,
                allow_single_cluster=self.allow_single_cluster,
                cluster_selection_epsilon=self.cluster_selection_epsilon,
            )
        self.labels_ = np.asarray(labels[:n], dtype=np.int64)
        self.probabilities_ = np.asarray(probs[:n], dtype=np.float64)
        self.condensed_tree_ = condensed
        return self


def relabel_by_size(labels: np.ndarray, top: int | None = None) -> np.ndarray:
    """Renumber clusters 0, 1, … by decreasing size (ties by old label); noise stays -1.

    With ``top``, clusters beyond the ``top`` largest become noise.
    """
    labels = np.asarray(labels)
    ids, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    counts = np.where(ids >= 0, counts, -1)  # noise ranks last
    rank = np.empty(len(ids), dtype=np.int64)
    rank[np.lexsort((ids, -counts))] = np.arange(len(ids))
    new = np.where(ids >= 0, rank, NOISE)
    if top is not None:
        new[new >= top] = NOISE
    return new[inverse.ravel()]


def prototypes(X: np.ndarray, labels: np.ndarray, n: int = 3, scores: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """Per cluster, ``n`` representative members as row indices, best first.

    Default: the medoid and its nearest members. With cosine distance on normalised rows the
    sum of distances from ``x`` to the members is ``m - x·Σy``, so the true medoid is the
    member maximising ``x·mean``. With ``scores`` (RNN-DBSCAN's reverse-neighbour counts),
    the highest-scoring members, ties broken by closeness to the medoid.
    """
    X = np.asarray(X, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out = {}
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        V = X[members]
        medoid = int(np.argmax(V @ V.mean(0)))
        closeness = V @ V[medoid]
        closeness[medoid] = np.inf  # the medoid itself comes first among equals
        if scores is None:
            order = np.argsort(-closeness, kind="stable")
        else:
            order = np.lexsort((-closeness, -np.asarray(scores)[members]))
        out[int(c)] = members[order[:n]]
    return out


def _graph_for(est, X, graph: KNNGraph | None, k: int) -> KNNGraph:
    if graph is not None:
        if graph.n_neighbors < min(k, len(graph) - 1):
            raise ValueError(f"the graph has {graph.n_neighbors} neighbours per point; {type(est).__name__} needs {k}")
        return graph
    return knn_graph(_check_vectors(X), k, est.ann, est.random_state)


def rnn_dbscan_labels(graph: KNNGraph, k: int) -> tuple[np.ndarray, np.ndarray]:
    """RNN-DBSCAN (Bryant & Cios, IEEE TKDE 2018) on the first ``k`` neighbours, vectorised.

    A point is core when at least ``k`` points list it among their ``k`` nearest. Clusters
    are the connected components of core points joined by kNN edges; a non-core point in a
    core point's kNN joins the cluster the paper's sequential scan gives it (clusters are
    numbered by their first core point; see the comments); remaining points join the cluster of
    their nearest core neighbour within that cluster's density (its largest core-to-core
    kNN distance), else stay noise. Returns ``(labels, reverse_counts)``; core points are
    those with ``reverse_counts >= k``.
    """
    k = min(k, graph.n_neighbors)  # a set smaller than K+1 has fewer neighbours to give
    ind = graph.indices[:, :k]
    dist = graph.distances[:, :k]
    n = len(ind)
    valid = ind >= 0
    rows = np.repeat(np.arange(n), k).reshape(n, k)
    rev_count = np.bincount(ind[valid], minlength=n)
    core = rev_count >= k
    # Components of core points over core-core kNN edges (either direction).
    cc = valid & core[rows] & core[np.where(valid, ind, 0)]
    g = coo_matrix((np.ones(cc.sum()), (rows[cc], ind[cc])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    labels = np.full(n, NOISE, dtype=np.int64)
    core_idx = np.flatnonzero(core)
    if len(core_idx):
        # Number clusters by their smallest core index, as the sequential scan creates them.
        first = np.full(comp.max() + 1, n, dtype=np.int64)
        np.minimum.at(first, comp[core_idx], core_idx)
        used = np.unique(comp[core_idx])
        order = np.argsort(first[used])
        cluster_of_comp = np.full(comp.max() + 1, NOISE, dtype=np.int64)
        cluster_of_comp[used[order]] = np.arange(len(used))
        labels[core_idx] = cluster_of_comp[comp[core_idx]]
        # Non-core kNN of a core point: the earliest cluster that reaches it.
        e = valid & core[rows]
        src_cluster = labels[rows[e]]
        tgt = ind[e]
        noncore_t = ~core[tgt]
        best = np.full(n, np.iinfo(np.int64).max)
        np.minimum.at(best, tgt[noncore_t], src_cluster[noncore_t])
        reached = best < np.iinfo(np.int64).max
        labels[reached] = best[reached]
        # ... except that a cluster's starting point labels its whole kNN outright when the
        # cluster is created (the paper's assign[{x} ∪ seeds] = cluster), so the last
        # cluster whose starting point lists a non-core point takes it.
        starts = first[used[order]]
        sn = ind[starts]
        sc = np.repeat(np.arange(len(starts)), k).reshape(len(starts), k)
        take = (sn >= 0) & ~core[np.where(sn >= 0, sn, 0)]
        last = np.full(n, -1, dtype=np.int64)
        np.maximum.at(last, sn[take], sc[take])
        labels[last >= 0] = last[last >= 0]
        # Density of each cluster: its largest core-to-core kNN distance.
        den = np.zeros(len(used))
        lab, dd = labels[rows[cc]], dist[cc]
        if len(lab):  # grouped max by sorting: much faster than np.maximum.at
            order = np.argsort(lab, kind="stable")
            sl = lab[order]
            starts = np.flatnonzero(np.r_[True, sl[1:] != sl[:-1]])
            den[sl[starts]] = np.maximum.reduceat(dd[order], starts)
        # Leftover noise: nearest core neighbour whose cluster density covers the distance.
        noise = np.flatnonzero(labels == NOISE)
        if len(noise):
            nb = ind[noise]
            nbv = nb >= 0
            nb0 = np.where(nbv, nb, 0)
            ok = nbv & core[nb0] & (dist[noise] <= den[np.maximum(labels[nb0], 0)])
            has = ok.any(axis=1)
            pick = ok.argmax(axis=1)
            labels[noise[has]] = labels[nb0[has, pick[has]]]
    return labels, rev_count


class RNNDBSCAN(ClusterMixin, BaseEstimator):
    """RNN-DBSCAN: one parameter, ``n_neighbors`` (K); see :func:`rnn_dbscan_labels`."""

    def __init__(self, n_neighbors=5, *, ann="auto", random_state=0):
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        if self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be at least 1, got {self.n_neighbors}")
        graph = _graph_for(self, X, graph, self.n_neighbors)
        # reverse_counts_: how often each point is someone's neighbour; the highest are
        # RNN-DBSCAN's prototypes.
        self.labels_, self.reverse_counts_ = rnn_dbscan_labels(graph, self.n_neighbors)
        self.core_sample_mask_ = self.reverse_counts_ >= min(self.n_neighbors, graph.n_neighbors)
        return self


def radius_graph(graph: KNNGraph, eps: float):
    """Sparse symmetric distance graph of the kNN edges no longer than ``eps``.

    Exact zeros are stored explicitly (duplicates stay neighbours) and the diagonal is set,
    as scikit-learn's precomputed-sparse neighbourhoods expect.
    """
    from scipy.sparse import csr_matrix

    n = len(graph)
    a, b, d = graph.undirected_edges()
    keep = d <= eps
    r = np.concatenate([a[keep], b[keep], np.arange(n)])
    c = np.concatenate([b[keep], a[keep], np.arange(n)])
    d = np.concatenate([d[keep], d[keep], np.zeros(n)]).astype(np.float64)
    return csr_matrix((d, (r, c)), shape=(n, n))


class GraphDBSCAN(ClusterMixin, BaseEstimator):
    """scikit-learn's DBSCAN over the kNN graph's radius graph (no N×N matrix).

    Equal to DBSCAN on the raw points when ``n_neighbors`` covers every ``eps``-neighbourhood.
    ``min_samples`` counts the point itself, as in scikit-learn.
    """

    def __init__(self, eps=0.06, min_samples=2, *, n_neighbors=15, ann="auto", random_state=0):
        self.eps = eps
        self.min_samples = min_samples
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        from sklearn.cluster import DBSCAN

        graph = _graph_for(self, X, graph, self.n_neighbors)
        est = DBSCAN(eps=self.eps, min_samples=self.min_samples, metric="precomputed").fit(radius_graph(graph, self.eps))
        self.labels_ = est.labels_.astype(np.int64)
        self.core_sample_indices_ = est.core_sample_indices_
        return self


class GraphOPTICS(ClusterMixin, BaseEstimator):
    """scikit-learn's OPTICS over the kNN radius graph up to ``max_eps`` (DBSCAN-style cut at ``eps``)."""

    def __init__(self, eps=0.06, min_samples=2, *, max_eps=0.3, n_neighbors=15, ann="auto", random_state=0):
        self.eps = eps
        self.min_samples = min_samples
        self.max_eps = max_eps
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        from sklearn.cluster import OPTICS

        graph = _graph_for(self, X, graph, self.n_neighbors)
        est = OPTICS(min_samples=self.min_samples, max_eps=self.max_eps, metric="precomputed",
                     cluster_method="dbscan", eps=self.eps).fit(radius_graph(graph, self.max_eps))
        self.labels_ = est.labels_.astype(np.int64)
        self.reachability_ = est.reachability_
        return self


def _average_linkage(X: np.ndarray, graph: KNNGraph, threshold: float) -> np.ndarray:
    """Exact average linkage under cosine distance, merging only clusters joined by a kNN edge.

    For unit vectors the mean pairwise distance between clusters A and B is
    ``1 - (ΣA · ΣB) / (|A| |B|)``, so each linkage is one dot product of cluster sums: no
    pairwise matrix, and no approximation beyond which pairs are candidates.
    """
    import heapq

    X = np.asarray(X, dtype=np.float64)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    n = len(graph)
    a, b, _ = graph.undirected_edges()
    adj: list[set[int]] = [set() for _ in range(n)]
    for i, j in zip(a.tolist(), b.tolist()):
        adj[i].add(j)
        adj[j].add(i)
    sums = X.copy()
    size = np.ones(n)
    version = np.zeros(n, dtype=np.int64)
    link = np.empty(len(a))
    for s in range(0, len(a), 65536):  # chunked: X[a] for every edge at once would be E×d
        link[s:s + 65536] = 1.0 - np.einsum("ij,ij->i", X[a[s:s + 65536]], X[b[s:s + 65536]])
    heap = [(w, i, j, 0, 0) for w, i, j in zip(link.tolist(), a.tolist(), b.tolist()) if w < threshold]
    heapq.heapify(heap)
    parent = np.arange(n)
    while heap:
        w, i, j, vi, vj = heapq.heappop(heap)
        if version[i] != vi or version[j] != vj or parent[i] != i or parent[j] != j:
            continue  # stale: one side merged since this entry was pushed
        if len(adj[i]) < len(adj[j]):
            i, j = j, i
        parent[j] = i
        sums[i] += sums[j]
        size[i] += size[j]
        version[i] += 1
        adj[i] |= adj[j]
        adj[i].discard(i)
        adj[i].discard(j)
        for m in adj[j]:
            if m != i:
                adj[m].discard(j)
                adj[m].add(i)
        adj[j] = set()
        if adj[i]:
            nb = np.fromiter(adj[i], dtype=np.int64)
            d = 1.0 - (sums[nb] @ sums[i]) / (size[nb] * size[i])
            for m, dm in zip(nb[d < threshold].tolist(), d[d < threshold].tolist()):
                lo, hi = (i, m) if i < m else (m, i)
                heapq.heappush(heap, (dm, lo, hi, int(version[lo]), int(version[hi])))
    root = parent.copy()
    while True:
        nxt = root[root]
        if np.array_equal(nxt, root):
            break
        root = nxt
    return np.unique(root, return_inverse=True)[1].astype(np.int64)


class GraphAgglomerative(ClusterMixin, BaseEstimator):
    """Average-linkage agglomerative clustering (cosine) with a distance threshold; only
    clusters joined by a kNN edge are merge candidates, so it scales (no N×N matrix).
    Clusters smaller than ``min_cluster_size`` are noise."""

    def __init__(self, distance_threshold=0.07, *, min_cluster_size=1, n_neighbors=15, ann="auto", random_state=0):
        self.distance_threshold = distance_threshold
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        X = _check_vectors(X)
        graph = _graph_for(self, X, graph, self.n_neighbors)
        labels = _average_linkage(X, graph, self.distance_threshold)
        self.labels_ = _small_to_noise(labels, self.min_cluster_size)
        return self


def _whispers(n: int, a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """dlib's Chinese whispers over the edges ``(a, b)`` of distance ``d`` (weights 1 - d)."""
    import dlib

    # dlib labels vertices 0..max index, so one self-loop on the last vertex sizes the output;
    # self-loops elsewhere would outweigh real edges.
    edges = list(zip(a.tolist(), b.tolist(), (1.0 - np.asarray(d, dtype=np.float64)).tolist()))
    edges.append((n - 1, n - 1, 1e-6))
    return np.asarray(dlib.chinese_whispers(edges), dtype=np.int64)


class ChineseWhispers(ClusterMixin, BaseEstimator):
    """dlib's Chinese whispers over the kNN edges shorter than ``threshold``."""

    def __init__(self, threshold=0.06, *, min_cluster_size=1, n_neighbors=15, ann="auto", random_state=0):
        self.threshold = threshold
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        graph = _graph_for(self, X, graph, self.n_neighbors)
        a, b, d = graph.undirected_edges()
        ok = d < self.threshold
        self.labels_ = _small_to_noise(_whispers(len(graph), a[ok], b[ok], d[ok]), self.min_cluster_size)
        return self


def shared_neighbor_edges(graph: KNNGraph, shared_weight: float, scale: float = 0.1, chunk: int = 65536):
    """Each neighbour pair once, ``(a, b, blended distance, mutual rank)``.

    The blend is ``(1 - w) · d + w · scale · (1 - J)``, J the Jaccard overlap of the two faces'
    neighbour lists (each with the face itself): two photos of one person share neighbours,
    a stranger who happens to be close shares few. ``scale`` puts 1 - J in distance units
    (0.1: the spread of dlib same-person distances). The mutual rank is the larger of the two
    ranks (0 = nearest), the rank of a pair that lists only one way being the list length."""
    n, k = graph.indices.shape
    src = np.repeat(np.arange(n), k)
    dst = graph.indices.ravel().astype(np.int64)
    d = graph.distances.ravel().astype(np.float64)
    rank = np.tile(np.arange(k), n)
    ok = (dst >= 0) & (dst != src)
    src, dst, d, rank = src[ok], dst[ok], d[ok], rank[ok]
    key = src * n + dst
    order = np.argsort(key)
    pos = np.minimum(np.searchsorted(key[order], dst * n + src), len(key) - 1)
    back = np.where(key[order][pos] == dst * n + src, rank[order][pos], k)
    mutual_rank = np.maximum(rank, back)
    lists = np.hstack([np.arange(n)[:, None], graph.indices.astype(np.int64)])
    size = (lists >= 0).sum(1)
    inter = np.empty(len(src), dtype=np.int64)
    for s in range(0, len(src), chunk):  # chunked: E × (k+1)² comparisons at once would not fit
        A, B = lists[src[s:s + chunk]], lists[dst[s:s + chunk]]
        inter[s:s + chunk] = ((A[:, :, None] == B[:, None, :]) & (A[:, :, None] >= 0)).sum((1, 2))
    jaccard = inter / (size[src] + size[dst] - inter)
    blend = (1.0 - shared_weight) * d + shared_weight * scale * (1.0 - jaccard)
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    _, first = np.unique(lo * n + hi, return_index=True)
    return lo[first], hi[first], blend[first], mutual_rank[first]


def split_chained(X, graph: KNNGraph, labels: np.ndarray, threshold: float, min_group: int) -> np.ndarray:
    """Clusters that hold two or more separate groups are split between them.

    Inside each cluster, average linkage (over the cluster's own kNN edges) up to ``threshold``
    finds its groups; a cluster with at least two of ``min_group`` or more members is cut into
    them, every other member going to the group it is most similar to on average. Why: Chinese
    whispers chains along single close pairs, so two people with 3-5 photos each (and the
    strangers between them) can end up one cluster; average linkage sees that the two groups
    are far apart as wholes. Stray members are reassigned, never dropped, so one person's odd
    photos stay with him. A cluster smaller than ``2 * min_group`` cannot hold two groups and
    is left alone, which keeps this cheap."""
    labels = np.asarray(labels)
    ok = labels >= 0
    if not ok.any():
        return labels
    size = np.bincount(labels[ok])
    big = ok & (size[np.maximum(labels, 0)] >= 2 * min_group)
    if not big.any():
        return labels
    # average linkage on the rows of those clusters only, over their edges inside the cluster
    rows = np.flatnonzero(big)
    local = np.full(len(labels), -1, dtype=np.int64)
    local[rows] = np.arange(len(rows))
    ind = graph.indices[rows]
    inside = (ind >= 0) & (labels[np.maximum(ind, 0)] == labels[rows][:, None])
    sub_graph = KNNGraph(np.where(inside, local[np.maximum(ind, 0)], -1).astype(np.int32), graph.distances[rows])
    sub = np.full(len(labels), -1, dtype=np.int64)
    sub[rows] = _average_linkage(X[rows], sub_graph, threshold)
    sub_size = np.bincount(sub[rows])
    grouped = big & (sub_size[np.maximum(sub, 0)] >= min_group)
    # clusters with >= 2 groups: count distinct group ids per cluster
    pairs = np.unique(np.column_stack([labels[grouped], sub[grouped]]), axis=0)
    n_groups = np.bincount(pairs[:, 0], minlength=len(size))
    out = labels.copy()
    fresh = labels.max() + 1
    for c in np.flatnonzero(n_groups >= 2):  # few: only chained clusters
        members = np.flatnonzero(labels == c)
        V = np.asarray(X[members], np.float64)
        V /= np.maximum(np.linalg.norm(V, axis=1, keepdims=True), 1e-12)
        groups = pairs[pairs[:, 0] == c, 1]
        sums = np.stack([V[sub[members] == g].sum(0) for g in groups])
        mean_sim = (V @ sums.T) / sub_size[groups]
        own = np.searchsorted(groups, sub[members])
        choice = np.where(grouped[members], own, mean_sim.argmax(1))
        for k in range(1, len(groups)):  # the first group keeps the cluster's label
            out[members[choice == k]] = fresh
            fresh += 1
    return out


class SharedNeighborWhispers(ClusterMixin, BaseEstimator):
    """Chinese whispers over kNN edges that weigh shared neighbours, for identities.

    Two faces link when their blended distance (:func:`shared_neighbor_edges`) is under
    ``threshold``, or under ``mutual_threshold`` when each is among the other's first
    ``mutual_rank`` neighbours. Why: with dlib vectors, the distance between two photos of a
    person with 3-5 photos overlaps the distance to the nearest stranger, so one global cut
    either splits people or swallows strangers; a stranger is rarely a mutual nearest
    neighbour, and photos of a person with many photos share neighbours. With
    ``split_threshold``, clusters that chained two groups together are then split
    (:func:`split_chained`, average linkage up to ``split_threshold`` finding groups of
    ``min_group``). Chosen on lfw-dev and celeba-dev by the worse set
    (benchmarks/eval_defaults.py). The split is off by default: at 0.0725 with groups of 4 it
    lifts lfw-dev (F >= 3 .964 -> .966) but leaves the worse set, celeba-dev, where it was
    (.964 / .949), and naming its pieces names more strangers on lfw-dev (pooled unknown .947
    -> .940).
    """

    def __init__(self, threshold=0.06, *, mutual_threshold=0.07, mutual_rank=2, shared_weight=0.3,
                 split_threshold=None, min_group=4, min_cluster_size=2, n_neighbors=15, ann="auto",
                 random_state=0, scale=0.1):
        self.threshold = threshold
        self.mutual_threshold = mutual_threshold
        self.mutual_rank = mutual_rank
        self.shared_weight = shared_weight
        self.split_threshold = split_threshold
        self.min_group = min_group
        self.min_cluster_size = min_cluster_size
        self.n_neighbors = n_neighbors
        self.ann = ann
        self.random_state = random_state
        self.scale = scale

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        graph = _graph_for(self, X, graph, self.n_neighbors)
        a, b, d, r = shared_neighbor_edges(graph, self.shared_weight, self.scale)
        ok = (d < self.threshold) | ((d < self.mutual_threshold) & (r < self.mutual_rank))
        labels = _small_to_noise(_whispers(len(graph), a[ok], b[ok], d[ok]), self.min_cluster_size)
        if self.split_threshold is not None:
            if self.min_group < 1:
                raise ValueError(f"min_group must be at least 1, got {self.min_group}")
            labels = _small_to_noise(split_chained(_check_vectors(X), graph, labels, self.split_threshold,
                                                   self.min_group), self.min_cluster_size)
        self.labels_ = labels
        return self


def separate_cannot_link(X, labels: np.ndarray, groups) -> np.ndarray:
    """Faces of one photo (or tracks seen in one frame) are different people.

    ``groups``: per row, the key it may share with no other row of its cluster (a photo), or a
    collection of such keys (the frames a track is seen in). Where a cluster holds rows sharing
    a key, they are taken most-typical first (closest to the cluster's other members): a row
    sharing a key with one already taken becomes noise. A cluster left with one row becomes
    noise too."""
    labels = np.asarray(labels).copy()
    ok = np.flatnonzero(labels >= 0)
    if not len(ok):
        return labels
    many = [isinstance(g, (set, frozenset, list, tuple)) for g in groups]
    keys = pd.DataFrame({"i": ok, "g": [groups[i] for i in ok]})
    if any(many):
        keys = keys.explode("g").dropna()
    keys["c"] = labels[keys["i"].to_numpy()]
    clash = keys[keys.duplicated(["c", "g"], keep=False)]
    if clash.empty:
        return labels
    U = np.asarray(X, np.float64)
    U = U / np.maximum(np.linalg.norm(U, axis=1, keepdims=True), 1e-12)
    m = labels.max() + 1
    sums = np.zeros((m, U.shape[1]))
    np.add.at(sums, labels[ok], U[ok])
    size = np.bincount(labels[ok], minlength=m)
    rows = np.unique(clash["i"].to_numpy())
    c = labels[rows]
    like = np.einsum("ij,ij->i", U[rows], sums[c] - U[rows]) / np.maximum(size[c] - 1, 1)
    keys_of = clash.groupby("i")["g"].agg(set)
    taken: dict[int, set] = {}
    for r in rows[np.lexsort((rows, -like))]:  # most typical first; ties by row
        mine = keys_of[r]
        seen = taken.setdefault(int(labels[r]), set())
        if mine & seen:
            labels[r] = NOISE
        else:
            seen |= mine
    counts = np.bincount(labels[labels >= 0], minlength=m)
    labels[(labels >= 0) & (counts[np.maximum(labels, 0)] < 2)] = NOISE
    return labels


def _small_to_noise(labels: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 1:
        return labels
    ids, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    return np.where(counts[inv] >= min_size, labels, NOISE)


ALGORITHMS = {
    "hdbscan": HDBSCAN,
    "rnn-dbscan": RNNDBSCAN,
    "dbscan": GraphDBSCAN,
    "optics": GraphOPTICS,
    "agglomerative": GraphAgglomerative,
    "chinese-whispers": ChineseWhispers,
    "snn-whispers": SharedNeighborWhispers,
}


def make_clusterer(algorithm: str, **params):
    """Estimator by name (``ALGORITHMS``); unknown names raise ``ValueError`` listing them."""
    try:
        cls = ALGORITHMS[algorithm]
    except KeyError:
        raise ValueError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}") from None
    return cls(**params)


def assign_to_clusters(vectors: np.ndarray, labels: np.ndarray, graph: KNNGraph, Y: np.ndarray,
                       n_edges: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Assign new vectors ``Y`` to existing clusters of ``vectors``.

    A new vector takes the cluster of its nearest clustered vector when that distance is
    within the cluster's density (its largest distance along a member's first ``n_edges``
    kNN edges inside the cluster), else noise. Returns ``(labels, distances)``.
    """
    V = np.asarray(vectors, dtype=np.float32)
    Y = np.asarray(Y, dtype=np.float32)
    Y = Y / np.maximum(np.linalg.norm(Y, axis=1, keepdims=True), 1e-12)
    n_clusters = int(labels.max()) + 1 if (labels >= 0).any() else 0
    den = np.zeros(max(n_clusters, 1))
    ind = graph.indices[:, :n_edges]
    src = np.repeat(np.arange(len(V)), ind.shape[1]).reshape(ind.shape)
    same = (ind >= 0) & (labels[src] >= 0) & (labels[src] == labels[np.maximum(ind, 0)])
    np.maximum.at(den, labels[src[same]], graph.distances[:, :n_edges][same])
    clustered = np.flatnonzero(labels >= 0)
    out = np.full(len(Y), NOISE, dtype=np.int64)
    dist = np.full(len(Y), np.inf)
    if len(clustered) == 0:
        return out, dist
    for start in range(0, len(Y), 1024):
        sim = Y[start:start + 1024] @ V[clustered].T
        best = sim.argmax(axis=1)
        d = 1.0 - sim[np.arange(len(best)), best]
        lab = labels[clustered[best]]
        dist[start:start + len(best)] = d
        out[start:start + len(best)] = np.where(d <= den[lab], lab, NOISE)
    return out, dist
