"""extract-faces: detect, rank, align and crop faces from image files, incrementally.

The per-image work (:func:`process_image`) is pure apart from writing its own crops; the
batch driver (:func:`extract_faces`) decides what needs doing, runs it on a pool whose
workers each load the detector once, checkpoints, and marks deleted images' faces gone.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import re
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .align import CROP_SIZE, align_crop, transform_points
from .detect import auto_tiles, detect_tiled, engine_name, is_partial, load_detector, rank_faces
from .ffhq import ffhq_crop, ffhq_quad, is_partial_quad
from .frames import VideoError, file_hash
from .shots import ShotsFileError
from .images import ImageError, content_hash, decode_image, read_image_bytes
from .store import FaceStore, atomic_write_bytes
from .video import DEFAULT_FPS, find_media, given_shots, is_video, process_video, sampling_rule

log = logging.getLogger(__name__)


CROP_STYLES = ("aligned", "ffhq")
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ExtractParams:
    engine: str = "blazeface"  # "mediapipe": the same (its name before it ran without MediaPipe)
    min_score: float | None = None  # None: the engine's default
    max_faces: int | None = None  # None: every face above min_score
    min_size: int = 0  # pixels, shorter box side
    skip_partial: bool = False  # drop faces whose box (ffhq: whose crop) leaves the image
    crop: str = "aligned"  # also write a dataset crop: "ffhq" (dtst's), beside the identity crop
    max_size: int | None = None  # ffhq: cap on the crop's side; None: the photo's own resolution
    padding: bool = True  # ffhq: mirror and blur where the crop leaves the photo (else black)
    fps: float | None = DEFAULT_FPS  # videos: frames sampled a second ...
    every: int | None = None  # ... or every N-th frame
    # videos: given shots (a scene list or cut list, or a folder of <stem>-Scenes.csv), or per video
    # ((video, shots file), ...) from a corpus description
    shots: str | tuple[tuple[str, str], ...] | None = None
    tiles: int | None = None  # detector tiles a side; None: by a video frame's width (detect.auto_tiles), photos 1

    def __post_init__(self):
        if self.crop not in CROP_STYLES:
            raise ValueError(f"unknown crop style {self.crop!r}; choose one of: {', '.join(CROP_STYLES)}")
        sampling_rule(self.fps, self.every)  # a bad rate fails before any work
        if self.tiles is not None and not (isinstance(self.tiles, int) and 1 <= self.tiles <= 8):
            raise ValueError(f"--tiles must be 1 to 8 tiles a side, not {self.tiles!r}")
        given = [f for _, f in self.shots] if isinstance(self.shots, tuple) else [self.shots]
        for f in given:
            if f is not None and not Path(f).exists():
                raise ValueError(f"{f}: no such shots file or folder (--shots or the corpus' group column)")

    def signature(self, path: str | None = None) -> str:
        """What a file's record must match to be skipped; a photo's ignores the video sampling,
        a video's depends on its own given shots only (a corpus that grows redoes no other video)."""
        video = path is not None and is_video(path)
        d = asdict(self)
        if engine_name(self.engine) == "blazeface":  # records made by MediaPipe's own graph: the same models
            d["engine"] = "mediapipe"
        if not video:
            d.pop("fps"), d.pop("every")
        elif self.every is not None:
            d.pop("fps")
        shots = given_shots(self.shots, path) if video else None
        if shots is None:  # records from before --shots keep their signature
            d.pop("shots")
        else:
            d["shots"] = str(shots)
        if self.tiles is None:  # nor before tiles
            d.pop("tiles")
        if self.crop == "aligned":  # datasets made before dataset crops existed keep their signature
            for k in ("crop", "max_size", "padding"):
                d.pop(k)
        return json.dumps(d, sort_keys=True)


def face_id(image_path: str, image_hash: str, engine: str, box) -> str:
    """Stable id: same file, same content, same detection → same id on every run.

    ``image_path``: the file as the dataset records it (:func:`paths.source_record`: relative to
    the dataset when inside it), so a moved or copied dataset keeps its ids; a video frame's is
    ``<path>#<frame>``. ``box``: 4 numbers, or 4 strings already formatted (:mod:`analysis.migrate`)."""
    coords = ",".join(v if isinstance(v, str) else f"{v:.1f}" for v in box)
    key = f"{image_path}|{image_hash}|{engine}|{coords}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def crop_name(image_path: str, fid: str, frame: int | None = None) -> str:
    """``crops/<stem>-<face id>.jpg`` (``<stem>_f<frame>-…`` for a video frame): readable, and
    unique even for two ``img1.jpg``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image_path).stem)[:48]
    return f"crops/{stem}{'' if frame is None else f'_f{frame:06d}'}-{fid}.jpg"


def process_image(path: str, data: bytes, detector, params: ExtractParams, store_root: Path,
                  record: int = 0, key: str | None = None) -> tuple[dict, list[dict]]:
    """Detect, rank, filter, align and save the crops of one image.

    Returns the image row and the face rows. Raises :class:`ImageError` for undecodable data.
    ``key``: the path as the dataset records it, that face ids are made of (default ``path``).
    """
    h = content_hash(data)
    rgb, scale = decode_image(data, path)
    height, width = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
    rows = faces_in_picture(rgb, scale, path, h, detector, params, store_root, record, key=key)
    image_row = {"image_hash": h, "width": width, "height": height, "n_faces": len(rows),
                 "status": "ok" if rows else "no_face", "error": ""}
    return image_row, rows


def faces_in_picture(rgb: np.ndarray, scale: float, path: str, h: str, detector, params: ExtractParams,
                     store_root: Path, record: int = 0, frame: int | None = None, key: str | None = None) -> list[dict]:
    """The face rows of one decoded picture (a photo, or ``frame`` of the video ``path``), crops
    written. ``scale``: the picture's size in the file over its decoded size (a reduced decode).
    ``key``: ``path`` as the dataset records it (relative to it when inside), that face ids are
    made of; default ``path``."""
    key = path if key is None else key
    height, width = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
    tiles = params.tiles if params.tiles is not None else auto_tiles(rgb.shape[1]) if frame is not None else 1
    faces = [f.scaled(scale) for f in detect_tiled(detector, rgb, tiles)]
    faces = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= params.min_size]
    if params.crop == "ffhq":  # a face whose eyes or mouth are missing cannot be cropped this way
        faces = [f for f in faces if not np.isnan(f.landmarks[[0, 1, 3]]).any()]

    def partial(f) -> bool:
        if params.crop == "ffhq":
            return is_partial_quad(ffhq_quad(f.landmarks)[0], width, height)
        return is_partial(f.box, width, height)
    if params.skip_partial:
        faces = [f for f in faces if not partial(f)]
    faces = rank_faces(faces, width, height)
    if params.max_faces is not None:
        faces = faces[: params.max_faces]
    rows = []
    for i, f in enumerate(faces):
        fid = face_id(key if frame is None else f"{key}#{frame}", h, detector.name, f.box)
        crop, m = align_crop(rgb, f.landmarks / scale)
        rel = crop_name(path, fid, frame)
        _save_jpeg(crop, store_root / rel)
        dataset_rel, dataset_size = "", 0
        if params.crop == "ffhq":
            big, _ = ffhq_crop(rgb, f.landmarks / scale, params.max_size, params.padding)
            dataset_rel, dataset_size = rel.replace("crops/", "ffhq/", 1), big.shape[0]
            _save_jpeg(big, store_root / dataset_rel)
        rows.append({
            "face_id": fid, "image_path": path, "image_hash": h, "face_index": i,
            "x0": f.box[0], "y0": f.box[1], "x1": f.box[2], "y1": f.box[3],
            "score": f.score, "prominence": f.prominence, "engine": detector.name,
            "crop_path": rel, "crop_size": CROP_SIZE, "partial": partial(f), "crop_style": params.crop,
            "dataset_crop_path": dataset_rel, "dataset_crop_size": dataset_size,
            "gone": False, "image_width": width, "image_height": height, "record": record,
            "landmarks": f.landmarks.ravel().astype(np.float32),
            "crop_landmarks": transform_points(m, f.landmarks / scale).ravel().astype(np.float32),
            "keypoints": f.keypoints.ravel().astype(np.float32),
        })
    return rows


def _save_jpeg(rgb: np.ndarray, path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=95)
    atomic_write_bytes(path, buf.getvalue())


_WORKER: dict = {}


def _init_worker(params: ExtractParams, store_root: Path, frames=None) -> None:
    # One detector per worker process, loaded once (dtst reloads it for every image).
    _WORKER["detector"] = load_detector(params.engine, min_score=params.min_score).prepare()
    _WORKER["params"] = params
    _WORKER["root"] = store_root
    _WORKER["frames"] = frames  # a shared count of video frames decoded, for the progress bar


class FrameCount:
    """Video frames decoded by every worker of the local pool (the progress bar's count)."""

    def __init__(self, ctx):
        self._v = ctx.Value("q", 0)

    def add(self, n: int) -> None:
        with self._v.get_lock():
            self._v.value += n

    @property
    def value(self) -> int:
        return self._v.value


def _count_frames(n: int) -> None:
    _WORKER["frames"].add(n)


def _init_pool_worker(params: ExtractParams, store_root: Path, frames=None) -> None:
    from .workers import die_with_parent

    die_with_parent()
    _init_worker(params, store_root, frames)


def _error_row(path: str, params: ExtractParams, error: str = "") -> dict:
    return {"image_path": path, "image_hash": "", "size_bytes": 0, "mtime_ns": 0, "width": 0, "height": 0,
            "n_faces": 0, "status": "error", "error": error, "signature": params.signature(path),
            "record": time.time_ns()}


def _work(task: tuple[str, str | None]) -> tuple[dict, list[dict]]:
    from .paths import source_record

    path, prev_hash = task
    video = is_video(path)
    key = source_record(Path(_WORKER["root"]).parent, path)  # what its face ids are made of
    row = _error_row(path, _WORKER["params"])
    try:
        st = os.stat(path)
        row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        if video:
            if prev_hash is not None and file_hash(path) == prev_hash:
                row.update(image_hash=prev_hash, status="unchanged")
                return row, []
            image_row, faces = process_video(path, _WORKER["detector"], _WORKER["params"], _WORKER["root"],
                                             row["record"], _count_frames if _WORKER.get("frames") else None, key=key)
            row.update(image_row)
            return row, faces
        data = read_image_bytes(path)  # an oversized file is refused before it is read
        if prev_hash is not None and content_hash(data) == prev_hash:
            row.update(image_hash=prev_hash, status="unchanged")
            return row, []
        image_row, faces = process_image(path, data, _WORKER["detector"], _WORKER["params"], _WORKER["root"],
                                         row["record"], key=key)
        row.update(image_row)
        return row, faces
    except (ImageError, VideoError, ShotsFileError) as e:
        row["error"] = str(e)
    except OSError as e:
        row["error"] = f"{path}: cannot read file ({e.strerror or e})"
    except Exception as e:  # a batch never dies on one bad file
        log.exception("unexpected failure on %s", path)
        row["error"] = f"{path}: {type(e).__name__}: {e}"
    return row, []


def plan(paths: list[Path], previous: pd.DataFrame, signature, prune: bool = False,
         missing_crops: frozenset[str] = frozenset()) -> tuple[list[tuple[str, str | None]], set[str]]:
    """Which images need work, and which recorded images are gone.

    An image is skipped without being read when its size, mtime and run signature match
    the record and its crops are there; otherwise it is hashed, and processed unless the
    content hash matches. A recorded image is gone when its file is deleted, or, with
    ``prune``, when these patterns no longer match it: a run over another folder adds to
    the dataset, it never drops what earlier runs found.
    """
    prev = previous.set_index("image_path") if len(previous) else None
    tasks = []
    for p in paths:
        key = str(p)
        if prev is not None and key in prev.index:
            r = prev.loc[key]
            same_run = r["signature"] == (signature(key) if callable(signature) else signature)
            if same_run and r["status"] != "gone" and key not in missing_crops:
                st = p.stat()
                if st.st_size == r["size_bytes"] and st.st_mtime_ns == r["mtime_ns"]:
                    continue
                tasks.append((key, r["image_hash"] or None))
                continue
        tasks.append((key, None))
    if prev is None:
        return tasks, set()
    current = {str(p) for p in paths}
    live = prev.index[prev["status"] != "gone"]
    gone = {p for p in live if p not in current and (prune or not os.path.lexists(p))}
    return tasks, gone


def _signature_of(params: ExtractParams):
    return params.signature


def _missing_crops(store: FaceStore) -> frozenset[str]:
    """Images some of whose crops are missing (deleted by hand, or a damaged one removed)."""
    faces = store.load_faces()
    if not len(faces):
        return frozenset()
    exists = np.array([(store.root / c).is_file() and (not d or (store.root / d).is_file())
                       for c, d in zip(faces["crop_path"], faces["dataset_crop_path"].fillna(""))], dtype=bool)
    return frozenset(faces.loc[~exists, "image_path"])


def extract_faces(
    patterns: str | list[str],
    store: FaceStore,
    params: ExtractParams = ExtractParams(),
    workers: int = 1,
    progress: bool = True,
    checkpoint_every: int = 256,
    prune: bool = False,
    dry_run: bool = False,
    backend: str = "local",
    ray_address: str | None = None,
) -> dict:
    """Run extraction over the images matched by ``patterns`` into ``store``.

    ``backend``: ``local`` (``workers`` processes of this machine) or ``ray`` (``workers`` actors
    of the Ray cluster at ``ray_address`` / ``$RAY_ADDRESS``, else a local one; see
    :mod:`analysis.ray_backend`): the same dataset either way.

    Images found by earlier runs over other patterns stay; ``prune`` marks those these
    patterns do not match as gone. Returns a summary: counts of images seen, processed,
    unchanged, failed, gone, faces, and the entries skipped while scanning. ``dry_run``:
    the summary of what would be done (``to_process``, ``unchanged``, ``gone``); nothing written.
    """
    from .locks import DatasetLock
    from .migrate import migrate_store
    from .store import remove_stale_temp

    skipped: list = []
    paths = find_media(patterns, skipped=skipped)
    load_detector(params.engine)  # unknown engine: fail before any work
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if dry_run:
        tasks, gone = (plan(paths, store.load_images(), _signature_of(params), prune, _missing_crops(store))
                       if store.exists() else ([(str(p), None) for p in paths], set()))
        return {"images": len(paths), "videos": sum(map(is_video, paths)), "to_process": len(tasks),
                "unchanged": len(paths) - len(tasks), "gone": len(gone), "skipped": skipped, "dry_run": True}
    store.root.mkdir(parents=True, exist_ok=True)
    with DatasetLock(store.root.parent, "extract-faces"):
        def sweep():
            for folder in (store.root, store.crops_dir, store.parts_dir):
                if folder.exists():
                    remove_stale_temp(folder)
        sweep()
        migrate_store(store, locked=True)  # a dataset of absolute paths (format 1): made relative first
        summary = _extract_locked(patterns, paths, skipped, store, params, workers, progress, checkpoint_every, prune,
                                  backend, ray_address)
        sweep()  # again: a killed run's worker may have been ending while the first sweep ran
        return summary


@contextmanager
def frames_bar(frames):
    """A second bar, of video frames decoded by every worker (``frames``: their shared count,
    a :class:`FrameCount` or Ray's), so that a long video shows progress between two files."""
    if frames is None:
        yield
        return
    bar = tqdm(unit="frame", desc="video frames", position=1, leave=False)
    done = threading.Event()

    def follow():
        while not done.wait(0.5):
            bar.update(frames.value - bar.n)
    t = threading.Thread(target=follow, daemon=True)
    t.start()
    try:
        yield
    finally:
        done.set()
        t.join()
        bar.update(frames.value - bar.n)
        bar.close()


def _extract_locked(patterns, paths, skipped, store, params, workers, progress, checkpoint_every, prune,
                    backend="local", ray_address=None) -> dict:
    previous = store.load_images()
    tasks, gone = plan(paths, previous, _signature_of(params), prune, _missing_crops(store))
    recorded = store.read_params()
    sources = recorded.get("sources", [])
    sources = [sources] if isinstance(sources, str) else list(sources)
    new_sources = [patterns] if isinstance(patterns, str) else list(patterns)
    kept = {k: recorded[k] for k in ("migrated_from",) if k in recorded}  # where a format-1 dataset was
    store.write_params({"engine": params.engine, "params": asdict(params),
                        "sources": (new_sources if prune else sources + [p for p in new_sources if p not in sources]),
                        **kept})

    summary = {"images": len(paths), "videos": sum(map(is_video, paths)), "processed": 0, "unchanged": len(paths) - len(tasks), "failed": 0,
               "faces": 0, "gone": len(gone), "errors": [], "skipped": skipped}
    by_path = previous.set_index("image_path") if len(previous) else None
    pending_img, pending_faces, last = [], [], time.monotonic()

    def flush():
        nonlocal pending_img, pending_faces, last
        if pending_img:
            store.write_part(pd.DataFrame(pending_img), pd.DataFrame(pending_faces))
        pending_img, pending_faces, last = [], [], time.monotonic()

    def consume(results):
        for row, faces in tqdm(results, total=len(tasks), disable=not progress, unit="file", desc="extract-faces"):
            if row["status"] == "unchanged":
                summary["unchanged"] += 1
                prev = by_path.loc[row["image_path"]]
                row.update({k: prev[k] for k in ("width", "height", "n_faces", "error", "record")}, status=prev["status"])
            elif row["status"] == "error":
                summary["failed"] += 1
                summary["errors"].append(row["error"])
                log.info("skipped %s", row["error"])
            else:
                summary["processed"] += 1
                summary["faces"] += len(faces)
            pending_img.append(row)
            pending_faces.extend(faces)
            if len(pending_img) >= checkpoint_every or time.monotonic() - last > 60 or is_video(row["image_path"]):
                flush()

    ctx = mp.get_context("spawn")  # detectors hold threads; never fork them
    frames = None
    if progress and any(is_video(p) for p, _ in tasks):
        if backend == "ray":
            from .ray_backend import frame_count

            frames = frame_count(ray_address)
        else:
            frames = FrameCount(ctx)
    try:
        with frames_bar(frames):
            if tasks and workers <= 1 and backend == "local":
                _init_worker(params, store.root, frames)
                consume(map(_work, tasks))
            elif tasks and backend == "ray":
                from .ray_backend import run_ordered

                done = run_ordered(tasks, _work, _init_worker, (params, store.root.resolve(), frames), workers,
                                   ray_address)
                consume(r if not isinstance(r, BaseException) else
                        (_error_row(path, params, f"{path}: failed on every Ray worker ({type(r).__name__})"), [])
                        for (path, _), r in done)
            elif tasks:
                with ctx.Pool(workers, initializer=_init_pool_worker, initargs=(params, store.root, frames)) as pool:
                    consume(pool.imap(_work, tasks, chunksize=1 if frames is not None else 4))
    finally:  # Ctrl-C or SIGTERM too: what was done is kept, and the re-run resumes after it
        flush()
    images, faces = store.consolidate(gone)
    summary["faces_total"] = int(len(faces[~faces["gone"]]))
    summary["no_face"] = int((images["status"] == "no_face").sum())
    return summary
