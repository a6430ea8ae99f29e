"""The picture a face was found in, with its box drawn: what a person checks when a crop alone
does not say who is meant (a group photo, a crowded frame)."""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from ..video.frames import VideoError
from ..storage.images import ImageError, decode_image, read_image_bytes
from ..video.faces import is_video, video_frame

BOX_COLOUR = (255, 64, 32)


def source_picture(path: str, time_s: float | None = None) -> tuple[Image.Image, float]:
    """``(picture, scale)``: the photo (decoded at reduced size when big) or the video's frame
    at ``time_s``; ``scale`` maps the file's pixels (where boxes are) onto the picture."""
    if is_video(path):
        return video_frame(path, float(time_s or 0.0)), 1.0
    rgb, scale = decode_image(read_image_bytes(path), path)
    return Image.fromarray(rgb), 1.0 / scale


def source_jpeg(path: str, box=None, time_s: float | None = None, size: int = 960, quality: int = 85) -> bytes:
    """JPEG bytes of the face's source fitted in ``size`` px, ``box`` (x0, y0, x1, y1 in the
    file's pixels) outlined; an unreadable source gives a grey square naming nothing (a view is
    never fatal)."""
    try:
        im, scale = source_picture(path, time_s)
    except (ImageError, VideoError, OSError):
        im, scale, box = Image.new("RGB", (size, size * 9 // 16), (207, 207, 207)), 1.0, None
    fit = min(1.0, size / max(im.size))
    if fit < 1.0:
        im = im.resize((max(1, round(im.width * fit)), max(1, round(im.height * fit))), Image.Resampling.LANCZOS)
    if box is not None and np.all(np.isfinite(box)):
        b = np.asarray(box, np.float64) * scale * fit
        ImageDraw.Draw(im).rectangle([float(v) for v in b], outline=BOX_COLOUR, width=max(2, im.width // 240))
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
