"""Map colours (issue 15): neighbouring clusters never share a colour, and a correction does not
repaint the clusters it did not touch."""
import numpy as np

from crowdsort.review.map_colors import cluster_centres, neighbour_colours, neighbours

PALETTE = 26


def clashes(colour_of, labels, layout, k=6):
    ids, centres = cluster_centres(labels, layout)
    adj = neighbours(centres, k)
    return sum(colour_of(int(ids[i])) == colour_of(int(ids[j])) for i in range(len(ids)) for j in adj[i])


def blobs(n_clusters=300, n=5000, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_clusters, n)
    layout = rng.normal(size=(n_clusters, 2))[labels] + rng.normal(0, 0.01, (n, 2))
    labels[:200] = -1  # noise has no colour of its own
    return labels, layout


def test_no_two_neighbouring_clusters_share_a_colour():
    labels, layout = blobs()
    colour = neighbour_colours(labels, layout, PALETTE)
    assert set(colour) == set(np.unique(labels[labels >= 0])) and max(colour.values()) < PALETTE
    assert clashes(colour.get, labels, layout) == 0
    assert clashes(lambda c: c % PALETTE, labels, layout) > 0  # colour by id, as before, does clash here


def test_a_merge_keeps_the_other_clusters_colours():
    labels, layout = blobs()
    before = neighbour_colours(labels, layout, PALETTE)
    merged = labels.copy()
    merged[merged == 7] = 3
    after = neighbour_colours(merged, layout, PALETTE, previous=before)
    assert clashes(after.get, merged, layout) == 0
    kept = [c for c in after if after[c] == before[c]]
    assert len(kept) >= 0.97 * len(after)
