"""Colours for clusters on a 2-D map: neighbouring clusters never share one.

A palette of a few dozen colours repeats over hundreds of clusters, and colour by id puts the
same colour side by side often enough to read two people as one. Here each cluster's colour
differs from those of its ``k`` nearest clusters on the map (either way round); a cluster keeps
the colour it had wherever that stays true, so a correction does not repaint the map.
"""
from __future__ import annotations

import numpy as np


def cluster_centres(labels: np.ndarray, layout: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(cluster ids, their median map points)`` for labels ≥ 0."""
    import pandas as pd

    labels = np.asarray(labels)
    keep = labels >= 0
    med = pd.DataFrame(np.asarray(layout)[keep, :2]).groupby(labels[keep]).median()
    return med.index.to_numpy(), med.to_numpy().reshape(len(med), 2)


def neighbours(centres: np.ndarray, k: int) -> list[set[int]]:
    """Each centre's ``k`` nearest others, made symmetric (positions into ``centres``)."""
    from scipy.spatial import cKDTree

    n = len(centres)
    adj: list[set[int]] = [set() for _ in range(n)]
    if n < 2:
        return adj
    _, nn = cKDTree(centres).query(centres, min(k + 1, n))
    for i, row in enumerate(nn):
        for j in row[1:]:
            adj[i].add(int(j))
            adj[int(j)].add(i)
    return adj


def neighbour_colours(labels: np.ndarray, layout: np.ndarray, n_colours: int,
                      previous: dict[int, int] | None = None, k: int = 6) -> dict[int, int]:
    """A colour index (0 … ``n_colours`` − 1) per cluster id, none shared with a neighbour where
    the palette allows it (a cluster with ``n_colours`` or more neighbours takes the least used
    among them). ``previous``: colours to keep where they still fit."""
    previous = previous or {}
    ids, centres = cluster_centres(labels, layout)
    adj = neighbours(centres, k)
    sizes = np.bincount(np.searchsorted(ids, np.asarray(labels)[np.asarray(labels) >= 0]), minlength=len(ids))
    colour: dict[int, int] = {}
    # kept colours first (the largest clusters win a clash), then the rest, largest first
    order = sorted(range(len(ids)), key=lambda i: (int(ids[i]) not in previous, -sizes[i], int(ids[i])))
    used = np.zeros(n_colours, int)
    for i in order:
        near = [colour[int(ids[j])] for j in adj[i] if int(ids[j]) in colour]
        prev = previous.get(int(ids[i]))
        if prev is not None and prev < n_colours and prev not in near:
            c = prev
        else:
            clash = np.bincount(near, minlength=n_colours) if near else np.zeros(n_colours, int)
            c = int(np.lexsort((used, clash))[0])  # free first, then the least used overall
        colour[int(ids[i])] = c
        used[c] += 1
    return colour
