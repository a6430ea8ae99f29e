"""The curation-cost oracle (benchmarks/curation_cost.py) on a small made-up session, and the
session behaviour it found: a face moved alone to a new person is lost at the next group."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from crowdsort.clustering.neighbors import knn_graph
from crowdsort.review.session import Annotations, ReviewSession

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def made_up(tmp_path, n_groups=6, size=8, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_groups, d))
    X = np.repeat(centers, size, 0) + rng.normal(0, 0.08, (n_groups * size, d))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"f{i:03d}" for i in range(len(X))], dtype=object)
    layout = X[:, :2] + rng.normal(0, 1e-3, (len(X), 2))  # distinct points for the map's box
    s = ReviewSession(ids, X, knn_graph(X, 15), layout, Annotations.load(tmp_path / "ann.jsonl"))
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    return s, np.repeat(np.arange(n_groups), size)


def test_the_oracle_reaches_the_goal_and_counts_its_actions(tmp_path):
    from curation_cost import Oracle

    s, group = made_up(tmp_path)
    truth = {i: f"p{g}" for i, g in zip(s.ids, group)}
    truth[s.ids[0]] = "p1"  # a face of person 1 sits in person 0's cluster
    truth[s.ids[17]] = "stranger"  # a one-photo stranger in person 2's cluster
    oracle = Oracle(s, truth)
    assert oracle.run()
    assert oracle.problems() == []
    # six people named (a move with a typed name names a new cluster too), the misplaced face
    # moved (and, where it made person 1's cluster first, the rest merged into it), the stranger rejected
    assert sum(oracle.actions.values()) == 8 and oracle.actions["reject"] == 1 and oracle.redone == 0
    assert sum(oracle.seconds.values()) > 0


def test_a_face_moved_alone_to_a_new_person_stays_after_another_merge(tmp_path):
    """Annotations._add_group dropped every group of one face at the next group (issue 30)."""
    s, group = made_up(tmp_path)
    face = s.ids[group == 0][0]
    new = s.move([face], "Solo")
    assert s.names()[new] == "Solo"
    others = [int(s.labels[group == g][0]) for g in (2, 3)]
    s.merge(others)  # about other people altogether
    c = s.cluster_of(face)
    assert (s.labels == c).sum() == 1 and s.names().get(c) == "Solo"


def test_the_oracle_adds_a_persons_noise_faces_their_cluster_offers_in_one_action(tmp_path):
    """Two noise faces of one person, far apart on the map (no box holds them alone): placed one
    by one without "Faces that may be this person", in one "add" with it."""
    from curation_cost import Oracle

    counts = {}
    for add in (False, True):
        s, group = made_up(tmp_path / str(add))
        strays = np.flatnonzero(group == 1)[:2]
        s.raw_labels[strays] = -1  # as a clustering that left them in noise
        s._apply()
        s.layout[strays] = [[-10, -10], [10, 10]]  # the box round both holds every face
        oracle = Oracle(s, {i: f"p{g}" for i, g in zip(s.ids, group)}, add=add)
        assert oracle.run() and oracle.problems() == []
        counts[add] = oracle.actions
    assert counts[True]["add"] == 1 and counts[False]["add"] == 0
    assert sum(counts[False].values()) - sum(counts[True].values()) == 1


def test_the_oracle_places_noise_faces_of_several_people_with_one_tick_of_the_queue(tmp_path):
    """One noise face each of three people, each beside their own person in the queue: ticked
    and added in one action, not three."""
    from curation_cost import Oracle

    s, group = made_up(tmp_path)
    strays = [int(np.flatnonzero(group == g)[0]) for g in (1, 2, 3)]
    s.raw_labels[strays] = -1
    s._apply()
    oracle = Oracle(s, {i: f"p{g}" for i, g in zip(s.ids, group)})
    assert oracle.run() and oracle.problems() == []
    assert oracle.actions["queue"] == 1 and sum(oracle.actions.values()) == 6 + 1
    assert any(line.startswith("queue") and line.endswith("3 people") for line in oracle.log)
