"""k-nearest-neighbour graphs over L2-normalised vectors (cosine distance).

``auto`` (measured, benchmarks/bench_knn.py, identity-like vectors, 2 cores under load ~3):
faiss's exact flat search up to 50k rows; faiss IVF up to 200k (100k × 128: 14.8 s against flat's
84.9 s and pynndescent's 103.7 s, finding 99.8% of the same-identity neighbours; × 512: 66.6 s,
100%, against 486 s and 72.2 s); pynndescent above (1M × 128: 119.6 s and 97.3%, against IVF's
468 s and 94.6%). Without faiss (an optional extra, ``crowdsort[faiss]``): numpy's exact search
up to 50k, the same neighbours, pynndescent above. The graph
is two (n, k) arrays, self excluded: ``indices`` (int32, -1 where missing) and
``distances`` (float32, cosine distance ``1 - x·y``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXACT_MAX_N = 50_000
METHODS = ("auto", "exact", "faiss", "faiss-ivf", "faiss-hnsw", "pynndescent")
FAISS_FLAT_MAX = 50_000  # exact search grows with n²: IVF above
IVF_MAX = 200_000  # auto: pynndescent above (IVF's recall falls at a fixed probe count)
HNSW_M, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH = 32, 100, 256  # recall .99 on 10k random 128-D (the hard case)
IVF_PROBE = 16  # cells searched per query, of about 4·√n


def has_faiss() -> bool:
    import importlib.util

    return importlib.util.find_spec("faiss") is not None


@dataclass
class KNNGraph:
    indices: np.ndarray
    distances: np.ndarray
    method: str = "exact"

    @property
    def n_neighbors(self) -> int:
        return self.indices.shape[1]

    def __len__(self) -> int:
        return self.indices.shape[0]

    def edges(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Directed edges ``(source, target, distance)`` of the first ``k`` neighbours,
        row by row, without missing (-1) entries."""
        ind = self.indices[:, :k]
        src = np.repeat(np.arange(len(ind)), ind.shape[1])
        dst = ind.ravel()
        ok = dst >= 0
        return src[ok], dst[ok], self.distances[:, :k].ravel()[ok]

    def undirected_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Each neighbour pair once, ``(a, b, distance)`` with ``a < b``, whichever side
        listed the other."""
        src, dst, d = self.edges()
        ok = src != dst
        a, b = np.minimum(src[ok], dst[ok]), np.maximum(src[ok], dst[ok])
        _, first = np.unique(a.astype(np.int64) * len(self) + b, return_index=True)
        return a[first], b[first], d[ok][first]


def _exact(X: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    n = len(X)
    ind = np.empty((n, k), dtype=np.int32)
    dist = np.empty((n, k), dtype=np.float32)
    for start in range(0, n, block):
        stop = min(start + block, n)
        sim = X[start:stop] @ X.T
        sim[np.arange(stop - start), np.arange(start, stop)] = -np.inf  # not your own neighbour
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        psim = np.take_along_axis(sim, part, axis=1)
        order = np.argsort(-psim, axis=1, kind="stable")
        ind[start:stop] = np.take_along_axis(part, order, axis=1)
        dist[start:stop] = 1.0 - np.take_along_axis(psim, order, axis=1)
    np.maximum(dist, 0.0, out=dist)
    return ind, dist


def _nndescent(X: np.ndarray, k: int, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    from pynndescent import NNDescent

    index = NNDescent(X, n_neighbors=k + 1, metric="cosine", random_state=random_state,
                      low_memory=True, n_jobs=-1, compressed=True)
    ind, dist = index.neighbor_graph
    return _without_self(ind, 1.0 - dist, k)


def _without_self(ind: np.ndarray, sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of k + 1 neighbours (similarities) → k neighbours (cosine distances), self dropped
    (the last column where self is missing: a duplicate vector may come first)."""
    n = len(ind)
    is_self = ind == np.arange(n)[:, None]
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), k)
    keep = np.ones_like(ind, dtype=bool)
    keep[np.arange(n), drop] = False
    ind = ind[keep].reshape(n, k).astype(np.int32)
    dist = np.maximum(1.0 - sim[keep].reshape(n, k), 0).astype(np.float32)
    return np.where(ind >= 0, ind, -1), np.where(ind >= 0, dist, np.inf).astype(np.float32)


_FAISS_NAMES = {"flat": "faiss", "ivf": "faiss-ivf", "hnsw": "faiss-hnsw"}


def _faiss(X: np.ndarray, k: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """faiss inner-product search: ``flat`` (exact, its own top-k in C++), ``ivf`` (k-means
    cells, ``IVF_PROBE`` of them searched) or ``hnsw``."""
    try:
        import faiss
    except ImportError:
        raise ImportError(f"--ann {_FAISS_NAMES[kind]} needs faiss, an optional extra: pip install 'crowdsort[faiss]' "
                          "(or faiss-gpu); --ann auto and exact need nothing more") from None
    n, d = X.shape
    if kind == "ivf":
        nlist = max(1, min(int(4 * np.sqrt(n)), n // 39))  # faiss wants ≥ 39 training rows a cell
        quantizer = faiss.IndexFlatIP(d)  # held here: the index does not own it
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False)
        index.train(X[np.sort(sample)])
        index.add(X)
        index.nprobe = min(IVF_PROBE, nlist)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.add(X)
        index.hnsw.efSearch = max(HNSW_EF_SEARCH, 4 * k)
    else:
        index = faiss.IndexFlatIP(d)
        index.add(X)
    sim, ind = index.search(X, k + 1)
    return _without_self(ind, sim, k)


def knn_graph(X: np.ndarray, n_neighbors: int = 15, method: str = "auto", random_state: int = 0) -> KNNGraph:
    """kNN graph of the rows of ``X`` (normalised here) under cosine distance.

    ``method``: ``exact`` (numpy), ``faiss`` (exact up to ``FAISS_FLAT_MAX`` rows, IVF above),
    ``faiss-ivf``, ``faiss-hnsw``, ``pynndescent`` or ``auto`` (where faiss is installed: exact up
    to 50k rows, IVF up to 200k, pynndescent above; without it numpy's exact search up to 50k).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    X = X / np.maximum(norms, 1e-12)
    n = len(X)
    k = min(n_neighbors, n - 1)
    if k < 1:
        raise ValueError(f"need at least 2 vectors for a neighbour graph, got {n}")
    if method == "auto":
        if has_faiss():
            method = "faiss" if n <= FAISS_FLAT_MAX else "faiss-ivf" if n <= IVF_MAX else "pynndescent"
        else:
            method = "exact" if n <= EXACT_MAX_N else "pynndescent"
    if method == "faiss" and n > FAISS_FLAT_MAX:
        method = "faiss-ivf"
    if method == "exact":
        ind, dist = _exact(X, k)
    elif method in ("faiss", "faiss-ivf", "faiss-hnsw"):
        ind, dist = _faiss(X, k, {"faiss": "flat", "faiss-ivf": "ivf", "faiss-hnsw": "hnsw"}[method])
    elif method == "pynndescent":
        ind, dist = _nndescent(X, k, random_state)
    else:
        raise ValueError(f"unknown kNN method {method!r}; choose {', '.join(METHODS)}")
    return KNNGraph(ind, dist, method)
