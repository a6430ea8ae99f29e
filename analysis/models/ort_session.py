"""ONNX Runtime sessions as crowdsort opens them (no model code here, so the face detector and the
converted ``.tflite`` models load without :mod:`crowdsort.faces.embed`'s imports)."""
from __future__ import annotations

import logging

from ..scale.workers import cores

log = logging.getLogger(__name__)


def onnx_providers() -> list[str]:
    """ONNX Runtime's providers in the order crowdsort wants them: CUDA where the installed build
    has it, else the CPU."""
    import onnxruntime as ort

    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]


def onnx_session(make_model, threads: int | None, providers):
    """An ONNX Runtime session on ``threads`` cores (default: all) of the model ``make_model()``
    gives (a path in the model cache, or the bytes when it cannot be written); a cached file
    that does not load (disk full, a copy cut short) is made again."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or cores()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    def session(model):
        return ort.InferenceSession(model if isinstance(model, bytes) else str(model), opts, providers=providers)

    model = make_model()
    try:
        return session(model)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own, unexported classes
        if isinstance(model, bytes):
            raise
        log.warning("cached %s does not load (%s): making it again", model, str(e).splitlines()[0])
        model.unlink(missing_ok=True)
        return session(make_model())
