"""Running a ``.tflite`` model on numpy arrays: ONNX Runtime over the file's conversion
(:mod:`crowdsort.models.tflite_onnx`, always there), or LiteRT (``ai-edge-litert``, an optional extra: it
needs ml-dtypes) where it is installed.

Some graphs fix their batch inside (MobileFaceNet reshapes to ``[2, 192]``): where the
interpreter cannot be resized to a batch, that batch is run in pieces of the model's own size.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

RUNTIMES = ("litert", "onnx")


def open_tflite(path: str | os.PathLike, threads: int | None = None, runtime: str | None = None):
    """A runner for the ``.tflite`` at ``path``: LiteRT (``litert``, the faster on a CPU for MobileFaceNet,
    ~2× ONNX Runtime's speed: ONNX Runtime runs its 33 per-channel PReLUs outside its blocked conv
    layout) where it is installed and no GPU is, else ONNX Runtime over the file's conversion
    (``onnx``: any batch at once, CUDA where present). ``runtime`` or ``$CROWDSORT_TFLITE_RUNTIME``
    chooses; both give the same outputs to float rounding."""
    runtime = runtime or os.environ.get("CROWDSORT_TFLITE_RUNTIME") or None
    if runtime not in (None, *RUNTIMES):
        raise ValueError(f"unknown .tflite runtime {runtime!r}; choose one of: {', '.join(RUNTIMES)}")
    if runtime is None:
        from .ort_session import onnx_providers

        try:
            gpu = "CUDAExecutionProvider" in onnx_providers()
        except ImportError:
            gpu = False
        try:
            import ai_edge_litert  # noqa: F401

            runtime = "onnx" if gpu else "litert"
        except ImportError:
            runtime = "onnx"
    if runtime == "onnx":
        from .tflite_onnx import OnnxTFLiteModel

        return OnnxTFLiteModel(path, threads)
    return TFLiteModel(path, threads)


@contextlib.contextmanager
def _native_stderr_quiet():
    """LiteRT's C++ writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to
    file descriptor 2 for every interpreter; nothing in Python turns it off. Its errors still
    reach the caller as exceptions."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (a notebook kernel's may be a pipe we keep)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class TFLiteModel:
    """One interpreter over ``path``; ``run(x)`` returns ``{output name: array}`` for a batch."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path, self.threads = Path(path), threads
        self._it = None

    def __getstate__(self):  # a worker process opens the file itself
        return {"path": self.path, "threads": self.threads}

    def __setstate__(self, state):
        self.__init__(**state)

    def _open(self):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ImportError("the litert runtime needs ai-edge-litert: pip install ai-edge-litert "
                              "(or use runtime onnx, the default without it)") from None
        from ..scale.workers import cores

        try:
            with _native_stderr_quiet():
                self._it = Interpreter(model_path=str(self.path), num_threads=self.threads or cores())
                self._it.allocate_tensors()
        except ValueError as e:
            raise ValueError(f"{self.path} is not a readable .tflite model ({e}); "
                             "delete it and run: crowdsort models install") from None
        detail = self._it.get_input_details()[0]
        self._input, self._native = detail["index"], int(detail["shape"][0])
        self._outputs = [(d["name"], d["index"]) for d in self._it.get_output_details()]
        self._batch, self._fixed = self._native, False

    def _resize(self, n: int) -> bool:
        if self._fixed or n == self._batch:
            return n == self._batch
        shape = list(self._it.get_input_details()[0]["shape"])
        self._it.resize_tensor_input(self._input, [n, *shape[1:]])
        try:
            self._it.allocate_tensors()
        except RuntimeError:  # a reshape with the batch written in: keep the model's own
            self._it.resize_tensor_input(self._input, [self._native, *shape[1:]])
            self._it.allocate_tensors()
            self._batch, self._fixed = self._native, True
            return False
        self._batch = n
        return True

    def _invoke(self, x: np.ndarray) -> list[np.ndarray]:
        self._it.set_tensor(self._input, x)
        self._it.invoke()
        return [self._it.get_tensor(i).copy() for _, i in self._outputs]

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._it is None:
            self._open()
        x = np.ascontiguousarray(x, dtype=np.float32)
        n = len(x)
        if self._resize(n):
            outs = self._invoke(x)
        else:
            b = self._batch
            pad = (-n) % b
            if pad:
                x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
            parts = [self._invoke(x[i:i + b]) for i in range(0, len(x), b)]
            outs = [np.concatenate(p)[:n] for p in zip(*parts)]
        return {name: out for (name, _), out in zip(self._outputs, outs)}
