"""Face tracks: the faces of one video linked across its sampled frames, within each shot.

The faces of each sampled frame are matched one to one (Hungarian) to the tracks still open,
by how far the face's box centre lies from where the track is expected (its last centre moved
on at its last velocity), in box widths. A pair is no match when that shift exceeds
``max_shift + shift_per_s × (time since the track was last seen)`` or the two boxes differ in
size by more than ``max_size_ratio``. The velocity keeps two faces that pass each other on
their own tracks. Why centres and not
box overlap alone: at a few samples a second a walking face moves about half its width
between samples, where overlap falls under any usable threshold (measured on the dev videos:
``crowd_walk`` and ``hamilton_short`` split one person's track at IoU ≥ 0.3).

A face left unmatched starts a track; a track not matched for ``max_gap_s`` seconds is closed
(a face hidden for a moment resumes its track, one gone for longer starts another). Tracks
never cross a shot cut: every track closes at one. Pure functions over numpy arrays.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

MAX_SHIFT = 0.5  # box widths, at no time apart
SHIFT_PER_S = 1.5  # box widths a second: a fast walk towards or across the camera
MAX_SIZE_RATIO = 1.6
MAX_GAP_S = 1.0


def shift_matrix(a: np.ndarray, b: np.ndarray, centres: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(shift, size ratio)`` of every box of ``a`` against every box of ``b``: the distance
    of their centres (``centres`` instead of ``a``'s own, where given) over their mean width,
    and the larger width over the smaller."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ca = (a[:, :2] + a[:, 2:]) / 2 if centres is None else np.asarray(centres, np.float64).reshape(-1, 2)
    cb = (b[:, :2] + b[:, 2:]) / 2
    wa, wb = np.maximum(a[:, 2] - a[:, 0], 1e-6), np.maximum(b[:, 2] - b[:, 0], 1e-6)
    shift = np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2) / ((wa[:, None] + wb[None, :]) / 2)
    ratio = np.maximum(wa[:, None], wb[None, :]) / np.minimum(wa[:, None], wb[None, :])
    return shift, ratio


def _centre(box: np.ndarray) -> np.ndarray:
    return (box[:2] + box[2:]) / 2


def link_tracks(frames, times_s, shots, boxes, max_shift: float = MAX_SHIFT, shift_per_s: float = SHIFT_PER_S,
                max_size_ratio: float = MAX_SIZE_RATIO, max_gap_s: float = MAX_GAP_S) -> np.ndarray:
    """Track number (0, 1, … in order of first appearance) of each face of one video.

    ``frames``, ``times_s``, ``shots``: each face's frame index, time and shot; ``boxes``: n×4.
    """
    frames = np.asarray(frames, np.int64)
    times_s = np.asarray(times_s, np.float64)
    shots = np.asarray(shots, np.int64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    track = np.full(len(frames), -1, np.int64)
    order = np.lexsort((np.arange(len(frames)), frames))
    tracks: list[dict] = []  # open tracks: id, last box, last time, velocity of the centre (px/s)
    shot_now, n_tracks = None, 0
    starts = np.flatnonzero(np.r_[True, frames[order][1:] != frames[order][:-1]])
    for s, e in zip(starts, np.r_[starts[1:], len(order)]):
        rows = order[s:e]
        t, shot = times_s[rows[0]], shots[rows[0]]
        if shot != shot_now:  # a cut closes every track
            tracks, shot_now = [], shot
        tracks = [k for k in tracks if not (t - k["t"] > max_gap_s)]
        matched = set()
        if tracks:
            dt = np.array([np.nan_to_num(t - k["t"], nan=0.0) for k in tracks])
            expected = np.array([_centre(k["box"]) + k["v"] * d for k, d in zip(tracks, dt)])
            shift, ratio = shift_matrix(np.array([k["box"] for k in tracks]), boxes[rows], expected)
            ok = (shift <= max_shift + shift_per_s * dt[:, None]) & (ratio <= max_size_ratio)
            for i, j in zip(*linear_sum_assignment(np.where(ok, shift, 1e6))):
                if ok[i, j]:
                    k, box = tracks[i], boxes[rows[j]]
                    if dt[i] > 0:
                        k["v"] = (_centre(box) - _centre(k["box"])) / dt[i]
                    k.update(box=box, t=t)
                    track[rows[j]] = k["id"]
                    matched.add(j)
        for j in range(len(rows)):
            if j not in matched:
                track[rows[j]] = n_tracks
                tracks.append({"id": n_tracks, "box": boxes[rows[j]], "t": t, "v": np.zeros(2)})
                n_tracks += 1
    return track
