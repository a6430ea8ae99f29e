"""Clustering estimators over a kNN graph (scikit-learn API) and cluster prototypes.

HDBSCAN here never sees an N×N matrix: core distances come from the kNN graph, the minimum
spanning tree of mutual reachability is taken over the graph's edges, and the hdbscan
package's own tree code condenses it and selects clusters. Components the graph leaves
disconnected are joined at a distance larger than any edge, so they split first.
"""
from __future__ import annotations

import numpy as np
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
    ind, dist = graph.indices, graph.distances.astype(np.float64)
    n, k = ind.shape
    core = dist[:, min(min_samples, k) - 1]
    rows = np.repeat(np.arange(n), k)
    cols = ind.ravel()
    ok = cols >= 0
    rows, cols, d = rows[ok], cols[ok], dist.ravel()[ok]
    # Distances below the floor are treated as equal: otherwise exact duplicates (the same
    # photo twice) get near-infinite density and split off as clusters of their own.
    w = np.maximum(np.maximum(np.maximum(core[rows], core[cols]), d), DISTANCE_FLOOR)
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

    def fit(self, X, y=None, graph: KNNGraph | None = None):
        from hdbscan._hdbscan_linkage import label
        from hdbscan.hdbscan_ import _tree_to_labels

        if self.min_cluster_size < 2:
            raise ValueError(f"min_cluster_size must be at least 2, got {self.min_cluster_size}")
        min_samples = self.min_cluster_size if self.min_samples is None else self.min_samples
        if min_samples < 1:
            raise ValueError(f"min_samples must be at least 1, got {min_samples}")
        if graph is None:
            X = _check_vectors(X)
            graph = knn_graph(X, max(self.n_neighbors, min_samples), self.ann, self.random_state)
        n = len(graph)
        self.graph_ = graph
        edges = _mst_edges(graph, min_samples)
        tree = label(edges)
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
    out = np.full(len(labels), NOISE, dtype=np.int64)
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    if top is not None:
        order = order[:top]
    for new, old in enumerate(order):
        out[labels == old] = new
    return out


def prototypes(X: np.ndarray, labels: np.ndarray, n: int = 3) -> dict[int, np.ndarray]:
    """Per cluster, the medoid and its nearest members (``n`` in all), as row indices.

    With cosine distance on normalised rows the sum of distances from ``x`` to the members
    is ``m - x·Σy``, so the true medoid is the member maximising ``x·mean``.
    """
    X = np.asarray(X, dtype=np.float32)
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out = {}
    for c in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == c)
        V = X[members]
        medoid = int(np.argmax(V @ V.mean(0)))
        order = np.argsort(-(V @ V[medoid]), kind="stable")  # the medoid itself comes first
        order = np.concatenate([[medoid], order[order != medoid]])
        out[int(c)] = members[order[:n]]
    return out
