"""Shot cuts of a video: a content detector over small grey frames, and PySceneDetect scene lists.

Every frame is decoded (PyAV) and at once shrunk to a small grey picture (``size``, default
64×36, area-averaged); only that picture and the one before it are kept. The score of frame
``i`` is the mean absolute difference (0–255) between the small pictures of frames ``i − 1``
and ``i``. A cut falls before frame ``i`` when its score exceeds both

* ``threshold`` (absolute, default 20), and
* ``ratio`` × the median score of its ``window`` neighbours on each side (itself left out;
  default 3 × the median of 3 + 3),

and the shot it ends has at least ``min_shot_frames`` frames (default 15, as PySceneDetect's
``min_scene_len``). The absolute part keeps fast motion after a still shot from reading as a
cut; the relative part keeps sustained change (a whip pan, a strobe) from reading as many cuts.
Gradual transitions (fades, dissolves) are not detected.

Measured on the dev videos (``../shared/data/videos``; 64×36 grey, area): hamilton_short's cuts
score 30.4, 27.7, 27.7 (ratios 4.8, 16.4, 48.8) and no other frame pair exceeds 13.6;
crowd_walk (one shot) stays below 7.0.

Frame numbers count decoded frames from 0 (PySceneDetect's convention, and that of
:mod:`crowdsort.video.frames` for constant-rate video). A shots table (``SHOT_COLUMNS``) has one row
per shot: ``start_frame`` and ``end_frame`` (inclusive), ``start_s`` and ``end_s`` (the shot
ends where the next begins; the last one a frame after its last frame's time), ``n_frames``.

``<stem>-Scenes.csv`` is the scene list ``scenedetect list-scenes`` writes (and skelshop reads):
a ``Timecode List:`` row of the cut times, then one row per scene, its ``Start Frame`` counted
from 1 and its ``End Frame`` the last frame counted from 1 (the exclusive end counted from 0),
times as ``frames / fps``. Beside it, ``<stem>-cuts.txt`` lists the cut frames (from 0), which
skelshop reads unambiguously as ``ffprobe`` shots (see :func:`write_cuts_txt`).
"""
from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .frames import (_TRUNCATION_TOLERANCE_S, VideoError, _ffmpeg_reason, _rate, frame_image, frame_stem,
                     open_video, short_end)
from ..storage.store import _conform, atomic_write_text, write_table

log = logging.getLogger(__name__)

SIZE = (64, 36)
THRESHOLD = 20.0
RATIO = 3.0
WINDOW = 3
MIN_SHOT_FRAMES = 15

SHOT_COLUMNS = {"shot": "int32", "start_frame": "int64", "end_frame": "int64", "start_s": "float64",
                "end_s": "float64", "n_frames": "int64"}
SCENES_HEADER = ["Scene Number", "Start Frame", "Start Timecode", "Start Time (seconds)", "End Frame",
                 "End Timecode", "End Time (seconds)", "Length (frames)", "Length (timecode)", "Length (seconds)"]


class ShotsFileError(ValueError):
    """A scene list or cut list that cannot be read; the message names the file and the reason."""


# --- decoding ------------------------------------------------------------------------------

@dataclass
class Signatures:
    """One pass over a video: per-frame times, numbers and scores (see :func:`frame_signatures`)."""
    times_s: np.ndarray  # float64, seconds from the stream's start
    frame_indices: np.ndarray  # int64, 0, 1, 2, ... in decode (presentation) order
    fps: float
    diffs: np.ndarray  # float32, mean |small(i) - small(i-1)|; diffs[0] = 0
    notes: list[str] = field(default_factory=list)  # what was lost where the rest was read (see decode_frames)


def decode_frames(path: str | os.PathLike, size: tuple[int, int] = SIZE, fps_out: list | None = None,
                  keep=None, notes: list | None = None) -> Iterator[tuple[float, int, np.ndarray, object]]:
    """``(time_s, frame_index, grey, picture)`` for every frame of ``path``, ``grey`` a ``size``
    (w, h) uint8 array, ``picture`` the frame as an upright PIL RGB image at display aspect when
    ``keep(frame_index, time_s)`` is true, else None: one decode serves the cut detector and the
    frames sampled for faces. One decoded frame alive at a time.

    ``fps_out``, when given, gets the stream's frame rate appended before the first frame.
    Raises :class:`VideoError` (one line naming the file) when the file cannot be opened, has
    no video stream, breaks off part-way or is cut short (fewer packets than an MP4/MOV index
    lists, or packets ending over a second before the declared duration).

    Packets the decoder refuses (damaged data) are passed over: the frames around them are
    read, as a player shows them. ``notes``, when given, gets one line (once the last frame is
    read) for frames that could not be decoded and for an end cut short by under a second.
    Frame numbers count decoded frames, so after a loss they are that many short of the file's.
    """
    import av
    from av.video.reformatter import VideoReformatter

    path = str(path)
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"size must be two positive numbers of pixels, not {size!r}")
    container, s = open_video(path)
    with container:
        s.thread_type = "AUTO"
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1000)
        rate = _rate(s)
        fps = float(rate or 0)
        if fps_out is not None:
            fps_out.append(fps)
        start = s.start_time
        indexed = "mov" in container.format.name.split(",")
        expected = int(s.frames or 0) if indexed else 0
        declared = float(s.duration * tb) if s.duration else 0.0
        if not declared and container.duration and len(container.streams) == 1:
            declared = max(0.0, container.duration / 1e6 - float((start or 0) * tb))
        reformatter = VideoReformatter()  # one scaler for all frames: a new one per frame costs 4x
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio
        n_packets, end_s, index, failed, why = 0, 0.0, 0, 0, ""

        def decoded(packet) -> list:
            """The packet's frames; none from one the decoder refuses (counted: one damaged packet
            costs its frames, not the video)."""
            nonlocal failed, why
            try:
                return s.codec_context.decode(packet)
            except av.error.FFmpegError as e:
                failed += 1
                why = why or _ffmpeg_reason(e)
                return []

        def frames_of(packet):
            nonlocal index, start
            for frame in decoded(packet):
                if frame.pts is not None:
                    if start is None:
                        start = frame.pts
                    t = float((frame.pts - start) * tb)
                else:
                    t = index / fps if fps else float("nan")
                grey = reformatter.reformat(frame, width=width, height=height, format="gray",
                                            interpolation="AREA").to_ndarray()
                picture = frame_image(frame, sar) if keep is not None and keep(index, t) else None
                del frame
                yield t, index, grey, picture
                index += 1

        try:
            for packet in container.demux(s):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None and not packet.size:  # the flush packet at the end: flushed below
                    continue
                if ts is not None:
                    if start is None:
                        start = ts
                    n_packets += 1
                    end_s = max(end_s, float((ts - start + (packet.duration or 0)) * tb))
                yield from frames_of(packet)
            yield from frames_of(None)
        except av.error.FFmpegError as e:
            raise VideoError(f"{path}: corrupt after {end_s:.1f} s ({_ffmpeg_reason(e)})") from None
    if expected and n_packets < expected:
        raise VideoError(f"{path}: truncated: the video stops after {n_packets} of its {expected} frames "
                         f"({end_s:.1f} s of {declared:.1f} s)")
    if not expected and declared and end_s < declared - _TRUNCATION_TOLERANCE_S:
        raise VideoError(f"{path}: truncated: the video stops at {end_s:.1f} s of {declared:.1f} s")
    if index == 0:
        raise VideoError(f"{path}: no frame could be decoded{f' ({why})' if why else ''}")
    if notes is not None:
        if failed:  # a damaged packet may also leave the next ones without a frame, and no error
            notes.append(f"{max(failed, n_packets - index)} of its {max(n_packets, index + failed)} frames could "
                         f"not be decoded ({why}); the {index} others are kept")
        end = "" if expected else short_end(end_s, declared, fps, n_packets)
        if end:
            notes.append(end)


def frame_signatures(path: str | os.PathLike, size: tuple[int, int] = SIZE, keep=None,
                     on_picture=None) -> Signatures:
    """Decode every frame of ``path`` (small grey pictures, see :func:`decode_frames`) and
    return the frame times, numbers, frame rate and the cut score of each frame.

    ``keep(frame_index, time_s)`` / ``on_picture(frame_index, time_s, picture)``: the frames
    ``keep`` picks are also handed over whole, in the same decode (extract-faces on videos)."""
    times, diffs, fps_out, notes = [], [], [], []
    prev = None
    for t, index, grey, picture in decode_frames(path, size, fps_out, keep if on_picture is not None else None, notes):
        cur = grey.astype(np.int16)
        diffs.append(0.0 if prev is None else float(np.abs(cur - prev).mean()))
        times.append(t)
        prev = cur
        if picture is not None:
            on_picture(index, t, picture)
    times_s = np.asarray(times, np.float64)
    fps = fps_out[0] if fps_out and fps_out[0] else _fps_from_times(times_s)
    return Signatures(times_s, np.arange(len(times), dtype=np.int64), fps, np.asarray(diffs, np.float32), notes)


def _fps_from_times(times_s: np.ndarray) -> float:
    steps = np.diff(times_s[np.isfinite(times_s)])
    steps = steps[steps > 0]
    return float(1 / np.median(steps)) if len(steps) else 0.0


# --- detecting -----------------------------------------------------------------------------

def _check(threshold, ratio, window, min_shot_frames) -> None:
    if not (float(threshold) >= 0):
        raise ValueError(f"threshold must be 0 or more, not {threshold!r}")
    if not (float(ratio) >= 0):
        raise ValueError(f"ratio must be 0 or more, not {ratio!r}")
    if int(window) < 1:
        raise ValueError(f"window must be 1 or more frames, not {window!r}")
    if int(min_shot_frames) < 1:
        raise ValueError(f"min_shot_frames must be 1 or more, not {min_shot_frames!r}")


def _local_median(diffs: np.ndarray, window: int) -> np.ndarray:
    """Median of each score's ``window`` neighbours either side (itself and diffs[0] left out)."""
    n = len(diffs)
    out = np.zeros(n, np.float64)
    for i in range(1, n):
        nb = np.concatenate([diffs[max(1, i - window):i], diffs[i + 1:i + 1 + window]])
        out[i] = np.median(nb) if len(nb) else 0.0
    return out


def cut_scores(diffs, threshold: float = THRESHOLD, ratio: float = RATIO, window: int = WINDOW) -> np.ndarray:
    """How far each frame is past the cut rule: ``min(d / threshold, d / (ratio × local median))``;
    above 1 is a cut candidate (before the minimum shot length). ``scores[0]`` is 0."""
    _check(threshold, ratio, window, 1)
    d = np.asarray(diffs, np.float64)
    if len(d) == 0:
        return d
    with np.errstate(divide="ignore", invalid="ignore"):
        a = d / threshold if threshold else np.full_like(d, np.inf)
        med = _local_median(d, int(window)) * ratio
        r = np.where(med > 0, d / np.where(med > 0, med, 1), np.where(d > 0, np.inf, 0))
    s = np.minimum(np.nan_to_num(a, nan=0.0), r)
    s[0] = 0.0
    return s


def detect_cuts(diffs, threshold: float = THRESHOLD, min_shot_frames: int = MIN_SHOT_FRAMES, *,
                ratio: float = RATIO, window: int = WINDOW) -> list[int]:
    """Frame numbers that start a new shot: a cut before frame ``i`` when ``diffs[i]`` (the
    difference from frame ``i − 1``) exceeds ``max(threshold, ratio × median of its window
    neighbours either side)`` and at least ``min_shot_frames`` frames have passed since the
    last cut (or the start). Greedy in time order, as PySceneDetect."""
    _check(threshold, ratio, window, min_shot_frames)
    scores = cut_scores(diffs, threshold, ratio, window)
    cuts, last = [], 0
    for i in np.flatnonzero(scores > 1):
        if i - last >= min_shot_frames:
            cuts.append(int(i))
            last = int(i)
    return cuts


def shots_from_cuts(cuts, n_frames: int, fps: float, times_s=None) -> pd.DataFrame:
    """The shots table of a video of ``n_frames`` frames cut before each frame in ``cuts``.

    Times are ``times_s[frame]`` where given (the frames' own times), else ``frame / fps``.
    Cuts at 0, at or past ``n_frames``, or repeated are dropped.
    """
    n_frames = int(n_frames)
    starts = [0] + sorted({int(c) for c in cuts if 0 < int(c) < n_frames})
    if n_frames <= 0:
        return _conform(pd.DataFrame(), SHOT_COLUMNS)
    ends = starts[1:] + [n_frames]
    fps = float(fps or 0)

    def at(frame: int) -> float:
        if times_s is not None and frame < len(times_s) and np.isfinite(times_s[frame]):
            return float(times_s[frame])
        if times_s is not None and frame == n_frames and len(times_s) and fps:
            return float(times_s[-1]) + 1 / fps
        return frame / fps if fps else float("nan")

    df = pd.DataFrame({
        "shot": np.arange(len(starts), dtype=np.int32),
        "start_frame": np.asarray(starts, np.int64),
        "end_frame": np.asarray(ends, np.int64) - 1,
        "start_s": [at(f) for f in starts],
        "end_s": [at(f) for f in ends],
        "n_frames": np.asarray(ends, np.int64) - np.asarray(starts, np.int64),
    })
    return _conform(df, SHOT_COLUMNS)


def detect_shots(path: str | os.PathLike, threshold: float = THRESHOLD, min_shot_frames: int = MIN_SHOT_FRAMES, *,
                 ratio: float = RATIO, window: int = WINDOW, size: tuple[int, int] = SIZE) -> pd.DataFrame:
    """The shots of the video at ``path`` (``SHOT_COLUMNS``), by :func:`detect_cuts`."""
    _check(threshold, ratio, window, min_shot_frames)
    sig = frame_signatures(path, size)
    cuts = detect_cuts(sig.diffs, threshold, min_shot_frames, ratio=ratio, window=window)
    return shots_from_cuts(cuts, len(sig.diffs), sig.fps, sig.times_s)


def write_shots(shots: pd.DataFrame, path: str | os.PathLike) -> None:
    """The shots table as Parquet, atomically."""
    write_table(_conform(shots, SHOT_COLUMNS), Path(path))


# --- PySceneDetect scene lists ---------------------------------------------------------------

def scenes_csv_name(video_path: str | os.PathLike) -> str:
    """``<stem>-Scenes.csv``, the name ``scenedetect list-scenes`` gives a video's scene list."""
    return f"{frame_stem(str(video_path))}-Scenes.csv"


def cuts_txt_name(video_path: str | os.PathLike) -> str:
    """``<stem>-cuts.txt``: the first frame of each shot after the first, from 0, one a line."""
    return f"{frame_stem(str(video_path))}-cuts.txt"


def write_cuts_txt(shots: pd.DataFrame, path: str | os.PathLike) -> None:
    """The cut list skelshop reads as ``ffprobe`` shots. Its reader of scene lists (written for
    PySceneDetect 0.5) takes their ``Start Frame`` from 0, where PySceneDetect 0.6 and this
    module count from 1: a cut list is read the same by both."""
    atomic_write_text(Path(path), "".join(f"{int(s)}\n" for s in shots["start_frame"].iloc[1:]))


def _timecode(frames: int, fps: float) -> str:
    """``HH:MM:SS.mmm`` of a frame count, as PySceneDetect's ``FrameTimecode.get_timecode()``."""
    ms = round(frames / fps * 1000)
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    return f"{h:02d}:{m:02d}:{ms / 1000:06.3f}"


def scenes_csv_text(shots: pd.DataFrame, fps: float) -> str:
    """The text of a PySceneDetect scene list (``write_scene_list``) for a shots table."""
    fps = float(fps)
    if not fps > 0:
        raise ValueError(f"fps must be above 0, not {fps!r}")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    starts = [int(x) for x in shots["start_frame"]]
    ends = [int(x) + 1 for x in shots["end_frame"]]  # exclusive, from 0
    w.writerow(["Timecode List:"] + [_timecode(s, fps) for s in starts[1:]])
    w.writerow(SCENES_HEADER)
    for i, (s, e) in enumerate(zip(starts, ends)):
        w.writerow([str(i + 1), str(s + 1), _timecode(s, fps), f"{s / fps:.3f}", str(e), _timecode(e, fps),
                    f"{e / fps:.3f}", str(e - s), _timecode(e - s, fps), f"{(e - s) / fps:.3f}"])
    return buf.getvalue()


def write_scenes_csv(shots: pd.DataFrame, path: str | os.PathLike, fps: float) -> None:
    """Write ``shots`` as a PySceneDetect ``-Scenes.csv`` scene list, atomically."""
    atomic_write_text(Path(path), scenes_csv_text(shots, fps))


def read_scenes_csv(path: str | os.PathLike, n_frames: int | None = None, fps: float | None = None) -> pd.DataFrame:
    """A shots table from a PySceneDetect scene list, or from a plain list of cuts.

    A scene list (with or without its ``Timecode List:`` row) gives the shots as written; its
    seconds columns give the times. A plain list holds one frame number a line (counted from 0,
    each the first frame of a new shot; blank lines, ``#`` comments and a non-numeric first
    line are passed over); it needs ``n_frames`` (the video's frame count) and ``fps``.
    Raises :class:`ShotsFileError` (one line naming the file) when the file cannot be read, or
    is empty (blank lines alone: a write that failed, not "no cuts", which a comment line says).
    """
    path = str(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [r for r in csv.reader(f)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ShotsFileError(f"{path}: cannot read the shots file ({getattr(e, 'strerror', None) or e})") from None
    rows = [[c.strip() for c in r] for r in rows]
    rows = [r for r in rows if any(r)]
    if not rows:  # a write that failed, not a video of one shot: that is said with a comment line
        raise ShotsFileError(f"{path}: the shots file is empty: write its cuts (a scene list, or one frame number "
                             "a line; a comment line alone for a video of one shot) or leave --shots out")
    rows = [r for r in rows if not r[0].startswith("#")]
    if rows and rows[0] and rows[0][0] == "Timecode List:":
        rows = rows[1:]
    if rows and "Start Frame" in rows[0]:
        return _read_scene_list(path, rows, n_frames)
    return _read_cut_list(path, rows, n_frames, fps)


def _read_scene_list(path: str, rows: list[list[str]], n_frames) -> pd.DataFrame:
    head = rows[0]
    need = ["Start Frame", "End Frame"]
    missing = [c for c in need if c not in head]
    if missing:
        raise ShotsFileError(f"{path}: a scene list without a {missing[0]!r} column")
    col = {c: head.index(c) for c in head}
    out = []
    for line, r in enumerate(rows[1:], start=2):
        try:
            start, end = int(r[col["Start Frame"]]) - 1, int(r[col["End Frame"]]) - 1
            t0 = float(r[col["Start Time (seconds)"]]) if "Start Time (seconds)" in col else float("nan")
            t1 = float(r[col["End Time (seconds)"]]) if "End Time (seconds)" in col else float("nan")
        except (ValueError, IndexError):
            raise ShotsFileError(f"{path}: scene row {line - 1} is not a scene ({','.join(r)[:80]!r})") from None
        if start < 0 or end < start:
            raise ShotsFileError(f"{path}: scene row {line - 1} runs from frame {start + 1} to {end + 1}")
        if out and start != out[-1][1] + 1:
            raise ShotsFileError(f"{path}: scene row {line - 1} starts at frame {start + 1}, "
                                 f"not right after the previous scene's end ({out[-1][1] + 1})")
        out.append((start, end, t0, t1))
    if not out:
        raise ShotsFileError(f"{path}: a scene list with no scenes")
    if n_frames is not None and out[-1][1] >= int(n_frames):
        raise ShotsFileError(f"{path}: its scenes run to frame {out[-1][1] + 1}, past the video's {int(n_frames)}")
    df = pd.DataFrame(out, columns=["start_frame", "end_frame", "start_s", "end_s"])
    df["shot"] = np.arange(len(df), dtype=np.int32)
    df["n_frames"] = df["end_frame"] - df["start_frame"] + 1
    return _conform(df, SHOT_COLUMNS)


def _read_cut_list(path: str, rows: list[list[str]], n_frames, fps) -> pd.DataFrame:
    cuts = []
    for i, r in enumerate(rows):
        cells = [c for c in r if c]
        try:
            cuts += [int(c) for c in cells]
        except ValueError:
            if i == 0:  # a header line
                continue
            raise ShotsFileError(f"{path}: line {i + 1} is not a frame number ({','.join(r)[:80]!r})") from None
    if any(c < 0 for c in cuts):
        raise ShotsFileError(f"{path}: a negative frame number ({min(cuts)})")
    if n_frames is None or not fps:
        raise ShotsFileError(f"{path}: a plain list of cuts needs the video's frame count and rate to be read")
    if any(c >= int(n_frames) for c in cuts):
        raise ShotsFileError(f"{path}: a cut at frame {max(cuts)}, past the video's {int(n_frames)} frames")
    return shots_from_cuts(cuts, int(n_frames), float(fps))
