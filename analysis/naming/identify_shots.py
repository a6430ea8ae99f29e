"""Identification per shot (skelshop's ``idsegssparse`` / ``idsegsfull``, with a finite threshold):
each face track of a video is named from a reference library, and within a shot a person is
given to at most one track.

A track's distance to a person is the median, over its embedded faces, of each face's distance
to the person's nearest reference; the track is named as a face would be (:func:`identify.decide`:
ahead of the second-best person by the margin), within the threshold plus the slack allowed to a
cluster's pooled evidence (``identify.pool_slack``: a median over several looks at one person is
steadier than one face), after a one-to-one assignment of the shot's tracks to people
(:func:`identify.one_per_image` over the shot). Pure
functions over arrays and tables; :func:`pipeline.identify_shots` does the I/O.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .identify import _settings, decide, one_per_image, person_distances, pool_slack
from ..video.tracks import item_keys

TIMELINE_GAP_S = 1.0  # one person's appearances closer than this read as one stretch on screen


def track_distances(D: np.ndarray, track: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(track ids, median distance per track and person)`` from the faces' distances ``D``."""
    ids, inverse = np.unique(track, return_inverse=True)
    out = np.full((len(ids), D.shape[1]), np.inf, np.float64)
    for k in range(len(ids)):
        rows = D[inverse == k]
        if len(rows):
            out[k] = np.median(rows, axis=0)
    return ids, out


def identify_tracks(X: np.ndarray, faces: pd.DataFrame, refs, threshold: float | None = None,
                    margin: float | None = None, cluster=None) -> pd.DataFrame:
    """One row per (video, shot, track) of ``faces`` (the embedded faces, rows of ``X``): the
    track's frames and times, ``label`` (a person or ``unknown``), ``best``, ``distance``,
    ``margin``, ``known``, ``evidence`` and ``frames_under``: how many of its faces are within
    the threshold of the person it is named after (of its best person when unknown).

    ``cluster``: each face's cluster (-1: none) in a clustering by track; a track in a cluster
    is judged on the median over the whole cluster's faces (``evidence`` "cluster"), so a person
    seen in several shots is named from all of them, else on its own (``evidence`` "track")."""
    threshold, margin = _settings(refs, threshold, margin)
    people, D = person_distances(X, refs)
    key = item_keys(faces)
    ids, T = track_distances(D, key)
    evidence = np.full(len(ids), "track", dtype=object)
    if cluster is not None:
        cluster = np.asarray(cluster)
        of_track = pd.Series(cluster).groupby(key).max().reindex(ids).to_numpy()
        cids, C = track_distances(D[cluster >= 0], cluster[cluster >= 0])
        at = pd.Index(cids).get_indexer(of_track)
        pooled = (of_track >= 0) & (at >= 0)
        T[pooled] = C[at[pooled]]
        evidence[pooled] = "cluster"
    first = faces.groupby(key).agg(video=("image_path", "first"), shot=("shot", "first"), track=("track", "first"),
                                   start_frame=("frame", "min"), end_frame=("frame", "max"),
                                   start_s=("time_s", "min"), end_s=("time_s", "max"),
                                   n_faces=("frame", "size")).reindex(ids)
    shot_key = first["video"].astype(str) + "#" + first["shot"].astype(str)
    slack = pool_slack(refs.model)
    T = one_per_image(T, shot_key, threshold + slack)
    named = decide(people, T, threshold + slack, margin)
    col = pd.Index(people).get_indexer(named["best"].where(named["best"] != "", None))
    under = np.zeros(len(ids), np.int64)
    inv = pd.Index(ids).get_indexer(key)
    for k in range(len(ids)):
        if col[k] >= 0:
            under[k] = int((D[inv == k, col[k]] <= threshold).sum())
    out = pd.concat([first.reset_index(drop=True), named], axis=1)
    out["frames_under"] = under
    out["evidence"] = evidence
    return out.sort_values(["video", "shot", "start_frame", "track"]).reset_index(drop=True)


def shot_rows(tracks: pd.DataFrame, shots: pd.DataFrame) -> pd.DataFrame:
    """The per-shot table: each track row with its shot's frames and times (``shot_start_frame``,
    ``shot_end_frame``, ``shot_start_s``, ``shot_end_s``)."""
    s = shots.rename(columns={"image_path": "video", "start_frame": "shot_start_frame", "end_frame": "shot_end_frame",
                              "start_s": "shot_start_s", "end_s": "shot_end_s"})
    cols = ["video", "shot", "shot_start_frame", "shot_end_frame", "shot_start_s", "shot_end_s"]
    out = tracks.merge(s[cols], on=["video", "shot"], how="left")
    first = ["video", "shot", *cols[2:], "track", "start_frame", "end_frame", "start_s", "end_s", "label", "distance",
             "frames_under", "n_faces"]
    return out[first + [c for c in out.columns if c not in first]]


def timeline(tracks: pd.DataFrame, gap_s: float = TIMELINE_GAP_S) -> pd.DataFrame:
    """Who is on screen when: per video and named person, the stretches (``start_s``, ``end_s``)
    covered by their tracks, merged where less than ``gap_s`` apart."""
    named = tracks[tracks["known"]].sort_values(["video", "label", "start_s"])
    rows = []
    for (video, label), g in named.groupby(["video", "label"], sort=True):
        start, end, shots = None, None, set()
        for s, e, shot in zip(g["start_s"], g["end_s"], g["shot"]):
            if start is not None and s - end > gap_s:
                rows.append((video, label, start, end, len(shots)))
                start, end, shots = None, None, set()
            start = s if start is None else start
            end = e if end is None else max(end, e)
            shots.add(shot)
        rows.append((video, label, start, end, len(shots)))
    return pd.DataFrame(rows, columns=["video", "label", "start_s", "end_s", "shots"])
