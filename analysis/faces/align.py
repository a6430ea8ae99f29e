"""Face alignment: landmarks → similarity transform → warped crop.

``estimate_norm`` is pure (points in, 2×3 matrix out) so points can be mapped both ways;
the warp is separate.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

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
    """Warp ``img`` with matrix ``m`` (image→crop) to a ``size``×``size`` crop, bilinear;
    outside the photo is black, blended at its edge as OpenCV's ``warpAffine`` does
    (``grid-constant``), so crops match those the thresholds were measured on."""
    inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
    # ndimage works in (row, column): swap x and y in the matrix and the offset
    matrix = np.array([[inv[1, 1], inv[1, 0]], [inv[0, 1], inv[0, 0]]])
    offset = np.array([inv[1, 2], inv[0, 2]])
    img = np.asarray(img)
    out = np.empty((size, size, *img.shape[2:]), dtype=np.float32)
    for c in range(img.shape[2] if img.ndim == 3 else 1):
        src = img[..., c] if img.ndim == 3 else img
        dst = out[..., c] if img.ndim == 3 else out
        ndimage.affine_transform(src.astype(np.float32), matrix, offset, output_shape=(size, size),
                                 output=dst, order=1, mode="grid-constant", cval=0.0, prefilter=False)
    if img.dtype == np.uint8:
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.astype(img.dtype)


def align_crop(img: np.ndarray, landmarks: np.ndarray, size: int = CROP_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Crop with eyes level at a fixed scale; returns ``(crop, matrix image→crop)``."""
    template = CROP_TEMPLATE * (size / CROP_SIZE)
    m = estimate_norm(landmarks, template)
    return warp(img, m, size), m


def arcface_input(crop: np.ndarray, crop_landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The standard ArcFace 112×112 input, by fitting the template to the four landmarks."""
    m = estimate_norm(crop_landmarks, ARCFACE_4 * (size / 112.0))
    return warp(crop, m, size)
