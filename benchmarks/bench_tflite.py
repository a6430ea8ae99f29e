"""Network speed of the ``.tflite`` models crowdsort runs, on ONNX Runtime (their conversion,
analysis/models/tflite_onnx.py) and on LiteRT (where ai-edge-litert is installed): faces (or pictures) a
second through the network alone, batch as the pipeline gives it, the best of ``--repeat`` runs.

    python benchmarks/bench_tflite.py [--threads 1] [--repeat 5]

Prints a Markdown table; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# model, input side, batch (MobileFaceNet and ONet: a batch of faces; BlazeFace: one picture)
MODELS = (("mobilefacenet", 112, 64), ("mtcnn-onet", 48, 256), ("blazeface-full", 192, 1), ("blazeface-short", 128, 1))


def best_rate(run, x: np.ndarray, repeat: int, min_s: float = 0.5) -> float:
    run(x)
    best = float("inf")
    for _ in range(repeat):
        n, t = 0, time.perf_counter()
        while (dt := time.perf_counter() - t) < min_s or n == 0:
            run(x)
            n += 1
        best = min(best, dt / n)
    return len(x) / best


def main(argv=None) -> int:
    from crowdsort.models.install import resolve_model_file
    from crowdsort.models.tflite import TFLiteModel
    from crowdsort.models.tflite_onnx import OnnxTFLiteModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        import ai_edge_litert  # noqa: F401

        litert = True
    except ImportError:
        litert = False
    print(f"| model | batch | ONNX Runtime /s | LiteRT /s | ({args.threads} thread(s)) |")
    print("|---|---|---|---|---|")
    for key, size, batch in MODELS:
        path = resolve_model_file(key)
        x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
        onnx = best_rate(OnnxTFLiteModel(path, args.threads, ["CPUExecutionProvider"]).run, x, args.repeat)
        lite = best_rate(TFLiteModel(path, args.threads).run, x, args.repeat) if litert else float("nan")
        print(f"| {key} | {batch} | {onnx:.1f} | {lite:.1f} | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
