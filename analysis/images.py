"""Finding and decoding images robustly.

Every decoder quirk a real photo folder holds (EXIF rotation, CMYK, 16-bit, palette with
transparency, decompression bombs, truncated files) is handled here so the rest of the
package sees one thing: an upright ``uint8`` RGB array, or an :class:`ImageError`.
"""
from __future__ import annotations

import glob
import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})

# Pixels above which a photo is decoded downscaled: detection gains nothing from 100 MP and
# the decoded array alone would take gigabytes.
MAX_PIXELS = 40_000_000
# PIL refuses anything above this as a likely decompression bomb; we accept big scans but
# not absurd sizes.
Image.MAX_IMAGE_PIXELS = 1_000_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


def find_images(patterns: str | list[str]) -> list[Path]:
    """Resolve comma-separated globs to image files, scanning matched folders recursively.

    Extensions are matched case-insensitively. Raises ``FileNotFoundError`` naming the
    pattern when a pattern matches nothing, or matches only folders without images.
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]
    found: set[Path] = set()
    for pattern in patterns:
        matches = glob.glob(os.path.expanduser(pattern), recursive=True)
        if not matches:
            raise FileNotFoundError(f"no file or folder matches {pattern!r}")
        before = len(found)
        for m in matches:
            p = Path(m)
            if p.is_dir():
                found.update(
                    q.resolve() for q in p.rglob("*")
                    if q.suffix.lower() in IMAGE_EXTENSIONS and q.is_file()
                )
            elif p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                found.add(p.resolve())
        if len(found) == before:
            raise FileNotFoundError(
                f"no images under {pattern!r} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
    return sorted(found)


def content_hash(data: bytes) -> str:
    """Stable content hash of a file's bytes (BLAKE2b, 128 bits, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # PIL's convert("L") clips 16-bit values instead of scaling them.
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if arr.max() > 255 else 255.0
        gray = np.clip(arr * (255.0 / top), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = np.nanmin(arr), np.nanmax(arr)
        gray = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        return np.asarray(background)
    return np.asarray(im.convert("RGB"))


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Decode image bytes to an upright RGB ``uint8`` array.

    Returns ``(rgb, scale)`` where ``scale`` maps the returned array's pixels back to the
    upright full-size image (1.0 unless a huge image was decoded downscaled).
    Raises :class:`ImageError` with the file name and reason.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        im = Image.open(io.BytesIO(data))
        full_w, full_h = im.size
        if full_w * full_h > max_pixels and im.format == "JPEG":
            # JPEG can decode at 1/2, 1/4, 1/8 scale directly: far less memory and time.
            factor = (full_w * full_h / max_pixels) ** 0.5
            im.draft("RGB", (int(full_w / factor), int(full_h / factor)))
        im.load()
        im = ImageOps.exif_transpose(im)
        rgb = _to_rgb(im)
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image PIL can read (wrong extension or corrupt header)") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large to decode safely ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({e})") from None
    if rgb.shape[0] * rgb.shape[1] > max_pixels:
        f = (rgb.shape[0] * rgb.shape[1] / max_pixels) ** 0.5
        size = (int(rgb.shape[1] / f), int(rgb.shape[0] / f))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
    # EXIF rotation swaps axes but keeps the long side, so this ratio is rotation-proof.
    scale = max(full_w, full_h) / max(rgb.shape[:2])
    if rgb.ndim != 3 or min(rgb.shape[:2]) < 8:
        raise ImageError(f"{name}: image is too small ({rgb.shape[1]}x{rgb.shape[0]} px)")
    return np.ascontiguousarray(rgb), float(scale)


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright RGB array (downscaled if above ``max_pixels``)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read file ({e.strerror})") from None
    return decode_image(data, str(path), max_pixels)[0]


def thumbnail_jpeg(path: str | os.PathLike, size: int, quality: int = 80) -> bytes:
    """JPEG bytes of the image at ``path`` fitted in ``size`` × ``size``; a big JPEG is decoded
    at reduced scale. An unreadable file gives a grey square (a thumbnail is never fatal)."""
    try:
        im = Image.fromarray(read_image(path, max_pixels=max(4 * size * size, 4096)))
        im.thumbnail((size, size))
    except ImageError:
        im = Image.new("RGB", (size, size), (207, 207, 207))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
