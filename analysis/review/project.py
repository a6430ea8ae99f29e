"""2-D maps of embeddings: UMAP over the cached kNN graph, computed once and stored.

The layout is reproducible: a fixed seed, one thread, and a PCA initialisation (spectral
initialisation of a disconnected kNN graph differs between runs).
"""
from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import time
import warnings

import numpy as np

from ..progress import log as progress_log
from ..storage.store import atomic_write_bytes

log = logging.getLogger(__name__)


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


class _EpochLines(io.TextIOBase):
    """The file UMAP's progress bar writes to: each ``n/total`` it writes goes to ``report``."""

    def __init__(self, report):
        self.report = report

    def write(self, text: str) -> int:
        found = re.findall(r"(\d+)/(\d+)", text)
        if found:
            n, total = map(int, found[-1])
            self.report(n / max(total, 1))
        return len(text)


def umap_layout(X: np.ndarray, graph=None, n_neighbors: int = 15, min_dist: float = 0.1, seed: int = 0,
                on_epoch=None) -> np.ndarray:
    """(n, 2) UMAP coordinates under cosine distance; reuses ``graph`` (a KNNGraph) when given.
    ``on_epoch(fraction)``: told how far UMAP's optimisation is (its progress bar, written to it)."""
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
    if on_epoch is not None:  # the bar only: UMAP's verbose mode would print to the server's stdout
        kw["tqdm_kwds"] = {"disable": False, "file": _EpochLines(on_epoch), "mininterval": 0.25,
                           "bar_format": "{n}/{total}"}
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


def stored_layout(store, model: str, ids, seed: int = 0) -> np.ndarray | None:
    """The stored layout for exactly these items, or None (none, or a damaged one)."""
    from ..storage.store import read_cache

    def load(p):
        Y = np.load(p, allow_pickle=False)
        if Y.shape != (len(ids), 2) or not np.isfinite(Y).all():
            raise ValueError(f"a {Y.shape} map for {len(ids)} items")
        return Y
    return read_cache(layout_path(store, model, ids, seed), load)


def cached_layout(store, model: str, ids, X: np.ndarray, graph=None, seed: int = 0, on_epoch=None) -> np.ndarray:
    """The stored layout for exactly these items, else computed (once: said in a progress line)
    and stored in the dataset. ``on_epoch``: as :func:`umap_layout`'s."""
    Y = stored_layout(store, model, ids, seed)  # a damaged map is computed again
    if Y is not None:
        return Y
    path = layout_path(store, model, ids, seed)
    progress_log.info("computing the dashboard's map of %d items (once; stored in %s)", len(X), path.parent)
    Y = umap_layout(X, graph, seed=seed, on_epoch=on_epoch)
    buf = io.BytesIO()
    np.save(buf, Y)
    atomic_write_bytes(path, buf.getvalue())
    return Y


class MapInBackground:
    """A map not stored yet, computed in a thread (:func:`cached_layout`), so the dashboard's page
    opens meanwhile (its People tab needs no map; a map of 1k faces took 30 s when first made).
    ``fraction`` and :meth:`words` say how far it is; each listener (:meth:`listen`) is called,
    from the computing thread, at each step and once more when it is done (``layout`` set) or
    failed (``error`` set). ``hold_s``: seconds it waits before it starts, unless
    :meth:`release` is called (the Map tab opened): the first page is built meanwhile, and UMAP's
    compilation would take Python's lock from it (a page at 1k faces took 3.0 s instead of 2.0 s)."""

    def __init__(self, compute, n_items: int, hold_s: float = 0.0):
        self.compute = compute  # compute(on_epoch) -> layout
        self.n_items = n_items
        self.fraction = 0.0  # of UMAP's optimisation: the first seconds (compiling, the fuzzy graph) stay at 0
        self.layout: np.ndarray | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        self.done = threading.Event()
        self.hold_s = hold_s
        self._go = threading.Event()
        self._listeners: list = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="crowdsort-map", daemon=True)

    def start(self) -> "MapInBackground":
        self._thread.start()
        return self

    def release(self) -> None:
        """Start now (if held)."""
        self._go.set()

    def listen(self, fn) -> None:
        """``fn(self)`` at each step; called at once if it is done already."""
        with self._lock:
            if not self.done.is_set():
                self._listeners.append(fn)
                return
        fn(self)

    def forget(self, fn) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def wait(self, timeout: float | None = None) -> np.ndarray | None:
        self.done.wait(timeout)
        return self.layout

    def words(self) -> str:
        """What a person reads while waiting (or why there is no map)."""
        if self.error is not None:
            return f"The map could not be made: {self.error}"
        if self.done.is_set():
            return "The map is ready."
        spent = time.monotonic() - self.started
        step = (f"arranging the points, {100 * self.fraction:.0f}%" if self.fraction > 0
                else "preparing (the first map of a process compiles UMAP's code)")
        return (f"Computing the map of {self.n_items} items (once; it is stored in the dataset): {step}, "
                f"{spent:.0f} s so far. The other tabs work meanwhile.")

    def _tell(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for fn in listeners:
            try:
                fn(self)
            except Exception:  # noqa: BLE001 (a closed page's listener must not stop the map)
                log.exception("a map progress listener failed")

    def _step(self, fraction: float) -> None:
        self.fraction = fraction
        self._tell()

    def _run(self) -> None:
        if self.hold_s > 0:
            self._go.wait(self.hold_s)
            self.started = time.monotonic()
        try:
            self.layout = self.compute(self._step)
            progress_log.info("the dashboard's map is ready (%.0f s)", time.monotonic() - self.started)
        except Exception as e:  # noqa: BLE001 (UMAP's and numba's errors are of many kinds; the page stays)
            self.error = str(e) or type(e).__name__
            log.warning("the dashboard's map was not made: %s", self.error)
        with self._lock:
            self.done.set()
        self._tell()
        with self._lock:
            self._listeners.clear()
