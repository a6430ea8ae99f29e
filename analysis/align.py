"""Face alignment: landmarks → similarity transform → warped crop.

``estimate_norm`` is pure (points in, 2×3 matrix out) so points can be mapped both ways;
the warp is separate.
"""
from __future__ import annotations

import cv2
import numpy as np

# insightface's five-point ArcFace template for 112×112 input: eye (image left), eye
# (image right), nose tip, mouth corner left, mouth corner right.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# The four points every engine gives: both eyes, nose tip, mouth centre.
LANDMARK_NAMES = ("eye_left", "eye_right", "nose", "mouth")
ARCFACE_4 = np.vstack([ARCFACE_TEMPLATE[:3], ARCFACE_TEMPLATE[3:].mean(axis=0)])

# Saved crops: the ArcFace frame scaled into the middle 62.5% of a 256 px square, leaving
# hair and chin visible to a person and room for any embedder's own alignment.
CROP_SIZE = 256
_CROP_FILL = 0.625
CROP_TEMPLATE = ARCFACE_4 * (CROP_SIZE * _CROP_FILL / 112.0) + CROP_SIZE * (1 - _CROP_FILL) / 2


def estimate_norm(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama) mapping ``src`` points onto ``dst``.

    Rows with NaN in ``src`` are ignored (engines differ in which points they give); at least
    two points are needed. Returns a 2×3 float64 matrix.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    ok = ~np.isnan(src).any(axis=1)
    src, dst = src[ok], dst[ok]
    if len(src) < 2:
        raise ValueError("alignment needs at least two landmarks")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1
    rot = u @ np.diag(sign) @ vt
    var_s = (s0**2).sum() / len(src)
    scale = (sig * sign).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to an (n, 2) array of points."""
    pts = np.asarray(pts, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp(img: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    """Warp ``img`` with matrix ``m`` to a ``size``×``size`` crop (outside the photo is black)."""
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def align_crop(img: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Crop with eyes level at a fixed scale; returns ``(crop, matrix image→crop)``."""
    template = CROP_TEMPLATE * (size / CROP_SIZE)
    m = estimate_norm(landmarks, template)
    return warp(img, m, size), m


def arcface_input(crop: np.ndarray, crop_landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The standard ArcFace 112×112 input, by fitting the template to the four landmarks."""
    m = estimate_norm(crop_landmarks, ARCFACE_4 * (size / 112.0))
    return warp(crop, m, size)
