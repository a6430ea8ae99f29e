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

Where boxes are ambiguous (a track with two faces inside its gate, or a face inside two tracks'
gates: people side by side or crossing), the faces' identity vectors decide as well, when an
``appearance`` function gives them: the cost of a pair adds ``APPEARANCE_WEIGHT`` × the
cosine distance between the face and the unit mean of the track's last ``APPEARANCE_FACES``
faces (one video face is noisy: on crowd_walk a walker's consecutive faces lie up to 0.15 apart
with dlib, each within 0.10 of his mean), and a pair farther apart than ``MAX_APPEARANCE`` is no
match. Vectors are asked for only there, so extraction embeds few faces.

A face left unmatched starts a track; a track not matched for ``max_gap_s`` seconds is closed
(a face hidden for a moment resumes its track, one gone for longer starts another). Tracks
never cross a shot cut: every track closes at one.

Then tracks as clustering items: the faces of a track are clustered as one item (the unit mean of
its best faces' vectors). Pure functions over numpy arrays and the faces table.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

MAX_SHIFT = 0.5  # box widths, at no time apart
SHIFT_PER_S = 1.5  # box widths a second: a fast walk towards or across the camera
MAX_SIZE_RATIO = 1.6
MAX_GAP_S = 1.0
# dlib distances (1 − cos): 0.05 weighs as much as half a box width of shift; 0.25 from a
# track's mean is someone else.
APPEARANCE_WEIGHT = 10.0
MAX_APPEARANCE = 0.25
APPEARANCE_FACES = 5


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


def _unit_mean(V: np.ndarray) -> np.ndarray:
    m = V.mean(axis=0)
    return m / max(np.linalg.norm(m), 1e-12)


def link_tracks(frames, times_s, shots, boxes, max_shift: float = MAX_SHIFT, shift_per_s: float = SHIFT_PER_S,
                max_size_ratio: float = MAX_SIZE_RATIO, max_gap_s: float = MAX_GAP_S,
                appearance=None) -> np.ndarray:
    """Track number (0, 1, … in order of first appearance) of each face of one video.

    ``frames``, ``times_s``, ``shots``: each face's frame index, time and shot; ``boxes``: n×4;
    ``appearance(rows)``: unit identity vectors of those faces (asked only where boxes are ambiguous).
    """
    vectors: dict[int, np.ndarray] = {}

    def vector(rows):
        need = [r for r in rows if r not in vectors]
        if need:
            vectors.update(zip(need, np.asarray(appearance(need), np.float64)))
        return np.array([vectors[r] for r in rows])

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
            cost = shift.copy()
            ambiguous = ok & ((ok.sum(1, keepdims=True) > 1) | (ok.sum(0, keepdims=True) > 1))
            if appearance is not None and ambiguous.any():
                ti, fj = np.nonzero(ambiguous)
                d = 1.0 - np.sum(np.array([_unit_mean(vector(tracks[i]["rows"][-APPEARANCE_FACES:])) for i in ti])
                                 * vector(rows[fj].tolist()), axis=1)
                cost[ti, fj] += APPEARANCE_WEIGHT * d
                ok[ti[d > MAX_APPEARANCE], fj[d > MAX_APPEARANCE]] = False
            for i, j in zip(*linear_sum_assignment(np.where(ok, cost, 1e6))):
                if ok[i, j]:
                    k, box = tracks[i], boxes[rows[j]]
                    if dt[i] > 0:
                        k["v"] = (_centre(box) - _centre(k["box"])) / dt[i]
                    k.update(box=box, t=t)
                    k["rows"].append(int(rows[j]))
                    track[rows[j]] = k["id"]
                    matched.add(j)
        for j in range(len(rows)):
            if j not in matched:
                track[rows[j]] = n_tracks
                tracks.append({"id": n_tracks, "box": boxes[rows[j]], "t": t, "v": np.zeros(2), "rows": [int(rows[j])]})
                n_tracks += 1
    return track


# -- tracks as clustering items ------------------------------------------------------------------
def item_keys(faces) -> np.ndarray:
    """The clustering item of each face: its track (``<video>#<track>``) for a video's face,
    the face itself for a photo's. The video as recorded (``image_key``, relative to the dataset
    when inside it, where the table has it): a track's corrections survive the dataset's move."""
    tracked = faces["track"].to_numpy() >= 0
    video = faces["image_key"] if "image_key" in faces else faces["image_path"]
    return np.where(tracked, video.astype(str) + "#" + faces["track"].astype(str),
                    faces["face_id"].astype(str))


def picture_keys(faces) -> np.ndarray:
    """The picture each face was seen in: its photo, or ``<video>@<frame>``. Two faces of one
    picture are two people."""
    video = faces["frame"].to_numpy() >= 0
    return np.where(video, faces["image_path"].astype(str) + "@" + faces["frame"].astype(str),
                    faces["image_path"].astype(str))


def face_quality(faces) -> np.ndarray:
    """How good a face is to embed: box width × detection score × frontality, frontality being
    1 - 2 × |nose - eye midpoint| / eye distance (horizontal), at least 0.1 (landmarks: both
    eyes, nose, mouth, as :class:`detect.Face` holds them; a missing nose counts as half turned)."""
    width = (faces["x1"] - faces["x0"]).to_numpy(np.float64)
    score = faces["score"].to_numpy(np.float64)
    lm = np.stack(faces["landmarks"].to_numpy()).reshape(-1, 4, 2).astype(np.float64) if len(faces) else \
        np.zeros((0, 4, 2))
    eyes = np.abs(lm[:, 0, 0] - lm[:, 1, 0])
    yaw = np.abs(lm[:, 2, 0] - (lm[:, 0, 0] + lm[:, 1, 0]) / 2) / np.maximum(eyes, 1e-6)
    frontal = np.clip(1 - 2 * np.nan_to_num(yaw, nan=0.5), 0.1, 1)
    return width * score * frontal


def best_faces(faces, per_track: int | None) -> np.ndarray:
    """Which faces to embed (a boolean mask): every photo's face, and of each track the best
    face (:func:`face_quality`) of each of ``per_track`` equal stretches of it in time, so the
    chosen ones are spread over the track; all of them with ``per_track`` None or 0."""
    keys = item_keys(faces)
    tracked = faces["track"].to_numpy() >= 0
    if not per_track or not tracked.any():
        return np.ones(len(faces), bool)
    q = face_quality(faces)
    frame = faces["frame"].to_numpy()
    chosen = ~tracked
    for rows in pd.Series(np.arange(len(faces)))[tracked].groupby(keys[tracked]).groups.values():
        rows = np.asarray(rows)
        rows = rows[np.argsort(frame[rows], kind="stable")]
        for part in np.array_split(rows, min(per_track, len(rows))):
            chosen[part[np.argmax(q[part])]] = True
    return chosen


def pool_items(X: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(item keys, unit mean vector of each)`` over the rows of ``X`` (keys in first-seen order)."""
    items, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)  # first-seen order, so items follow the faces table
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    inv = rank[inverse.ravel()]
    sums = np.zeros((len(items), X.shape[1]), np.float64)
    np.add.at(sums, inv, np.asarray(X, np.float64))
    sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    return items[order], sums.astype(np.float32)
