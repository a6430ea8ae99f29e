"""Does dlib's ResNet keep its vectors in int8 or fp16 on ONNX Runtime? Cosine to fp32, speed, BCubed.

    python benchmarks/eval_dlib_precision.py [--work scratch/eval] [--calib faces] [--set lfw-dev]

fp32 is the shipped graph (equal to dlib's own vectors to float rounding). Variants: fp16
(weights and activations), int8 dynamic (ConvInteger) and int8 static (QDQ, per-channel,
calibrated on the chips of --calib, measured on --set). For each: faces/s over the chips
(network only), cosine to fp32, BCubed F of the default clustering over identities with ≥ 3
photos and over all, and leave-one-out nearest-neighbour identity accuracy (what
identification leans on). A variant is worth offering only within 0.002 of fp32 on both.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def chips_of(shared: Path, work: Path, name: str):
    from crowdsort.faces.embed import DlibEmbedder, _read_crops
    from benchmarks.eval_clustering import dev_faces

    store, faces, ident = dev_faces(name, shared, work)
    emb = DlibEmbedder()
    emb._prepare_chips()
    chips = np.stack([emb.chip(np.ascontiguousarray(c))
                      for c in _read_crops([store.crop_file(p) for p in faces["crop_path"]])])
    return chips, ident


def to_fp16(src: Path, dst: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    for i, t in enumerate(g.initializer):
        if t.data_type == TensorProto.FLOAT:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    g.node[0].attribute[0].i = TensorProto.FLOAT16  # the input Cast
    last = g.node[-1]
    last.output[0] = "descriptors16"
    g.node.append(helper.make_node("Cast", ["descriptors16"], ["descriptors"], to=TensorProto.FLOAT))
    onnx.save(m, str(dst))


class Chips:
    def __init__(self, chips):
        self.it = iter([{"chips": chips[i:i + 16]} for i in range(0, len(chips), 16)])

    def get_next(self):
        return next(self.it, None)


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run(sess, chips) -> tuple[np.ndarray, float]:
    sess.run(None, {"chips": chips[:8]})
    t = time.perf_counter()
    out = np.vstack([sess.run(None, {"chips": chips[i:i + 64]})[0] for i in range(0, len(chips), 64)])
    dt = time.perf_counter() - t
    out = out.astype(np.float32)
    return out / np.linalg.norm(out, axis=1, keepdims=True), len(chips) / dt


def scores(X, ident) -> tuple[float, float, float]:
    from crowdsort.clustering.cluster import make_clusterer
    from crowdsort.clustering.metrics import bcubed
    from crowdsort.clustering.neighbors import knn_graph
    from crowdsort.pipeline import cluster_params, default_algorithm

    algo = default_algorithm("dlib")
    labels = make_clusterer(algo, **cluster_params(algo)).fit(X, graph=knn_graph(X, 15)).labels_
    counts = pd.Series(ident).value_counts()
    keep = (counts[ident] >= 3).to_numpy()
    S = X @ X.T
    np.fill_diagonal(S, -2)
    has_other = (counts[ident] >= 2).to_numpy()
    nn = ident[S.argmax(axis=1)]
    return bcubed(ident[keep], labels[keep])[2], bcubed(ident, labels)[2], float((nn == ident)[has_other].mean())


def main(argv=None) -> int:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    from crowdsort.models.dlib_onnx import onnx_model

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "eval"))
    ap.add_argument("--calib", default="faces")
    ap.add_argument("--set", default="lfw-dev")
    args = ap.parse_args(argv)
    shared, work = Path(args.shared), Path(args.work)
    calib, _ = chips_of(shared, work, args.calib)
    chips, ident = chips_of(shared, work, args.set)
    fp32 = onnx_model()
    tmp = Path(tempfile.mkdtemp())
    variants = {"fp32": fp32}
    to_fp16(fp32, tmp / "fp16.onnx")
    variants["fp16"] = tmp / "fp16.onnx"
    quantize_dynamic(str(fp32), str(tmp / "int8-dynamic.onnx"), weight_type=QuantType.QUInt8)
    variants["int8 dynamic"] = tmp / "int8-dynamic.onnx"
    quantize_static(str(fp32), str(tmp / "int8-static.onnx"), Chips(calib), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    variants["int8 static"] = tmp / "int8-static.onnx"
    print(f"{args.set}: {len(chips)} faces, {len(set(ident))} identities; int8 static calibrated on "
          f"{len(calib)} chips of {args.calib}")
    print(f"{'variant':<14}{'faces/s':>9}{'1-cos med':>11}{'1-cos max':>11}{'F>=3':>8}{'F all':>8}{'1-NN':>8}")
    ref = None
    for name, path in variants.items():
        try:
            X, fps = run(session(path), chips)
        except Exception as e:  # noqa: BLE001 - a variant this build of onnxruntime cannot run
            print(f"{name:<14} not runnable: {str(e).splitlines()[0][:120]}")
            continue
        ref = X if ref is None else ref
        cos = (X * ref).sum(axis=1)
        f3, fall, nn = scores(X, ident)
        print(f"{name:<14}{fps:>9.1f}{1 - np.median(cos):>11.1e}{1 - cos.min():>11.1e}{f3:>8.3f}{fall:>8.3f}{nn:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
