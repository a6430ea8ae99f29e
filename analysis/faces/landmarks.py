"""Five ArcFace points (eye centres, nose tip, mouth corners) from MTCNN's ONet.

The detectors give four points (eyes, nose, mouth centre); identity models trained on the
five-point ArcFace alignment need the mouth corners, and fitting the template to four points
loses most of what such a model can do (MobileFaceNet on celeba-dev: TAR at FAR 1e-3 .876 with
four points, .924–.929 with ONet's five; benchmarks/eval_models.py --alignment). ONet runs on a 48×48
view of the face's box and returns the points relative to that box.
"""
from __future__ import annotations

import numpy as np

from .align import warp

ONET_SIZE = 48
# The box ONet is given in a saved crop (align.CROP_TEMPLATE frame), as fractions of the crop
# side: the median of the boxes ONet's own regression settles on (two rounds) over the 1,035
# lfw-dev crops (celeba-dev's 1,978 give the same within 2 px of 256).
CROP_BOX = np.array([54.0, 62.0, 201.0, 211.0]) / 256


def box_matrix(box, size: int = ONET_SIZE) -> np.ndarray:
    """The 2×3 matrix taking ``box`` (x0, y0, x1, y1) onto a ``size``×``size`` square."""
    x0, y0, x1, y1 = np.asarray(box, np.float64)
    sx, sy = size / (x1 - x0), size / (y1 - y0)
    return np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]])


def onet_input(images: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
    """ONet's input batch: each box resized to 48×48, ``(x − 127.5) / 128``, and transposed
    (x before y), as MTCNN's Caffe weights were trained."""
    x = np.stack([warp(np.ascontiguousarray(im), box_matrix(b), ONET_SIZE) for im, b in zip(images, boxes)])
    return ((x.astype(np.float32) - 127.5) / 128.0).transpose(0, 2, 1, 3)


def onet_outputs(out: dict, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(points (n, 5, 2), face probability (n,), regressed boxes (n, 4))`` in image pixels."""
    boxes = np.asarray(boxes, np.float64)
    by_name = {k.rsplit("/", 1)[-1]: v for k, v in out.items()}
    lm, reg, prob = by_name["conv6-3"], by_name["conv6-2"], by_name["prob1"][:, 1]
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    pts = np.stack([boxes[:, :1] + lm[:, :5] * w, boxes[:, 1:2] + lm[:, 5:] * h], axis=2)
    return pts, prob.astype(np.float64), boxes + reg * np.hstack([w, h, w, h])


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box made square about its centre, on its longer side (MTCNN's own step)."""
    boxes = np.asarray(boxes, np.float64)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])[:, None] / 2
    return np.hstack([c - half, c + half])


class ONetLandmarks:
    """MTCNN's ONet (``mtcnn-onet``) as a five-point landmark model for given boxes."""

    def __init__(self, threads: int | None = None, runtime: str | None = None):
        self.threads, self.runtime = threads, runtime
        self._model = None

    def __getstate__(self):
        return {"threads": self.threads, "runtime": self.runtime}

    def __setstate__(self, state):
        self.__init__(**state)

    def prepare(self):
        if self._model is None:
            from ..models.install import resolve_model_file
            from ..models.tflite import open_tflite

            self._model = open_tflite(resolve_model_file("mtcnn-onet"), self.threads, self.runtime)
        return self

    def points(self, images: list[np.ndarray], boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """See :func:`onet_outputs`."""
        self.prepare()
        if not len(images):
            return np.zeros((0, 5, 2)), np.zeros(0), np.zeros((0, 4))
        return onet_outputs(self._model.run(onet_input(images, boxes)), boxes)

    def in_crops(self, crops: list[np.ndarray], rounds: int = 1) -> np.ndarray:
        """The five points of the face in each saved crop, ``(n, 5, 2)`` crop pixels, after
        ``rounds`` of ONet's own box regression (one lifts TAR at FAR 1e-3 a little on both dev
        sets: lfw-dev .988 → .989, celeba-dev .925 → .928; two add nothing)."""
        boxes = np.array([CROP_BOX * c.shape[1] for c in crops]).reshape(-1, 4)
        for _ in range(rounds):
            boxes = square(self.points(crops, boxes)[2])
        return self.points(crops, boxes)[0]
