"""Face detectors (one small class per engine) and prominence ranking.

Each detector has ``prepare()`` (load models once, e.g. once per worker process) and
``detect(rgb) -> list[Face]``; :func:`load_detector` is the factory.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..models.install import resolve_model_file

log = logging.getLogger(__name__)


@dataclass
class Face:
    """One detection in image pixels."""

    box: np.ndarray  # x0, y0, x1, y1
    score: float
    landmarks: np.ndarray  # (4, 2): eye_left, eye_right, nose, mouth (NaN where absent)
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))  # engine's raw points
    prominence: float = 0.0

    def scaled(self, s: float) -> "Face":
        return Face(self.box * s, self.score, self.landmarks * s, self.keypoints * s, self.prominence)


class BlazeFaceDetector:
    """MediaPipe's BlazeFace without MediaPipe (:mod:`crowdsort.faces.blazeface`: its ``.tflite`` graphs on
    ONNX Runtime, MediaPipe's pre- and post-processing in numpy): full-range, the short-range model
    tried when it finds nothing.

    Measured on the dev sets: full-range misses 5 of 105 ``faces/`` photos and 27 of 1,035
    ``lfw-dev`` photos (close-ups and tight chips); the short-range fallback finds all of them.
    ``benchmarks/bench_detectors.py`` compares it with MediaPipe's own graph.
    """

    name = "blazeface"
    default_min_score = None  # each model's own, as MediaPipe: 0.6 full-range, 0.5 short-range

    def __init__(self, min_score: float | None = None, threads: int | None = 1):
        self.min_score = min_score
        self.threads = threads
        self._models = None

    model_keys = ("blazeface-full", "blazeface-short")  # model files prepare() needs

    def prepare(self):
        if self._models is None:
            from .blazeface import FULL_RANGE, SHORT_RANGE, BlazeFace

            self._models = [BlazeFace(m, resolve_model_file(m.key), self.threads) for m in (FULL_RANGE, SHORT_RANGE)]
        return self

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, pictures: list[np.ndarray]) -> list[list[Face]]:
        """Each picture's faces; the pictures go through each network together."""
        self.prepare()
        found: list = [None] * len(pictures)
        todo = list(range(len(pictures)))
        for model in self._models:
            if not todo:
                break
            for i, hit in zip(todo, model.detect_batch([pictures[i] for i in todo], self.min_score)):
                if len(hit[2]):
                    found[i] = hit
            todo = [i for i in todo if found[i] is None]
        return [[] if hit is None else [
            # keypoints: the subject's right eye, left eye (image left first), nose tip, mouth
            # centre, right ear, left ear
            Face(box, float(score), kp[:4].copy(), kp) for box, kp, score in zip(*hit)
        ] for hit in found]


class MediaPipeDetector:
    """MediaPipe's own face detection solution (needs ``pip install mediapipe``, which pins numpy
    < 2): BlazeFace full-range, the short-range model tried when it finds nothing. Kept to compare
    :class:`BlazeFaceDetector` with (``engine="mediapipe-solution"``)."""

    name = "mediapipe-solution"
    default_min_score = 0.5

    def __init__(self, min_score: float | None = None):
        self.min_score = self.default_min_score if min_score is None else min_score
        self._models = None

    model_keys = ()  # the solution API loads the files inside the mediapipe package

    def prepare(self):
        if self._models is None:
            # The solution API loads the .tflite files from inside the mediapipe package; it
            # applies min_detection_confidence to neither graph (0.6 full-range, 0.5 short-range).
            try:
                from mediapipe.python.solutions import face_detection
            except ImportError:
                raise ImportError("engine mediapipe-solution needs mediapipe: pip install mediapipe==0.10.21 "
                                  "(the default engine, blazeface, runs the same models without it)") from None

            self._models = [
                face_detection.FaceDetection(model_selection=sel, min_detection_confidence=self.min_score)
                for sel in (1, 0)
            ]
        return self

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.prepare()
        h, w = rgb.shape[:2]
        for model in self._models:
            result = model.process(rgb)
            if result.detections:
                break
        faces = []
        for det in result.detections or []:
            bb = det.location_data.relative_bounding_box
            box = np.array([bb.xmin * w, bb.ymin * h, (bb.xmin + bb.width) * w, (bb.ymin + bb.height) * h])
            kp = np.array([[k.x * w, k.y * h] for k in det.location_data.relative_keypoints])
            # MediaPipe order: right eye, left eye (the subject's; image left first), nose tip,
            # mouth centre, right ear, left ear.
            faces.append(Face(box, float(det.score[0]), kp[:4].copy(), kp))
        return faces


class DlibDetector:
    """dlib's HOG frontal face detector with the 5-point shape predictor for landmarks."""

    name = "dlib"
    default_min_score = 0.0  # HOG SVM margin, not a probability

    def __init__(self, min_score: float | None = None, upsample: int = 1):
        self.min_score = self.default_min_score if min_score is None else min_score
        self.upsample = upsample
        self._hog = self._shape = None

    model_keys = ("dlib-shape-5",)

    def prepare(self):
        if self._hog is None:
            import dlib

            self._shape = dlib.shape_predictor(str(resolve_model_file("dlib-shape-5")))
            self._hog = dlib.get_frontal_face_detector()
        return self

    def detect(self, rgb: np.ndarray) -> list[Face]:
        self.prepare()
        rects, scores, _ = self._hog.run(rgb, self.upsample, self.min_score)
        faces = []
        for rect, score in zip(rects, scores):
            shape = self._shape(rgb, rect)
            kp = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
            faces.append(Face(
                np.array([rect.left(), rect.top(), rect.right(), rect.bottom()], dtype=np.float64),
                float(score), dlib_landmarks(kp), kp,
            ))
        return faces


def dlib_landmarks(kp: np.ndarray) -> np.ndarray:
    """dlib's 5 points (two corners per eye, nose base) → eye_left, eye_right, nose, mouth(NaN)."""
    eyes = sorted([kp[0:2].mean(0), kp[2:4].mean(0)], key=lambda p: p[0])
    return np.array([eyes[0], eyes[1], kp[4], [np.nan, np.nan]])


DETECTORS = {"blazeface": BlazeFaceDetector, "dlib": DlibDetector, "mediapipe-solution": MediaPipeDetector}
ALIASES = {"mediapipe": "blazeface"}  # the engine's name before it ran without MediaPipe
ENGINES = ("blazeface", "mediapipe", "dlib")  # offered by the command line


def engine_name(engine: str) -> str:
    """The engine ``engine`` names (an alias resolved)."""
    return ALIASES.get(engine, engine)


# BlazeFace sees the picture at 192 px: in a 1080p frame a face 50 px wide shrinks to 5 px and is
# lost (crowd_walk, frame 50: the whole frame gives 1 of the 4 near faces, 3×3 tiles all 4).
TILE_WIDTH = 640
TILE_OVERLAP = 0.25  # of a tile: a face cut by one tile's edge is whole in its neighbour
SAME_FACE_OVERLAP = 0.5


def auto_tiles(width: int) -> int:
    """Tiles a side for a picture ``width`` px wide: 1 up to 960 px, 2 at 1280, 3 at 1920."""
    return max(1, round(width / TILE_WIDTH))


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over the smaller box: a face cut by a tile's edge lies inside the whole one."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


def detect_tiled(detector, rgb: np.ndarray, n: int) -> list[Face]:
    """The detector over the whole picture and over ``n``×``n`` overlapping tiles, one face
    kept where boxes overlap (the best scored). ``n`` 1: the whole picture only."""
    pictures, offsets = [rgb], [np.zeros(2)]
    if n > 1:
        h, w = rgb.shape[:2]
        th, tw = min(h, int(h / n * (1 + TILE_OVERLAP))), min(w, int(w / n * (1 + TILE_OVERLAP)))
        for y0 in np.linspace(0, h - th, n).round().astype(int):
            for x0 in np.linspace(0, w - tw, n).round().astype(int):
                pictures.append(rgb[y0:y0 + th, x0:x0 + tw])
                offsets.append(np.array([x0, y0], np.float64))
    if hasattr(detector, "detect_batch"):  # the tiles through the network at once
        found = detector.detect_batch(pictures)
    else:
        found = [detector.detect(np.ascontiguousarray(p)) for p in pictures]
    faces = [f if not off.any() else Face(f.box + np.tile(off, 2), f.score, f.landmarks + off, f.keypoints + off)
             for hits, off in zip(found, offsets) for f in hits]
    kept: list[Face] = []
    for f in sorted(faces, key=lambda f: -f.score):
        if all(_overlap(f.box, k.box) < SAME_FACE_OVERLAP for k in kept):
            kept.append(f)
    return kept


def load_detector(engine: str = "blazeface", **kwargs):
    """Detector by engine name (``mediapipe``: ``blazeface``); raises ``ValueError`` listing the engines."""
    try:
        cls = DETECTORS[engine_name(engine)]
    except KeyError:
        raise ValueError(f"unknown engine {engine!r}; choose one of: {', '.join([*DETECTORS, *ALIASES])}") from None
    return cls(**kwargs)


def prominence(box: np.ndarray, width: int, height: int) -> float:
    """How much a face is the subject: its size relative to the photo, discounted by its
    distance from the centre (a centred face keeps full weight, a corner face half)."""
    x0, y0, x1, y1 = box
    size = np.sqrt(max(x1 - x0, 0) * max(y1 - y0, 0) / (width * height))
    cx, cy = (x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2
    off = np.hypot(cx, cy) / (0.5 * np.hypot(width, height))
    return float(size * (1.0 - 0.5 * min(off, 1.0)))


def rank_faces(faces: list[Face], width: int, height: int) -> list[Face]:
    """Sort by prominence (rounded, so near-equal faces tie) then detection score."""
    for f in faces:
        f.prominence = prominence(f.box, width, height)
    return sorted(faces, key=lambda f: (-round(f.prominence, 2), -f.score))


def is_partial(box: np.ndarray, width: int, height: int, tol: float = 0.02) -> bool:
    """True when the face box leaves the image by more than ``tol`` of its size."""
    x0, y0, x1, y1 = box
    mx, my = tol * (x1 - x0), tol * (y1 - y0)
    return bool(x0 < -mx or y0 < -my or x1 > width + mx or y1 > height + my)
