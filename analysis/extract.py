"""extract-faces: detect, rank, align and crop faces from image files, incrementally.

The per-image work (:func:`crowdsort.faces.crops.process_image`) is pure apart from writing its own crops; the
batch driver (:func:`extract_faces`) decides what needs doing, runs it on a pool whose
workers each load the detector once, checkpoints, and marks deleted images' faces gone.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .faces.crops import process_image
from .faces.detect import engine_name, load_detector
from .models.install import resolve_model_file
from .video.frames import VideoError, file_hash
from .storage.images import ImageError, content_hash, read_image_bytes
from .video.shots import ShotsFileError
from .storage.store import FaceStore
from .video.faces import DEFAULT_FPS, find_media, given_shots, is_video, process_video, sampling_rule

log = logging.getLogger(__name__)


CROP_STYLES = ("aligned", "ffhq")
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class ExtractParams:
    """How ``extract_faces`` detects, keeps and crops faces: the options of ``crowdsort extract-faces``.

    A bad crop style, sampling rate, tile count or missing shots file raises ``ValueError`` here,
    before any work.
    """

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
    from .scale.workers import die_with_parent

    die_with_parent()
    _init_worker(params, store_root, frames)


def _error_row(path: str, params: ExtractParams, error: str = "") -> dict:
    return {"image_path": path, "image_hash": "", "size_bytes": 0, "mtime_ns": 0, "width": 0, "height": 0,
            "n_faces": 0, "status": "error", "error": error, "signature": params.signature(path),
            "record": time.time_ns()}


def _work(task: tuple[str, str | None]) -> tuple[dict, list[dict]]:
    from .storage.paths import source_record

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
    :mod:`crowdsort.scale.ray_backend`): the same dataset either way.

    Images found by earlier runs over other patterns stay; ``prune`` marks those these
    patterns do not match as gone. Returns a summary: counts of images seen, processed,
    unchanged, failed, gone, faces, and the entries skipped while scanning. ``dry_run``:
    the summary of what would be done (``to_process``, ``unchanged``, ``gone``); nothing written.
    """
    from .storage.locks import DatasetLock
    from .storage.migrate import migrate_store
    from .storage.store import remove_stale_temp

    skipped: list = []
    paths = find_media(patterns, skipped=skipped)
    detector = load_detector(params.engine)  # unknown engine: fail before any work
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if not dry_run:
        for key in detector.model_keys:  # installed here on first use, announced once, not by each worker
            resolve_model_file(key)
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
            from .scale.ray_backend import frame_count

            frames = frame_count(ray_address)
        else:
            frames = FrameCount(ctx)
    try:
        with frames_bar(frames):
            if tasks and workers <= 1 and backend == "local":
                _init_worker(params, store.root, frames)
                consume(map(_work, tasks))
            elif tasks and backend == "ray":
                from .scale.ray_backend import run_ordered

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
