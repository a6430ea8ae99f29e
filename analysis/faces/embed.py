"""Identity embedders (one small class per model kind) and the embedding cache driver.

Embedders take saved aligned crops plus their landmarks and return L2-normalised float32
vectors. :func:`load_embedder` is the single entry point resolving a name to weights.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .align import ARCFACE_TEMPLATE, CROP_SIZE, arcface_input, estimate_norm, warp
from ..models.install import resolve_model_file
from ..models.files import ARCFACE_PACKS, ModelNotFoundError, insightface_home, recognition_model_in
from ..models.ort_session import onnx_providers, onnx_session
from ..storage.store import EmbeddingWriter
from ..scale.workers import cores, die_with_parent

log = logging.getLogger(__name__)

# Where dlib's HOG detector puts the face box in a crop made by align.align_crop, measured
# as the median over the 131 dev crops where it fires (spread ±10 px): the shape predictor
# was trained on boxes like these.
_DLIB_BOX_IN_CROP = np.array([65, 79, 189, 203], dtype=np.float64) / CROP_SIZE


def l2_normalize(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X, dtype=np.float32)
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(n, 1e-12)


# Model names that give dlib's ResNet vectors: they share the embedding cache ("dlib") and the
# thresholds tuned on it.
DLIB_MODELS = ("dlib", "dlib-native")


class DlibEmbedder:
    """dlib ResNet, 128-D: face chip (150 px, padding 0.25) from dlib's own 5 landmarks.

    dlib's own network: one core per process (``dlib-native``)."""

    name = "dlib"
    dim = 128
    single_threaded = True

    def __init__(self):
        self._shape = self._net = None

    def __getstate__(self):  # a worker process loads the model itself
        return {}

    def __setstate__(self, state):
        self.__init__()

    def _prepare_chips(self):
        if self._shape is None:
            import dlib

            self._dlib = dlib
            self._shape = dlib.shape_predictor(str(resolve_model_file("dlib-shape-5")))

    def prepare(self):
        self._prepare_chips()
        if self._net is None:
            self._net = self._dlib.face_recognition_model_v1(str(resolve_model_file("dlib-resnet")))
        return self

    def chip(self, crop: np.ndarray) -> np.ndarray:
        s = crop.shape[0]
        x0, y0, x1, y1 = (_DLIB_BOX_IN_CROP * s).round().astype(int)
        shape = self._shape(crop, self._dlib.rectangle(x0, y0, x1, y1))
        return self._dlib.get_face_chip(crop, shape, size=150, padding=0.25)

    def embed(self, crops: list[np.ndarray], landmarks: list[np.ndarray] | None = None) -> np.ndarray:
        self.prepare()
        chips = [self.chip(np.ascontiguousarray(c)) for c in crops]
        if not chips:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._net.compute_face_descriptor(chips)
        return l2_normalize(np.array([np.asarray(v) for v in vecs]))


class PreparedChips(np.ndarray):
    """A batch's chips made ahead (:meth:`DlibOnnxEmbedder.prepare_batch`): ``embed`` takes them
    in place of the crops, so whatever wraps ``embed`` still sees every batch."""


class ChipsEmbedder:
    """An embedder in two steps, ``prepare_batch`` (crops → the network's input, made on a thread
    ahead by :func:`_prefetched`) and ``embed_prepared``; ``embed`` takes either."""

    def embed(self, crops: list[np.ndarray] | PreparedChips, landmarks: list[np.ndarray] | None = None) -> np.ndarray:
        chips = crops if isinstance(crops, PreparedChips) else self.prepare_batch(crops, landmarks)
        return self.embed_prepared(chips)


class DlibOnnxEmbedder(ChipsEmbedder, DlibEmbedder):
    """The same dlib ResNet and chips, run by ONNX Runtime: batched, every core, or CUDA.

    The network is converted from dlib's ``.dat`` once (:mod:`crowdsort.models.dlib_onnx`); its
    vectors equal dlib's to float rounding (cosine > 0.99999 on real faces), so they share
    dlib's cache name and thresholds."""

    single_threaded = False

    def __init__(self, providers=None, threads: int | None = None):
        super().__init__()
        self.providers, self.threads = providers, threads
        self._session = None

    def __getstate__(self):
        return {"providers": self.providers, "threads": self.threads}

    def __setstate__(self, state):
        self.__init__(**state)

    def prepare(self):
        self._prepare_chips()
        if self._session is None:
            self._session = self._open_session()
        return self

    def _open_session(self):
        from ..models.dlib_onnx import onnx_model

        return onnx_session(onnx_model, self.threads, self.providers or onnx_providers())

    def prepare_batch(self, crops: list[np.ndarray], landmarks=None) -> PreparedChips:
        """The network's input: chips stacked (n, 150, 150, 3), RGB uint8."""
        self._prepare_chips()
        if not len(crops):
            return np.zeros((0, 150, 150, 3), dtype=np.uint8).view(PreparedChips)
        return np.stack([self.chip(np.ascontiguousarray(c)) for c in crops]).view(PreparedChips)

    def embed_prepared(self, chips: np.ndarray) -> np.ndarray:
        self.prepare()
        if not len(chips):
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalize(self._session.run(None, {"chips": np.asarray(chips)})[0])



def dlib_embedder():
    """``dlib``: the ONNX Runtime path, or dlib's own where onnxruntime is missing."""
    try:
        import onnxruntime  # noqa: F401 - it brings protobuf, which the conversion writes the graph with
    except ImportError as e:
        log.warning("%s is not installed: embedding with dlib's own network, one core per process "
                    "(pip install onnxruntime for the faster path)", e.name)
        return DlibEmbedder()
    return DlibOnnxEmbedder()


class MobileFaceNetEmbedder(ChipsEmbedder):
    """MobileFaceNet (``mobilefacenet``: sirius-ai's weights, trained on MS1M-refine), 192-D, on
    the five-point ArcFace alignment, the points from MTCNN's ONet on the saved crop
    (:mod:`crowdsort.faces.landmarks`). Both run on every core (``threads``), on LiteRT or ONNX Runtime
    (``runtime``, see :func:`crowdsort.models.tflite.open_tflite`)."""

    name = "mobilefacenet"
    dim = 192
    single_threaded = False

    def __init__(self, threads: int | None = None, runtime: str | None = None):
        self.threads, self.runtime = threads, runtime
        self._net = self._onet = None

    def __getstate__(self):
        return {"threads": self.threads, "runtime": self.runtime}

    def __setstate__(self, state):
        self.__init__(**state)

    def _prepare_chips(self):
        if self._onet is None:
            from .landmarks import ONetLandmarks

            self._onet = ONetLandmarks(self.threads, self.runtime).prepare()

    def prepare(self):
        self._prepare_chips()
        if self._net is None:
            from ..models.tflite import open_tflite

            self._net = open_tflite(resolve_model_file("mobilefacenet"), self.threads, self.runtime)
        return self

    def prepare_batch(self, crops: list[np.ndarray], landmarks=None) -> PreparedChips:
        """The network's input: 112×112 RGB uint8 chips on the ArcFace template."""
        self._prepare_chips()
        if not len(crops):
            return np.zeros((0, 112, 112, 3), dtype=np.uint8).view(PreparedChips)
        points = self._onet.in_crops(crops)
        return np.stack([warp(np.ascontiguousarray(c), estimate_norm(p, ARCFACE_TEMPLATE), 112)
                         for c, p in zip(crops, points)]).view(PreparedChips)

    def embed_prepared(self, chips: np.ndarray) -> np.ndarray:
        self.prepare()
        if not len(chips):
            return np.zeros((0, self.dim), dtype=np.float32)
        x = (np.asarray(chips, dtype=np.float32) - 127.5) / 128.0
        return l2_normalize(self._net.run(x)["embeddings"])



class ArcFaceEmbedder:
    """An insightface ArcFace ONNX model (any pack); input from the 112×112 template warp."""

    def __init__(self, model_file: str | os.PathLike, name: str | None = None, providers=None):
        self.model_file = Path(model_file)
        self.name = name or f"arcface-{self.model_file.stem}"
        self.providers = providers
        self._session = None

    def __getstate__(self):
        return {**self.__dict__, "_session": None}

    def prepare(self):
        if self._session is None:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ImportError("the arcface model needs onnxruntime: pip install 'crowdsort[arcface]'") from None
            self._session = ort.InferenceSession(str(self.model_file), providers=self.providers or onnx_providers())
            inp = self._session.get_inputs()[0]
            self.input_name = inp.name
            self.input_size = tuple(inp.shape[2:4])
            if self.input_size != (112, 112):
                raise ValueError(f"{self.model_file}: input {inp.shape} is not an ArcFace 112x112 model")
            self.dim = self._session.get_outputs()[0].shape[1]
            self.input_mean, self.input_std = self._normalisation()
        return self

    def _normalisation(self) -> tuple[float, float]:
        # insightface's rule: models whose graph starts with Sub and Mul nodes normalise
        # inside; the others expect (x - 127.5) / 127.5.
        try:
            from ..models.onnx_proto import ModelProto

            nodes = ModelProto.FromString(Path(self.model_file).read_bytes()).graph.node[:8]
            names = [n.name for n in nodes]
        except Exception:
            names = []
        has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
        has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
        return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)

    def embed(self, crops: list[np.ndarray], landmarks: list[np.ndarray]) -> np.ndarray:
        self.prepare()
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        batch = np.stack([arcface_input(c, lm.reshape(-1, 2)) for c, lm in zip(crops, landmarks)])
        blob = ((batch.astype(np.float32) - self.input_mean) / self.input_std).transpose(0, 3, 1, 2)
        out = self._session.run(None, {self.input_name: np.ascontiguousarray(blob)})[0]
        return l2_normalize(out)


# The identity model used when none is named; where it cannot be had, DLIB_MODELS[0].
DEFAULT_FACE_MODEL = "mobilefacenet"
FACE_MODELS = ("mobilefacenet", "dlib", "dlib-native", "arcface")


def downloads_allowed(download: bool | None = None) -> bool:
    """``download`` if given, else what :func:`models.offline` allows."""
    from ..models.files import offline

    return (not offline()) if download is None else download


def mobilefacenet_embedder(download: bool | None = None) -> MobileFaceNetEmbedder:
    """MobileFaceNet, its two files installed first where missing and downloads are allowed."""
    from ..models.install import install_on_first_use

    for key in ("mobilefacenet", "mtcnn-onet"):
        try:
            resolve_model_file(key, download=False)
        except ModelNotFoundError:
            if not downloads_allowed(download):
                raise
            install_on_first_use(key)
    return MobileFaceNetEmbedder()


def default_face_embedder(download: bool | None = None):
    """MobileFaceNet, its files installed on first use (one line and a progress bar); dlib,
    with one warning line, where they cannot be had."""
    try:
        return mobilefacenet_embedder(download)
    except (ImportError, ModelNotFoundError) as e:
        log.warning("MobileFaceNet cannot be had (%s): embedding with dlib instead; "
                    "fix: crowdsort models install", str(e).splitlines()[0])
        return dlib_embedder()


def embedder_name(model: str | None = None, weights=None) -> str:
    """The name ``load_embedder(model, weights)`` would give its vectors, without loading or
    installing anything where the name says it (a dry run)."""
    model = model or DEFAULT_FACE_MODEL
    if model in DLIB_MODELS:
        return "dlib"
    if model == "mobilefacenet":
        return MobileFaceNetEmbedder.name
    return load_embedder(model, weights).name


def load_embedder(model: str | None = None, weights: str | os.PathLike | None = None, download: bool | None = None):
    """Embedder by model kind.

    None: :func:`default_face_embedder` (MobileFaceNet, else dlib with a warning).
    ``mobilefacenet``: MobileFaceNet on ONet's five points (files from ``crowdsort models``;
    installed here when missing and downloads are allowed, see :func:`downloads_allowed`).
    ``dlib``: dlib ResNet (files resolved by :func:`resolve_model_file`) run by ONNX Runtime;
    ``dlib-native``: the same network run by dlib itself (same vectors, same cache name).
    ``arcface``: ``weights`` is a pack tag (``buffalo_l`` …, looked up under
    ``$CROWDSORT_INSIGHTFACE_HOME`` or ``~/.insightface/models``), a pack folder, or an
    ``.onnx`` file; default: the config file's ``[arcface] weights``, else ``buffalo_l``.
    """
    if model is None:
        return default_face_embedder(download)
    if model == "mobilefacenet":
        return mobilefacenet_embedder(download)
    if model == "dlib":
        return dlib_embedder()
    if model == "dlib-native":
        return DlibEmbedder()
    if model == "arcface":
        from ..config import resolve

        weights = resolve(weights, None, "arcface", "weights", "buffalo_l")
        p = Path(weights).expanduser()
        if p.suffix == ".onnx":
            if not p.is_file():
                raise ModelNotFoundError(f"ArcFace model file {p} does not exist")
            return ArcFaceEmbedder(p)
        if p.is_dir():
            return ArcFaceEmbedder(recognition_model_in(p, p.name), name=f"arcface-{p.name}")
        if str(weights) in ARCFACE_PACKS or "/" not in str(weights):
            folder = insightface_home() / str(weights)
            return ArcFaceEmbedder(recognition_model_in(folder, str(weights)), name=f"arcface-{weights}")
        raise ModelNotFoundError(f"ArcFace weights {weights!r}: not a pack name ({', '.join(ARCFACE_PACKS)}), folder or .onnx file")
    raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(FACE_MODELS)}")


# Worker processes load the model once each; the batch is handed over as crop paths.
_WORKER = None


def _init_worker(embedder) -> None:
    global _WORKER
    die_with_parent()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = embedder.prepare()


def _read_crops(paths) -> list[np.ndarray]:
    from PIL import Image

    from ..storage.store import DamagedFileError

    crops = []
    for p in paths:
        try:
            with Image.open(p) as im:
                crops.append(np.asarray(im.convert("RGB")))
        except (OSError, ValueError, SyntaxError) as e:
            raise DamagedFileError(
                f"crop {p} cannot be read ({e}); delete it and re-run crowdsort extract-faces on this dataset "
                "(missing crops are made again)") from None
    return crops


def _embed_batch(batch) -> np.ndarray:
    paths, landmarks = batch
    return _WORKER.embed(_read_crops(paths), landmarks)


def _prefetched(embedder, batches):
    """Vectors batch by batch, the next batch's crops read and chips made on a thread while
    the model runs this one. One thread: dlib's landmarking holds the GIL, so more threads
    make chips no faster (measured); ONNX Runtime releases it, so one overlaps the model."""
    from concurrent.futures import ThreadPoolExecutor

    def inputs(batch):
        paths, lms = batch
        return embedder.prepare_batch(_read_crops(paths), lms)

    with ThreadPoolExecutor(1, thread_name_prefix="chips") as pool:
        ahead = pool.submit(inputs, batches[0]) if batches else None
        for i in range(len(batches)):
            ready = ahead.result()
            ahead = pool.submit(inputs, batches[i + 1]) if i + 1 < len(batches) else None
            yield embedder.embed(ready, batches[i][1])


def _raised(task, result):
    if isinstance(result, BaseException):  # a batch of faces cannot be skipped: nothing would cluster them
        raise RuntimeError(f"embedding the batch starting at {task[0][0]} failed on every Ray worker: {result}")
    return result


def default_workers(embedder) -> int:
    """dlib-native runs on one core: a process per core. ONNX Runtime (dlib, ArcFace) uses every core itself."""
    return max(1, os.cpu_count() or 1) if getattr(embedder, "single_threaded", False) else 1


def embed_faces(store, faces, embedder, batch_size: int = 64, progress: bool = True, workers: int | None = None,
                save_every: int = 5000, save_seconds: float = 20.0, backend: str = "local",
                ray_address: str | None = None, ray_gpus: float | None = None) -> np.ndarray:
    """Vectors for the rows of ``faces`` (a faces table), computing only those not cached.

    The cache is keyed by face id and model name, so a re-run embeds only new faces and two
    models' vectors never mix; it is written every ``save_every`` faces or ``save_seconds``,
    so an interrupted run resumes there. ``workers`` processes (default: :func:`default_workers`) share the work
    when there are enough faces to pay for starting them; with ``backend`` ``ray``, ``workers``
    Ray actors (:mod:`crowdsort.scale.ray_backend`), each with ``ray_gpus`` of a GPU (default: the
    cluster's GPUs shared among them). Returns an (n, d) array in the order of ``faces``.
    """
    import copy
    import multiprocessing as mp
    from contextlib import ExitStack

    ids = faces["face_id"].to_numpy()
    dim = getattr(embedder, "dim", None)  # ArcFace knows its dimension only once loaded
    cached_ids, _ = store.load_embeddings(embedder.name, dim)
    todo = faces[~np.isin(ids, cached_ids)]
    if len(todo):
        workers = default_workers(embedder) if workers is None else workers
        workers = min(workers, -(-len(todo) // (4 * batch_size)))  # a worker costs a model load: give it ≥ 4 batches
        batches = [([store.crop_file(p) for p in chunk["crop_path"]],
                    [np.asarray(v, dtype=np.float64) for v in chunk["crop_landmarks"]], list(chunk["face_id"]))
                   for chunk in (todo.iloc[i:i + batch_size] for i in range(0, len(todo), batch_size))]
        bar = tqdm(total=len(todo), disable=not progress, unit="face", desc=f"embed ({embedder.name})")
        with bar, EmbeddingWriter(store, embedder.name, save_every, save_seconds) as writer, ExitStack() as stack:
            if backend == "ray":
                from ..scale.ray_backend import for_actors, run_ordered

                actors = max(1, workers)
                embedder, gpus = for_actors(embedder, actors, ray_address, ray_gpus)
                jobs = [([os.path.abspath(p) for p in paths], lms) for paths, lms, _ in batches]
                results = (_raised(task, r) for task, r in run_ordered(jobs, _embed_batch, _init_worker, (embedder,),
                                                                       actors, ray_address, num_gpus=gpus))
            elif workers <= 1:
                embedder.prepare()
                if hasattr(embedder, "prepare_batch"):
                    results = _prefetched(embedder, [(paths, lms) for paths, lms, _ in batches])
                else:
                    results = (embedder.embed(_read_crops(paths), lms) for paths, lms, _ in batches)
            else:
                if getattr(embedder, "threads", 0) is None:  # ONNX Runtime asked for processes: share the cores
                    embedder = copy.copy(embedder)
                    embedder.threads = max(1, cores() // workers)
                pool = stack.enter_context(mp.get_context("spawn").Pool(workers, initializer=_init_worker,
                                                                        initargs=(embedder,)))
                results = pool.imap(_embed_batch, [(paths, lms) for paths, lms, _ in batches])
            for (_, _, batch_ids), vecs in zip(batches, results):
                writer.add(batch_ids, vecs)
                bar.update(len(batch_ids))
    else:  # all cached, maybe in parts a run killed before its merge left behind
        store.compact_embeddings(embedder.name)
    X, found = store.vectors(embedder.name, ids, getattr(embedder, "dim", None))
    if not found.all():  # e.g. a model that writes NaN for some input: say so, never cluster holes
        raise ValueError(f"{(~found).sum()} faces got no valid {embedder.name} vector (see the warnings above)")
    return X
