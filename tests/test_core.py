"""Pure functions: alignment, metric, kNN graph, HDBSCAN over the graph, prototypes."""
import numpy as np
import pytest
from sklearn.metrics import fowlkes_mallows_score

from crowdsort.faces.align import ARCFACE_4, estimate_norm, transform_points
from crowdsort.clustering.cluster import HDBSCAN, prototypes, relabel_by_size
from crowdsort.clustering.metrics import bcubed
from crowdsort.clustering.neighbors import knn_graph

RNG = np.random.default_rng(0)


def identity_like(n_ids=20, per_id=10, dim=128, spread=0.25, seed=0):
    """Unit vectors in tight groups around random centres, like face embeddings."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_ids, dim))
    X = np.repeat(centres, per_id, axis=0) + spread * rng.normal(size=(n_ids * per_id, dim))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(n_ids), per_id)


def test_estimate_norm_recovers_similarity_and_ignores_nan():
    """A known rotation+scale+shift is recovered from 3 of 4 points (one NaN)."""
    a, s, t = np.deg2rad(17), 1.7, np.array([5.0, -3.0])
    R = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    src = ARCFACE_4.copy()
    dst = src @ R.T + t
    src[3] = np.nan
    m = estimate_norm(src, dst)
    assert np.allclose(m[:, :2], R, atol=1e-9) and np.allclose(m[:, 2], t, atol=1e-9)
    assert np.allclose(transform_points(m, ARCFACE_4[:3]), dst[:3])
    with pytest.raises(ValueError, match="two landmarks"):
        estimate_norm(np.full((4, 2), np.nan), dst)


def test_bcubed_known_values():
    """Perfect clustering scores 1; all-noise keeps precision 1 and loses recall."""
    t = ["a", "a", "b", "b"]
    assert bcubed(t, [1, 1, 2, 2]) == (1.0, 1.0, 1.0)
    p, r, f = bcubed(t, [-1, -1, -1, -1])
    assert p == 1.0 and r == 0.5 and abs(f - 2 / 3) < 1e-12
    p, r, _ = bcubed(t, [0, 0, 0, 0])
    assert p == 0.5 and r == 1.0


def test_exact_knn_matches_brute_force():
    X, _ = identity_like(5, 8, 16)
    g = knn_graph(X, 5, "exact")
    D = 1 - X @ X.T
    np.fill_diagonal(D, np.inf)
    assert np.allclose(np.sort(D, axis=1)[:, :5], g.distances, atol=1e-5)
    assert (g.indices != np.arange(len(X))[:, None]).all()


def test_pynndescent_graph_recall():
    X, _ = identity_like(30, 20, 32)
    exact = knn_graph(X, 10, "exact")
    approx = knn_graph(X, 10, "pynndescent")
    hits = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact.indices, approx.indices)])
    assert hits > 0.9


def test_faiss_graphs_against_the_exact_one():
    """faiss flat: the exact graph (its own top-k); HNSW: recall >= 0.99 at 10k (issue 17);
    duplicate vectors never list a row as its own neighbour."""
    pytest.importorskip("faiss")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10_000, 128)).astype(np.float32)
    X[1] = X[0]  # a duplicate: self may come second
    exact = knn_graph(X, 15, "exact")
    flat = knn_graph(X, 15, "faiss")
    assert flat.method == "faiss" and np.allclose(flat.distances, exact.distances, atol=1e-5)
    assert np.mean(flat.indices == exact.indices) > 0.999
    hnsw = knn_graph(X, 15, "faiss-hnsw")
    recall = np.mean([len(set(a) & set(b)) / 15 for a, b in zip(exact.indices, hnsw.indices)])
    assert recall >= 0.99
    for g in (flat, hnsw):
        assert (g.indices != np.arange(len(X))[:, None]).all()
        assert g.indices[0, 0] == 1 and g.indices[1, 0] == 0


def test_without_faiss_auto_is_exact_and_faiss_names_the_extra(monkeypatch):
    """faiss is an optional extra: auto searches with numpy (the same graph as faiss's flat search
    where it is installed) and asking for faiss says which extra to install, in one line."""
    import sys

    X, _ = identity_like(40, 10, 32)
    with_faiss = knn_graph(X, 15, "auto")
    monkeypatch.setitem(sys.modules, "faiss", None)
    monkeypatch.setattr("crowdsort.clustering.neighbors.has_faiss", lambda: False)
    without = knn_graph(X, 15, "auto")
    assert without.method == "exact" and np.array_equal(without.indices, with_faiss.indices)
    assert np.allclose(without.distances, with_faiss.distances, atol=1e-5)
    for method in ("faiss", "faiss-ivf", "faiss-hnsw"):
        with pytest.raises(ImportError, match=rf"^--ann {method} needs faiss.*pip install 'crowdsort\[faiss\]'[^\n]*$"):
            knn_graph(X, 15, method)


def test_faiss_ivf_finds_the_same_identity():
    """IVF (the graph above 200k): of each vector's true neighbours of its own identity, at least
    99% are listed, and a clustering over it equals the one over the exact graph."""
    pytest.importorskip("faiss")
    X, y = identity_like(2_000, 6, 128, spread=0.35)
    exact, ivf = knn_graph(X, 15, "exact"), knn_graph(X, 15, "faiss-ivf")
    assert ivf.method == "faiss-ivf" and (ivf.indices != np.arange(len(X))[:, None]).all()
    same = [set(row[y[row] == y[i]]) for i, row in enumerate(exact.indices)]
    found = sum(len(s & set(row)) for s, row in zip(same, ivf.indices))
    assert found / sum(map(len, same)) >= 0.99
    a = HDBSCAN(min_cluster_size=2, min_samples=1).fit(X, graph=exact).labels_
    b = HDBSCAN(min_cluster_size=2, min_samples=1).fit(X, graph=ivf).labels_
    assert fowlkes_mallows_score(a, b) >= 0.99


def test_hdbscan_graph_recovers_identities():
    """Tight groups are found; permutation-free score ≥ 0.98."""
    X, y = identity_like()
    labels = HDBSCAN(min_cluster_size=3, min_samples=2).fit(X).labels_
    assert fowlkes_mallows_score(y, labels) >= 0.98


def test_hdbscan_disconnected_graph_and_duplicates():
    """Far-apart groups whose kNN graph has several components, plus exact duplicates."""
    X, y = identity_like(4, 6, 8, spread=0.05)
    X = np.vstack([X, X[:3]])
    y = np.concatenate([y, y[:3]])
    est = HDBSCAN(min_cluster_size=2, min_samples=1, n_neighbors=3).fit(X)
    assert fowlkes_mallows_score(y, est.labels_) >= 0.98
    assert est.probabilities_.shape == (len(X),)


def test_hdbscan_rejects_bad_input():
    with pytest.raises(ValueError, match="min_cluster_size"):
        HDBSCAN(min_cluster_size=1).fit(RNG.normal(size=(10, 4)))
    with pytest.raises(ValueError, match="NaN"):
        HDBSCAN().fit(np.full((10, 4), np.nan))


def test_relabel_by_size_and_top():
    labels = np.array([5, 5, 1, 1, 1, -1, 7])
    assert relabel_by_size(labels).tolist() == [1, 1, 0, 0, 0, -1, 2]
    assert relabel_by_size(labels, top=1).tolist() == [-1, -1, 0, 0, 0, -1, -1]


def test_prototypes_true_medoid_first():
    """The medoid minimises summed cosine distance within its cluster (checked by brute force)."""
    X, y = identity_like(3, 12, 16, spread=0.5)
    protos = prototypes(X, y, n=4)
    for c, rows in protos.items():
        members = np.flatnonzero(y == c)
        D = 1 - X[members] @ X[members].T
        assert rows[0] == members[np.argmin(D.sum(1))]
        assert set(rows) <= set(members) and len(rows) == 4


def test_tiny_sets_cluster_with_every_algorithm():
    """Five vectors: the graph holds 4 neighbours, fewer than the default 15; nothing fails."""
    from crowdsort.clustering.cluster import ALGORITHMS, make_clusterer

    X, _ = identity_like(1, 5, 8)
    g = knn_graph(X, 15)
    assert g.n_neighbors == 4
    for name in ALGORITHMS:
        assert make_clusterer(name).fit(X, graph=g).labels_.shape == (5,)
