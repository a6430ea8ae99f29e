"""One picture's faces: detect, rank, filter, align and crop them, and save the crops.

The picture is a photo (:func:`process_image`) or a video's frame (:func:`faces_in_picture`,
called by :mod:`crowdsort.video.faces`); ``params`` is an :class:`crowdsort.extract.ExtractParams`.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from PIL import Image

from .align import CROP_SIZE, align_crop, transform_points
from .detect import auto_tiles, detect_tiled, is_partial, rank_faces
from .ffhq import ffhq_crop, ffhq_quad, is_partial_quad
from ..storage.images import content_hash, decode_image
from ..storage.store import atomic_write_bytes, face_id


def crop_name(image_path: str, fid: str, frame: int | None = None) -> str:
    """``crops/<stem>-<face id>.jpg`` (``<stem>_f<frame>-…`` for a video frame): readable, and
    unique even for two ``img1.jpg``."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(image_path).stem)[:48]
    return f"crops/{stem}{'' if frame is None else f'_f{frame:06d}'}-{fid}.jpg"


def process_image(path: str, data: bytes, detector, params, store_root: Path,
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


def faces_in_picture(rgb: np.ndarray, scale: float, path: str, h: str, detector, params,
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
