"""extract-faces over a video: one decode finds the shot cuts and samples the frames whose
faces are detected, aligned and cropped as a photo's are; the faces are then linked into
tracks within each shot (:mod:`crowdsort.video.tracks`).

Every face of a video keeps where it came from: the video (``image_path``), its frame (counted
from 0 in decode order), time, shot and track. Each video's shots are written to
``<store>/shots/<video hash>/``: ``shots.parquet`` and the PySceneDetect scene list
``<stem>-Scenes.csv``, and the cut list ``<stem>-cuts.txt`` (both read by skelshop).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .frames import VIDEO_EXTENSIONS, VideoError, file_hash
from .shots import (ShotsFileError, cuts_txt_name, detect_cuts, frame_signatures, read_scenes_csv,
                    scenes_csv_name, shots_from_cuts, write_cuts_txt, write_scenes_csv, write_shots)
from .tracks import link_tracks

log = logging.getLogger(__name__)

# Frames sampled a second by default: dense enough that a walking person's face moves about half
# its width from one sample to the next (what the tracker allows), sparse enough that detection
# is not the bound.
DEFAULT_FPS = 5.0


def find_media(patterns, skipped: list | None = None) -> list[Path]:
    """Photos and videos matched by comma-separated globs, files and folders (see
    :func:`scan.find_files`): what extract-faces reads."""
    from ..storage.images import IMAGE_EXTENSIONS, UNSUPPORTED_EXTENSIONS
    from ..storage.scan import Media, find_files

    media = Media("image or video", IMAGE_EXTENSIONS | VIDEO_EXTENSIONS, UNSUPPORTED_EXTENSIONS,
                  plural="images or videos")
    return find_files(patterns, media, skipped)


def is_video(path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def sampling_rule(fps: float | None = DEFAULT_FPS, every: int | None = None):
    """``keep(frame_index, time_s)``: every ``every``-th frame, else the first frame of each
    1/``fps`` s (times from the stream, so variable-rate video is sampled evenly in time)."""
    if every is not None:
        if int(every) < 1:
            raise ValueError(f"--every must be 1 or more frames, not {every!r}")
        return lambda index, t: index % int(every) == 0
    if fps is None or not float(fps) > 0:
        raise ValueError(f"--fps must be a positive number of frames a second, not {fps!r}")
    last = [-1]

    def keep(index, t):
        bucket = int(np.floor(t * float(fps) + 1e-6)) if np.isfinite(t) else index
        if bucket > last[0]:
            last[0] = bucket
            return True
        return False
    return keep


def given_shots(shots, video_path: str) -> Path | None:
    """The shots file given for a video: ``--shots`` the file itself, or in a folder the video's
    ``<stem>-Scenes.csv``; a corpus' ((video, file), ...) its own. None: its cuts are detected."""
    if shots is None:
        return None
    if isinstance(shots, tuple):
        f = dict(shots).get(str(video_path))
        return Path(f) if f else None
    p = Path(shots)
    if p.is_dir():
        f = p / scenes_csv_name(video_path)
        return f if f.is_file() else None
    return p


def shots_dir(store_root: Path, video_hash: str) -> Path:
    return Path(store_root) / "shots" / video_hash


PROGRESS_EVERY = 50  # decoded frames between two progress reports


def process_video(path: str, detector, params, store_root: Path, record: int = 0,
                  on_frames=None, key: str | None = None) -> tuple[dict, list[dict]]:
    """The video's row and its face rows (crops and shots written). Raises
    :class:`frames.VideoError` (one line naming the file) for a video that cannot be read. One
    with frames that cannot be decoded, or cut short by under a second, keeps the faces of the
    frames that decode: its row is ok, its ``error`` says what was lost, and a warning too.
    ``on_frames(n)``: told of every ``PROGRESS_EVERY`` frames decoded (a long video shows progress).
    ``key``: the video as the dataset records it, that its face ids are made of (default ``path``)."""
    from ..faces.crops import faces_in_picture

    h = file_hash(path)
    faces: list[dict] = []
    size = [0, 0]

    def take(index, t, picture):
        rgb = np.asarray(picture.convert("RGB"))
        size[:] = rgb.shape[1], rgb.shape[0]
        for row in faces_in_picture(rgb, 1.0, path, h, detector, params, store_root, record, frame=index, key=key):
            faces.append({**row, "frame": index, "time_s": t})
    try:
        rule = sampling_rule(params.fps, params.every)

        def keep(index, t):
            if on_frames is not None and index % PROGRESS_EVERY == PROGRESS_EVERY - 1:
                on_frames(PROGRESS_EVERY)
            return rule(index, t)
        sig = frame_signatures(path, keep=keep, on_picture=take)
    except BaseException:  # a video that breaks off is refused whole: its crops go with it
        for f in faces:
            for rel in (f["crop_path"], f["dataset_crop_path"]):
                if rel:
                    (Path(store_root) / rel).unlink(missing_ok=True)
        raise
    n, fps, width, height = len(sig.times_s), sig.fps, size[0], size[1]
    given = given_shots(params.shots, path)
    if given is not None:
        try:
            shots = read_scenes_csv(given, n, fps)
        except ShotsFileError as e:
            raise ShotsFileError(f"{path}: its shots (--shots) cannot be used: {e}") from None
    else:
        shots = shots_from_cuts(detect_cuts(sig.diffs), n, fps, sig.times_s)
    folder = shots_dir(store_root, h)
    write_shots(shots, folder / "shots.parquet")
    write_scenes_csv(shots, folder / scenes_csv_name(path), fps)
    write_cuts_txt(shots, folder / cuts_txt_name(path))
    if faces:
        frame = np.array([f["frame"] for f in faces], np.int64)
        shot = np.searchsorted(shots["start_frame"].to_numpy(), frame, side="right") - 1
        boxes = np.array([[f["x0"], f["y0"], f["x1"], f["y1"]] for f in faces], np.float64)
        track = link_tracks(frame, [f["time_s"] for f in faces], shot, boxes,
                            appearance=face_vectors(faces, store_root))
        for f, s, k in zip(faces, shot.tolist(), track.tolist()):
            f.update(shot=s, track=k)
    row = {"image_hash": h, "width": width, "height": height, "n_faces": len(faces),
           "status": "ok" if faces else "no_face", "error": f"{path}: {'; '.join(sig.notes)}" if sig.notes else ""}
    if sig.notes:  # kept, with what was lost said: in its row and where the run is watched
        log.warning("%s", row["error"])
    return row, faces


_APPEARANCE: list = []  # the identity model of this process, loaded at its first ambiguous scene


def face_vectors(faces: list[dict], store_root: Path):
    """``vectors(rows)``: dlib identity vectors of those faces, read from their crops (what the
    tracker asks for where boxes are ambiguous). Without the model, every face looks alike to it:
    the boxes alone decide, as before.

    dlib, not the default identity model: on small moving faces MobileFaceNet's vectors are far
    less steady (crowd_walk and hamilton_short: one track's consecutive faces a median 0.12 and
    at the 99th percentile 0.98 apart, against dlib's 0.02 and 0.11; faces of two tracks in one
    frame 0.65 apart at the 10th percentile), so no gate on its distance keeps a walker in one
    track while telling two people apart."""
    def vectors(rows):
        from ..faces.embed import _read_crops, load_embedder
        from ..models.files import ModelNotFoundError

        if not _APPEARANCE:
            try:
                _APPEARANCE.append(load_embedder("dlib").prepare())
            except (ImportError, ModelNotFoundError, RuntimeError, ValueError) as e:
                log.warning("tracks: no identity vectors for ambiguous boxes (%s); boxes alone decide", e)
                _APPEARANCE.append(None)
        if _APPEARANCE[0] is None:
            return np.ones((len(rows), 1))
        crops = _read_crops([Path(store_root) / faces[r]["crop_path"] for r in rows])
        return _APPEARANCE[0].embed(crops, [faces[r]["crop_landmarks"] for r in rows])
    return vectors


def video_frame(path: str, time_s: float):
    """The frame shown at ``time_s`` (seconds from the stream's start), as an upright PIL image at
    display aspect (the picture its faces' boxes refer to): a seek to the key frame before it,
    then a decode up to it."""
    from fractions import Fraction

    from .frames import frame_image, open_video

    container, s = open_video(path)
    with container:
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1000)
        start = s.start_time or 0
        rate = float(s.average_rate or 25)
        container.seek(int(start + max(0.0, time_s) / tb), stream=s, backward=True, any_frame=False)
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio
        last = None
        for frame in container.decode(s):
            t = float((frame.pts - start) * tb) if frame.pts is not None else time_s
            if t > time_s + 0.5 / rate and last is not None:
                break
            last = frame
            if t >= time_s - 0.5 / rate:
                break
        if last is None:
            raise VideoError(f"{path}: no frame at {time_s:.3f} s")
        return frame_image(last, sar)


def load_shots(store) -> pd.DataFrame:
    """Shots of every live video of an extraction (``image_path`` = the video), in one table."""
    images = store.load_images()
    videos = images[images["image_path"].map(is_video) & (images["status"].isin(["ok", "no_face"]))]
    parts = []
    for path, h in zip(videos["image_path"], videos["image_hash"]):
        f = shots_dir(store.root, h) / "shots.parquet"
        if f.exists():
            parts.append(pd.read_parquet(f).assign(image_path=path))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["shot", "start_frame", "end_frame", "start_s", "end_s", "n_frames", "image_path"])

