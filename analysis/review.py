"""Reviewing a clustering by hand: names, merges, splits and rejections that persist.

Corrections are stored per face, not per cluster number, so they survive re-clustering with
new parameters and a restart: a cluster is named after the name most of its members carry (a
name follows its faces); a merge or a split records groups of faces that belong together,
and after any re-clustering each group gathers its faces and the clusters made mostly of
them; rejected faces stay out of every cluster, and faces marked "not a face" are left out
altogether. :class:`ReviewSession` is what the dashboard drives; it holds the vectors, the
cached graph and the map, re-clusters without re-embedding, and undoes corrections.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .export import unnamed_label
from .store import atomic_write_text

ANNOTATIONS_VERSION = 1
NOT_FACE = -2  # label of items marked "not a face": drawn apart from noise (-1)
UNDO_DEPTH = 50


@dataclass
class Annotations:
    """Per-face corrections of a dataset, saved as JSON at every change."""

    path: Path
    names: dict[str, str] = field(default_factory=dict)  # face id → person
    rejected: set[str] = field(default_factory=set)  # out of any cluster (noise)
    not_face: set[str] = field(default_factory=set)  # not a face at all
    groups: list[list[str]] = field(default_factory=list)  # faces kept together (merges, split halves), disjoint

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Annotations":
        path = Path(path)
        if not path.exists():
            return cls(path)
        d = json.loads(path.read_text())
        if d.get("format_version") != ANNOTATIONS_VERSION:
            raise ValueError(f"{path}: annotation format {d.get('format_version')}, expected {ANNOTATIONS_VERSION}")
        return cls(path, dict(d["names"]), set(d["rejected"]), set(d["not_face"]), [list(g) for g in d.get("groups", [])])

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({
            "format_version": ANNOTATIONS_VERSION, "names": self.names,
            "rejected": sorted(self.rejected), "not_face": sorted(self.not_face), "groups": self.groups}, indent=1))

    def add_group(self, face_ids) -> None:
        """Keep these faces together; they leave the groups they were in (groups stay disjoint)."""
        new = set(face_ids)
        self.groups = [g for g in ([f for f in g if f not in new] for g in self.groups) if len(g) > 1]
        self.groups.append(sorted(new))

    def state(self) -> tuple:
        return dict(self.names), set(self.rejected), set(self.not_face), [list(g) for g in self.groups]

    def restore(self, state: tuple) -> None:
        self.names, self.rejected, self.not_face, self.groups = state
        self.save()


def apply_corrections(labels: np.ndarray, ids: np.ndarray, ann: Annotations) -> np.ndarray:
    """Labels after the corrections: each group, in the order made, becomes one cluster with
    every cluster most of whose members are in it; then rejected faces go to noise and
    non-faces to :data:`NOT_FACE`. The result may skip numbers (renumber it)."""
    labels = np.asarray(labels).copy()
    index = pd.Index(ids)

    def rows_of(face_ids):
        rows = index.get_indexer(list(face_ids))
        return rows[rows >= 0]

    for group in ann.groups:
        rows = rows_of(group)
        if len(rows) == 0:
            continue
        new = labels.max() + 1
        sizes = np.bincount(labels[labels >= 0], minlength=new)
        inside = labels[rows]
        candidates, counts = np.unique(inside[inside >= 0], return_counts=True)
        mostly = candidates[counts > 0.5 * sizes[candidates]]
        take = np.isin(labels, mostly)
        take[rows] = True
        labels[take] = new
    rejected = rows_of(ann.rejected)
    labels[rejected] = np.minimum(labels[rejected], -1)
    labels[rows_of(ann.not_face)] = NOT_FACE
    return labels


def cluster_names(labels: np.ndarray, ids: np.ndarray, names: dict[str, str], min_share: float = 0.5) -> dict[int, str]:
    """Name of each cluster: the name carried by more than ``min_share`` of its members."""
    if not names:
        return {}
    df = pd.DataFrame({"c": labels, "n": pd.Series(ids).map(names).to_numpy()})
    df = df[df["c"] >= 0]
    out = {}
    for c, g in df.groupby("c"):
        counts = g["n"].value_counts()
        if len(counts) and counts.iloc[0] > min_share * len(g):
            out[int(c)] = counts.index[0]
    return out


class ReviewSession:
    """A clustering under review: vectors, graph and map fixed; labels and names editable."""

    def __init__(self, ids, X: np.ndarray, graph, layout: np.ndarray, annotations: Annotations,
                 table: pd.DataFrame | None = None, refs=None, kind: str = "faces"):
        self.kind = kind  # "faces" or "images": what the items are, for the words a person reads
        self.ids = np.asarray(ids, dtype=object)
        self.X, self.graph, self.layout, self.ann = X, graph, layout, annotations
        self.table = table if table is not None else pd.DataFrame({"item_id": self.ids})
        self.refs = refs
        self.raw_labels = np.full(len(self.ids), -1)
        self.labels = self.raw_labels.copy()
        self._trees: dict = {}
        self._undo: list[tuple] = []  # annotation states before each correction (this process only)
        self.setting = None

    # -- clustering -----------------------------------------------------------------------
    def recluster(self, algorithm: str, params: dict, force: bool = False) -> np.ndarray:
        """Labels for these settings (the corrections applied); nothing is re-fit when unchanged."""
        from .cluster import make_clusterer

        setting = (algorithm, sorted(params.items()))
        if setting == self.setting and not force:
            return self.labels
        self.setting = setting
        est = make_clusterer(algorithm, **params)
        keep = ~np.isin(self.ids, list(self.ann.not_face))
        labels = np.full(len(self.ids), NOT_FACE)
        if keep.sum() >= 2:
            sub = self.graph if keep.all() else _subgraph(self.graph, keep)
            fit = {}
            if algorithm == "hdbscan":  # the tree depends on min_samples and the faces only
                key = (params.get("min_samples"), keep.tobytes())
                if key in self._trees:
                    fit["single_linkage_tree"] = self._trees[key]
            est.fit(self.X[keep], graph=sub, **fit)
            if algorithm == "hdbscan":
                self._trees = {key: est.single_linkage_tree_}
            labels[keep] = est.labels_
        self.raw_labels = labels
        self._apply()
        return self.labels

    def _renumber(self) -> None:
        from .cluster import relabel_by_size

        nf = self.labels == NOT_FACE
        self.labels = relabel_by_size(np.where(nf, -1, self.labels), None)
        self.labels[nf] = NOT_FACE

    # -- summaries ------------------------------------------------------------------------
    def names(self) -> dict[int, str]:
        return cluster_names(self.labels, self.ids, self.ann.names)

    def clusters(self) -> pd.DataFrame:
        """One row per cluster, largest first: ``cluster, size, name``."""
        lab = self.labels[self.labels >= 0]
        sizes = np.bincount(lab) if len(lab) else np.zeros(0, int)
        names = self.names()
        return pd.DataFrame({"cluster": np.arange(len(sizes)), "size": sizes,
                             "name": [names.get(c, "") for c in range(len(sizes))]})

    def summary(self) -> dict:
        n = int((self.labels != NOT_FACE).sum())
        noise = int((self.labels == -1).sum())
        return {"clusters": int(self.labels.max() + 1) if (self.labels >= 0).any() else 0,
                "noise": noise, "noise_share": noise / n if n else 0.0, "items": n}

    def members(self, cluster: int) -> np.ndarray:
        """Rows of ``cluster``, prototypes (medoid, then nearest to it) first."""
        from .cluster import prototypes

        rows = np.flatnonzero(self.labels == cluster)
        if len(rows) < 2:
            return rows
        order = prototypes(self.X[rows], np.zeros(len(rows), int), len(rows))[0]
        return rows[order]

    def suggestions(self, cluster: int, n: int = 3) -> pd.DataFrame:
        """Best reference matches for a cluster: ``label, distance`` (median over members)."""
        from .identify import person_distances

        if self.refs is None:
            return pd.DataFrame(columns=["label", "distance"])
        people, D = person_distances(self.X[self.labels == cluster], self.refs)
        med = np.median(D, axis=0)
        order = np.argsort(med)[:n]
        return pd.DataFrame({"label": people[order], "distance": np.round(med[order], 4)})

    # -- corrections (saved at once) ---------------------------------------------------------
    def _correct(self, change) -> None:
        """Apply ``change`` to the annotations, save them, and re-apply them all to the clustering."""
        self._undo.append(self.ann.state())
        del self._undo[:-UNDO_DEPTH]
        change()
        self.ann.save()
        self._apply()

    def _apply(self) -> None:
        self.labels = apply_corrections(self.raw_labels, self.ids, self.ann)
        self._renumber()

    def undo(self) -> bool:
        """Take back the last correction (name, merge, split, rejection); False if none is left."""
        if not self._undo:
            return False
        self.ann.restore(self._undo.pop())
        self._apply()
        return True

    def cluster_of(self, face_id: str) -> int:
        return int(self.labels[self.ids == face_id][0])

    def name(self, cluster: int, name: str) -> None:
        def change():
            for fid in self.ids[self.labels == cluster]:
                if name.strip():
                    self.ann.names[fid] = name.strip()
                else:
                    self.ann.names.pop(fid, None)
        self._correct(change)

    def merge(self, clusters: list[int]) -> int:
        """One cluster of these, kept together from now on; a name any of them carries goes to all."""
        if len(clusters) < 2:
            return clusters[0] if clusters else -1
        names = self.names()
        name = next((names[c] for c in clusters if c in names), "")
        members = self.ids[np.isin(self.labels, clusters)]

        def change():
            self.ann.add_group(members)
            if name:
                self.ann.names.update(dict.fromkeys(members, name))
        self._correct(change)
        return self.cluster_of(members[0])

    def split(self, cluster: int) -> list[int]:
        """Two clusters from one, by average linkage (cosine) on its members, kept apart from
        now on; names dropped."""
        from sklearn.cluster import AgglomerativeClustering

        rows = np.flatnonzero(self.labels == cluster)
        if len(rows) < 2:
            return [cluster]
        parts = AgglomerativeClustering(n_clusters=2, metric="cosine", linkage="average").fit(self.X[rows]).labels_
        halves = [self.ids[rows[parts == k]] for k in (0, 1)]

        def change():
            for half in halves:
                self.ann.add_group(half)
            for fid in self.ids[rows]:
                self.ann.names.pop(fid, None)
        self._correct(change)
        return [self.cluster_of(h[0]) for h in halves]

    def reject(self, face_ids, not_face: bool = False) -> None:
        """Take faces out of their cluster for good (or mark them as not a face)."""
        face_ids = set(face_ids)

        def change():
            (self.ann.not_face if not_face else self.ann.rejected).update(face_ids)
            for f in face_ids:
                self.ann.names.pop(f, None)
        self._correct(change)

    # -- output -----------------------------------------------------------------------------
    def labelled_table(self) -> pd.DataFrame:
        """One row per item, as ``crowdsort apply-labels --keep-unlabeled`` writes it."""
        names = self.names()
        out = self.table.copy()
        out["cluster"] = self.labels
        out["labelled"] = [c in names for c in self.labels]
        out["label"] = [names.get(c) or ("not a face" if c == NOT_FACE else unnamed_label(c)) for c in self.labels]
        return out[out["cluster"] != NOT_FACE].reset_index(drop=True)

    def labels_csv(self) -> pd.DataFrame:
        """``label,cluster`` rows for named clusters (the format ``apply-labels`` reads)."""
        return pd.DataFrame([{"label": n, "cluster": c} for c, n in sorted(self.names().items())],
                            columns=["label", "cluster"])


def _subgraph(graph, keep: np.ndarray):
    """The kNN graph restricted to ``keep`` rows, indices renumbered, dropped neighbours -1."""
    from .neighbors import KNNGraph

    new = np.full(len(keep), -1)
    new[keep] = np.arange(keep.sum())
    ind = graph.indices[keep]
    ind = np.where(ind >= 0, new[np.maximum(ind, 0)], -1)
    dist = np.where(ind >= 0, graph.distances[keep], np.inf).astype(np.float32)
    order = np.argsort(ind < 0, axis=1, kind="stable")  # valid neighbours first, order kept
    return KNNGraph(np.take_along_axis(ind, order, 1), np.take_along_axis(dist, order, 1), graph.method)
