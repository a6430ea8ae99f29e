"""The whole-image models of :mod:`crowdsort.things.image_embed` as ONNX graphs, run by ONNX Runtime.

On a CPU, ONNX Runtime runs EfficientNet-Lite0 1.4-2.6× as many images/s as PyTorch on the
same cores, with the same vectors to float rounding; CLIP's ViT-B/32 measured 0.7-0.95×, so
it runs here only when asked for (``benchmarks/bench_images.py``, 2 cores). :func:`onnx_model` exports a model once (``torch.onnx.export``,
opset 17) and keeps the graph in the model cache, named by the SHA-256 of the weights file,
as :mod:`crowdsort.models.dlib_onnx` does for dlib's network.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

from ..models.files import _sha256, cache_dir

log = logging.getLogger(__name__)

# Bump when the exported graph of the same weights changes, so old cached exports are not reused.
GRAPH_VERSION = 1
OPSET = 17
EXPORTS = 0  # exports done by this process (the tests check the cache is reused)


def _tower(embedder):
    """The module mapping preprocessed images (N, 3, H, W) to the embedder's raw vectors."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self, model, forward):
            super().__init__()
            self.model, self._forward = model, forward

        def forward(self, x):
            return self._forward(self.model, x)

    return Tower(embedder.model, type(embedder).forward_vectors).eval().requires_grad_(False)


def export(embedder, path: Path) -> None:
    """Write ``embedder``'s (prepared) torch model to ``path`` as ONNX, batch size free."""
    global EXPORTS
    import torch

    size = embedder.size
    x = torch.zeros(2, 3, size, size, device=next(embedder.model.parameters()).device)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # its fused attention op has no ONNX form
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(_tower(embedder), (x,), str(path), opset_version=OPSET, input_names=["images"],
                              output_names=["vectors"], dynamic_axes={"images": {0: "N"}, "vectors": {0: "N"}},
                              dynamo=False)  # the torch.export path needs onnxscript, not a dependency
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    EXPORTS += 1


def cached_model_path(embedder) -> Path | None:
    """Where the export of ``embedder`` is kept; ``None`` for untrained (random) weights,
    which differ on every load and so are exported each time."""
    key = embedder.weights_key()
    if key is None:
        return None
    digest = _sha256(key) if isinstance(key, Path) else hashlib.sha256(key.encode()).hexdigest()
    return cache_dir() / f"{embedder.name}-{digest[:16]}-g{GRAPH_VERSION}.onnx"


def onnx_model(embedder) -> Path | bytes:
    """The exported model: its path in the model cache (exported there on first use), or the
    model's bytes when the weights are random or the cache cannot be written."""
    target = cached_model_path(embedder)
    if target is not None and target.is_file():
        return target
    folder = target.parent if target is not None else None
    try:
        if folder is None:
            raise OSError("untrained weights are not cached")
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".part-*.onnx"):  # left by an export killed half way
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=".onnx")
        os.close(fd)
    except OSError as e:
        if target is not None:
            log.warning("cannot cache the exported model in %s (%s): exporting on every load", folder, e)
        with tempfile.TemporaryDirectory() as d:
            export(embedder, Path(d) / "model.onnx")
            return (Path(d) / "model.onnx").read_bytes()
    log.info("exporting %s to ONNX (once; kept in %s)", embedder.name, folder)
    try:
        export(embedder, Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a shared cache's other users
        os.replace(tmp, target)  # readers see no file or the whole file, never half
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def open_session(embedder, threads: int | None = None, providers=None):
    """An ONNX Runtime session for ``embedder`` on ``threads`` cores (default: all); a damaged
    cached export is made again."""
    from ..models.ort_session import onnx_session

    return onnx_session(lambda: onnx_model(embedder), threads, providers or ["CPUExecutionProvider"])
