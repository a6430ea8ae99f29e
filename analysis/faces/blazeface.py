"""MediaPipe's BlazeFace face detector without MediaPipe: its ``.tflite`` graphs run by ONNX Runtime
(through :mod:`crowdsort.models.tflite_onnx`), with the pre- and post-processing of MediaPipe's face
detection graph (``mediapipe/modules/face_detection/face_detection.pbtxt`` and the two
``face_detection_{short,full}_range.pbtxt`` that set its options) written in numpy:

- ``ImageToTensorCalculator``: the whole picture letterboxed (``keep_aspect_ratio``, zero border)
  into the model's square, sampled bilinearly as OpenCV's ``warpPerspective`` does (no
  anti-aliasing), values mapped to [-1, 1];
- ``SsdAnchorsCalculator``: fixed-size anchors at each cell centre of the model's feature maps;
- ``TensorsToDetectionsCalculator``: boxes and 6 keypoints decoded against the anchors (x first:
  ``reverse_output_order``), scores the sigmoid of the logit clipped to ±100, those under the
  threshold dropped;
- ``NonMaxSuppressionCalculator``: MediaPipe's WEIGHTED suppression (IoU > 0.3 blends the
  overlapping boxes and keypoints by score, the best score kept);
- the letterbox removed, to picture pixels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCALE, MAX_SCALE = 0.1484375, 0.75  # the anchors' scales: unused with fixed-size anchors
SCORE_CLIP = 100.0
WIDE = 1024  # px: wider pictures are letterboxed from their sampled pixels only (3× faster at 1920)
NMS_IOU = 0.3
NUM_KEYPOINTS = 6  # right eye, left eye (the subject's), nose tip, mouth centre, right ear, left ear


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace graph and its options in MediaPipe's graph."""

    key: str  # row of crowdsort.models.files.MODEL_FILES
    size: int  # input side, pixels
    strides: tuple[int, ...]  # one per SSD layer
    interpolated_scale_aspect_ratio: float  # > 0: a second anchor per layer and cell
    num_boxes: int
    min_score: float  # the graph's min_score_thresh


# MediaPipe 0.10.21's face detection solution passes its min_detection_confidence to neither graph:
# full-range keeps scores ≥ 0.6 and short-range ≥ 0.5 whatever it is given (measured on faces/).
SHORT_RANGE = BlazeFaceModel("blazeface-short", 128, (8, 16, 16, 16), 1.0, 896, 0.5)
FULL_RANGE = BlazeFaceModel("blazeface-full", 192, (4,), 0.0, 2304, 0.6)


def ssd_anchors(model: BlazeFaceModel) -> np.ndarray:
    """``(num_boxes, 2)`` anchor centres (x, y) in [0, 1], in the model's output order: per group
    of layers with the same stride, row by row, cell by cell, anchor by anchor (SsdAnchorsCalculator
    with ``anchor_offset`` 0.5, one aspect ratio and ``fixed_anchor_size``)."""
    centres = []
    strides = model.strides
    layer = 0
    while layer < len(strides):
        per_cell = 0
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += 1 + (model.interpolated_scale_aspect_ratio > 0)
            last += 1
        cells = int(np.ceil(model.size / strides[layer]))
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([x.ravel(), y.ravel()], 1)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    anchors = np.concatenate(centres).astype(np.float32)
    if len(anchors) != model.num_boxes:
        raise AssertionError(f"{model.key}: {len(anchors)} anchors, the graph has {model.num_boxes}")
    return anchors


def letterbox(rgb: np.ndarray, size: int) -> tuple[np.ndarray, float, float, float]:
    """``(tensor, side, x0, y0)``: the picture centred in a square of ``side`` = its longer side
    (the rest black), sampled at ``size``×``size`` and scaled to [-1, 1] as a ``(size, size, 3)``
    float32 array; tensor pixel ``(i, j)`` samples the picture at ``(x0 + j·side/size, y0 +
    i·side/size)`` (OpenCV's pixel grid, as MediaPipe's ``warpPerspective``)."""
    h, w = rgb.shape[:2]
    side = float(max(h, w))
    x0, y0 = (w - side) / 2, (h - side) / 2
    step = side / size
    pos = np.arange(size) * step

    def taps(coords: np.ndarray, n: int):
        lo = np.floor(coords)
        frac = (coords - lo).astype(np.float32)
        lo = lo.astype(np.int64)
        hi = lo + 1
        w_lo = (1 - frac) * ((lo >= 0) & (lo < n))
        w_hi = frac * ((hi >= 0) & (hi < n))
        return np.clip(lo, 0, n - 1), np.clip(hi, 0, n - 1), w_lo.astype(np.float32), w_hi.astype(np.float32)

    ylo, yhi, wy_lo, wy_hi = taps(y0 + pos, h)
    xlo, xhi, wx_lo, wx_hi = taps(x0 + pos, w)
    wx_lo, wx_hi, wy_lo, wy_hi = wx_lo[None, :, None], wx_hi[None, :, None], wy_lo[:, None, None], wy_hi[:, None, None]
    if w > WIDE:  # the sampled rows and columns taken first, as bytes: a 4K frame is never converted whole
        taken = np.take(np.take(rgb, np.concatenate([ylo, yhi]), axis=0), np.concatenate([xlo, xhi]), axis=1)
        taken = taken.astype(np.float32)
        across = taken[:, :size] * wx_lo + taken[:, size:] * wx_hi
        out = across[:size] * wy_lo + across[size:] * wy_hi
    else:
        rows = rgb[ylo].astype(np.float32) * wy_lo + rgb[yhi].astype(np.float32) * wy_hi
        out = rows[:, xlo] * wx_lo + rows[:, xhi] * wx_hi
    return out * np.float32(2.0 / 255.0) - np.float32(1.0), side, x0, y0


def decode(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, size: int,
           min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(boxes (n, 4) xmin ymin xmax ymax, keypoints (n, 6, 2), scores (n,))`` in the model's
    square, [0, 1], for the anchors scoring ``min_score`` or more."""
    logits = np.clip(raw_scores.reshape(-1).astype(np.float64), -SCORE_CLIP, SCORE_CLIP)
    scores = 1.0 / (1.0 + np.exp(-logits))
    keep = np.flatnonzero(scores >= min_score)
    raw = raw_boxes.reshape(-1, raw_boxes.shape[-1])[keep].astype(np.float64) / size
    a = anchors[keep].astype(np.float64)
    centre = raw[:, 0:2] + a
    half = raw[:, 2:4] / 2
    boxes = np.concatenate([centre - half, centre + half], 1)
    kps = raw[:, 4:4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) + a[:, None, :]
    ok = (raw[:, 2] >= 0) & (raw[:, 3] >= 0)
    return boxes[ok], kps[ok], scores[keep][ok]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    w = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = w * h
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def weighted_nms(boxes: np.ndarray, kps: np.ndarray, scores: np.ndarray,
                 iou: float = NMS_IOU) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MediaPipe's WEIGHTED non-max suppression: from the best remaining detection, every one
    overlapping it by IoU > ``iou`` (itself included) is blended into one, boxes and keypoints
    weighted by score, keeping the best's score."""
    order = np.argsort(-scores, kind="stable")
    out_b, out_k, out_s = [], [], []
    while len(order):
        best = order[0]
        sim = _iou(boxes[best], boxes[order])
        group, order = order[sim > iou], order[sim <= iou]
        if len(group) == 0:  # a degenerate (empty) best box overlaps nothing, not even itself
            group, order = np.array([best]), order[order != best]
        wts = scores[group][:, None]
        total = wts.sum()
        out_b.append((boxes[group] * wts).sum(0) / total)
        out_k.append((kps[group] * wts[:, :, None]).sum(0) / total)
        out_s.append(scores[best])
    if not out_s:
        return np.zeros((0, 4)), np.zeros((0, NUM_KEYPOINTS, 2)), np.zeros(0)
    return np.array(out_b), np.array(out_k), np.array(out_s)


class BlazeFace:
    """One BlazeFace model: ``detect(rgb, min_score)`` → ``(boxes, keypoints, scores)`` in picture
    pixels (``min_score`` None: the model's own); ``detect_batch`` runs several pictures through
    the network at once."""

    def __init__(self, model: BlazeFaceModel, path, threads: int | None = None):
        from ..models.tflite_onnx import OnnxTFLiteModel

        self.model = model
        self.anchors = ssd_anchors(model)
        self.runner = OnnxTFLiteModel(path, threads)

    def detect_batch(self, pictures: list[np.ndarray], min_score: float | None = None):
        if not pictures:
            return []
        min_score = self.model.min_score if min_score is None else min_score
        boxed = [letterbox(p, self.model.size) for p in pictures]
        outs = self.runner.run(np.stack([b[0] for b in boxed]))
        # outputs: regressors (n, boxes, 16) and classificators (n, boxes, 1), told apart by shape
        raw_boxes, raw_scores = sorted(outs.values(), key=lambda a: -a.shape[-1])
        found = []
        for i, (_, side, x0, y0) in enumerate(boxed):
            boxes, kps, scores = weighted_nms(*decode(raw_boxes[i], raw_scores[i], self.anchors,
                                                      self.model.size, min_score))
            off = np.array([x0, y0])
            found.append((boxes * side + np.tile(off, 2), kps * side + off, scores))
        return found

    def detect(self, rgb: np.ndarray, min_score: float | None = None):
        return self.detect_batch([rgb], min_score)[0]
