"""Decoding: every awkward file either decodes upright or fails with a one-line reason."""
import io

import numpy as np
import pytest
from PIL import Image

from crowdsort.storage.images import ImageError, decode_image, find_images


def _jpeg(im, **kw):
    buf = io.BytesIO()
    im.save(buf, format="JPEG", **kw)
    return buf.getvalue()


def test_exif_rotation_is_applied():
    """A sideways-stored photo with EXIF orientation 6 comes back upright (tall)."""
    im = Image.new("RGB", (200, 100), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6
    rgb, scale = decode_image(_jpeg(im, exif=exif.tobytes()), "r.jpg")
    assert rgb.shape == (200, 100, 3) and scale == 1.0


def test_cmyk_and_16bit_become_rgb():
    """CMYK JPEGs and 16-bit PNGs are converted, 16-bit values scaled not clipped."""
    rgb, _ = decode_image(_jpeg(Image.new("CMYK", (64, 48), (0, 0, 0, 0))), "c.jpg")
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8 and rgb.mean() > 240
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50), 32768, dtype=np.uint16)).save(buf, format="PNG")
    rgb, _ = decode_image(buf.getvalue(), "g.png")
    assert rgb.shape == (40, 50, 3) and 120 <= rgb.mean() <= 135


def test_rgba_composited_on_white():
    buf = io.BytesIO()
    Image.new("RGBA", (30, 30), (0, 0, 0, 0)).save(buf, format="PNG")
    assert decode_image(buf.getvalue(), "a.png")[0].min() == 255


@pytest.mark.parametrize("data,reason", [
    (b"", "empty file"),
    (b"hello, I am text", "not an image"),
])
def test_bad_bytes_raise_with_name(data, reason):
    with pytest.raises(ImageError, match=f"bad.jpg: {reason}"):
        decode_image(data, "bad.jpg")


def test_truncated_jpeg_raises():
    data = _jpeg(Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)))
    with pytest.raises(ImageError, match="t.jpg: corrupt or truncated"):
        decode_image(data[: len(data) // 2], "t.jpg")


def test_huge_image_is_decoded_downscaled():
    """Above the pixel budget the array shrinks and ``scale`` maps back to full size."""
    data = _jpeg(Image.new("RGB", (4000, 3000), (90, 90, 90)))
    rgb, scale = decode_image(data, "big.jpg", max_pixels=1_000_000)
    assert rgb.shape[0] * rgb.shape[1] <= 1_000_000
    assert abs(rgb.shape[1] * scale - 4000) < 10


def test_find_images_recursive_case_insensitive(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.JPG", "a/b/y.png", "a/b/z.TiFf", "a/notes.txt"]:
        (tmp_path / name).write_bytes(b"x")
    found = find_images(f"{tmp_path}/a")
    assert sorted(p.name for p in found) == ["x.JPG", "y.png", "z.TiFf"]


def test_find_images_errors_name_the_pattern(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file or folder matches"):
        find_images(str(tmp_path / "nothing*"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images under"):
        find_images(str(tmp_path / "empty"))
