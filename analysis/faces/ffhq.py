"""Dataset crops in the FFHQ style (what dtst writes): square, about 4× the eye distance,
centred a little below the eyes towards the mouth, at the photo's own resolution.

Unlike the 256 px identity crop (``align.align_crop``), this crop is for training sets: it is
never upscaled, only capped by ``max_size``, and where it leaves the photo the photo is
mirrored and blurred towards its median colour, as in the FFHQ recipe, instead of black.
Only the region around the face is copied, so a big photo costs no more memory than its crop.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage

from .align import warp


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The crop's four corners (top-left, bottom-left, bottom-right, top-right) in image
    pixels, and its side, from the four landmarks (eye left, eye right, nose, mouth centre)."""
    lm = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    eye_left, eye_right, mouth = lm[0], lm[1], lm[3]
    if np.isnan([eye_left, eye_right, mouth]).any():
        raise ValueError("an FFHQ crop needs both eyes and the mouth")
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_right - eye_left
    eye_to_mouth = mouth - eye_avg
    # the crop's x axis: the eye line, tilted by the eyes-to-mouth direction
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def is_partial_quad(quad: np.ndarray, width: int, height: int) -> bool:
    """Whether the crop leaves the photo."""
    return bool(quad[:, 0].min() < 0 or quad[:, 1].min() < 0 or quad[:, 0].max() > width or quad[:, 1].max() > height)


def ffhq_crop(img: np.ndarray, landmarks: np.ndarray, max_size: int | None = 1024,
              padding: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(crop, matrix image→crop)``: the FFHQ-style square crop of ``img`` (RGB uint8) at its
    natural size (the quad's side in pixels), capped by ``max_size``."""
    quad, qsize = ffhq_quad(landmarks)
    size = max(1, int(qsize) if max_size is None else min(int(qsize), max_size))
    # the region the crop needs, with a border for the blur, clipped to the photo
    border = max(int(np.rint(qsize * 0.1)), 3)
    x0, y0 = np.floor(quad.min(0)).astype(int) - border
    x1, y1 = np.ceil(quad.max(0)).astype(int) + border
    h, w = img.shape[:2]
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        raise ValueError("the face lies outside the photo")
    region = img[cy0:cy1, cx0:cx1]
    offset = np.array([cx0, cy0], dtype=np.float64)
    # shrinking by more than 2: box-filter first (what FFHQ does), so the warp does not alias
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        # PIL's box filter averages by area, as OpenCV's INTER_AREA does
        region = np.asarray(Image.fromarray(region).resize(
            (max(1, region.shape[1] // shrink), max(1, region.shape[0] // shrink)), Image.BOX))
    scale = np.array([region.shape[1] / (cx1 - cx0), region.shape[0] / (cy1 - cy0)])
    q = (quad - offset) * scale
    if padding:
        pad = _padding_needed(q, region.shape[1], region.shape[0], border * scale.mean(), qsize * scale.mean())
        if any(pad):
            region = _reflect_blur(region, pad, qsize * scale.mean())
            q = q + [pad[0], pad[1]]
    dst = np.array([[0, 0], [0, size], [size, size]], dtype=np.float32)
    crop = warp(region, _affine(q[:3], dst), size)
    # the same corners in image pixels: the matrix that maps the photo's points into the crop
    return crop, _affine(quad[:3], dst)


def _affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2×3 matrix that maps three points ``src`` onto ``dst``."""
    a = np.hstack([np.asarray(src, dtype=np.float64), np.ones((3, 1))])
    return np.linalg.solve(a, np.asarray(dst, dtype=np.float64)).T


def _padding_needed(q: np.ndarray, w: int, h: int, border: float, qsize: float) -> tuple[int, int, int, int]:
    left = max(-np.floor(q[:, 0].min()) + border, 0)
    top = max(-np.floor(q[:, 1].min()) + border, 0)
    right = max(np.ceil(q[:, 0].max()) - w + border, 0)
    bottom = max(np.ceil(q[:, 1].max()) - h + border, 0)
    pad = np.array([left, top, right, bottom])
    if pad.max() <= border - 4:
        return (0, 0, 0, 0)
    return tuple(int(v) for v in np.maximum(pad, int(np.rint(qsize * 0.3))))


def _reflect_blur(region: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Mirror the region out by ``pad`` (left, top, right, bottom) and fade what was added
    towards a blur and then the median colour, so the padding reads as background."""
    left, top, right, bottom = pad
    a = np.pad(region.astype(np.float32), ((top, bottom), (left, right), (0, 0)), mode="reflect")
    h, w = a.shape[:2]
    yy, xx = np.ogrid[:h, :w]

    def ramp(dist, width):  # 1 at the padded edge, 0 where the photo starts, negative inside
        return 1.0 - dist / np.float32(width) if width > 0 else np.full_like(dist, -np.inf, dtype=np.float32)
    mask = np.maximum(np.maximum(ramp(xx, left), ramp(w - 1 - xx, right)),
                      np.maximum(ramp(yy, top), ramp(h - 1 - yy, bottom)))[:, :, None].astype(np.float32)
    sigma = max(qsize * 0.02, 0.5)
    # OpenCV's GaussianBlur as it was: 4 sigmas each side, borders mirrored without repeating the edge
    blurred = ndimage.gaussian_filter(a, sigma=(sigma, sigma, 0), mode="mirror", truncate=4.0)
    a += (blurred - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    a += (np.median(a.reshape(-1, 3), axis=0) - a) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)
