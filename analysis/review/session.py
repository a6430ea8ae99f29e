"""Reviewing a clustering by hand: names, merges, splits and rejections that persist.

Corrections are stored per face, not per cluster number, so they survive re-clustering with
new parameters and a restart: a cluster is named after the name most of its members carry (a
name follows its faces); a merge or a split records groups of faces that belong together,
and after any re-clustering each group gathers its faces and the clusters made mostly of
them (never a face a move left behind: the user saw it and did not choose it); rejected
faces stay out of every cluster, and faces marked "not a face" are left out altogether. :class:`ReviewSession` is what the dashboard drives; it holds the vectors, the
cached graph and the map, re-clusters without re-embedding, and undoes corrections.
"""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage.export import unnamed_label
from ..storage.store import DamagedFileError, atomic_write_bytes

ANNOTATIONS_VERSION = 2  # 1: one JSON document, rewritten at each change; 2: a log of corrections
NOT_FACE = -2  # label of items marked "not a face": drawn apart from noise (-1)
UNDO_DEPTH = 50


class NameConflict(ValueError):
    """Clusters named differently were to be merged with no name chosen: which one stays is the
    user's choice, never a silent one."""

    def __init__(self, names):
        self.names = sorted(names)
        super().__init__(f"the clusters are named {', '.join(map(repr, self.names))}: choose the name to keep")


@dataclass
class Annotations:
    """Per-face corrections of a dataset: the state replayed from a log of corrections.

    The log (``annotations.jsonl``) is one JSON correction per line, appended under a file
    lock: two dashboards on one dataset each read what the other appended before adding
    their own, so neither erases the other's names. A correction killed half-written is a
    line without its newline, which readers ignore and the next writer removes. An undo is
    a line naming the correction it takes back; the state is every correction not taken back,
    in the log's order.
    """

    path: Path
    names: dict[str, str] = field(default_factory=dict)  # face id → person
    rejected: set[str] = field(default_factory=set)  # out of any cluster (noise)
    not_face: set[str] = field(default_factory=set)  # not a face at all
    groups: list[list[str]] = field(default_factory=list)  # faces kept together (merges, split halves), disjoint
    left: set[str] = field(default_factory=set)  # left behind by a move: no group takes them in with their cluster
    ops: list[dict] = field(default_factory=list)  # the corrections read so far, in the log's order
    offset: int = 0  # bytes of the log read
    inode: tuple | None = None  # the log file read (a migration replaces it: crowdsort.storage.migrate)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Annotations":
        path = Path(path)
        ann = cls(path)
        old = path.with_suffix(".json")
        if path.suffix == ".jsonl" and not path.exists() and old.exists():
            ann._append([{"id": uuid.uuid4().hex, "snapshot": _read_v1(old)}])  # the old file stays as it was
        ann.sync()
        if ann.ops:  # a copy of a log that reads well, for the day this one is damaged
            atomic_write_bytes(ann.backup, path.read_bytes()[: ann.offset])
        return ann

    @property
    def backup(self) -> Path:
        return self.path.with_name(self.path.name + ".bak")

    # -- the log ------------------------------------------------------------------------------
    def sync(self) -> bool:
        """Apply what others appended since the last read; True if anything was."""
        if not self.path.exists():
            return False
        with open(self.path, "rb") as f:
            st = os.fstat(f.fileno())
            if self.inode is not None and (st.st_dev, st.st_ino) != self.inode:
                # the log was rewritten in place (its face ids made relative): read it all again
                self.names, self.rejected, self.not_face, self.groups, self.left = {}, set(), set(), [], set()
                self.ops, self.offset = [], 0
            self.inode = (st.st_dev, st.st_ino)
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line without its newline is still being written, or was killed
        if not end:
            return False
        new = []
        for i, line in enumerate(data[:end].splitlines()):
            if not line.strip():  # a blank line (an editor's, a copy's) holds no correction
                continue
            try:
                op = json.loads(line)
                _check_correction(op)
            except ValueError as e:
                line_no = self.path.read_bytes()[: self.offset].count(b"\n") + i + 1
                raise DamagedFileError(
                    f"{self.path} is damaged at line {line_no} ({e}); the last good copy is {self.backup}: "
                    f"copy it over {self.path.name} (the corrections made since it was taken are lost)") from None
            new.append(op)
        self.offset += end
        self._take(new)
        return True

    def _take(self, new: list[dict]) -> None:
        self.ops += new
        if any("undo" in op for op in new):
            self._replay()
        else:
            for op in new:
                self._apply(op)

    def _replay(self) -> None:
        undone = {op["undo"] for op in self.ops if "undo" in op}
        self.names, self.rejected, self.not_face, self.groups, self.left = {}, set(), set(), [], set()
        for op in self.ops:
            if op["id"] not in undone:
                self._apply(op)

    def _apply(self, op: dict) -> None:
        if "snapshot" in op:
            d = op["snapshot"]
            self.names, self.rejected = dict(d["names"]), set(d["rejected"])
            self.not_face, self.groups = set(d["not_face"]), [list(g) for g in d.get("groups", [])]
        for g in op.get("groups", []):
            self._add_group(g)
        for fid, name in op.get("names", {}).items():
            if name:
                self.names[fid] = name
            else:
                self.names.pop(fid, None)
        self.rejected.update(op.get("rejected", []))
        self.not_face.update(op.get("not_face", []))
        self.left.update(op.get("left", []))

    def _append(self, ops: list[dict]) -> None:
        """Add ``ops`` to the log, all or none: :class:`NotSaved` when the disk refuses them (full,
        read-only, forbidden), the log then as it was (a half line left would be taken in by the
        next reader, a correction the session said it never made)."""
        import fcntl

        data = b"".join(json.dumps(op, ensure_ascii=False).encode() + b"\n" for op in ops)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # unbuffered: a buffer that failed to reach the disk would be written again at close,
            # after the log was put back
            while True:  # the file locked must still be the log: a migration replaces it under the lock
                f = open(self.path, "a+b", buffering=0)
                fcntl.flock(f, fcntl.LOCK_EX)
                st = os.fstat(f.fileno())
                try:
                    now = os.stat(self.path)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
                    break
                f.close()
            with f:
                try:
                    size = f.seek(0, os.SEEK_END)
                    if size and os.pread(f.fileno(), 1, size - 1) != b"\n":  # a writer killed mid-line
                        f.seek(0)
                        size = f.read().rfind(b"\n") + 1
                        f.truncate(size)
                    _write_all(f, data, size)
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except OSError as e:
            raise NotSaved(e.errno, f"{self.path}: the correction was not saved ({e.strerror or e}), nothing "
                                    "changed: free space on its disk or make it writable, then do it again") from e
        self.sync()  # ours and anything appended before it, in the log's order

    # -- corrections --------------------------------------------------------------------------
    def record(self, **change) -> str:
        """Append one correction: ``names`` {face: name or ""}, ``groups`` [[faces]], ``rejected`` /
        ``not_face`` [faces], ``left`` [faces]; returns its id (for :meth:`undo`)."""
        op = {"id": uuid.uuid4().hex, **change}
        self._append([op])
        return op["id"]

    def undo(self, op_id: str) -> None:
        self._append([{"id": uuid.uuid4().hex, "undo": op_id}])

    def _add_group(self, face_ids) -> None:
        """Keep these faces together; they leave the groups they were in (groups stay disjoint).
        A group this leaves with one face is dissolved; a group it does not touch stays, a face
        moved alone to a new person included (it fell back into its old cluster at the next move)."""
        new = set(face_ids)
        kept = []
        for g in self.groups:
            rest = [f for f in g if f not in new]
            if len(rest) == len(g) or len(rest) > 1:
                kept.append(rest)
        self.groups = kept
        self.groups.append(sorted(new))


def _write_all(f, data: bytes, size: int) -> None:
    """Append ``data`` at ``size`` and make it durable; on failure the file is cut back to
    ``size`` (a full disk takes that back too) and the error raised."""
    try:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
        os.fsync(f.fileno())
    except OSError:
        try:
            f.truncate(size)
        except OSError:  # the first error is the one to tell; a torn line is dropped by the next writer
            pass
        raise


class NotSaved(OSError):
    """A correction the log could not take: nothing of it was made; the message names the log,
    the reason and the fix."""

    def __str__(self) -> str:
        return self.strerror


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_change(d: dict) -> None:
    """ValueError naming the first field of a correction (or snapshot) that has the wrong shape."""
    names = d.get("names", {})
    if not isinstance(names, dict) or not all(isinstance(v, str) or v is None for v in names.values()):
        raise ValueError('"names" is not {face: name}')
    for key in ("rejected", "not_face", "left"):
        if not _strings(d.get(key, [])):
            raise ValueError(f'"{key}" is not a list of faces')
    groups = d.get("groups", [])
    if not isinstance(groups, list) or not all(_strings(g) for g in groups):
        raise ValueError('"groups" is not a list of lists of faces')


def _check_correction(op) -> None:
    """ValueError saying what is wrong with a line of the log that is JSON but not a correction:
    applied, a number where a list belongs fails half-way, and a string is taken letter by letter."""
    if not isinstance(op, dict) or not isinstance(op.get("id"), str):
        raise ValueError("not a correction")
    if "undo" in op and not isinstance(op["undo"], str):
        raise ValueError('"undo" is not the id of a correction')
    _check_change(op)
    if "snapshot" in op:
        snap = op["snapshot"]
        if not isinstance(snap, dict) or not {"names", "rejected", "not_face"} <= snap.keys():
            raise ValueError('"snapshot" is not a set of corrections')
        _check_change(snap)


def _read_v1(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        if d.get("format_version") != 1:
            raise ValueError(f"format {d.get('format_version')}, expected 1")
        return {"names": d["names"], "rejected": d["rejected"], "not_face": d["not_face"], "groups": d.get("groups", [])}
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise DamagedFileError(f"{path} is damaged ({e}); move it away to start without its corrections") from None


def mostly_in(labels: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Which items are in a cluster more than half of whose members are among ``rows``."""
    sizes = np.bincount(labels[labels >= 0], minlength=max(int(labels.max()) + 1, 0))
    inside = labels[rows]
    candidates, counts = np.unique(inside[inside >= 0], return_counts=True)
    return np.isin(labels, candidates[counts > 0.5 * sizes[candidates]])


def apply_corrections(labels: np.ndarray, ids: np.ndarray, ann: Annotations) -> np.ndarray:
    """Labels after the corrections: each group, in the order made, becomes one cluster with
    every cluster most of whose members are in it (less the faces a move left behind); then
    rejected faces go to noise and non-faces to :data:`NOT_FACE`. The result may skip numbers
    (renumber it)."""
    labels = np.asarray(labels).copy()
    index = pd.Index(ids)

    def rows_of(face_ids):
        rows = index.get_indexer(list(face_ids))
        return rows[rows >= 0]

    left = np.zeros(len(labels), bool)
    left[rows_of(ann.left)] = True
    for group in ann.groups:
        rows = rows_of(group)
        if len(rows) == 0:
            continue
        take = mostly_in(labels, rows) & ~left
        take[rows] = True
        labels[take] = max(int(labels.max()), -1) + 1
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
    sizes = df["c"].value_counts()
    # counted in one pass, not cluster by cluster: the page asks for the names several times at
    # each correction, and a loop over 1,200 clusters took 0.5 s each time
    counts = df.dropna(subset=["n"]).groupby(["c", "n"]).size().rename("k").reset_index()
    counts = counts.sort_values(["c", "k", "n"], ascending=[True, False, True], kind="stable")
    best = counts.drop_duplicates("c")  # each cluster's commonest name (ties: the first in order)
    best = best[best["k"].to_numpy() > min_share * sizes.reindex(best["c"]).to_numpy()]
    return {int(c): n for c, n in zip(best["c"], best["n"])}


class ReviewSession:
    """A clustering under review: vectors, graph and map fixed; labels and names editable."""

    def __init__(self, ids, X: np.ndarray, graph, layout: np.ndarray, annotations: Annotations,
                 table: pd.DataFrame | None = None, refs=None, kind: str = "faces", model: str | None = None):
        self.kind = kind  # "faces" or "images": what the items are, for the words a person reads
        self.model = model  # the vectors' model: the default clustering depends on it
        self.ids = np.asarray(ids, dtype=object)
        self.X, self.graph, self.layout, self.ann = X, graph, layout, annotations
        self.table = table if table is not None else pd.DataFrame({"item_id": self.ids})
        self.refs = refs
        self.item_faces = None  # with video tracks as items: one row per face, its item in "item_id"
        self.map_job = None  # while ``layout`` is None: the map computed in a thread (project.MapInBackground)
        self.raw_labels = np.full(len(self.ids), -1)
        self.labels = self.raw_labels.copy()
        self._trees: dict = {}
        self._undo: list[str] = []  # ids of this process's corrections, the last one last
        self._retired: dict[int, np.ndarray] = {}  # ids corrections took away: their rows then
        self.last_op: str | None = None  # id of the latest correction, for a caller's own undo history
        self.setting = None

    # -- clustering -----------------------------------------------------------------------
    def recluster(self, algorithm: str, params: dict, force: bool = False) -> np.ndarray:
        """Labels for these settings (the corrections applied); nothing is re-fit when unchanged."""
        from ..clustering.cluster import make_clusterer, separate_cannot_link

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
            if self.kind == "faces" and "source_image" in self.table:  # faces of one picture: different people
                pictures = self.table.get("picture", self.table["source_image"]).to_numpy()
                labels[keep] = separate_cannot_link(self.X[keep], est.labels_, pictures[keep])
        self.raw_labels = labels
        self._apply(stable=False)  # new settings: numbered by size afresh
        return self.labels

    def _renumber(self) -> None:
        from ..clustering.cluster import relabel_by_size

        nf = self.labels == NOT_FACE
        self.labels = relabel_by_size(np.where(nf, -1, self.labels), None)
        self.labels[nf] = NOT_FACE

    # -- summaries ------------------------------------------------------------------------
    def names(self) -> dict[int, str]:
        return cluster_names(self.labels, self.ids, self.ann.names)

    def clusters(self) -> pd.DataFrame:
        """One row per cluster, largest first: ``cluster, size, name`` (ids may skip numbers after
        corrections: a cluster keeps its id while others change)."""
        ids, sizes = np.unique(self.labels[self.labels >= 0], return_counts=True)
        names = self.names()
        order = np.lexsort((ids, -sizes))
        return pd.DataFrame({"cluster": ids[order], "size": sizes[order],
                             "name": [names.get(c, "") for c in ids[order]]})

    def summary(self) -> dict:
        n = int((self.labels != NOT_FACE).sum())
        noise = int((self.labels == -1).sum())
        return {"clusters": len(np.unique(self.labels[self.labels >= 0])),
                "noise": noise, "noise_share": noise / n if n else 0.0, "items": n}

    def members(self, cluster: int) -> np.ndarray:
        """Rows of ``cluster``, prototypes (medoid, then nearest to it) first."""
        from ..clustering.cluster import prototypes

        rows = np.flatnonzero(self.labels == cluster)
        if len(rows) < 2:
            return rows
        order = prototypes(self.X[rows], np.zeros(len(rows), int), len(rows))[0]
        return rows[order]

    def suggestions(self, cluster: int, n: int = 3) -> pd.DataFrame:
        """Reference matches for a cluster: ``label, distance, suggested``, the suggested label first.

        Decided as ``crowdsort identify`` decides a cluster (median distance over members, the
        library's threshold and margin): a name when it passes, else ``unknown`` (no distance)
        followed by the nearest names, none suggested."""
        from ..naming.identify import UNKNOWN, _settings, decide, person_distances

        if self.refs is None:
            return pd.DataFrame({"label": [], "distance": [], "suggested": []})
        people, D = person_distances(self.X[self.labels == cluster], self.refs)
        med = np.median(D, axis=0) if len(D) else np.full(len(people), np.inf)
        verdict = decide(people, med[None, :], *_settings(self.refs, None, None)).iloc[0]
        order = np.argsort(med)[:n]
        out = pd.DataFrame({"label": people[order], "distance": np.round(med[order].astype(float), 4),
                            "suggested": False})
        if verdict["known"]:
            out.loc[0, "suggested"] = True
            return out
        unknown = pd.DataFrame({"label": [UNKNOWN], "distance": [np.nan], "suggested": [True]})
        return pd.concat([unknown, out], ignore_index=True)

    def _cluster_means(self):
        """``(ids, sizes, unit mean vectors)`` of the clusters (noise and not-a-face left out)."""
        keep = self.labels >= 0
        ids, inv, sizes = np.unique(self.labels[keep], return_inverse=True, return_counts=True)
        from scipy.sparse import csr_matrix

        # a sparse sum per cluster: np.add.at took 0.8 s at 100k × 128, this about 1/100 of it
        member = csr_matrix((np.ones(len(inv), np.float32), (inv, np.arange(len(inv)))), shape=(len(ids), len(inv)))
        means = np.asarray(member @ self.X[keep], dtype=np.float64)
        means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
        return ids, sizes, means

    def nearest_clusters(self, cluster: int, n: int = 3) -> pd.DataFrame:
        """Candidates to merge with ``cluster``: ``cluster, size, name, distance``, nearest first,
        by the cosine distance between the clusters' unit mean vectors (over-split people's
        fragments sit closer to each other than to other people's clusters, mostly)."""
        ids, sizes, means = self._cluster_means()
        if cluster not in ids or len(ids) < 2:
            return pd.DataFrame({"cluster": [], "size": [], "name": [], "distance": []})
        me = int(np.searchsorted(ids, cluster))
        dist = 1.0 - means @ means[me]
        dist[me] = np.inf
        order = np.argsort(dist, kind="stable")[:min(n, len(ids) - 1)]
        names = self.names()
        return pd.DataFrame({"cluster": ids[order], "size": sizes[order],
                             "name": [names.get(int(c), "") for c in ids[order]],
                             "distance": np.round(dist[order], 4)})

    def unnamed_clusters(self) -> pd.DataFrame:
        """The clusters nobody has named yet, largest first (the first part of a review)."""
        rows = self.clusters()
        return rows[rows["name"] == ""].reset_index(drop=True)

    def noise_to_review(self) -> pd.DataFrame:
        """Noise items beside the named person nearest them (cosine distance to the person's
        unit mean vector, as for merge suggestions, or to their member nearest it over the kNN
        graph, as :meth:`likely_members`): ``row, item_id, cluster, name, distance,
        likely``, nearest first, so the likeliest additions come first. ``likely``: the distance
        is under the identification threshold for a library of the named people (faces only;
        beyond it the item is most likely a stranger, as for "unknown" suggestions). Faces a
        person rejected from a cluster are not offered again; empty while nobody is named."""
        empty = pd.DataFrame({"row": [], "item_id": [], "cluster": [], "name": [], "distance": [], "likely": []})
        names = self.names()
        ids, _, means = self._cluster_means()
        named = np.isin(ids, list(names))
        rows = self._offerable_noise()
        if not named.any() or not len(rows):
            return empty
        dist = 1.0 - self.X[rows] @ means[named].T
        self._nearer_by_graph(dist, rows, ids[named])
        best = dist.argmin(axis=1)
        people = ids[named][best]
        order = np.argsort(dist[np.arange(len(rows)), best], kind="stable")
        nearest = dist[np.arange(len(rows)), best][order]
        return pd.DataFrame({"row": rows[order], "item_id": self.ids[rows[order]], "cluster": people[order],
                             "name": [names[int(c)] for c in people[order]], "distance": np.round(nearest, 4),
                             "likely": nearest <= self.placement_threshold(int(named.sum()))})

    def likely_members(self, cluster: int) -> pd.DataFrame:
        """Noise faces that may be ``cluster``'s person: ``row, item_id, distance``, nearest first,
        those within :meth:`pair_threshold` (about 5% of strangers come that close to a given
        person). The distance is the nearer of the cluster's unit mean vector (as for merge
        suggestions and the noise queue) and its member nearest it over the kNN graph
        (:meth:`_nearer_by_graph`; celeba-dev, after naming: 14 of its 23 named people with
        faces left in noise have them all among the first 24 offered, 12 by the mean alone). For a
        person to choose from: none is likely enough to be chosen for them
        (benchmarks/curation_cost.py --offers: of the noise faces nearest a cluster within the
        open-set threshold for that many people, 8% on lfw-dev and 29% on celeba-dev are its
        person's, most of the others one-photo strangers). Faces a person rejected from a
        cluster are not offered again."""
        ids, _, means = self._cluster_means()
        rows = self._offerable_noise()
        if cluster not in ids or not len(rows):
            return self._offer(rows[:0], np.zeros(0))
        dist = 1.0 - self.X[rows] @ means[int(np.searchsorted(ids, cluster))][:, None]
        self._nearer_by_graph(dist, rows, np.array([cluster]))
        return self._offer(rows, dist[:, 0])

    def similar_noise(self, face_ids) -> pd.DataFrame:
        """Noise faces like the chosen ones (``face_ids``, e.g. a face boxed on the map): ``row,
        item_id, distance`` to the nearest chosen face, nearest first, within
        :meth:`pair_threshold`, the chosen left out: the rest of a person the clustering left
        in noise, to choose and name together (on celeba-dev 9 of its 22 people whose photos
        all stayed in noise are each other's nearest noise face, and 19 within the first 24)."""
        chosen = np.flatnonzero(np.isin(self.ids, list(face_ids)))
        rows = self._offerable_noise()
        rows = rows[~np.isin(rows, chosen)]
        if not len(chosen) or not len(rows):
            return self._offer(rows[:0], np.zeros(0))
        dist = np.full(len(rows), np.inf)
        for part in np.array_split(chosen, max(1, len(chosen) // 256)):  # bounded memory for big choices
            dist = np.minimum(dist, (1.0 - self.X[rows] @ self.X[part].T).min(axis=1))
        return self._offer(rows, dist)

    def _offerable_noise(self) -> np.ndarray:
        """Noise rows, less the faces a person rejected from a cluster (never offered again)."""
        return np.flatnonzero((self.labels == -1) & ~np.isin(self.ids, list(self.ann.rejected)))

    def _offer(self, rows: np.ndarray, dist: np.ndarray) -> pd.DataFrame:
        close = dist <= self.pair_threshold()
        rows, dist = rows[close], dist[close]
        order = np.argsort(dist, kind="stable")
        return pd.DataFrame({"row": rows[order], "item_id": self.ids[rows[order]],
                             "distance": np.round(dist[order].astype(float), 4)})

    def _nearer_by_graph(self, dist: np.ndarray, rows: np.ndarray, clusters: np.ndarray) -> None:
        """Lower ``dist[i, j]`` (``rows[i]`` to cluster ``clusters[j]``) to the distance of the
        cluster's member nearest it, where a kNN-graph edge joins them (either side's list): a
        face in a pose or light the cluster's mean does not cover is still near the member
        photographed like it. O(edges of those rows and members), not rows × members."""
        col = np.full(int(max(clusters.max(), self.labels.max())) + 1, -1)  # cluster id → column; -1: none
        col[clusters] = np.arange(len(clusters))
        ind = self.graph.indices[rows]
        near = np.where(ind >= 0, self.labels[np.maximum(ind, 0)], -1)  # each neighbour's cluster (< 0: none)
        j = np.where(near >= 0, col[np.maximum(near, 0)], -1)
        i, k = np.nonzero(j >= 0)
        np.minimum.at(dist, (i, j[i, k]), self.graph.distances[rows][i, k])
        pos = np.full(len(self.ids), -1)
        pos[rows] = np.arange(len(rows))
        members = np.flatnonzero(np.isin(self.labels, clusters))
        ind = self.graph.indices[members]
        back = np.where(ind >= 0, pos[np.maximum(ind, 0)], -1)
        m, k = np.nonzero(back >= 0)
        np.minimum.at(dist, (back[m, k], col[self.labels[members[m]]]), self.graph.distances[members][m, k])

    def pair_threshold(self) -> float:
        """Distance under which about 5% of strangers come to a given person, by the model's
        measured different-person distances (the open-set threshold for a library of one, not
        capped at the fixed naming threshold as names are: nothing is named by it); no bound
        for images."""
        from ..naming.identify import open_set_threshold

        return open_set_threshold(1, self.model) if self.kind == "faces" else np.inf

    def placement_threshold(self, people: int) -> float:
        """Distance under which an item is offered as one of ``people`` named people: the
        open-set identification threshold for a library that size (faces); no bound for images."""
        from ..naming.identify import default_threshold

        return default_threshold(self.model, people) if self.kind == "faces" else np.inf

    # -- corrections (saved at once) ---------------------------------------------------------
    def _correct(self, **change) -> None:
        """Record one correction in the log (with whatever another server added before it) and
        re-apply them all to the clustering. :class:`NotSaved` (an OSError) when the log cannot
        take it: the session is then as it was. Not kept as an unsaved change: the log is what
        every dashboard on the dataset and the next start read, so a change held only here would
        show what nobody else sees and vanish at the next start."""
        self.last_op = self.ann.record(**change)
        self._undo.append(self.last_op)
        del self._undo[:-UNDO_DEPTH]
        self._apply()

    def _apply(self, stable: bool = True, restore: bool = False) -> None:
        """Labels from the corrections; ``stable``: clusters keep the ids they had (and so their
        colours), only clusters a correction made get new ones; ``restore`` (an undo): a cluster
        coming back takes the id a correction had taken from it."""
        before = self.labels
        self.labels = apply_corrections(self.raw_labels, self.ids, self.ann)
        self._renumber()
        if not stable:
            self._retired = {}
            return
        self.labels = keep_ids(before, self.labels)
        old, now = set(np.unique(before[before >= 0])), set(np.unique(self.labels[self.labels >= 0]))
        self._retired.update({int(c): np.flatnonzero(before == c) for c in old - now})
        for c in sorted(now - old) if restore else ():
            rows = np.flatnonzero(self.labels == c)
            for was, members in list(self._retired.items()):
                if was not in now and 2 * np.intersect1d(rows, members).size > min(len(rows), len(members)):
                    self.labels[rows] = was
                    now.add(was)
                    del self._retired[was]
                    break

    def refresh(self) -> bool:
        """Take in corrections another server saved; True if there were any."""
        if self.ann.sync():
            self._apply()
            return True
        return False

    def undo(self, op_id: str | None = None) -> bool:
        """Take back this process's last correction (name, merge, split, rejection), or the one
        ``op_id`` names (a caller keeping its own history); False if none is left."""
        if op_id is None:
            if not self._undo:
                return False
            op_id = self._undo[-1]
        taken_back = any(op.get("undo") == op_id for op in self.ann.ops)
        if not taken_back:
            self.ann.undo(op_id)  # NotSaved: nothing undone, and it stays this process's to undo
        if op_id in self._undo:
            self._undo.remove(op_id)
        if taken_back:
            return False
        self._apply(restore=True)
        return True

    def cluster_of(self, face_id: str) -> int:
        return int(self.labels[self.ids == face_id][0])

    def name(self, cluster: int, name: str) -> None:
        self._correct(names=dict.fromkeys(self.ids[self.labels == cluster], name.strip()))

    def merge(self, clusters: list[int], name: str | None = None) -> int:
        """One cluster of these, kept together from now on, with the id of the largest. Named
        ``name`` if given; else the name they carry, and :class:`NameConflict` if they carry two."""
        if len(clusters) < 2:
            return clusters[0] if clusters else -1
        names = self.names()
        carried = {names[c] for c in clusters if c in names}
        if name is None and len(carried) > 1:
            raise NameConflict(carried)
        name = (next(iter(carried), "") if name is None else name).strip()
        members = self.ids[np.isin(self.labels, clusters)]
        largest = max(clusters, key=lambda c: (self.labels == c).sum())
        keep = self.ids[self.labels == largest][0]
        relabel = {"names": dict.fromkeys(members, name)} if name or carried else {}
        self._correct(groups=[list(members)], **relabel)
        return self.cluster_of(keep)

    def split(self, cluster: int) -> list[int]:
        """Two clusters from one, by average linkage (cosine) on its members, kept apart from
        now on; its name stays on the half whose mean is nearest the cluster's, the other
        half is unnamed."""
        from sklearn.cluster import AgglomerativeClustering

        rows = np.flatnonzero(self.labels == cluster)
        if len(rows) < 2:
            return [cluster]
        parts = AgglomerativeClustering(n_clusters=2, metric="cosine", linkage="average").fit(self.X[rows]).labels_
        halves = [self.ids[rows[parts == k]] for k in (0, 1)]
        name = self.names().get(cluster, "")
        names = dict.fromkeys(self.ids[rows], "")
        if name:
            centre = _unit(self.X[rows].mean(0))
            like = [float(_unit(self.X[rows[parts == k]].mean(0)) @ centre) for k in (0, 1)]
            names.update(dict.fromkeys(halves[int(np.argmax(like))], name))
        self._correct(groups=[list(h) for h in halves], names=names)
        return [self.cluster_of(h[0]) for h in halves]

    def move(self, face_ids, name: str = "") -> int:
        """Put faces with the person named ``name`` (they join that person's cluster, kept
        together from now on), or, unnamed or a name no cluster has, in a new cluster of their own.
        The other faces of their clusters stay where they are, even where most of a cluster moved."""
        name = name.strip()
        target = [c for c, n in self.names().items() if name and n == name]
        return self._join(self.ids[np.isin(self.labels, target)] if target else [], face_ids, name)

    def add_to(self, cluster: int, face_ids) -> int:
        """Put faces in ``cluster``, named or not (kept together with its members from now on);
        they take its name. The other faces of their clusters stay where they are."""
        return self._join(self.ids[self.labels == cluster], face_ids, self.names().get(cluster, ""))

    def add_each(self, placements: dict) -> None:
        """Several :meth:`add_to` in one correction (one undo): ``{cluster: face_ids}``, e.g. the
        noise faces a person ticked in the review queue, each beside the person nearest it."""
        names = self.names()
        self._join_all([(self.ids[self.labels == c], faces, names.get(c, "")) for c, faces in placements.items()])

    def _join(self, together, face_ids, name: str) -> int:
        face_ids = sorted(set(face_ids))
        self._join_all([(together, face_ids, name)])
        return self.cluster_of(face_ids[0])

    def _join_all(self, joins) -> None:
        """``(faces already together, faces joining them, their name)`` each, in one correction."""
        groups, names, chosen = [], {}, np.zeros(len(self.ids), bool)
        for together, face_ids, name in joins:
            group = sorted(set(together) | set(face_ids))
            groups.append(group)
            names.update(dict.fromkeys(sorted(set(face_ids)), name))
            chosen |= np.isin(self.ids, group)
        left = self.ids[mostly_in(self.labels, np.flatnonzero(chosen)) & ~chosen].tolist()
        self._correct(groups=groups, names=names, **({"left": left} if left else {}))

    def reject(self, face_ids, not_face: bool = False) -> None:
        """Take faces out of their cluster for good (or mark them as not a face)."""
        face_ids = sorted(set(face_ids))
        self._correct(names=dict.fromkeys(face_ids, ""), **{"not_face" if not_face else "rejected": face_ids})

    # -- output -----------------------------------------------------------------------------
    def labelled_table(self) -> pd.DataFrame:
        """One row per face (a track's faces each), as ``crowdsort apply-labels --keep-unlabeled``
        writes it."""
        names = self.names()
        out = self.table.drop(columns=["picture", "box"], errors="ignore")
        out["cluster"] = self.labels
        out["labelled"] = [c in names for c in self.labels]
        out["label"] = [names.get(c) or ("not a face" if c == NOT_FACE else unnamed_label(c)) for c in self.labels]
        out = out[out["cluster"] != NOT_FACE]
        if self.item_faces is not None:
            out = self.item_faces.drop(columns=["box"], errors="ignore").merge(
                out[["item_id", "cluster", "labelled", "label"]], on="item_id")
        return _absolute_paths(out.reset_index(drop=True))

    def labels_csv(self) -> pd.DataFrame:
        """``label,cluster`` rows for named clusters (the format ``apply-labels`` reads)."""
        return pd.DataFrame([{"label": n, "cluster": c} for c, n in sorted(self.names().items())],
                            columns=["label", "cluster"])


PATH_COLUMNS = ("crop_path", "source_image", "file")


def _absolute_paths(df: pd.DataFrame) -> pd.DataFrame:
    """Every file column absolute: a CSV read elsewhere (another folder, another program) finds
    the crops and the photos alike, whatever folder the server ran in."""
    for col in PATH_COLUMNS:
        if col in df:
            df[col] = [os.path.abspath(p) if isinstance(p, str) and p else p for p in df[col]]
    return df


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-12)


def keep_ids(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``after`` renumbered so a cluster that is mostly one of ``before`` keeps its id (the
    largest overlaps first, each old id used once); clusters left over get ids above any old
    one. Noise and non-faces stay as they are."""
    before, after = np.asarray(before), np.asarray(after)
    out = after.copy()
    if len(before) != len(after) or not (after >= 0).any():
        return out
    both = (before >= 0) & (after >= 0)
    pairs, counts = (np.unique(np.stack([after[both], before[both]], 1), axis=0, return_counts=True)
                     if both.any() else (np.zeros((0, 2), int), np.zeros(0, int)))
    new_size = np.bincount(after[after >= 0])
    old_size = np.bincount(before[before >= 0]) if (before >= 0).any() else np.zeros(0, int)
    mapping, used = {}, set()
    order = np.lexsort((pairs[:, 1], -counts))  # largest overlap first, ties to the older id
    for (a, b), k in zip(pairs[order], counts[order]):
        if a not in mapping and b not in used and 2 * k > min(new_size[a], old_size[b]):
            mapping[a], used = b, used | {b}
    nxt = int(max(before.max(), -1)) + 1
    lut = np.full(len(new_size), -1)
    for a in np.unique(after[after >= 0]):  # by size: `after` is numbered largest first
        if a in mapping:
            lut[a] = mapping[a]
        else:
            lut[a], nxt = nxt, nxt + 1
    out[after >= 0] = lut[after[after >= 0]]
    return out


def _subgraph(graph, keep: np.ndarray):
    """The kNN graph restricted to ``keep`` rows, indices renumbered, dropped neighbours -1."""
    from ..clustering.neighbors import KNNGraph

    new = np.full(len(keep), -1)
    new[keep] = np.arange(keep.sum())
    ind = graph.indices[keep]
    ind = np.where(ind >= 0, new[np.maximum(ind, 0)], -1)
    dist = np.where(ind >= 0, graph.distances[keep], np.inf).astype(np.float32)
    order = np.argsort(ind < 0, axis=1, kind="stable")  # valid neighbours first, order kept
    return KNNGraph(np.take_along_axis(ind, order, 1), np.take_along_axis(dist, order, 1), graph.method)
