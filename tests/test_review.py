"""Review corrections: names follow faces across re-clustering; rejections stick; merge, split."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from analysis.neighbors import knn_graph
from analysis.review import NOT_FACE, Annotations, ReviewSession, cluster_names


def groups(n_groups=6, size=8, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, d))
    X = np.repeat(centers, size, 0) + rng.normal(0, 0.08, (n_groups * size, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), np.repeat(np.arange(n_groups), size)


@pytest.fixture
def session(tmp_path):
    X, truth = groups()
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.json"))
    s.truth = truth
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    return s


def test_name_follows_its_faces_across_reclustering_and_restart(session, tmp_path):
    assert session.summary()["clusters"] == 6
    c = int(session.labels[session.truth == 3][0])
    session.name(c, "Ada")
    session.recluster("dbscan", {"eps": 0.05, "min_samples": 2})
    c2 = int(session.labels[session.truth == 3][0])
    assert session.names() == {c2: "Ada"}
    again = Annotations.load(tmp_path / "ann.json")  # a restarted server reads the same
    assert again.names == session.ann.names and len(again.names) == 8
    assert session.labels_csv().to_dict("records") == [{"label": "Ada", "cluster": c2}]


def test_rejected_and_not_face_stick(session, tmp_path):
    member = session.ids[session.truth == 0][0]
    other = session.ids[session.truth == 1][0]
    session.reject([member])
    session.reject([other], not_face=True)
    for _ in range(2):
        assert session.labels[session.ids == member][0] == -1
        assert session.labels[session.ids == other][0] == NOT_FACE
        session.recluster("hdbscan", {"min_cluster_size": 3, "min_samples": 1})
    table = session.labelled_table()
    assert other not in set(table["item_id"]) and len(table) == len(session.ids) - 1
    assert Annotations.load(tmp_path / "ann.json").rejected == {member}


def test_merge_and_split(session):
    a = int(session.labels[session.truth == 0][0])
    b = int(session.labels[session.truth == 1][0])
    session.name(b, "Bea")
    merged = session.merge([a, b])
    assert session.summary()["clusters"] == 5
    rows = session.labels == merged
    assert rows.sum() == 16 and session.names()[merged] == "Bea"
    halves = session.split(merged)
    assert len(set(halves)) == 2 and session.summary()["clusters"] == 6
    for h in halves:  # the split recovers the two groups
        assert len(set(session.truth[session.labels == h])) == 1
    assert "Bea" not in session.names().values()  # a split clears names: name the halves again


def same_partition(a, b) -> bool:
    return adjusted_rand_score(a, b) == 1.0


def test_merge_survives_new_parameters_a_restart_and_can_be_undone(session, tmp_path):
    a = int(session.labels[session.truth == 0][0])
    b = int(session.labels[session.truth == 1][0])
    merged = session.merge([a, b])
    together = np.isin(session.truth, [0, 1])
    assert (session.labels[together] == merged).all()
    # new parameters, then a restarted server over the same annotations: still one cluster
    session.recluster("dbscan", {"eps": 0.05, "min_samples": 2})
    assert len(set(session.labels[together])) == 1 and session.labels[together][0] >= 0
    restarted = ReviewSession(session.ids, session.X, session.graph, session.layout,
                              Annotations.load(tmp_path / "ann.json"))
    restarted.recluster("hdbscan", {"min_cluster_size": 3, "min_samples": 1})
    assert len(set(restarted.labels[together])) == 1 and restarted.summary()["clusters"] == 5
    # a group takes its own faces, not the cluster of a face that strays into another one
    assert not np.isin(restarted.labels[~together], restarted.labels[together]).any()
    assert restarted.undo() is False  # undo history is this process's own
    assert session.undo() is True
    session.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    assert session.summary()["clusters"] == 6 and Annotations.load(tmp_path / "ann.json").groups == []


def test_split_halves_stay_apart_after_reclustering(tmp_path):
    """Two true groups that the clustering joins (close centres): split once, they stay two."""
    X, truth = groups(n_groups=4, size=10, seed=3)
    X[truth == 1] = X[truth == 0] * 0.9 + X[truth == 1] * 0.1  # group 1 almost on group 0
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.json"))
    s.recluster("dbscan", {"eps": 0.1, "min_samples": 2})
    joined = int(s.labels[truth == 0][0])
    assert (s.labels[truth <= 1] == joined).all()
    halves = s.split(joined)
    assert same_partition(s.labels[truth <= 1], truth[truth <= 1])
    for params in ({"eps": 0.12, "min_samples": 2}, {"eps": 0.1, "min_samples": 3}):
        s.recluster("dbscan", params)
        assert same_partition(s.labels[truth <= 1], truth[truth <= 1]) and (s.labels[truth <= 1] >= 0).all()
    assert len(halves) == 2
    s.undo()
    assert len(set(s.labels[truth <= 1])) == 1


def test_undo_takes_back_names_and_rejections(session):
    c = int(session.labels[session.truth == 2][0])
    before = session.labels.copy()
    session.name(c, "Cy")
    session.reject(session.ids[session.truth == 2][:2])
    assert session.undo() and session.undo()
    assert session.names() == {} and np.array_equal(session.labels, before)
    assert not session.undo()


def test_cluster_names_need_a_majority():
    labels = np.array([0, 0, 0, 1, 1])
    ids = np.array(list("abcde"))
    assert cluster_names(labels, ids, {"a": "X", "b": "X", "d": "Y"}) == {0: "X"}
