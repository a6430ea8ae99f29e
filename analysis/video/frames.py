"""extract-frames: key frames of videos as images, incrementally.

Only key frames (I-frames) are decoded: the decoder is told to drop every other frame
(``skip_frame = "NONKEY"``) and is only handed the key packets that will be kept, so a video
costs one demux pass plus one decode per written frame. At most one key frame is kept every
``keyframes`` seconds: the first always, then each whose time is at least the last kept one's
plus ``keyframes`` (``0`` keeps every key frame).

The output folder ``D/<to>`` (default ``D/images/frames``) holds::

    <stem>_<NNNN>.jpg    the kept key frames of one video, numbered from 0000 (more digits past
                         9999), or .png; upright (display rotation applied) and at display
                         aspect (non-square pixels stretched)
    frames.parquet       one row per written frame (FRAME_COLUMNS)
    videos.parquet       one row per video seen (VIDEO_COLUMNS): what re-runs compare against
    .parts/              per-video commits of an unfinished run, merged when a run finishes

The tables lie beside the frames, so the folder is self-describing; an image scan
(:func:`crowdsort.storage.images.find_images`, e.g. extract-faces ``--from images/frames``) passes over
them silently. ``output`` is the frame's path relative to the dataset.

``<stem>`` is the video's file name without extension (characters that are not allowed in file
names replaced by ``_``). Two videos whose stems are equal (ignoring case) are told apart by
giving every one after the first (in path order, earlier runs first) ``<stem>-<8 hex digits of
the path's hash>``; a video keeps its name on every later run, and the names of deleted videos
stay reserved, since their frames stay on disk.

Re-runs skip a video whose size, mtime, parameters and frame files are as recorded, without
reading it; if only the mtime changed, the content hash decides. A changed video is redone:
its new frames replace the old ones, and old frames it no longer has are removed. A video
whose file is deleted is marked ``gone`` (its frames stay, their rows get ``gone``). Each video
is committed on its own (frames first, then its rows), so a killed run redoes at most the
videos in flight.

An unreadable video (empty, truncated, corrupt, not a video, audio only) gets a one-line reason
naming the file, status ``error``, and the batch goes on. One cut off part-way keeps the frames
decoded before the cut. Key frames the decoder refuses (damaged packets) are passed over, and a
video whose end is cut short by less than a second is read to where it stops: such a video is
``ok``, its ``error`` says what was lost, and a warning is logged. With ``workers`` > 1 each
video goes to one of that many spawned processes; one whose decoder crashes its worker is
reported like any unreadable file.

Memory: one decoded frame per worker at a time (plus the decoder's own reference pictures);
hashing reads the file in 1 MiB chunks.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import re
import time
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import pandas as pd
from tqdm.auto import tqdm

from ..storage.scan import Media, find_files
from ..storage.store import _conform, atomic_write_bytes, empty_frame, read_parquet, write_table

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".mkv", ".avi", ".mov", ".webm", ".flv", ".wmv", ".m4v"})
FORMATS = ("jpg", "png")
JPEG_QUALITY = 95
PNG_COMPRESS_LEVEL = 1  # zlib level; PIL's default 6 takes 3x as long (0.6 s a 1080p frame) for 16% less

FRAME_COLUMNS = {
    "video_path": "string", "video_hash": "string", "frame_index": "int64", "time_s": "float64",
    "keyframe": "bool", "output": "string", "width": "int32", "height": "int32",
    "gone": "bool", "record": "int64",
}
VIDEO_COLUMNS = {
    "video_path": "string", "video_hash": "string", "size_bytes": "int64", "mtime_ns": "int64",
    "status": "string", "error": "string", "n_frames": "int32", "duration_s": "float64",
    "fps": "float64", "name": "string", "signature": "string", "record": "int64",
}
# Status of a video row; "unchanged" only travels from a worker to the driver, never stored.
OK, ERROR, NO_FRAMES, GONE = "ok", "error", "no_frames", "gone"

_HASH_CHUNK = 1 << 20
# A video whose packets end this much before its declared duration is reported truncated (when
# the container does not give a frame count to compare against).
_TRUNCATION_TOLERANCE_S = 1.0
# Characters that are not allowed in file names on some system (and control characters).
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')
_FRAME_NAME = re.compile(r"^(.*)_(\d{4,})\.(jpg|png)$")


class VideoError(ValueError):
    """A video file that cannot be read; the message names the file and the reason."""


# --- finding ---------------------------------------------------------------------------
VIDEOS = Media("video", VIDEO_EXTENSIONS, article="a")


def find_videos(patterns: str | list[str], skipped: list | None = None) -> list[Path]:
    """Video files matched by comma-separated globs, files and folders; see :func:`scan.find_files`."""
    return find_files(patterns, VIDEOS, skipped)


def file_hash(path: str | os.PathLike) -> str:
    """BLAKE2b (128 bits, hex) of a file's bytes, read in chunks: the same value as
    :func:`crowdsort.storage.images.content_hash` of the whole file, without holding it in memory."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


# --- naming ----------------------------------------------------------------------------

def frame_stem(video_path: str) -> str:
    """The video's stem as a file name: characters some system forbids become ``_``."""
    stem = _UNSAFE.sub("_", Path(video_path).stem).strip(" .") or "video"
    return stem[:100]


def frame_file(name: str, number: int, fmt: str) -> str:
    """``<name>_<NNNN>.<fmt>``: 4 digits, more past 9999."""
    return f"{name}_{number:04d}.{fmt}"


def assign_names(paths: list[str], recorded: dict[str, str]) -> dict[str, str]:
    """The frame-file base name of each video in ``paths``.

    ``recorded`` maps paths of earlier runs (deleted ones included) to their names, which they
    keep. A new video gets its :func:`frame_stem` unless another video already holds that name
    (ignoring case, for case-insensitive file systems); then ``<stem>-<8 hex of its path>``.
    """
    names = dict(recorded)
    taken = {n.casefold(): p for p, n in recorded.items()}
    for p in sorted(paths):
        if p in names:
            continue
        name = frame_stem(p)
        if taken.get(name.casefold(), p) != p:
            name = f"{name}-{hashlib.blake2b(p.encode('utf-8'), digest_size=4).hexdigest()}"
        names[p] = name
        taken[name.casefold()] = p
    return {p: names[p] for p in paths}


# --- reading one video -----------------------------------------------------------------

def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _ffmpeg_reason(e: BaseException) -> str:
    """FFmpeg's message without the file name PyAV appends."""
    msg = getattr(e, "strerror", None) or _one_line(e)
    return str(msg).rstrip(".")


def _mp4_problem(f, size: int) -> str | None:
    """What is wrong with an ISO media (MP4/MOV) file's top-level boxes, or None."""
    pos, types = 0, []
    while pos < size:
        f.seek(pos)
        head = f.read(16)
        if len(head) < 8:
            return f"truncated (the file ends inside a box header at byte {pos:,})"
        n, kind = int.from_bytes(head[:4], "big"), head[4:8].decode("latin-1")
        if n == 1:
            n = int.from_bytes(head[8:16], "big") if len(head) == 16 else 0
        elif n == 0:
            n = size - pos
        if n < 8:
            return f"corrupt MP4/MOV (box {kind!r} at byte {pos:,} has an invalid size)"
        types.append(kind)
        if pos + n > size:
            return (f"truncated (the file ends at byte {size:,}, inside its {kind!r} box, which runs to byte "
                    f"{pos + n:,}: cut off while copying or downloading?)")
        pos += n
    if "moov" not in types:
        return "no 'moov' index (the recording was not finished, or the file is cut off)"
    return None


def _is_text(head: bytes) -> bool:
    return bool(head) and all(b >= 32 or b in b"\t\r\n" for b in head)


def _sniff_text(path: str) -> str | None:
    """Why ``path`` is not handed to FFmpeg at all: empty, or text. FFmpeg would probe a text
    file for its text formats (an HLS or concat playlist opens other files and URLs)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as e:
        return f"cannot read file ({e.strerror or e})"
    if not head:
        return "empty file (0 bytes)"
    if _is_text(head):
        low = head.lstrip().lower()
        if low.startswith((b"<!doctype html", b"<html")):
            return "not a video (a web page: the download failed?)"
        if low.startswith(b"#extm3u"):
            return "not a video (an M3U/HLS playlist)"
        return "not a video (a text file)"
    return None


def _why_unreadable(path: str, e: BaseException) -> str:
    """Why FFmpeg could not open ``path``, from its first bytes where they tell."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "empty file (0 bytes)"
        with open(path, "rb") as f:
            head = f.read(512)
            if head[4:8] == b"ftyp":
                return _mp4_problem(f, size) or f"corrupt MP4/MOV ({_ffmpeg_reason(e)})"
    except OSError as oe:
        return f"cannot read file ({oe.strerror or oe})"
    kinds = ((b"\x1a\x45\xdf\xa3", "Matroska/WebM"), (b"RIFF", "AVI"), (b"FLV", "FLV"),
             (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11", "ASF/WMV"))
    for magic, kind in kinds:
        if head.startswith(magic):
            return f"corrupt or truncated {kind} ({_ffmpeg_reason(e)})"
    others = ((b"\xff\xd8\xff", "a JPEG image"), (b"\x89PNG", "a PNG image"), (b"GIF8", "a GIF image"),
              (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"ID3", "an MP3 audio file"))
    for magic, kind in others:
        if head.startswith(magic):
            return f"not a video ({kind})"
    return f"not a video FFmpeg can read ({_ffmpeg_reason(e)})"


def _video_stream(container, path: str):
    """The first video stream that is not cover art, or :class:`VideoError` saying what there is."""
    import av

    cover_art = getattr(getattr(av.stream, "Disposition", None), "attached_pic", None)
    for s in container.streams.video:
        if cover_art is None or not (s.disposition & cover_art):
            return s
    audio, others = len(container.streams.audio), len(container.streams) - len(container.streams.audio)
    if audio:
        art = " and cover art" if container.streams.video else ""
        raise VideoError(f"{path}: no video stream (audio only: {audio} audio stream{'s' * (audio > 1)}{art})")
    if not others:
        raise VideoError(f"{path}: no video stream (no streams at all)")
    kinds = ", ".join(sorted({s.type for s in container.streams}))
    raise VideoError(f"{path}: no video stream (only {kinds})")


@dataclass
class VideoInfo:
    """What one pass over a video found (the frames go to the callback)."""
    n_key_packets: int = 0
    n_packets: int = 0
    expected_packets: int = 0
    duration_s: float = 0.0
    fps: float = 0.0
    end_s: float = 0.0  # end of the last packet
    kept: int = 0  # key packets that pass the keyframes rule
    sent: int = 0  # key packets handed to the decoder (a damaged one may give no frame and no error)
    decode_errors: int = 0
    first_decode_error: str = ""
    error: str = ""  # why the video is cut off or corrupt, "" when it is whole
    note: str = ""  # what was lost where the rest is kept (frames not decoded, a short end), "" when nothing


def short_end(end_s: float, declared: float, fps: float, found: int) -> str:
    """What a video cut short by less than ``_TRUNCATION_TOLERANCE_S`` lacks at its end (its
    ``found`` frames before are kept), or "" when its packets reach the declared duration within
    a frame. Whole Matroska files end exactly there; an end missed by more than a frame is a
    copy or a download cut short."""
    short = declared - end_s
    if not declared or short <= (1 / fps if fps else 0.1) or short > _TRUNCATION_TOLERANCE_S:
        return ""
    missing = f", about {round(short * fps)} missing at its end" if fps else ""
    return (f"truncated: the video stops at {end_s:.1f} s of {declared:.1f} s ({found} frames found{missing}); "
            "the frames before are kept")


def _rate(stream) -> Fraction | None:
    for r in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if r:
            return Fraction(r)
    return None


def open_video(path: str):
    """``(container, video stream)`` of a readable video; :class:`VideoError` naming the file
    otherwise (text files are refused before FFmpeg sees them)."""
    import av

    why = _sniff_text(path)
    if why:
        raise VideoError(f"{path}: {why}")
    try:
        container = av.open(path, metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(f"{path}: {_why_unreadable(path, e)}") from None
    try:
        return container, _video_stream(container, path)
    except BaseException:
        container.close()
        raise


def read_keyframes(path: str, keyframes: float, on_frame=None) -> VideoInfo:
    """One pass over ``path``: demux every packet, decode the key frames the rule keeps.

    ``on_frame(frame, time_s, frame_index, sample_aspect_ratio)`` is called for each kept frame,
    in time order, one decoded frame alive at a time; without it nothing is decoded (a dry run
    counts the key packets the rule keeps). ``time_s`` is seconds from the stream's start,
    ``frame_index`` is ``round(time_s × average frame rate)`` (-1 when the stream declares no
    rate): the frame's position in a full decode for constant-rate video.

    Raises :class:`VideoError` when the file cannot be opened or has no video stream; a video
    cut off or corrupt part-way returns what it gave, with ``error`` set. Cut off means fewer
    packets than an MP4/MOV index lists, or packets ending over a second before the declared
    duration (a stream's own, or the container's when the video is its only stream).
    """
    import av

    k = Fraction(str(keyframes))
    container, s = open_video(path)
    with container:
        s.codec_context.skip_frame = "NONKEY"
        tb = Fraction(s.time_base) if s.time_base else Fraction(1, 1000)
        fps = _rate(s)
        start = s.start_time
        sar = s.sample_aspect_ratio or s.codec_context.sample_aspect_ratio
        indexed = "mov" in container.format.name.split(",")  # s.frames is the index's sample count
        info = VideoInfo(expected_packets=int(s.frames or 0) if indexed else 0, fps=float(fps or 0))
        declared = 0.0  # the duration the file promises, for the truncation check
        if s.duration:
            info.duration_s = declared = float(s.duration * tb)
        elif container.duration:  # Matroska: counted from time 0, not from the stream's start
            info.duration_s = max(0.0, container.duration / 1e6 - float((start or 0) * tb))
            declared = info.duration_s if len(container.streams) == 1 else 0.0
        last_kept = None
        sent: deque = deque()  # times of the key packets handed to the decoder, oldest first

        def emit(frames: list):
            while frames:
                frame = frames.pop(0)  # the list lets go of each frame once it is written
                t = sent.popleft() if sent else None
                if frame.pts is not None:
                    t = (frame.pts - start) * tb
                if t is None:
                    continue
                index = round(t * fps) if fps else -1
                on_frame(frame, float(t), index, sar)
                info.kept += 1
                del frame  # one decoded frame alive at a time

        def decode(packet):
            try:
                emit(list(s.codec_context.decode(packet)))
            except av.error.FFmpegError as e:
                info.decode_errors += 1
                info.first_decode_error = info.first_decode_error or _ffmpeg_reason(e)
                if sent and packet is not None:
                    sent.pop()

        try:
            for packet in container.demux(s):
                ts = packet.pts if packet.pts is not None else packet.dts
                if ts is None:  # the flush packet at the end
                    continue
                if start is None:
                    start = ts
                info.n_packets += 1
                t = (ts - start) * tb
                info.end_s = max(info.end_s, float(t + (packet.duration or 0) * tb))
                if not packet.is_keyframe:
                    continue
                info.n_key_packets += 1
                if last_kept is not None and t - last_kept < k:
                    continue
                last_kept = t
                if on_frame is None:
                    info.kept += 1
                    continue
                sent.append(t)
                info.sent += 1
                decode(packet)
            if on_frame is not None:
                decode(None)  # frames the decoder still holds
        except av.error.FFmpegError as e:
            info.error = f"corrupt after {info.end_s:.1f} s ({_ffmpeg_reason(e)})"
            return info
    if info.expected_packets and info.n_packets < info.expected_packets:
        info.error = (f"truncated: the video stops after {info.n_packets} of its {info.expected_packets} frames "
                      f"({info.end_s:.1f} s of {info.duration_s:.1f} s)")
    elif not info.expected_packets and declared and info.end_s < declared - _TRUNCATION_TOLERANCE_S:
        info.error = f"truncated: the video stops at {info.end_s:.1f} s of {declared:.1f} s"
    elif info.decode_errors:  # the others are written: a damaged packet costs its own frame only
        lost = max(info.decode_errors, info.sent - info.kept)
        info.note = (f"{lost} of the {info.sent} key frames read could not be decoded ({info.first_decode_error}); "
                     f"the {info.kept} others are kept")
    elif not info.expected_packets:
        info.note = short_end(info.end_s, declared, info.fps, info.n_packets)
    return info


def frame_image(frame, sample_aspect_ratio=None):
    """A decoded frame as an upright PIL RGB image at display aspect."""
    from PIL import Image

    im = frame.to_image()
    sar = Fraction(sample_aspect_ratio) if sample_aspect_ratio else Fraction(1)
    if sar > 0 and sar != 1:
        im = im.resize((max(1, round(im.width * sar)), im.height), Image.Resampling.LANCZOS)
    turn = round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4  # counter-clockwise quarter turns
    if turn:
        im = im.transpose((None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180,
                           Image.Transpose.ROTATE_270)[turn])
    return im


def _encode(im, fmt: str) -> bytes:
    import io

    buf = io.BytesIO()
    if fmt == "png":
        im.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        im.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


# --- the per-video task ----------------------------------------------------------------

@dataclass(frozen=True)
class _Task:
    path: str
    name: str
    out_dir: str  # the folder the frames go to
    rel_dir: str  # the same, as recorded in ``output`` (relative to the dataset)
    keyframes: float
    fmt: str
    signature: str
    prev_hash: str | None  # the recorded hash: equal content is not decoded again
    dry_run: bool = False


def _signature(keyframes: float, fmt: str) -> str:
    return f"keyframes={float(keyframes):g};format={fmt}"


def _blank_row(task: _Task, error: str = "") -> dict:
    return {"video_path": task.path, "video_hash": "", "size_bytes": 0, "mtime_ns": 0, "status": ERROR,
            "error": error, "n_frames": 0, "duration_s": 0.0, "fps": 0.0, "name": task.name,
            "signature": task.signature, "record": time.time_ns()}


def _work(task: _Task) -> tuple[dict, list[dict]]:
    """Process one video: its row and its frame rows (frames written) — never raises."""
    path = task.path
    row = _blank_row(task)
    frames: list[dict] = []
    try:
        st = os.stat(path)
        row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        if task.prev_hash is not None or not task.dry_run:
            row["video_hash"] = file_hash(path)
        if task.prev_hash is not None and row["video_hash"] == task.prev_hash:
            row["status"] = "unchanged"
            return row, []

        def write(frame, time_s, index, sar):
            im = frame_image(frame, sar)
            fname = frame_file(task.name, len(frames), task.fmt)
            atomic_write_bytes(Path(task.out_dir) / fname, _encode(im, task.fmt))
            frames.append({"video_path": path, "video_hash": row["video_hash"], "frame_index": index,
                           "time_s": time_s, "keyframe": True, "output": f"{task.rel_dir}/{fname}" if task.rel_dir
                           else fname, "width": im.width, "height": im.height, "gone": False,
                           "record": row["record"]})

        info = read_keyframes(path, task.keyframes, None if task.dry_run else write)
        n = info.kept if task.dry_run else len(frames)
        row.update(n_frames=n, duration_s=info.duration_s, fps=info.fps)
        if info.error:
            row["error"] = f"{path}: {info.error}"
        elif n == 0:
            why = (f"{info.n_packets} packets, none marked key" if not info.n_key_packets else
                   f"{info.n_key_packets} key packets, none decoded")
            row.update(status=NO_FRAMES, error=f"{path}: no key frames ({why})")
        else:
            row["status"] = OK
            if info.note:  # kept, with what was lost said: in its row and where the run is watched
                row["error"] = f"{path}: {info.note}"
                log.warning("%s", row["error"])
    except VideoError as e:
        row["error"] = str(e)
    except OSError as e:
        row["error"] = f"{path}: cannot read file ({e.strerror or e})"
    except Exception as e:  # a batch never dies on one bad file
        log.exception("unexpected failure on %s", path)
        row["error"] = f"{path}: {type(e).__name__}: {_one_line(e)}"
    return row, frames


def _crashed(task: _Task) -> tuple[dict, list[dict]]:
    """The row of a video whose worker died reading it."""
    row = _blank_row(task, error=f"{task.path}: the decoder crashed on it (its worker process died)")
    try:
        st = os.stat(task.path)
        row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)  # not retried until the file changes
    except OSError:
        pass
    return row, []


def _init_pool_worker() -> None:
    from ..scale.workers import die_with_parent

    die_with_parent()


def in_pool(work, tasks, workers: int, on_crash):
    """``work(task)`` for each task, from ``workers`` spawned processes, in completion order.

    A worker that dies (a decoder crash on a malformed file, or the kernel's OOM killer) breaks
    the pool and every task in flight with it: those are retried one at a time in a one-worker
    pool afterwards, and a task that kills that worker too gives ``on_crash(task)``. The batch
    goes on either way (``multiprocessing.Pool`` would wait for a dead worker forever).
    """
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")  # decoders hold threads; never fork them

    def pool(n):
        return ProcessPoolExecutor(n, mp_context=ctx, initializer=_init_pool_worker)

    queue, suspects, running = deque(tasks), [], {}
    ex = pool(workers)
    try:
        while queue or running:
            while queue and len(running) < workers:
                t = queue.popleft()
                running[ex.submit(work, t)] = t
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for f in done:
                t = running.pop(f)
                try:
                    result = f.result()
                except BrokenProcessPool:
                    suspects.append(t)
                    broken = True
                    continue
                yield result
            if broken:
                suspects.extend(running.values())
                running.clear()
                ex.shutdown(wait=False, cancel_futures=True)
                ex = pool(workers)
        if suspects:
            ex.shutdown(wait=False, cancel_futures=True)
            ex = pool(1)
        for t in suspects:  # alone in its pool, a crash is the task's own
            try:
                result = ex.submit(work, t).result()
            except BrokenProcessPool:
                result = on_crash(t)
                ex.shutdown(wait=False, cancel_futures=True)
                ex = pool(1)
            yield result
    except BaseException:  # Ctrl-C, SIGTERM: stop the workers now, not after their videos
        for proc in list((getattr(ex, "_processes", None) or {}).values()):
            proc.terminate()
        raise
    finally:
        ex.shutdown(wait=False, cancel_futures=True)


# --- the on-disk tables ----------------------------------------------------------------

class FrameStore:
    """The output folder of extract-frames: frame files, the two tables and their commits."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def parts_dir(self) -> Path:
        return self.root / ".parts"

    def _fix(self) -> str:
        return (f"delete {self.root / 'frames.parquet'} and {self.root / 'videos.parquet'} and re-run "
                "crowdsort extract-frames to rebuild them")

    def _read(self, name: str, columns: dict[str, str]) -> pd.DataFrame:
        frames = []
        main = self.root / f"{name}.parquet"
        if main.exists():
            frames.append(read_parquet(main, self._fix()))
        frames += [df for _, df in self._parts(name)]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_frame(columns)
        return _conform(pd.concat(frames, ignore_index=True), columns)

    def _parts(self, name: str) -> list:
        """``(stamp, table)`` of each checkpoint. A frames part without its videos part (a run
        killed between the two writes) is read, but its rows match no video record."""
        if not self.parts_dir.exists():
            return []
        out = []
        for p in sorted(self.parts_dir.glob(f"*-{name}.parquet")):
            stamp = p.name.rsplit("-", 1)[0]
            try:
                out.append((stamp, pd.read_parquet(p)))
            except (OSError, ValueError) as e:
                log.warning("checkpoint %s is damaged (%s): removed, its video is processed again", p, _one_line(e))
                for twin in self.parts_dir.glob(f"{stamp}-*.parquet"):
                    twin.unlink(missing_ok=True)
        return out

    def load_videos(self) -> pd.DataFrame:
        """One row per video, its latest record."""
        df = self._read("videos", VIDEO_COLUMNS)
        return df.drop_duplicates("video_path", keep="last").sort_values("video_path").reset_index(drop=True)

    def load_frames(self, include_gone: bool = False) -> pd.DataFrame:
        """One row per frame of each video's latest record, in video then time order."""
        frames = self._read("frames", FRAME_COLUMNS)
        if len(frames):
            videos = self.load_videos().set_index("video_path")["record"]
            current = frames["record"].to_numpy() == videos.reindex(frames["video_path"]).to_numpy()
            frames = frames[current].drop_duplicates("output", keep="last")
        if not include_gone:
            frames = frames[~frames["gone"]]
        return frames.sort_values(["video_path", "time_s"]).reset_index(drop=True)

    def commit(self, video: dict, frames: list[dict]) -> None:
        """Record one processed video: its frame rows first, then its row (the commit marker)."""
        stamp = f"{time.time_ns():020d}-{os.getpid()}"
        if frames:
            write_table(_conform(pd.DataFrame(frames), FRAME_COLUMNS), self.parts_dir / f"{stamp}-frames.parquet")
        write_table(_conform(pd.DataFrame([video]), VIDEO_COLUMNS), self.parts_dir / f"{stamp}-videos.parquet")

    def consolidate(self, gone_paths: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Merge the commits into the main tables; mark ``gone_paths`` and their frames gone."""
        videos = self.load_videos()
        frames = self.load_frames(include_gone=True)
        if gone_paths:
            videos.loc[videos["video_path"].isin(gone_paths), "status"] = GONE
            frames.loc[frames["video_path"].isin(gone_paths), "gone"] = True
        if self.parts_dir.exists() or gone_paths or not (self.root / "videos.parquet").exists():
            write_table(_conform(frames, FRAME_COLUMNS), self.root / "frames.parquet")
            write_table(_conform(videos, VIDEO_COLUMNS), self.root / "videos.parquet")
        if self.parts_dir.exists():
            for p in self.parts_dir.glob("*.parquet"):
                p.unlink()
            from ..storage.store import remove_stale_temp

            remove_stale_temp(self.parts_dir)
            try:
                self.parts_dir.rmdir()
            except OSError:
                pass
        return videos, frames


# --- the batch -------------------------------------------------------------------------

def _check_params(keyframes, fmt, workers) -> tuple[float, str]:
    try:
        k = float(keyframes)
    except (TypeError, ValueError):
        raise ValueError(f"keyframes must be a number of seconds, not {keyframes!r}") from None
    if not (k >= 0 and k != float("inf")):
        raise ValueError(f"keyframes must be 0 or more seconds, not {keyframes!r}")
    f = str(fmt).lower().lstrip(".")
    f = "jpg" if f == "jpeg" else f
    if f not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be 1 or more, not {workers!r}")
    return k, f


def _frame_groups(folder: Path) -> dict[str, set[str]]:
    """Frame files in ``folder`` by the name they were written under."""
    groups: dict[str, set[str]] = {}
    if folder.is_dir():
        with os.scandir(folder) as it:
            for e in it:
                m = _FRAME_NAME.match(e.name)
                if m:
                    groups.setdefault(m.group(1), set()).add(e.name)
    return groups


def extract_frames(
    patterns: str | list[str],
    dataset: str | os.PathLike,
    to: str = "images/frames",
    keyframes: float = 10.0,
    fmt: str = "jpg",
    workers: int = 1,
    dry_run: bool = False,
    progress: bool = True,
) -> dict:
    """Write the key frames of the videos matched by ``patterns`` to ``dataset/to``.

    ``patterns`` are taken as given (resolve them against the dataset first if they are
    relative to it). Returns a summary: ``videos`` (found), ``processed``, ``unchanged``,
    ``failed``, ``no_frames``, ``gone`` (counts), ``frames`` (written by this run; with
    ``dry_run``, that would be), ``frames_total`` (in the table), ``to_process`` and
    ``to_skip`` (paths), ``errors`` (one line per unreadable video), ``skipped`` (entries the
    scan passed over), ``root`` and ``dry_run``. With ``dry_run`` nothing at all is written:
    key frames are counted from the packets' key flags, without decoding.
    """
    from ..storage.locks import DatasetLock
    from ..storage.store import remove_stale_temp

    keyframes, fmt = _check_params(keyframes, fmt, workers)
    skipped: list = []
    paths = [str(p) for p in find_videos(patterns, skipped=skipped)]
    dataset = Path(dataset)
    store = FrameStore(dataset / to)
    rel_dir = Path(to).as_posix() if not Path(to).is_absolute() else str(store.root)
    if dry_run:
        return _run(paths, skipped, store, rel_dir, keyframes, fmt, workers, progress, dry_run=True)
    with DatasetLock(dataset, "extract-frames"):
        store.root.mkdir(parents=True, exist_ok=True)
        for folder in (store.root, store.parts_dir):
            if folder.exists():
                remove_stale_temp(folder)
        return _run(paths, skipped, store, rel_dir, keyframes, fmt, workers, progress, dry_run=False)


def _run(paths, skipped, store: FrameStore, rel_dir, keyframes, fmt, workers, progress, dry_run) -> dict:
    signature = _signature(keyframes, fmt)
    previous = store.load_videos()
    old_frames = store.load_frames(include_gone=True)
    prev = previous.set_index("video_path") if len(previous) else None
    outputs: dict[str, set[str]] = {}
    for v, out in zip(old_frames["video_path"], old_frames["output"]):
        outputs.setdefault(v, set()).add(out)
    names = assign_names(paths, dict(zip(previous["video_path"], previous["name"])))

    tasks, to_skip = [], []
    for p in paths:
        prev_hash = None
        if prev is not None and p in prev.index:
            r = prev.loc[p]
            if r["status"] != GONE and r["signature"] == signature:
                if all(_output_path(store, o).is_file() for o in outputs.get(p, ())):
                    st = os.stat(p)
                    if st.st_size == r["size_bytes"] and st.st_mtime_ns == r["mtime_ns"]:
                        to_skip.append(p)
                        continue
                    prev_hash = r["video_hash"] or None
        tasks.append(_Task(p, names[p], str(store.root), rel_dir, keyframes, fmt, signature, prev_hash, dry_run))
    current = set(paths)
    gone = set() if prev is None else {
        p for p in prev.index[prev["status"] != GONE] if p not in current and not os.path.lexists(p)}

    summary = {"videos": len(paths), "processed": 0, "unchanged": len(to_skip), "failed": 0, "no_frames": 0,
               "gone": len(gone), "frames": 0, "frames_total": 0, "to_process": [], "to_skip": list(to_skip),
               "errors": [], "skipped": skipped, "root": str(store.root), "dry_run": dry_run}
    groups = {} if dry_run else _frame_groups(store.root)

    def consume(results):
        for row, frames in tqdm(results, total=len(tasks), disable=not progress, unit="video",
                                desc="extract-frames" + (" (dry run)" if dry_run else "")):
            p = row["video_path"]
            if row["status"] == "unchanged":
                summary["unchanged"] += 1
                summary["to_skip"].append(p)
                if not dry_run:
                    old = prev.loc[p]
                    row.update({c: old[c] for c in ("status", "error", "n_frames", "duration_s", "fps", "record")})
                    store.commit(row, [])
                continue
            summary["to_process"].append(p)
            summary["frames"] += int(row["n_frames"]) if dry_run else len(frames)
            if row["status"] == ERROR:
                summary["failed"] += 1
                summary["errors"].append(row["error"])
                log.info("skipped %s", row["error"])
            else:
                summary["processed"] += 1
                summary["no_frames"] += row["status"] == NO_FRAMES
            if dry_run:
                continue
            keep = {f["output"] for f in frames}
            stale = {o for o in outputs.get(p, ()) if o not in keep}
            stale |= {f"{rel_dir}/{n}" if rel_dir else n for n in groups.get(row["name"], ())} - keep
            for o in stale:
                _output_path(store, o).unlink(missing_ok=True)
            store.commit(row, frames)

    if tasks and workers <= 1:
        consume(map(_work, tasks))
    elif tasks:
        consume(in_pool(_work, tasks, min(workers, len(tasks)), _crashed))
    summary["to_process"].sort()
    summary["to_skip"].sort()
    if dry_run:
        summary["frames_total"] = int((~old_frames["gone"]).sum()) if len(old_frames) else 0
        return summary
    videos, frames = store.consolidate(gone)
    summary["frames_total"] = int((~frames["gone"]).sum())
    return summary


def _output_path(store: FrameStore, output: str) -> Path:
    """The file of a recorded ``output``: frames lie flat in the store's folder."""
    return store.root / PurePosixPath(output).name
