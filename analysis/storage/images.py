"""Finding and decoding images robustly.

Every decoder quirk a real photo folder holds (EXIF rotation, CMYK, 16-bit, palette with
transparency, decompression bombs, truncated files) is handled here so the rest of the
package sees one thing: an upright ``uint8`` RGB array, or an :class:`ImageError`. Every
file a folder scan passes over that looks like it was meant as a photo (a GIF, a dangling
link, a folder called ``x.jpg``) is reported with its reason, never dropped in silence.

Memory: any single decode stays under 1 GB peak RSS whatever the input (measured with
``benchmarks/probe_bad_inputs.py``). JPEGs are decoded reduced by libjpeg (1/2, 1/4, 1/8), so
even 100+ MP photos cost little (progressive ones are limited by their coefficient buffer); other
formats are decoded at full size, so they are refused from their header, before any pixel
data is decoded, above :data:`MAX_DECODE_PIXELS` or when they would need more than
:data:`DECODE_MEMORY_BUDGET`.
"""
from __future__ import annotations

import hashlib
import io
import logging
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin, UnidentifiedImageError, features

from .scan import Media, find_files

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".tif", ".tiff"}
    | ({".avif"} if features.check("avif") else set())
)
# Image files a scan finds but cannot use, with what to do about them.
UNSUPPORTED_EXTENSIONS = {
    ".gif": "GIF is not supported (convert it to PNG)",
    ".heic": "HEIC is not supported (convert it to JPEG)",
    ".heif": "HEIF is not supported (convert it to JPEG)",
    ".avif": "AVIF needs Pillow built with libavif (or convert it to JPEG)",
    ".jxl": "JPEG XL is not supported (convert it to JPEG)",
    ".jp2": "JPEG 2000 is not supported (convert it to JPEG)",
    ".j2k": "JPEG 2000 is not supported (convert it to JPEG)",
    ".psd": "Photoshop PSD is not supported (export it as JPEG)",
    ".svg": "SVG is a drawing, not a photo (export it as PNG)",
    ".ico": "icons are not supported",
    **{ext: "camera RAW is not supported (export it as JPEG)"
       for ext in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw", ".raw")},
}
UNSUPPORTED_EXTENSIONS = {k: v for k, v in UNSUPPORTED_EXTENSIONS.items() if k not in IMAGE_EXTENSIONS}

# Pixels above which a photo is decoded reduced to at most this (JPEG by libjpeg at 1/2, 1/4 or
# 1/8, other formats by a whole-factor box average): detection gains nothing from 100 MP and
# the decoded array alone would take gigabytes.
MAX_PIXELS = 40_000_000
# Non-JPEG images are decoded at full size before they can be reduced, so they are refused
# from their header above this many pixels, or when the file's bytes plus the decode's
# measured bytes per pixel pass DECODE_MEMORY_BUDGET. Peak RSS of one decode in a fresh process
# (benchmarks/probe_bad_inputs.py --limits), at 64 MP: PNG RGB 0.35 GB, PNG RGBA 16-bit or
# palette+alpha 0.6 GB, AVIF 0.6 GB, BMP 0.54 GB, one-strip deflated TIFF 0.29-0.78 GB (16-bit
# RGBA: the strip buffer holds 8 bytes a pixel), uncompressed 16-bit RGBA TIFF 1.08 GB (refused
# by the budget: its file alone is 0.5 GB); WebP (libwebp's canvas, the frame's bytes, PIL's
# image) 0.85 GB at 52 MP, the most the budget lets through. Under 0.85 GB for all that pass.
MAX_DECODE_PIXELS = 64_000_000
DECODE_MEMORY_BUDGET = 900 * 2**20
# Beyond the file's bytes and the interpreter, per pixel, rounded up from those figures.
_DECODE_BYTES_PER_PIXEL = {"TIFF": 12, "WEBP": 18}
_DEFAULT_BYTES_PER_PIXEL = 9
# A progressive (multi-scan) JPEG keeps every DCT coefficient of the full-size image in memory
# whatever the draft scale: 128 bytes per 8×8 block of each component (3 bytes a pixel at 4:2:0,
# 6 at 4:4:4). Above this it is refused; measured peak just under it (4:4:4, 88 MP): 0.63 GB.
MAX_JPEG_COEFFICIENT_BYTES = 512 * 2**20
# PIL refuses anything above twice this as a likely decompression bomb; JPEGs up to that are
# decoded at 1/8 scale cheaply, the other formats are limited by MAX_DECODE_PIXELS.
Image.MAX_IMAGE_PIXELS = 1_000_000_000
ImageFile.LOAD_TRUNCATED_IMAGES = False
# The decoders tried on a file's bytes, whatever its name says (a GIF saved as .jpg decodes).
# Not every PIL plugin: EPS would run Ghostscript on an untrusted file. (JPEG opens MPO too.)
DECODE_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF") + (("AVIF",) if features.check("avif") else ())

_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file and the reason."""


# --- finding ---------------------------------------------------------------------------
IMAGES = Media("image", IMAGE_EXTENSIONS, UNSUPPORTED_EXTENSIONS)


def find_images(patterns: str | list[str], skipped: list | None = None) -> list[Path]:
    """Image files matched by comma-separated globs, files and folders; see :func:`scan.find_files`."""
    return find_files(patterns, IMAGES, skipped)


def content_hash(data: bytes) -> str:
    """Stable content hash of a file's bytes (BLAKE2b, 128 bits, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# --- decoding --------------------------------------------------------------------------

def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
          (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"RIFF", "WebP"))


def _sniff(data: bytes) -> str:
    """Why PIL cannot read ``data``, for the formats people save with the wrong extension."""
    head = data[:64]
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"):
            return "not a supported image: HEIC/HEIF (convert it to JPEG)"
        if brand in (b"avif", b"avis"):
            return "not a supported image: AVIF, and this Pillow has no AVIF support (convert it to JPEG)"
        return "not an image (an MP4/QuickTime video)"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL ")):
        return "not a supported image: JPEG XL (convert it to JPEG)"
    if head.startswith(b"8BPS"):
        return "not a supported image: Photoshop PSD (export it as JPEG)"
    if head.startswith(b"%PDF"):
        return "not an image (a PDF document)"
    if head.startswith(b"PK\x03\x04"):
        return "not an image (a ZIP archive)"
    if head.startswith(b"\x00\x05\x16\x07"):
        return "not an image (a macOS AppleDouble '._' file)"
    for magic, fmt in _MAGIC:
        if head.startswith(magic) and (fmt != "WebP" or head[8:12] == b"WEBP"):
            return f"corrupt {fmt} header (PIL cannot read it)"
    text = data[:512]
    if all(b >= 32 or b in b"\t\r\n" for b in text):
        low = text.lstrip().lower()
        if low.startswith((b"<svg", b"<?xml")) and b"<svg" in data[:4096].lower():
            return "not a supported image: SVG drawing (export it as PNG)"
        if low.startswith((b"<!doctype html", b"<html")):
            return "not an image (a web page: the download failed?)"
        return "not an image (a text file)"
    return "not an image PIL can read (wrong extension or corrupt header)"


def _jpeg_multiscan(data: bytes) -> bool:
    """Whether the first image in a JPEG has more than one scan (progressive, or a
    non-interleaved baseline): libjpeg then buffers every coefficient at full size."""
    pos, n = 2, len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:  # entropy-coded data follows; 0xFF inside it is always stuffed
            start = pos + 2 + length
            end = data.find(b"\xff\xd9", start)
            return data.find(b"\xff\xda", start, end if end >= 0 else n) >= 0
        pos += 2 + length
    return False


def _jpeg_coefficient_bytes(im: JpegImagePlugin.JpegImageFile) -> int:
    w, h = im.size
    layers = getattr(im, "layer", None) or [("", 1, 1, 0)] * len(im.getbands())
    hmax, vmax = max(la[1] for la in layers), max(la[2] for la in layers)
    total = 0
    for _, hs, vs, _ in layers:
        bw = math.ceil(math.ceil(w * hs / hmax) / 8)
        bh = math.ceil(math.ceil(h * vs / vmax) / 8)
        total += (math.ceil(bw / hs) * hs) * (math.ceil(bh / vs) * vs) * 128
    return total


def _open(data: bytes, name: str, max_pixels: int) -> tuple[Image.Image, int, int]:
    """Open lazily, check the header against the memory limits, ask libjpeg for a reduced
    decode; return the loaded image and the full-size (stored) width and height."""
    im = Image.open(io.BytesIO(data), formats=DECODE_FORMATS)
    w, h = im.size
    if min(w, h) < 8:
        raise ImageError(f"{name}: image is too small ({w}x{h} px)")
    if isinstance(im, JpegImagePlugin.JpegImageFile):  # JPEG and MPO
        if _jpeg_multiscan(data) and _jpeg_coefficient_bytes(im) > MAX_JPEG_COEFFICIENT_BYTES:
            raise ImageError(
                f"{name}: progressive JPEG of {w}x{h} px is too large to decode safely "
                f"(needs {_jpeg_coefficient_bytes(im) / 2**20:.0f} MB; save it as a baseline JPEG)"
            )
        # The smallest libjpeg scale (1/2, 1/4, 1/8) that fits max_pixels. draft() picks the
        # largest scale whose result is at least the size asked, so ask for exactly size/s.
        s = 1
        while s < 8 and math.ceil(w / s) * math.ceil(h / s) > max_pixels:
            s *= 2
        if s > 1:
            im.draft(None, (max(1, w // s), max(1, h // s)))
    else:
        advice = "only JPEG is decoded reduced: save it as JPEG or downscale it"
        if w * h > MAX_DECODE_PIXELS:
            raise ImageError(f"{name}: {im.format} image of {w}x{h} px ({w * h / 1e6:.0f} MP) is above the "
                             f"{MAX_DECODE_PIXELS / 1e6:.0f} MP that can be decoded safely ({advice})")
        need = len(data) + _DECODE_BYTES_PER_PIXEL.get(im.format, _DEFAULT_BYTES_PER_PIXEL) * w * h
        if need > DECODE_MEMORY_BUDGET:
            raise ImageError(f"{name}: {im.format} image of {w}x{h} px in a {len(data) / 2**20:.0f} MB file would "
                             f"need about {need / 2**20:.0f} MB to decode, above the "
                             f"{DECODE_MEMORY_BUDGET / 2**20:.0f} MB allowed ({advice})")
    im.load()
    return im, w, h


def _orientation(im: Image.Image) -> int:
    try:
        value = int(im.getexif().get(0x0112, 1))
    except Exception:  # corrupt EXIF is metadata, not pixels: keep the image as stored
        return 1
    return value if value in _ORIENTATION else 1


def _gray_to_u8(im: Image.Image) -> np.ndarray:
    """16-bit or 32-bit integer, or float, grey to ``uint8``, a band of rows at a time (no
    float64 copy of the whole image)."""
    arr = np.asarray(im)
    if im.mode == "F":
        with np.errstate(invalid="ignore"):
            lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))  # reductions: no copy
        if not (math.isfinite(lo) and math.isfinite(hi)):  # infinities (rare): range of the finite values
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        k, off, top = 255.0 / (hi - lo or 1.0), lo, 255.0
    else:  # I;16*, I: 16-bit data scaled, 8-bit data kept (PIL's convert("L") clips instead)
        k, off, top = (255.0 / 65535.0 if arr.max() > 255 else 1.0), 0.0, 255.0
    out = np.empty(arr.shape, np.uint8)
    step = max(1, (1 << 22) // max(1, arr.shape[1]))
    for r in range(0, arr.shape[0], step):
        band = arr[r:r + step].astype(np.float32)
        band -= off
        band *= k
        np.nan_to_num(band, copy=False, nan=0.0, posinf=top, neginf=0.0)
        np.clip(band, 0.0, top, out=band)
        out[r:r + step] = band
    return out


def _to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode.startswith("I") or im.mode == "F":
        gray = _gray_to_u8(im)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if im.mode == "L":
        return np.repeat(np.asarray(im)[:, :, None], 3, axis=2)
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(rgba, (0, 0), rgba)
        return np.asarray(background)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _resizable(im: Image.Image) -> Image.Image:
    """A mode PIL resizes with filtering (P and 1 only resize by nearest neighbour)."""
    if im.mode == "P":
        return im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode == "1":
        return im.convert("L")
    return im


def _shrink(im: Image.Image, max_pixels: int) -> Image.Image:
    """``im`` reduced by the smallest whole factor that brings it to ``max_pixels`` (a big
    non-JPEG, or a JPEG still too big at 1/8): a one-pass box average, where resize() would
    hold a second intermediate image as big as the first."""
    w, h = im.size
    if w * h <= max_pixels:
        return im
    s = max(2, math.ceil(math.sqrt(w * h / max_pixels)))
    while math.ceil(w / s) * math.ceil(h / s) > max_pixels:
        s += 1
    try:
        return im.reduce(s)
    except ValueError:  # modes reduce() lacks (I;16)
        return im.resize((math.ceil(w / s), math.ceil(h / s)), Image.BOX)


def _decode(data: bytes, name: str, max_pixels: int) -> tuple[np.ndarray, int, int]:
    im, full_w, full_h = _open(data, name, max_pixels)
    orientation = _orientation(im)
    im = _resizable(im)
    im = _shrink(im, max_pixels)
    if orientation != 1:
        im = im.transpose(_ORIENTATION[orientation])
    return _to_rgb(im), full_w, full_h


def decode_image(data: bytes, name: str = "<bytes>", max_pixels: int = MAX_PIXELS) -> tuple[np.ndarray, float]:
    """Decode image bytes to an upright RGB ``uint8`` array.

    Returns ``(rgb, scale)`` where ``scale`` maps the returned array's pixels back to the
    upright full-size image (1.0 unless a big image was decoded downscaled to at most
    ``max_pixels``). Peak memory stays under 1 GB whatever the input: JPEG is decoded reduced,
    other formats above :data:`MAX_DECODE_PIXELS` are refused from their header.
    Raises :class:`ImageError` with the file name and a one-line reason.
    """
    if not data:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        rgb, full_w, full_h = _decode(data, name, max_pixels)
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: {_sniff(data)}") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{name}: image too large to decode safely ({_one_line(e)})") from None
    except MemoryError:
        raise ImageError(f"{name}: not enough memory to decode the image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: corrupt or truncated image ({_one_line(e)})") from None
    except Exception as e:  # a corrupt file can make a PIL plugin raise anything (struct.error, IndexError…)
        raise ImageError(f"{name}: corrupt image ({type(e).__name__}: {_one_line(e)})") from None
    if min(rgb.shape[:2]) < 8:
        raise ImageError(f"{name}: image is too small ({rgb.shape[1]}x{rgb.shape[0]} px after reduction)")
    # EXIF rotation swaps axes but keeps the long side, so this ratio is rotation-proof.
    scale = max(full_w, full_h) / max(rgb.shape[:2])
    return np.ascontiguousarray(rgb), float(scale)


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """A file's bytes for :func:`decode_image`; :class:`ImageError` if it cannot be read, or is
    bigger than any image that can be decoded safely (the bytes alone would pass the budget)."""
    try:
        size = os.stat(path).st_size
        if size > DECODE_MEMORY_BUDGET:
            raise ImageError(f"{path}: file of {size / 2**20:.0f} MB is too large to decode safely "
                             f"(above {DECODE_MEMORY_BUDGET / 2**20:.0f} MB)")
        return Path(path).read_bytes()
    except OSError as e:
        raise ImageError(f"{path}: cannot read file ({e.strerror or e})") from None


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read an image file as an upright RGB array (downscaled if above ``max_pixels``)."""
    return decode_image(read_image_bytes(path), str(path), max_pixels)[0]


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
