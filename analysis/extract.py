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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from .align import CROP_SIZE, align_crop, transform_points
from .detect import is_partial, load_detector, rank_faces
from .images import ImageError, content_hash, decode_image, find_images
from .store import FaceStore, atomic_write_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExtractParams:
    engine: str = "mediapipe"
    min_score: float | None = None  # None: the engine's default
    max_faces: int | None = None  # None: every face above min_score
    min_size: int = 0  # pixels, shorter box side
    skip_partial: bool = False

    def signature(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def face_id(image_path: str, image_hash: str, engine: str, box: np.ndarray) -> str:
    """Stable id: same file, same content, same detection → same id on every run."""
    key = f"{image_path}|{image_hash}|{engine}|{','.join(f'{v:.1f}' for v in box)}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


def crop_name(image_path: str, fid: str) -> str:
    """``crops/<stem>-<face id>.jpg``: readable, and unique even for two ``img1.jpg``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image_path).stem)[:48]
    return f"crops/{stem}-{fid}.jpg"


def process_image(path: str, data: bytes, detector, params: ExtractParams, store_root: Path,
                  record: int = 0) -> tuple[dict, list[dict]]:
    """Detect, rank, filter, align and save the crops of one image.

    Returns the image row and the face rows. Raises :class:`ImageError` for undecodable data.
    """
    h = content_hash(data)
    rgb, scale = decode_image(data, path)
    height, width = round(rgb.shape[0] * scale), round(rgb.shape[1] * scale)
    faces = [f.scaled(scale) for f in detector.detect(rgb)]
    faces = [f for f in faces if min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= params.min_size]
    if params.skip_partial:
        faces = [f for f in faces if not is_partial(f.box, width, height)]
    faces = rank_faces(faces, width, height)
    if params.max_faces is not None:
        faces = faces[: params.max_faces]
    rows = []
    for i, f in enumerate(faces):
        fid = face_id(path, h, detector.name, f.box)
        crop, m = align_crop(rgb, f.landmarks / scale)
        rel = crop_name(path, fid)
        buf = io.BytesIO()
        Image.fromarray(crop).save(buf, format="JPEG", quality=95)
        atomic_write_bytes(store_root / rel, buf.getvalue())
        rows.append({
            "face_id": fid, "image_path": path, "image_hash": h, "face_index": i,
            "x0": f.box[0], "y0": f.box[1], "x1": f.box[2], "y1": f.box[3],
            "score": f.score, "prominence": f.prominence, "engine": detector.name,
            "crop_path": rel, "crop_size": CROP_SIZE, "partial": is_partial(f.box, width, height),
            "gone": False, "image_width": width, "image_height": height, "record": record,
            "landmarks": f.landmarks.ravel().astype(np.float32),
            "crop_landmarks": transform_points(m, f.landmarks / scale).ravel().astype(np.float32),
            "keypoints": f.keypoints.ravel().astype(np.float32),
        })
    image_row = {"image_hash": h, "width": width, "height": height, "n_faces": len(rows),
                 "status": "ok" if rows else "no_face", "error": ""}
    return image_row, rows


_WORKER: dict = {}


def _init_worker(params: ExtractParams, store_root: Path) -> None:
    # One detector per worker process, loaded once (dtst reloads it for every image).
    _WORKER["detector"] = load_detector(params.engine, min_score=params.min_score).prepare()
    _WORKER["params"] = params
    _WORKER["root"] = store_root


def _work(task: tuple[str, str | None]) -> tuple[dict, list[dict]]:
    path, prev_hash = task
    row = {"image_path": path, "image_hash": "", "size_bytes": 0, "mtime_ns": 0, "width": 0, "height": 0,
           "n_faces": 0, "status": "error", "error": "", "signature": _WORKER["params"].signature(),
           "record": time.time_ns()}
    try:
        st = os.stat(path)
        data = Path(path).read_bytes()
        row.update(size_bytes=st.st_size, mtime_ns=st.st_mtime_ns)
        if prev_hash is not None and content_hash(data) == prev_hash:
            row.update(image_hash=prev_hash, status="unchanged")
            return row, []
        image_row, faces = process_image(path, data, _WORKER["detector"], _WORKER["params"], _WORKER["root"],
                                         row["record"])
        row.update(image_row)
        return row, faces
    except ImageError as e:
        row["error"] = str(e)
    except OSError as e:
        row["error"] = f"{path}: cannot read file ({e.strerror or e})"
    except Exception as e:  # a batch never dies on one bad file
        log.exception("unexpected failure on %s", path)
        row["error"] = f"{path}: {type(e).__name__}: {e}"
    return row, []


def plan(paths: list[Path], previous: pd.DataFrame, signature: str) -> tuple[list[tuple[str, str | None]], set[str]]:
    """Which images need work, and which recorded images are gone.

    An image is skipped without being read when its size, mtime and run signature match
    the record; otherwise it is hashed, and processed unless the content hash matches.
    """
    prev = previous.set_index("image_path") if len(previous) else None
    tasks = []
    for p in paths:
        key = str(p)
        if prev is not None and key in prev.index:
            r = prev.loc[key]
            same_run = r["signature"] == signature
            if same_run and r["status"] != "gone":
                st = p.stat()
                if st.st_size == r["size_bytes"] and st.st_mtime_ns == r["mtime_ns"]:
                    continue
                tasks.append((key, r["image_hash"] or None))
                continue
        tasks.append((key, None))
    current = {str(p) for p in paths}
    gone = set() if prev is None else {p for p in prev.index if p not in current and prev.loc[p, "status"] != "gone"}
    return tasks, gone


def extract_faces(
    patterns: str | list[str],
    store: FaceStore,
    params: ExtractParams = ExtractParams(),
    workers: int = 1,
    progress: bool = True,
    checkpoint_every: int = 256,
) -> dict:
    """Run extraction over the images matched by ``patterns`` into ``store``.

    Returns a summary: counts of images seen, processed, unchanged, failed, gone, faces.
    """
    paths = find_images(patterns)
    store.root.mkdir(parents=True, exist_ok=True)
    load_detector(params.engine)  # unknown engine: fail before any work
    previous = store.load_images()
    tasks, gone = plan(paths, previous, params.signature())
    store.write_params({"engine": params.engine, "params": asdict(params), "sources": patterns})

    summary = {"images": len(paths), "processed": 0, "unchanged": len(paths) - len(tasks), "failed": 0,
               "faces": 0, "gone": len(gone), "errors": []}
    by_path = previous.set_index("image_path") if len(previous) else None
    pending_img, pending_faces, last = [], [], time.monotonic()

    def flush():
        nonlocal pending_img, pending_faces, last
        if pending_img:
            store.write_part(pd.DataFrame(pending_img), pd.DataFrame(pending_faces))
        pending_img, pending_faces, last = [], [], time.monotonic()

    def consume(results):
        for row, faces in tqdm(results, total=len(tasks), disable=not progress, unit="img", desc="extract-faces"):
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
            if len(pending_img) >= checkpoint_every or time.monotonic() - last > 60:
                flush()

    if tasks:
        if workers <= 1:
            _init_worker(params, store.root)
            consume(map(_work, tasks))
        else:
            ctx = mp.get_context("spawn")  # detectors hold threads; never fork them
            with ctx.Pool(workers, initializer=_init_worker, initargs=(params, store.root)) as pool:
                consume(pool.imap(_work, tasks, chunksize=4))
    flush()
    images, faces = store.consolidate(gone)
    summary["faces_total"] = int(len(faces[~faces["gone"]]))
    summary["no_face"] = int((images["status"] == "no_face").sum())
    return summary
