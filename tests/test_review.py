"""Review corrections: names follow faces across re-clustering; rejections stick; merge, split."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from crowdsort.clustering.neighbors import knn_graph
from crowdsort.naming.identify import References
from crowdsort.review.session import NOT_FACE, Annotations, NameConflict, ReviewSession, cluster_names, keep_ids


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
    assert list(session.names().values()) == ["Bea"]  # one half keeps the name, the other is unnamed


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


def test_cluster_names_are_each_clusters_majority_among_all_its_members():
    """Counted in one pass over many clusters, the names are those a cluster-by-cluster count
    gives: a name held by more than half of the cluster's members (unnamed ones included)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 300, 5000)
    ids = np.array([f"f{i}" for i in range(len(labels))])
    names = {i: str(rng.choice(["Ada", "Bea", "Cy"], p=[0.8, 0.1, 0.1]))
             for i, c in zip(ids, labels) if rng.random() < (0.9 if c % 3 else 0.4)}
    expected = {}
    for c in np.unique(labels[labels >= 0]):
        held = [names[i] for i in ids[labels == c] if i in names]
        top = max(set(held), key=held.count, default=None)
        if top is not None and held.count(top) > 0.5 * (labels == c).sum():
            expected[int(c)] = top
    got = cluster_names(labels, ids, names)
    assert got == expected
    assert 100 < len(got) < len(np.unique(labels[labels >= 0])) - 50  # some named, some without a majority


def test_suggestions_name_an_enrolled_cluster_and_say_unknown_otherwise(session):
    """Beyond the library's threshold the suggestion is "unknown", the nearest names after it
    (not suggested); within it, the name."""
    centre = lambda g: session.X[session.truth == g].mean(0) / np.linalg.norm(session.X[session.truth == g].mean(0))  # noqa: E731
    session.refs = References("dlib", np.array(["Ada", "Bea"]), np.stack([centre(0), centre(2)]).astype(np.float32))
    known = session.suggestions(int(session.labels[session.truth == 0][0]))
    assert known["label"].tolist()[:2] == ["Ada", "Bea"] and known["suggested"].tolist() == [True, False]
    stranger = session.suggestions(int(session.labels[session.truth == 1][0]))
    assert stranger["label"].iloc[0] == "unknown" and stranger["suggested"].tolist() == [True, False, False]
    assert set(stranger["label"].iloc[1:]) == {"Ada", "Bea"} and np.isnan(stranger["distance"].iloc[0])


def test_merging_two_named_clusters_needs_the_name_to_keep(session, tmp_path):
    a, b = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    session.name(a, "Ada")
    session.name(b, "Bea")
    ops = len(session.ann.ops)
    with pytest.raises(NameConflict, match="'Ada', 'Bea': choose the name to keep"):
        session.merge([a, b])
    assert len(session.ann.ops) == ops and session.summary()["clusters"] == 6  # nothing recorded
    merged = session.merge([a, b], name="Bea")
    assert session.names() == {merged: "Bea"} and merged in (a, b)


def test_split_keeps_the_name_on_the_half_like_the_cluster(tmp_path):
    """A named cluster of 10 faces of one person and 3 of another: after a split the 10 keep the
    name (their mean is nearer the cluster's), the 3 are unnamed."""
    X, truth = groups(n_groups=4, size=10, seed=3)
    keep = ~((truth == 1) & (np.arange(len(X)) % 10 >= 3))
    X, truth = X[keep], truth[keep]
    X[truth == 1] = X[truth == 0][:3] * 0.9 + X[truth == 1] * 0.1
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.json"))
    s.recluster("dbscan", {"eps": 0.1, "min_samples": 2})
    joined = int(s.labels[truth == 0][0])
    assert (s.labels[truth <= 1] == joined).all()
    s.name(joined, "Ada")
    s.split(joined)
    names = s.names()
    assert names.get(int(s.labels[truth == 0][0])) == "Ada" and int(s.labels[truth == 1][0]) not in names
    assert int(s.labels[truth == 0][0]) == joined  # the larger half keeps the id


def test_corrections_keep_the_ids_of_untouched_clusters(session):
    """Naming, merging, splitting and rejecting leave the other clusters' numbers (and so their
    colours) as they were; new clusters get new numbers."""
    id_of = lambda g: int(session.labels[session.truth == g][-1])  # noqa: E731  (the first of 4 is rejected)
    before = {g: id_of(g) for g in range(6)}
    session.name(id_of(5), "Eve")
    session.reject(session.ids[session.truth == 4][:1])
    merged = session.merge([id_of(0), id_of(1)])
    assert merged == min(before[0], before[1])
    halves = session.split(merged)
    assert all(id_of(g) == before[g] for g in (2, 3, 4, 5)) and merged in halves
    assert max(halves) > max(before.values())  # the new half: a number never used
    assert session.clusters()["cluster"].tolist() == sorted(set(session.labels[session.labels >= 0]),
                                                           key=lambda c: (-(session.labels == c).sum(), c))


def test_undoing_a_merge_gives_both_clusters_their_ids_back(session):
    id_of = lambda g: int(session.labels[session.truth == g][0])  # noqa: E731
    before = session.labels.copy()
    a, b = id_of(0), id_of(1)
    session.name(id_of(2), "Cy")
    merged = session.merge([a, b])
    assert (session.labels[session.truth == 1] == merged).all()
    session.name(id_of(3), "Di")  # a later correction, kept
    assert session.undo(session._undo[-2])  # the merge, by id, as a browser tab does
    assert (session.labels == before).all()
    assert session.names() == {id_of(2): "Cy", id_of(3): "Di"}


def test_nearest_clusters_find_the_other_half_of_a_split_person(session):
    a = int(session.labels[session.truth == 0][0])
    halves = session.split(a)
    near = session.nearest_clusters(halves[0], n=3)
    assert len(near) == 3 and int(near["cluster"].iloc[0]) == halves[1]
    assert near["distance"].is_monotonic_increasing and halves[0] not in set(near["cluster"])
    assert session.nearest_clusters(10_000).empty


def test_keep_ids_gives_the_largest_overlap_its_old_id():
    before = np.array([0, 0, 0, 1, 1, 2, 2, -1])
    after = np.array([0, 0, 0, 0, 0, 1, 2, -1])  # 0 and 1 merged; 2 split in two
    assert keep_ids(before, after).tolist() == [0, 0, 0, 0, 0, 2, 3, -1]


def test_undo_of_a_named_correction_takes_back_that_one_only(session):
    """A caller (one browser tab) undoes its own correction by id, not the last of the process."""
    a, b = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    session.name(a, "Ada")
    mine = session.last_op
    session.name(b, "Bea")  # another tab's
    assert session.undo(mine) and session.names() == {b: "Bea"}
    assert not session.undo(mine)  # taken back already


def test_move_puts_faces_with_a_named_person_or_in_a_new_cluster(session):
    a, b = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    session.name(a, "Ada")
    strays = list(session.ids[session.truth == 1][:2])
    c = session.move(strays, "Ada")
    assert c == a and session.names()[a] == "Ada" and (session.labels == a).sum() == 10
    new = session.move(strays[:1])
    assert new not in (a, b) and (session.labels == new).sum() == 1 and new not in session.names()


def test_a_move_of_most_of_a_cluster_leaves_the_faces_not_chosen_where_they_were(session, tmp_path):
    """Six of a cluster's eight faces moved to a new person: exactly those six (not the whole
    cluster, though most of it moved), after a re-clustering and a restart too; the two stay
    together."""
    b = int(session.labels[session.truth == 1][0])
    members = session.ids[session.labels == b]
    new = session.move(members[:6])
    assert set(session.ids[session.labels == new]) == set(members[:6])
    stay = session.labels[np.isin(session.ids, members[6:])]
    assert stay[0] == stay[1] != new
    restarted = ReviewSession(session.ids, session.X, session.graph, session.layout, Annotations.load(tmp_path / "ann.json"))
    for s in (session, restarted):
        s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
        c = int(s.labels[s.ids == members[0]][0])
        assert set(s.ids[s.labels == c]) == set(members[:6])
    assert session.undo() and len(np.unique(session.labels[np.isin(session.ids, members)])) == 1


def test_labelled_table_paths_are_all_absolute(session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    session.table = session.table.assign(crop_path="faces/crops/a.jpg", source_image=str(tmp_path / "p.jpg"))
    t = session.labelled_table()
    assert t["crop_path"].str.startswith(str(tmp_path)).all() and t["source_image"].str.startswith("/").all()


def test_the_review_queue_offers_unnamed_clusters_then_noise_beside_the_nearest_named_person(session):
    a, b = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    assert session.noise_to_review().empty  # nobody named: nothing to place noise beside
    session.name(a, "Ada")
    session.name(b, "Bea")
    unnamed = session.unnamed_clusters()
    assert len(unnamed) == 4 and not set(unnamed["cluster"]) & {a, b}
    assert unnamed["size"].is_monotonic_decreasing
    rejected = session.ids[session.truth == 0][1]
    session.reject([rejected])  # a stranger taken out of Ada's cluster is not offered back to her
    stray = int(np.flatnonzero(session.truth == 1)[2])
    stranger = int(np.flatnonzero(session.truth == 4)[0])
    session.labels[[stray, stranger]] = -1  # as a clustering that left one of Bea's faces in noise, and another's
    queue = session.noise_to_review()
    assert queue["item_id"].tolist() == [session.ids[stray], session.ids[stranger]]  # nearest first
    assert queue["name"].iloc[0] == "Bea" and queue["cluster"].iloc[0] == b
    assert queue["likely"].tolist() == [True, False]  # the other person's face is not offered as Ada's or Bea's
    assert queue["distance"].iloc[0] < session.placement_threshold(2) < queue["distance"].iloc[1]


def test_a_face_far_from_its_persons_mean_but_next_to_one_of_their_photos_is_offered(tmp_path):
    """likely_members and the noise queue measure a face by the person's mean and by their member
    nearest it: a profile beside the one profile photo of a frontal person is offered, though
    the mean (frontal) is beyond the threshold."""
    X, truth = groups()
    a, b = np.eye(X.shape[1])[:2]
    turn = lambda deg: np.cos(np.radians(deg)) * a + np.sin(np.radians(deg)) * b  # noqa: E731
    person = np.array([turn(0), turn(2), turn(75)])  # two frontal photos, one profile
    X = np.vstack([X, person, turn(100)[None]]).astype(np.float32)
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.jsonl"))
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    mine, face = np.arange(len(X) - 4, len(X) - 1), len(X) - 1
    s.raw_labels[mine], s.raw_labels[face] = s.raw_labels.max() + 1, -1
    s._apply()
    c = int(s.labels[mine[0]])
    mean = X[mine].mean(0) / np.linalg.norm(X[mine].mean(0))
    assert 1 - X[face] @ mean > s.pair_threshold()  # the mean alone would not offer it
    offered = s.likely_members(c)
    assert offered["row"].tolist() == [face]
    assert offered["distance"].iloc[0] == pytest.approx(1 - X[face] @ X[mine[2]], abs=1e-3)
    s.name(c, "Ada")
    queue = s.noise_to_review()
    assert queue[queue["row"] == face]["name"].tolist() == ["Ada"]
    assert queue[queue["row"] == face]["distance"].iloc[0] == pytest.approx(offered["distance"].iloc[0], abs=1e-3)


def test_faces_like_chosen_ones_are_the_rest_of_their_person_in_noise(tmp_path):
    """similar_noise: the noise faces near the chosen ones, nearest first, the chosen left out,
    never a stranger; add_each places faces with several people in one correction (one undo)."""
    X, truth = groups()
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.jsonl"))
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    dee, eve = np.flatnonzero(truth == 3)[:3], np.flatnonzero(truth == 4)[:2]
    s.raw_labels[[*dee, *eve]] = -1
    s._apply()
    like = s.similar_noise([ids[dee[0]]])
    assert sorted(like["row"]) == sorted(dee[1:]) and like["distance"].is_monotonic_increasing
    assert s.similar_noise([ids[d] for d in dee])["row"].tolist() == []  # all chosen: none left like them
    assert s.similar_noise([])["row"].tolist() == []

    homes = {g: int(s.labels[np.flatnonzero(truth == g)[-1]]) for g in (3, 4)}
    s.name(homes[3], "Dee")
    s.add_each({homes[3]: list(ids[dee]), homes[4]: list(ids[eve])})
    assert (s.labels[dee] == homes[3]).all() and (s.labels[eve] == homes[4]).all()
    assert s.names()[homes[3]] == "Dee" and homes[4] not in s.names()
    s.undo()
    assert (s.labels[[*dee, *eve]] == -1).all() and s.names() == {homes[3]: "Dee"}


def test_faces_that_may_be_a_person_are_the_noise_nearest_their_cluster_and_one_add_places_them(tmp_path):
    """likely_members: the noise faces within the model's threshold of this cluster, nearest first;
    never a stranger, another person's face or a face a person rejected. add_to puts the chosen
    ones in the cluster (named or not) and they stay there."""
    X, truth = groups()
    stranger = np.random.default_rng(7).normal(size=(1, X.shape[1]))
    X = np.vstack([X, (stranger / np.linalg.norm(stranger)).astype(np.float32)])
    truth = np.append(truth, -1)
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    s = ReviewSession(ids, X, knn_graph(X, 15), np.zeros((len(X), 2)), Annotations.load(tmp_path / "ann.jsonl"))
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    bea, other = np.flatnonzero(truth == 1)[:4], np.flatnonzero(truth == 4)[0]
    s.raw_labels[[*bea, other, len(X) - 1]] = -1  # as a clustering that left them in noise
    s.reject([ids[bea[3]]])  # taken out by a person: never offered again
    b, e = int(s.labels[np.flatnonzero(truth == 1)[4]]), int(s.labels[np.flatnonzero(truth == 4)[1]])
    assert (s.labels[[*bea, other, len(X) - 1]] == -1).all()

    offered = s.likely_members(b)
    assert sorted(offered["row"]) == sorted(bea[:3]) and offered["distance"].is_monotonic_increasing
    assert offered["distance"].max() <= s.pair_threshold()
    assert s.likely_members(e)["row"].tolist() == [other]  # person 4's face: offered to their cluster only
    assert not any(len(s.likely_members(int(c))) and len(X) - 1 in s.likely_members(int(c))["row"].tolist()
                   for c in s.clusters()["cluster"])  # the stranger: nowhere

    s.name(b, "Bea")
    assert s.add_to(b, ids[bea[:2]]) == b  # the cluster keeps its id
    assert (s.labels[bea[:2]] == b).all() and s.names()[b] == "Bea"
    assert s.likely_members(b)["row"].tolist() == [bea[2]]
    assert s.add_to(e, [ids[other]]) == e and e not in s.names()  # an unnamed cluster stays unnamed
    s.merge([int(c) for c in s.clusters()["cluster"] if c not in (b, e)][:2])  # another correction after them
    assert (s.labels[bea[:2]] == b).all() and s.labels[other] == e
