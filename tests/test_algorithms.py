"""Graph clustering algorithms against obviously-correct references."""
import numpy as np
import pytest
from sklearn.cluster import DBSCAN
from sklearn.metrics import adjusted_rand_score, fowlkes_mallows_score

from crowdsort.clustering.cluster import (ChineseWhispers, GraphAgglomerative, GraphDBSCAN, GraphOPTICS, RNNDBSCAN,
                              prototypes)
from crowdsort.clustering.neighbors import knn_graph

UNCLASSIFIED, NOISE = -2, -1


def rnn_dbscan_reference(ind, dist, k):
    """The paper's pseudo-code (Bryant & Cios 2018, Algorithms 1-3), as plain loops."""
    n = len(ind)
    nk = [list(ind[i, :k]) for i in range(n)]
    rk = [[] for _ in range(n)]
    for i in range(n):
        for j in nk[i]:
            rk[j].append(i)
    is_core = [len(rk[i]) >= k for i in range(n)]

    def neighborhood(x):
        return nk[x] + [y for y in rk[x] if is_core[y]]

    assign = [UNCLASSIFIED] * n
    cluster = 0
    for x in range(n):
        if assign[x] != UNCLASSIFIED:
            continue
        if not is_core[x]:
            assign[x] = NOISE
            continue
        seeds = list(neighborhood(x))
        assign[x] = cluster
        for s in seeds:
            assign[s] = cluster
        while seeds:
            y = seeds.pop(0)
            if is_core[y]:
                for z in neighborhood(y):
                    if assign[z] == UNCLASSIFIED:
                        seeds.append(z)
                        assign[z] = cluster
                    elif assign[z] == NOISE:
                        assign[z] = cluster
        cluster += 1
    den = {}
    for x in range(n):
        if is_core[x]:
            for pos, y in enumerate(nk[x]):
                if is_core[y] and assign[y] == assign[x]:
                    den[assign[x]] = max(den.get(assign[x], 0.0), dist[x, pos])
    final = list(assign)
    for x in range(n):
        if assign[x] == NOISE:
            best, bestd = NOISE, np.inf
            for pos, y in enumerate(nk[x]):
                d = dist[x, pos]
                if is_core[y] and d <= den.get(assign[y], 0.0) and d < bestd:
                    best, bestd = assign[y], d
            final[x] = best
    return np.array(final)


def blobs(n_ids=12, per=(2, 12), dim=16, spread=0.35, singletons=15, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(per[0], per[1], n_ids)
    c = rng.normal(size=(n_ids, dim))
    X = np.repeat(c, sizes, axis=0) + spread * rng.normal(size=(sizes.sum(), dim))
    X = np.vstack([X, rng.normal(size=(singletons, dim))])
    y = np.concatenate([np.repeat(np.arange(n_ids), sizes), -1 - np.arange(singletons)])
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("k", [3, 5, 8])
def test_rnn_dbscan_matches_paper_loop(seed, k):
    """Identical labels (up to renaming) to the literal pseudo-code on random data."""
    X, _ = blobs(seed=seed, spread=0.2 + 0.1 * seed)
    g = knn_graph(X, k, "exact")
    ours = RNNDBSCAN(k).fit(X, graph=g).labels_
    ref = rnn_dbscan_reference(g.indices, g.distances, k)
    assert ((ours == NOISE) == (ref == NOISE)).all()
    assert adjusted_rand_score(ref, ours) == 1.0


@pytest.mark.parametrize("eps,min_samples", [(0.1, 2), (0.2, 3), (0.35, 5)])
def test_graph_dbscan_equals_sklearn_on_points(eps, min_samples):
    """With K covering every eps-neighbourhood, the radius-graph DBSCAN is sklearn's DBSCAN."""
    X, _ = blobs(seed=1)
    X = np.vstack([X, X[:4]])  # exact duplicates
    D = np.maximum(1 - X.astype(np.float64) @ X.T, 0)
    k = int((D <= eps).sum(1).max())
    ours = GraphDBSCAN(eps, min_samples, n_neighbors=k, ann="exact").fit(X).labels_
    ref = DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit(D).labels_
    assert ((ours == -1) == (ref == -1)).all()
    assert adjusted_rand_score(ref, ours) == 1.0


def test_other_algorithms_recover_groups():
    """Average linkage, Chinese whispers and OPTICS find well-separated identities."""
    X, y = blobs(spread=0.2, singletons=0)
    for est in [GraphAgglomerative(0.3), ChineseWhispers(0.3), GraphOPTICS(eps=0.3, min_samples=2)]:
        assert fowlkes_mallows_score(y, est.fit(X).labels_) >= 0.98, type(est).__name__


@pytest.mark.parametrize("seed", range(3))
def test_shared_neighbor_edges_equal_a_plain_loop(seed):
    """Blended distance and mutual rank of every pair, against the definition written out."""
    from crowdsort.clustering.cluster import shared_neighbor_edges

    X, _ = blobs(seed=seed)
    g = knn_graph(X, 6, "exact")
    g.indices[3, 5] = -1  # a missing entry, as pynndescent can leave
    a, b, d, r = shared_neighbor_edges(g, 0.3)
    got = {(i, j): (x, y) for i, j, x, y in zip(a.tolist(), b.tolist(), d.tolist(), r.tolist())}
    lists = [[int(j) for j in row if j >= 0] for row in g.indices]
    want = {}
    for i in range(len(g)):
        for ri, j in enumerate(g.indices[i].tolist()):
            if j < 0 or (min(i, j), max(i, j)) in want:
                continue
            dist = float(g.distances[i, ri])
            si, sj = set(lists[i]) | {i}, set(lists[j]) | {j}
            back = lists[j].index(i) if i in lists[j] else 6
            if i in lists[j] and g.indices[j].tolist().index(i) != back:
                back = g.indices[j].tolist().index(i)
            rank = max(g.indices[i].tolist().index(j), back)
            want[(min(i, j), max(i, j))] = (0.7 * dist + 0.3 * 0.1 * (1 - len(si & sj) / len(si | sj)), rank)
    assert got.keys() == want.keys()
    for key, (x, y) in want.items():
        assert got[key][0] == pytest.approx(x, abs=1e-6) and got[key][1] == y, key


def test_shared_neighbor_whispers_recovers_groups_and_keeps_strangers_out():
    from crowdsort.clustering.cluster import SharedNeighborWhispers

    X, y = blobs(spread=0.2, singletons=10)  # same-group pairs within 0.19, any other pair beyond 0.3
    labels = SharedNeighborWhispers(0.2, mutual_threshold=0.25).fit(X).labels_
    assert fowlkes_mallows_score(y[y >= 0], labels[y >= 0]) == 1.0
    assert (labels[y < 0] == NOISE).all()
    # strangers at 0.3+ join once the mutual cut passes them
    assert (SharedNeighborWhispers(0.2, mutual_threshold=0.4).fit(X).labels_[y < 0] != NOISE).any()


def test_faces_of_one_photo_never_share_a_cluster():
    """Of two faces of one photo in a cluster, the one like the others stays; a pair of faces
    from one photo alone becomes noise."""
    from crowdsort.clustering.cluster import separate_cannot_link

    rng = np.random.default_rng(0)
    c = rng.normal(size=(2, 8))
    X = np.vstack([c[0] + 0.05 * rng.normal(size=(4, 8)), c[0] + 0.6 * rng.normal(size=8), c[1], c[1] + 0.01])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    photos = np.array(["a", "b", "c", "d", "d", "e", "e"])  # face 4 (the unlike one) shares photo d with 3
    out = separate_cannot_link(X, labels, photos)
    assert out.tolist() == [0, 0, 0, 0, NOISE, NOISE, NOISE]
    assert separate_cannot_link(X, labels, np.arange(7)).tolist() == labels.tolist()


def test_average_linkage_threshold_and_min_size():
    X, y = blobs(spread=0.2, singletons=5)
    everything = GraphAgglomerative(2.5, n_neighbors=20).fit(X).labels_
    assert len(np.unique(everything)) < len(np.unique(GraphAgglomerative(0.3).fit(X).labels_))
    labels = GraphAgglomerative(0.3, min_cluster_size=2).fit(X).labels_
    assert (labels[y < 0] == -1).all()


def test_rnn_prototypes_are_members():
    X, y = blobs(seed=2)
    est = RNNDBSCAN(5).fit(X)
    for c, rows in prototypes(X, est.labels_, 3, est.reverse_counts_).items():
        assert (est.labels_[rows] == c).all()
        members = np.flatnonzero(est.labels_ == c)
        assert est.reverse_counts_[rows[0]] == est.reverse_counts_[members].max()


@pytest.mark.parametrize("seed", range(4))
def test_compiled_single_linkage_equals_the_hdbscan_package(seed):
    """Row for row hdbscan's ``label`` of the spanning trees HDBSCAN.fit makes (ties, duplicates at
    the distance floor, components bridged), so the default clustering needs no hdbscan package."""
    from hdbscan._hdbscan_linkage import label

    from crowdsort.clustering.cluster import _mst_edges
    from crowdsort.clustering.condense import single_linkage
    from crowdsort.clustering.neighbors import knn_graph

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(rng.integers(3, 12), 16))
    X = centers[rng.integers(0, len(centers), 600)] + rng.normal(size=(600, 16)) * rng.uniform(0.05, 0.5)
    X[:30] = X[30:60]  # duplicates
    X[-50:] = rng.normal(size=(50, 16)) + 40  # far away: the graph leaves them apart
    for k, min_samples in [(15, 1), (5, 3), (3, 2)]:
        edges = _mst_edges(knn_graph(X, k, "exact"), min_samples)
        ours, theirs = single_linkage(edges), label(edges)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_default_hdbscan_runs_without_the_package_and_others_name_the_extra(monkeypatch):
    import sys

    from crowdsort.clustering.cluster import HDBSCAN

    monkeypatch.setitem(sys.modules, "hdbscan", None)
    monkeypatch.setitem(sys.modules, "hdbscan.hdbscan_", None)
    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(4, 8)), 10, axis=0) + rng.normal(size=(40, 8)) * 0.01
    assert len(set(HDBSCAN(min_cluster_size=3).fit(X).labels_) - {-1}) == 4
    with pytest.raises(ImportError, match=r"pip install 'crowdsort\[hdbscan\]'"):
        HDBSCAN(min_cluster_size=3, cluster_selection_method="leaf").fit(X)


@pytest.mark.parametrize("seed", range(6))
def test_compiled_condensed_tree_and_eom_equal_the_hdbscan_package(seed):
    """Row for row the same condensed tree, the same labels and the same probabilities as
    hdbscan's own code, on single-linkage trees of blobs with exact duplicates (zero distances,
    infinite lambdas) and on every min_cluster_size that matters here."""
    from hdbscan.hdbscan_ import _tree_to_labels
    from scipy.cluster.hierarchy import linkage

    from crowdsort.clustering.condense import eom_labels

    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(rng.integers(3, 12), 4)) * 4
    X = centers[rng.integers(0, len(centers), 400)] + rng.normal(size=(400, 4)) * rng.uniform(0.2, 1.5)
    X[:20] = X[20:40]  # duplicates
    tree = linkage(X, "single")
    n_clusters = {}
    for mcs in (2, 3, 5, 8, 20, 300):
        labels, probs, condensed = eom_labels(tree, mcs)
        ref_labels, ref_probs, _, ref_condensed, _ = _tree_to_labels(None, tree, min_cluster_size=mcs)
        assert np.array_equal(condensed, ref_condensed)
        assert np.array_equal(labels, ref_labels) and np.array_equal(probs, ref_probs)
        n_clusters[mcs] = labels.max() + 1
    assert n_clusters[2] > 1 and n_clusters[300] == 0  # 300 of 400 points: no split leaves two clusters


def test_split_chained_cuts_two_groups_and_keeps_strays():
    """A cluster holding two tight groups (and one face between them) is cut in two, the
    stray going to its nearer group; one loose group, or a cluster too small for two groups,
    stays whole."""
    from crowdsort.clustering.cluster import split_chained

    rng = np.random.default_rng(0)
    a, b = np.eye(16)[0], np.eye(16)[1]  # cosine distance 1 between the two people
    X = np.vstack([a + 0.1 * rng.normal(size=(6, 16)), b + 0.1 * rng.normal(size=(6, 16)),
                   [0.6 * a + 0.4 * b + 0.01 * rng.normal(size=16)], rng.normal(size=(3, 16))])
    labels = np.array([0] * 13 + [1] * 3)  # whispers chained a and b (and the face between)
    g = knn_graph(X, 15, "exact")
    out = split_chained(X, g, labels, threshold=0.3, min_group=4)
    assert len(set(out[:6])) == 1 and len(set(out[6:12])) == 1 and out[0] != out[6]
    assert out[12] == out[0]  # nearer a, reassigned rather than dropped
    assert (out[13:] == 1).all() and (out >= 0).all()
    # the same cut that separates people leaves one person's looser photos together
    assert (split_chained(X, g, labels, threshold=1.5, min_group=4) == labels).all()
    # fewer than 2 * min_group members: no split tried
    assert (split_chained(X, g, labels, threshold=0.3, min_group=7) == labels).all()


def test_shared_neighbor_whispers_split_is_optional():
    from crowdsort.clustering.cluster import SharedNeighborWhispers

    X, y = blobs(spread=0.2, singletons=10)
    assert SharedNeighborWhispers().split_threshold is None  # off by default (see its docstring)
    off = SharedNeighborWhispers(0.2, mutual_threshold=0.25).fit(X).labels_
    on = SharedNeighborWhispers(0.2, mutual_threshold=0.25, split_threshold=0.3, min_group=2).fit(X).labels_
    assert adjusted_rand_score(on, off) == 1.0  # well-separated groups: nothing to split
    with pytest.raises(ValueError):
        SharedNeighborWhispers(split_threshold=0.3, min_group=0).fit(X)
