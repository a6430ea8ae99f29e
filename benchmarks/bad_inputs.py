"""The bad-input corpus: every awkward file a photo folder holds, generated on the spot.

``make_corpus(folder)`` writes the files under ``folder/scan`` (link targets under
``folder/outside``) and returns one :class:`Case` per kind, with the outcome the package owes
it. ``tests/test_bad_inputs.py`` asserts those outcomes; ``benchmarks/probe_bad_inputs.py``
prints them with the peak memory of decoding each file in a fresh process. Big images are
written without their pixels in memory (repeated JPEG MCUs, repeated compressed PNG rows), so
the whole corpus takes a few seconds and a few MB.
"""
from __future__ import annotations

import io
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features

# Colours of the four quadrants of the upright test picture, probed at their centres.
RED, GREEN, BLUE, PALE = (220, 30, 30), (30, 190, 40), (30, 40, 210), (235, 235, 235)
QUADRANTS = (((0.25, 0.25), RED), ((0.75, 0.25), GREEN), ((0.25, 0.75), BLUE), ((0.75, 0.75), PALE))
# EXIF orientation → the transpose that turns the upright picture into the stored one.
_STORE = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
# An EXIF block whose IFD claims 5 entries and holds 1 (an orientation of 6 PIL cannot reach).
BAD_EXIF = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06"


@dataclass(frozen=True)
class Case:
    """One kind of awkward input and what the package must do with it.

    ``outcome``: ``decoded`` (upright RGB of ``size`` = (width, height) at full size, the
    ``probes`` ((fx, fy), rgb) matching), ``reported`` (decoding raises an ImageError naming the
    file, matching ``reason``), ``skipped`` (the folder scan reports it, matching ``reason``) or
    ``ignored`` (not an image: neither found nor reported). ``found``: the path the scan
    returns for it (a link's target), when it differs from ``path``.
    """

    kind: str
    path: Path
    outcome: str
    reason: str = ""
    size: tuple[int, int] | None = None
    probes: tuple = ()
    found: Path | None = None

    @property
    def shown(self) -> str:
        """The path as reports print it (bytes that are not UTF-8 as escapes)."""
        return str(self.path).encode("utf-8", "backslashreplace").decode("utf-8")


def quadrants(w: int, h: int) -> Image.Image:
    """The upright test picture: red, green / blue, pale quadrants."""
    a = np.empty((h, w, 3), np.uint8)
    a[: h // 2, : w // 2], a[: h // 2, w // 2:] = RED, GREEN
    a[h // 2:, : w // 2], a[h // 2:, w // 2:] = BLUE, PALE
    return Image.fromarray(a)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def exif_bytes(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _segments(jpeg: bytes):
    """``(marker, start, end)`` of each header segment of a JPEG, up to and including SOS."""
    pos = 2
    while True:
        marker, length = jpeg[pos + 1], int.from_bytes(jpeg[pos + 2:pos + 4], "big")
        yield marker, pos, pos + 2 + length
        if marker == 0xDA:
            return
        pos += 2 + length


def _with_size(jpeg: bytes, width: int, height: int) -> tuple[bytes, bytes]:
    """The JPEG's header with its frame size replaced, and its entropy-coded data."""
    head = bytearray()
    for marker, start, end in _segments(jpeg):
        seg = bytearray(jpeg[start:end])
        if marker in (0xC0, 0xC1, 0xC2):
            seg[5:9] = struct.pack(">HH", height, width)
        head += seg
        sos_end = end
    return bytes(jpeg[:2] + head), jpeg[sos_end:-2]


def uniform_jpeg(width: int, height: int, exif: bytes = b"") -> bytes:
    """A mid-grey 4:2:0 baseline JPEG of any size, without its pixels in memory: every
    16×16 MCU of flat mid-grey codes to the same 4 bytes (DC 0, end of block), repeated."""
    tmpl = encode(Image.new("RGB", (16, 16), (128, 128, 128)), "JPEG", quality=90, subsampling=2, exif=exif)
    head, unit = _with_size(tmpl, width, height)
    assert len(unit) == 4, "template MCU is not 4 bytes"
    return head + unit * (math.ceil(width / 16) * math.ceil(height / 16)) + b"\xff\xd9"


def jpeg_header_only(width: int, height: int, progressive: bool = False, subsampling: int = 2) -> bytes:
    """A JPEG whose header declares ``width`` × ``height`` over a 16×16 picture's data: a
    decompression bomb's header, truncated."""
    tmpl = encode(quadrants(16, 16), "JPEG", progressive=progressive, subsampling=subsampling)
    head, data = _with_size(tmpl, width, height)
    return head + data + b"\xff\xd9"


def _chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))


def repeated_png(width: int, height: int, color_type: int, bit_depth: int, row: bytes, exif: bytes = b"") -> bytes:
    """A PNG whose every scanline is ``row`` (filter 0), compressed without the whole image in
    memory: a block of rows is deflated once with a full flush (which resets the dictionary,
    so the same input gives the same bytes) and repeated."""
    line = b"\x00" + row
    per_block = max(1, (8 << 20) // len(line))
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = raw.compress(line * per_block) + raw.flush(zlib.Z_FULL_FLUSH)
    n_full, rest = divmod(height, per_block)
    tail_obj = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = tail_obj.compress(line * rest) + tail_obj.flush(zlib.Z_FINISH)
    adler = 1
    for _ in range(n_full):
        adler = zlib.adler32(line * per_block, adler)
    adler = zlib.adler32(line * rest, adler)
    idat = b"\x78\xda" + block * n_full + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    extra = _chunk(b"eXIf", exif.removeprefix(b"Exif\x00\x00")) if exif else b""
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def tiff_header_only(width: int, height: int) -> bytes:
    """An uncompressed 8-bit grey TIFF declaring ``width`` × ``height`` with no pixel data."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1),
               (273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 4, height), (279, 4, width * height)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, 1) + (struct.pack("<HH", value, 0) if typ == 3 else struct.pack("<I", value))
        for tag, typ, value in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 64


def write_tiff(path: Path, width: int, height: int, samples: int, bits: int, deflate: bool = False) -> None:
    """A one-strip TIFF of flat samples streamed to disk, raw or deflated: the worst layout for
    memory, as the decoder buffers the whole strip."""
    n_tags = 10 if samples == 4 else 9
    bits_at = 8 + 2 + 12 * n_tags + 4
    data_at = bits_at + 2 * samples

    def tag(code, typ, count, value):
        packed = struct.pack("<HH", value, 0) if typ == 3 and count == 1 else struct.pack("<I", value)
        return struct.pack("<HHI", code, typ, count) + packed

    with open(path, "wb") as f:
        f.seek(data_at)
        block, left, written = b"\x40" * (16 << 20), width * height * samples * bits // 8, 0
        packer = zlib.compressobj(1) if deflate else None
        while left:
            piece = block[: min(left, len(block))]
            left -= len(piece)
            piece = packer.compress(piece) if packer else piece
            f.write(piece)
            written += len(piece)
        if packer:
            tail = packer.flush()
            f.write(tail)
            written += len(tail)
        tags = [tag(256, 4, 1, width), tag(257, 4, 1, height),
                tag(258, 3, samples, bits_at) if samples > 2 else tag(258, 3, 1, bits),
                tag(259, 3, 1, 8 if deflate else 1), tag(262, 3, 1, 2 if samples >= 3 else 1),
                tag(273, 4, 1, data_at), tag(277, 3, 1, samples), tag(278, 4, 1, height), tag(279, 4, 1, written)]
        if samples == 4:
            tags.append(tag(338, 3, 1, 2))  # the fourth sample is unassociated alpha
        f.seek(0)
        f.write(b"II*\x00" + struct.pack("<IH", 8, n_tags) + b"".join(tags) + struct.pack("<I", 0))
        f.write(struct.pack(f"<{samples}H", *[bits] * samples))


def png_with(payload_fix, im: Image.Image) -> bytes:
    """PNG bytes of ``im`` with ``payload_fix(png, idat_index, idat_length)`` applied."""
    png = encode(im, "PNG")
    i = png.index(b"IDAT")
    return payload_fix(png, i, int.from_bytes(png[i - 4:i], "big"))


def _heic_bytes() -> bytes:
    """The first boxes of an iPhone HEIC file (ftyp, and the start of meta)."""
    ftyp = b"ftypheic" + b"\x00\x00\x00\x00" + b"mif1heicmiaf"
    meta = b"meta" + b"\x00" * 4 + struct.pack(">I", 33) + b"hdlr" + b"\x00" * 8 + b"pict" + b"\x00" * 13
    return struct.pack(">I", len(ftyp) + 4) + ftyp + struct.pack(">I", len(meta) + 4) + meta + bytes(range(256))


def make_corpus(folder: Path, faces: list[Path] = ()) -> list[Case]:
    """Write the corpus under ``folder`` and return its cases (``faces``: real photos copied in
    beside them, as the good photos of the batch)."""
    scan, outside = folder / "scan", folder / "outside"
    scan.mkdir(parents=True)
    outside.mkdir()
    cases: list[Case] = []
    rng = np.random.default_rng(0)
    photo = quadrants(320, 240)

    def add(kind, name, data, outcome, reason="", size=None, probes=()):
        path = scan / name
        if data is not None:
            path.write_bytes(data)
        cases.append(Case(kind, path, outcome, reason, size, probes))

    def good(kind, name, data, size=(320, 240), probes=QUADRANTS):
        add(kind, name, data, "decoded", size=size, probes=probes)

    def bad(kind, name, data, reason):
        add(kind, name, data, "reported", reason)

    def skip(kind, name, reason):
        add(kind, name, None, "skipped", reason)

    jpeg = encode(photo, "JPEG", quality=92)
    # --- JPEG ---------------------------------------------------------------------------
    good("plain JPEG", "plain.jpg", jpeg)
    good("upper-case .JPG", "UPPER.JPG", jpeg)
    good("unicode name", "фото 照片 ñandú.jpg", jpeg)
    good("240-character name", "long-" + "x" * 231 + ".jpg", jpeg)
    good("brackets in the name", "photo[1] (copy).jpg", jpeg)
    good("CMYK JPEG", "cmyk.jpg", encode(photo.convert("CMYK"), "JPEG", quality=95))
    good("grey (L) JPEG", "grey.jpg", encode(Image.new("L", (320, 240), 90), "JPEG"),
         probes=(((0.5, 0.5), (90, 90, 90)),))
    good("progressive JPEG", "progressive.jpg", encode(photo, "JPEG", progressive=True))
    for o in (3, 6, 8):
        stored = photo.transpose(_STORE[o])
        good(f"EXIF orientation {o}", f"orientation-{o}.jpg", encode(stored, "JPEG", quality=92, exif=exif_bytes(o)))
    good("EXIF orientation 9 (invalid): as stored", "orientation-9.jpg", encode(photo, "JPEG", exif=exif_bytes(9)))
    good("corrupt EXIF: as stored", "bad-exif.jpg",
         encode(photo, "JPEG", exif=BAD_EXIF))
    good("JPEG with garbage appended", "garbage-tail.jpg", jpeg + rng.bytes(4096))
    good("MPO (camera multi-picture JPEG)", "stereo.jpg", encode(photo, "MPO", save_all=True, append_images=[photo]))
    good("JPEG named .png", "really-a-jpeg.png", jpeg)
    good("GIF bytes named .jpg", "really-a-gif.jpg", encode(photo.convert("P", palette=Image.Palette.ADAPTIVE), "GIF"))
    good("100 MP JPEG", "huge-100mp.jpg", uniform_jpeg(12240, 8160), size=(12240, 8160),
         probes=(((0.5, 0.5), (128, 128, 128)),))
    good("160 MP JPEG with EXIF orientation 6", "huge-160mp-rotated.jpg", uniform_jpeg(16000, 10000, exif_bytes(6)),
         size=(10000, 16000), probes=(((0.5, 0.5), (128, 128, 128)),))
    bad("truncated JPEG", "truncated.jpg", jpeg[: len(jpeg) // 2], "corrupt or truncated")
    bad("JPEG cut inside its header", "header-only.jpg", jpeg[:300], "corrupt or truncated|not an image")
    # libjpeg fills the missing data with grey, as viewers do; decoded at 1/8 it costs little.
    good("JPEG header claiming 40000x40000 over 16x16 data", "bomb-40000.jpg", jpeg_header_only(40000, 40000),
         size=(40000, 40000), probes=(((0.5, 0.5), (128, 128, 128)),))
    bad("JPEG header claiming 60000x60000 (3.6 GP)", "bomb-60000.jpg", jpeg_header_only(60000, 60000),
        "too large to decode safely")
    bad("progressive JPEG header, 200 MP 4:4:4", "bomb-progressive.jpg",
        jpeg_header_only(16000, 12500, progressive=True, subsampling=0),
        "progressive JPEG .* too large to decode safely")
    # --- PNG ----------------------------------------------------------------------------
    half_clear = np.zeros((240, 320, 4), np.uint8)
    half_clear[:, 160:] = (*RED, 255)
    good("RGBA PNG (composited on white)", "rgba.png", encode(Image.fromarray(half_clear), "PNG"),
         probes=(((0.25, 0.5), (255, 255, 255)), ((0.75, 0.5), RED)))
    la = Image.merge("LA", (Image.new("L", (320, 240), 60), Image.new("L", (320, 240), 255)))
    good("LA PNG", "grey-alpha.png", encode(la, "PNG"), probes=(((0.5, 0.5), (60, 60, 60)),))
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    clear = pal.getpixel((10, 10))
    good("palette + transparency PNG", "palette-alpha.png", encode(pal, "PNG", transparency=clear),
         probes=(((0.25, 0.25), (255, 255, 255)), ((0.75, 0.75), PALE)))
    good("palette PNG", "palette.png", encode(pal, "PNG"))
    bilevel = np.zeros((240, 320), bool)
    bilevel[:, 160:] = True
    good("mode 1 (bilevel) PNG", "bilevel.png", encode(Image.fromarray(bilevel), "PNG"),
         probes=(((0.25, 0.5), (0, 0, 0)), ((0.75, 0.5), (255, 255, 255))))
    good("16-bit grey PNG", "grey16.png", encode(Image.fromarray(np.full((240, 320), 50000, np.uint16)), "PNG"),
         probes=(((0.5, 0.5), (195, 195, 195)),))
    good("16-bit RGB PNG", "rgb16.png", repeated_png(320, 240, 2, 16, struct.pack(">HHH", 65535, 0, 32768) * 320),
         probes=(((0.5, 0.5), (255, 0, 128)),))
    frames = [Image.new("RGB", (320, 240), RED), Image.new("RGB", (320, 240), BLUE)]
    good("animated PNG (first frame)", "animated.png",
         encode(frames[0], "PNG", save_all=True, append_images=frames[1:]),
         probes=(((0.5, 0.5), RED),))
    good("PNG with EXIF orientation 6", "orientation-6.png",
         encode(photo.transpose(_STORE[6]), "PNG", exif=exif_bytes(6)))
    good("PNG with a wrong IDAT CRC", "bad-crc.png",
         png_with(lambda p, i, n: p[: i + 4 + n] + bytes([p[i + 4 + n] ^ 0xFF]) + p[i + 5 + n:], photo))
    bad("PNG with a wrong IHDR CRC", "bad-header-crc.png",
        png_with(lambda p, i, n: p[:29] + bytes([p[29] ^ 0xFF]) + p[30:], photo), "corrupt PNG header")
    noisy = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8))
    bad("PNG with corrupt image data", "bad-data.png",
        png_with(lambda p, i, n: p[: i + 40] + b"\x00" * 64 + p[i + 104:], noisy), "corrupt or truncated")
    png = encode(noisy, "PNG")
    bad("truncated PNG", "truncated.png", png[: len(png) // 2], "corrupt or truncated")
    bad("20000x20000 PNG (400 MP in 400 KB)", "bomb-20000.png", repeated_png(20000, 20000, 0, 8, bytes(20000)),
        r"PNG image of 20000x20000 px \(400 MP\) is above")
    bad("30000x2 PNG", "strip-30000x2.png", encode(Image.new("RGB", (30000, 2)), "PNG"), "too small")
    bad("1x1 PNG", "pixel.png", encode(Image.new("RGB", (1, 1)), "PNG"), "too small")
    # --- TIFF, WebP, BMP, AVIF ------------------------------------------------------------
    good("RGB TIFF (deflate)", "rgb.tif", encode(photo, "TIFF", compression="tiff_adobe_deflate"))
    good("16-bit grey TIFF", "grey16.tif", encode(Image.fromarray(np.full((240, 320), 50000, np.uint16)), "TIFF"),
         probes=(((0.5, 0.5), (195, 195, 195)),))
    good("I mode (32-bit int) TIFF", "int32.tif", encode(Image.fromarray(np.full((240, 320), 1000, np.int32)), "TIFF"),
         probes=(((0.5, 0.5), (4, 4, 4)),))
    ramp = np.tile(np.linspace(-1.0, 3.0, 320, dtype=np.float32), (240, 1))
    ramp[0, 0] = np.nan
    good("F mode (float) TIFF with a NaN", "float.tif", encode(Image.fromarray(ramp), "TIFF"),
         probes=(((0.02, 0.5), (3, 3, 3)), ((0.98, 0.5), (252, 252, 252))))
    good("multi-page TIFF (first page)", "pages.tif",  # copies: a saved image keeps its last encoder settings
         encode(photo.copy(), "TIFF", save_all=True, append_images=[noisy.copy()]))
    bad("TIFF header claiming 20000x20000", "bomb-20000.tif", tiff_header_only(20000, 20000), "above the")
    good("WebP", "photo.webp", encode(photo, "WEBP", quality=90))
    good("animated WebP (first frame)", "animated.webp",
         encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]),
         probes=(((0.5, 0.5), RED),))
    good("BMP", "photo.bmp", encode(photo, "BMP"))
    if features.check("avif"):
        avif = encode(photo, "AVIF", quality=90, speed=10)
        good("AVIF", "photo.avif", avif)
        good("AVIF bytes named .jpg", "really-an-avif.jpg", avif)
    else:
        skip("AVIF (this Pillow has no AVIF)", "photo.avif", "AVIF needs Pillow")
        (scan / "photo.avif").write_bytes(b"\x00\x00\x00\x1cftypavif" + bytes(16))
    # --- not images at all --------------------------------------------------------------
    bad("zero-byte file", "empty.jpg", b"", "empty file")
    bad("text named .jpg", "notes.jpg", b"shopping list: milk, eggs\n" * 4, r"not an image \(a text file\)")
    bad("web page named .jpg (failed download)", "download.jpg", b"<!DOCTYPE html><html><body>403</body></html>",
        "not an image .*web page")
    bad("HEIC bytes named .jpg", "iphone.jpg", _heic_bytes(), "HEIC")
    bad("random bytes named .png", "noise.png", rng.bytes(2048), "not an image")
    # --- what the folder scan sees ------------------------------------------------------
    (scan / "notes.txt").write_text("not a photo")
    cases.append(Case("text file (not an image name)", scan / "notes.txt", "ignored"))
    (scan / "anim.gif").write_bytes(encode(frames[0], "GIF", save_all=True, append_images=frames[1:]))
    skip("GIF", "anim.gif", "GIF is not supported")
    (scan / "IMG_0001.HEIC").write_bytes(_heic_bytes())
    skip(".HEIC file", "IMG_0001.HEIC", "HEIC is not supported")
    (scan / "IMG_0002.CR2").write_bytes(b"II*\x00\x10\x00\x00\x00CR\x02\x00" + bytes(64))
    skip("camera RAW .CR2", "IMG_0002.CR2", "camera RAW is not supported")
    target = outside / "target.jpg"
    target.write_bytes(jpeg)
    (scan / "link-to-photo.jpg").symlink_to(target)
    cases.append(Case("symlink to an image", scan / "link-to-photo.jpg", "decoded", size=(320, 240),
                      probes=QUADRANTS, found=target.resolve()))
    (scan / "dangling.jpg").symlink_to(outside / "deleted.jpg")
    skip("dangling symlink", "dangling.jpg", "dangling symbolic link")
    (scan / "self-loop.jpg").symlink_to(scan / "self-loop.jpg")
    skip("symlink loop (to itself)", "self-loop.jpg", "symbolic link loop")
    (scan / "sub").mkdir()
    (scan / "sub" / "back-up").symlink_to(scan, target_is_directory=True)
    skip("symlink loop (folder to its parent)", "sub/back-up", "symbolic link loop")
    (scan / "album.jpg").mkdir()
    (scan / "album.jpg" / "readme.txt").write_text("a folder")
    skip("folder named x.jpg", "album.jpg", "a folder named like an image")
    os.mkfifo(scan / "pipe.jpg")
    skip("FIFO named .jpg", "pipe.jpg", "not a regular file")
    bad_name = os.fsencode(scan) + b"/caf\xe9-latin1.jpg"
    with open(bad_name, "wb") as f:
        f.write(jpeg)
    cases.append(Case("file name not UTF-8", Path(os.fsdecode(bad_name)), "skipped", "not valid UTF-8"))
    if os.geteuid() != 0:  # root reads anything
        locked = scan / "locked.jpg"
        locked.write_bytes(jpeg)
        locked.chmod(0)
        bad("unreadable file (mode 000)", "locked.jpg", None, "cannot read file")
        (scan / "locked-folder").mkdir()
        (scan / "locked-folder").chmod(0)
        skip("unreadable folder (mode 000)", "locked-folder", "cannot read folder")
    for face in faces:
        dest = scan / f"face-{face.parent.name}-{face.name}"
        dest.write_bytes(face.read_bytes())
        cases.append(Case(f"real face photo ({face.name})", dest, "decoded"))
    return cases


def decode_path(path: Path):
    """``(rgb, scale)`` of an image file, as a batch decodes it."""
    from crowdsort.storage.images import decode_image, read_image_bytes

    return decode_image(read_image_bytes(path), str(path))
