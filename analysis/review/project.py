"""2-D maps of embeddings: UMAP over the cached kNN graph, computed once and stored.

The layout is reproducible: a fixed seed, one thread, and a PCA initialisation (spectral
initialisation of a disconnected kNN graph differs between runs).
"""
from __future__ import annotations

import hashlib
import io
import logging
import warnings

import numpy as np

from ..storage.store import atomic_write_bytes

log = logging.getLogger(__name__)
progress_log = logging.getLogger("crowdsort.progress")  # a bare line in the CLI, hidden by -q


def pca_init(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """First two principal components, scaled to UMAP's usual ±10 range, signs fixed."""
    Xc = X - X.mean(0)
    # covariance eigenvectors: deterministic and cheap for d ≤ a few thousand
    w, v = np.linalg.eigh(Xc.T @ Xc)
    Y = Xc @ v[:, ::-1][:, :2]
    Y *= np.sign(Y[np.abs(Y).argmax(0), [0, 1]])  # sign convention: largest value positive
    Y = Y / (np.abs(Y).max() or 1.0) * 10
    # tiny jitter so duplicate vectors do not sit on one point (UMAP's init needs spread)
    return (Y + np.random.default_rng(seed).normal(0, 1e-4, Y.shape)).astype(np.float32)


def umap_layout(X: np.ndarray, graph=None, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0) -> np.ndarray:
    """(n, 2) UMAP coordinates under cosine distance; reuses ``graph`` (a KNNGraph) when given."""
    import umap

    n = len(X)
    if n < 4:
        return pca_init(X, seed) if n else np.zeros((0, 2), np.float32)
    k = min(n_neighbors, n - 1)
    kw = {}
    if graph is not None and graph.n_neighbors >= k - 1:
        # UMAP wants each point as its own first neighbour
        ind = np.hstack([np.arange(n)[:, None], graph.indices[:, : k - 1]]).astype(np.int64)
        dist = np.hstack([np.zeros((n, 1), np.float32), graph.distances[:, : k - 1]])
        ind = np.where(ind < 0, np.arange(n)[:, None], ind)
        kw["precomputed_knn"] = (ind, dist, None)
    reducer = umap.UMAP(n_neighbors=k, min_dist=min_dist, metric="cosine", init=pca_init(X, seed),
                        random_state=seed, n_jobs=1, **kw)
    with warnings.catch_warnings():
        # precomputed kNN without its search index: we never call transform()
        warnings.filterwarnings("ignore", message="precomputed_knn")
        warnings.filterwarnings("ignore", message="n_jobs value")
        return reducer.fit_transform(X).astype(np.float32)


def layout_path(store, model: str, ids, seed: int = 0):
    """Where the map of exactly these items (in this order) under ``model`` is stored."""
    from ..storage.store import _safe_name

    h = hashlib.blake2b("\n".join(map(str, ids)).encode(), digest_size=8).hexdigest()
    return store.root / "projections" / f"{_safe_name(model)}-umap-s{seed}-{h}.npy"


def cached_layout(store, model: str, ids, X: np.ndarray, graph=None, seed: int = 0) -> np.ndarray:
    """The stored layout for exactly these items, else computed (once: said in a progress line)
    and stored in the dataset."""
    from ..storage.store import read_cache

    path = layout_path(store, model, ids, seed)

    def load(p):
        Y = np.load(p, allow_pickle=False)
        if Y.shape != (len(ids), 2) or not np.isfinite(Y).all():
            raise ValueError(f"a {Y.shape} map for {len(ids)} items")
        return Y
    Y = read_cache(path, load)  # a damaged map is computed again
    if Y is not None:
        return Y
    progress_log.info("computing the dashboard's map of %d items (once; stored in %s)", len(X), path.parent)
    Y = umap_layout(X, graph, seed=seed)
    buf = io.BytesIO()
    np.save(buf, Y)
    atomic_write_bytes(path, buf.getvalue())
    return Y
