"""A ``.tflite`` graph as an ONNX graph, for the small float models crowdsort runs (MobileFaceNet,
MTCNN's ONet, BlazeFace short- and full-range): ONNX Runtime runs them batched on every core or a GPU, where LiteRT runs
MobileFaceNet two faces at a time (its graph writes the batch into a reshape).

Activations are NCHW inside the ONNX graph (the model's NHWC input is transposed once at the
start); a flatten or reshape goes back to NHWC first, so the element order TFLite relies on
holds. Per-channel constants meet NCHW tensors reshaped to ``(1, C, 1, 1)``. Weights stored as
float16 (``DEQUANTIZE``), sparse (``DENSIFY``, BlazeFace full-range) or both are folded into float32
constants at conversion, so the ONNX graph holds plain dense weights. Only the
operators these models use are read; any other is refused naming it. :func:`onnx_model_file`
keeps the conversion in the model cache, named after the ``.tflite``'s SHA-256, as
:mod:`crowdsort.models.dlib_onnx` does for dlib's network.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from .files import _sha256, cache_dir
from ..storage.store import atomic_write_bytes

log = logging.getLogger(__name__)

GRAPH_VERSION = 3  # bump when the same .tflite would convert to another graph
_ELEMENTWISE = {"RELU": "Relu", "ABS": "Abs", "NEG": "Neg", "EXP": "Exp"}
_BINARY = {"ADD": "Add", "SUB": "Sub", "MUL": "Mul", "DIV": "Div"}
_PADDING = {0: "SAME_UPPER", 1: "VALID"}  # TFLite's SAME pads the extra pixel at the end, as SAME_UPPER
_FUSED = {0: None, 1: "Relu"}
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32}


def _index_vector(table, kind: int) -> np.ndarray:
    """A DimensionMetadata's segments or indices (a union of int32, uint16 and uint8 vectors)."""
    import tflite

    cls = {1: tflite.Int32Vector, 2: tflite.Uint16Vector, 3: tflite.Uint8Vector}.get(kind)
    if cls is None:
        raise UnsupportedModelError(f"sparse index vector of kind {kind}")
    vec = cls()
    vec.Init(table.Bytes, table.Pos)
    return vec.ValuesAsNumpy().astype(np.int64)


def densify(values: np.ndarray, shape: list[int], sparsity) -> np.ndarray:
    """A TFLite sparse tensor (its stored ``values`` and ``SparsityParameters``) as a dense array:
    the dimension metadata is walked in traversal order (DENSE levels count, SPARSE_CSR levels read
    their segments and indices), block dimensions folded back into the dimension they split."""
    order = [int(d) for d in sparsity.TraversalOrderAsNumpy()]
    block_map = [int(d) for d in sparsity.BlockMapAsNumpy()] if sparsity.BlockMapLength() else []
    levels = []
    for i in range(sparsity.DimMetadataLength()):
        dm = sparsity.DimMetadata(i)
        if dm.Format() == 0:
            levels.append(("dense", int(dm.DenseSize()), None))
        else:
            levels.append(("csr", _index_vector(dm.ArraySegments(), dm.ArraySegmentsType()),
                           _index_vector(dm.ArrayIndices(), dm.ArrayIndicesType())))
    rank = len(shape)
    block_size = {block_map[k]: levels[rank + k][1] for k in range(len(block_map))}
    # coords[j]: every stored value's coordinate along traversal level j
    parents = np.zeros(1, np.int64)  # each current node's position in its level
    coords = []
    for kind, a, b in levels:
        if kind == "dense":
            reps = np.repeat(np.arange(len(parents)), a)
            coords = [c[reps] for c in coords] + [np.tile(np.arange(a), len(parents))]
            parents = parents[reps] * a + coords[-1]
        else:
            seg, idx = a, b
            counts = seg[parents + 1] - seg[parents]
            reps = np.repeat(np.arange(len(parents)), counts)
            starts = np.repeat(seg[parents] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            pos = starts + np.arange(int(counts.sum()))
            coords = [c[reps] for c in coords] + [idx[pos]]
            parents = pos
    if len(parents) != values.size:
        raise UnsupportedModelError(f"sparse tensor: {values.size} values for {len(parents)} positions")
    full = [None] * rank
    for j, dim in enumerate(order[:rank]):
        full[dim] = coords[j]
    for k, dim in enumerate(block_map):
        full[dim] = full[dim] * block_size[dim] + coords[rank + k]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(full)] = values.reshape(-1)
    return dense


class UnsupportedModelError(ValueError):
    """The .tflite uses an operator or type this converter does not read."""


def _op_names() -> dict[int, str]:
    from tflite.BuiltinOperator import BuiltinOperator

    return {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}


def _options(op, cls):
    opt = cls()
    table = op.BuiltinOptions()
    opt.Init(table.Bytes, table.Pos)
    return opt


def convert(path: str | os.PathLike):
    """The ONNX ``ModelProto`` of the ``.tflite`` at ``path`` (first subgraph; batch left free)."""
    import tflite

    from . import onnx_proto as proto
    from .onnx_proto import TensorProto

    buf = Path(path).read_bytes()
    model = tflite.Model.GetRootAsModel(buf, 0)
    g = model.Subgraphs(0)
    names = _op_names()
    nodes, inits = [], []
    nchw: set[int] = set()  # tensors held as NCHW in the ONNX graph
    folded: dict[int, np.ndarray] = {}  # constants made at conversion (DEQUANTIZE, DENSIFY)

    def tname(t: int) -> str:
        return f"t{t}"

    def const(t: int) -> np.ndarray | None:
        if t in folded:
            return folded[t]
        b = model.Buffers(g.Tensors(t).Buffer())
        if b is None or b.DataLength() == 0:
            return None
        tensor = g.Tensors(t)
        dtype = _DTYPES.get(tensor.Type())
        if dtype is None:
            raise UnsupportedModelError(f"{path}: tensor {tensor.Name().decode()} of TFLite type {tensor.Type()}")
        values = np.frombuffer(b.DataAsNumpy().tobytes(), dtype=dtype)
        if tensor.Sparsity() is not None:
            return densify(values, [int(d) for d in tensor.ShapeAsNumpy()], tensor.Sparsity())
        return values.reshape(tensor.ShapeAsNumpy())

    def shape_of(t: int) -> list[int]:
        return [int(d) for d in g.Tensors(t).ShapeAsNumpy()]

    def add_init(name: str, value: np.ndarray) -> str:
        inits.append(proto.from_array(np.ascontiguousarray(value), name))
        return name

    def node(kind, ins, outs, **attrs):
        nodes.append(proto.make_node(kind, ins, outs, name=f"n{len(nodes)}", **attrs))

    def nhwc(t: int) -> str:
        """The tensor in TFLite's own layout (a transpose where it is held NCHW)."""
        if t not in nchw:
            return tname(t)
        out = f"{tname(t)}_nhwc"
        node("Transpose", [tname(t)], [out], perm=[0, 2, 3, 1])
        return out

    def operand(t: int, other: int) -> str:
        value = const(t)
        if value is None:
            return tname(t)
        if other in nchw and value.ndim >= 1 and value.size > 1:
            value = value.reshape(-1)[None, :, None, None] if value.ndim == 1 else value.transpose(0, 3, 1, 2)
        return add_init(f"c{t}_{len(inits)}", value.astype(np.float32))

    def fused(out: int, kind_code: int) -> list[str]:
        act = _FUSED.get(kind_code, "?")
        if act == "?":
            raise UnsupportedModelError(f"{path}: fused activation {kind_code}")
        return [tname(out)] if act is None else [f"{tname(out)}_pre"]

    def finish(out: int, kind_code: int) -> None:
        if _FUSED[kind_code]:
            node(_FUSED[kind_code], [f"{tname(out)}_pre"], [tname(out)])

    (inp,) = g.InputsAsNumpy()
    in_shape = [int(d) for d in g.Tensors(inp).ShapeAsNumpy()]
    graph_in = proto.make_tensor_value_info("input", TensorProto.FLOAT, ["n", *in_shape[1:]])
    node("Transpose", ["input"], [tname(inp)], perm=[0, 3, 1, 2])
    nchw.add(inp)

    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        kind = names.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
        ins = [int(t) for t in op.InputsAsNumpy()]
        (out,) = [int(t) for t in op.OutputsAsNumpy()]
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            depthwise = kind == "DEPTHWISE_CONV_2D"
            o = _options(op, tflite.DepthwiseConv2DOptions if depthwise else tflite.Conv2DOptions)
            w = const(ins[1])
            # TFLite: conv (out, kh, kw, in), depthwise (1, kh, kw, out); ONNX: (out, in/group, kh, kw)
            w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
            args = [tname(ins[0]), add_init(f"w{out}", w)]
            if len(ins) > 2 and ins[2] >= 0:
                args.append(add_init(f"b{out}", const(ins[2])))
            attrs = dict(strides=[o.StrideH(), o.StrideW()], dilations=[o.DilationHFactor(), o.DilationWFactor()],
                         auto_pad=_PADDING[o.Padding()], kernel_shape=list(w.shape[2:]))
            if depthwise:
                attrs["group"] = int(w.shape[0])
            node("Conv", args, fused(out, o.FusedActivationFunction()), **attrs)
            finish(out, o.FusedActivationFunction())
            nchw.add(out)
        elif kind == "MAX_POOL_2D":
            o = _options(op, tflite.Pool2DOptions)
            node("MaxPool", [tname(ins[0])], fused(out, o.FusedActivationFunction()),
                 kernel_shape=[o.FilterHeight(), o.FilterWidth()], strides=[o.StrideH(), o.StrideW()],
                 auto_pad=_PADDING[o.Padding()])
            finish(out, o.FusedActivationFunction())
            nchw.add(out)
        elif kind in _ELEMENTWISE:
            node(_ELEMENTWISE[kind], [tname(ins[0])], [tname(out)])
            if ins[0] in nchw:
                nchw.add(out)
        elif kind in _BINARY:
            a, b = ins
            act = 0
            opts = {"ADD": tflite.AddOptions, "SUB": tflite.SubOptions, "MUL": tflite.MulOptions,
                    "DIV": tflite.DivOptions}[kind]
            if op.BuiltinOptions() is not None:
                act = _options(op, opts).FusedActivationFunction()
            node(_BINARY[kind], [operand(a, b), operand(b, a)], fused(out, act))
            finish(out, act)
            if a in nchw or b in nchw:
                nchw.add(out)
        elif kind == "FULLY_CONNECTED":
            o = _options(op, tflite.FullyConnectedOptions)
            flat = f"{tname(out)}_flat"
            node("Flatten", [nhwc(ins[0])], [flat], axis=1)
            args = [flat, add_init(f"w{out}", const(ins[1]))]
            if len(ins) > 2 and ins[2] >= 0:
                args.append(add_init(f"b{out}", const(ins[2])))
            node("Gemm", args, fused(out, o.FusedActivationFunction()), transB=1)
            finish(out, o.FusedActivationFunction())
        elif kind == "RESHAPE":
            shape = [int(d) for d in g.Tensors(out).ShapeAsNumpy()]
            node("Reshape", [nhwc(ins[0]), add_init(f"s{out}", np.array([-1, *shape[1:]], np.int64))], [tname(out)])
        elif kind in ("DEQUANTIZE", "DENSIFY"):
            value = const(ins[0])
            if value is None:
                raise UnsupportedModelError(f"{path}: {kind} of a tensor computed at run time")
            folded[out] = value.astype(np.float32) if kind == "DEQUANTIZE" else value
        elif kind == "PAD":
            pads = const(ins[1]).astype(np.int64)  # (rank, 2): before, after per NHWC axis
            if ins[0] in nchw:
                pads = pads[[0, 3, 1, 2]]
                nchw.add(out)
            node("Pad", [tname(ins[0]), add_init(f"p{out}", np.concatenate([pads[:, 0], pads[:, 1]]))],
                 [tname(out)], mode="constant")
        elif kind == "CONCATENATION":
            o = _options(op, tflite.ConcatenationOptions)
            axis = o.Axis() % len(shape_of(out))
            if all(t in nchw for t in ins):
                axis = [0, 2, 3, 1][axis]
                srcs = [tname(t) for t in ins]
                nchw.add(out)
            else:
                srcs = [nhwc(t) for t in ins]
            node("Concat", srcs, fused(out, o.FusedActivationFunction()), axis=axis)
            finish(out, o.FusedActivationFunction())
        elif kind == "RESIZE_BILINEAR":
            o = _options(op, tflite.ResizeBilinearOptions)
            if ins[0] not in nchw:
                raise UnsupportedModelError(f"{path}: {kind} of a tensor that is not an image")
            (ih, iw), (oh, ow) = shape_of(ins[0])[1:3], [int(d) for d in const(ins[1])]
            mode = "align_corners" if o.AlignCorners() else "half_pixel" if o.HalfPixelCenters() else "asymmetric"
            node("Resize", [tname(ins[0]), "", add_init(f"r{out}", np.array([1, 1, oh / ih, ow / iw], np.float32))],
                 [tname(out)], mode="linear", coordinate_transformation_mode=mode)
            nchw.add(out)
        elif kind == "DEPTH_TO_SPACE":
            o = _options(op, tflite.DepthToSpaceOptions)
            if ins[0] not in nchw:
                raise UnsupportedModelError(f"{path}: {kind} of a tensor that is not an image")
            # TFLite's NHWC depth-to-space reads channels as (block row, block column, channel): DCR
            node("DepthToSpace", [tname(ins[0])], [tname(out)], blocksize=o.BlockSize(), mode="DCR")
            nchw.add(out)
        elif kind in ("REDUCE_MAX", "SUM"):
            o = _options(op, tflite.ReducerOptions)
            axes = np.atleast_1d(const(ins[1])).astype(np.int64)
            if ins[0] in nchw:
                raise UnsupportedModelError(f"{path}: {kind} over a 4-D activation")
            node("ReduceMax" if kind == "REDUCE_MAX" else "ReduceSum",
                 [tname(ins[0]), add_init(f"a{out}", axes)], [tname(out)], keepdims=int(o.KeepDims()))
        else:
            raise UnsupportedModelError(f"{path}: TFLite operator {kind} is not converted")

    outputs = []
    for t in g.OutputsAsNumpy():
        t = int(t)
        name = g.Tensors(t).Name().decode()
        node("Identity", [nhwc(t)], [name])
        shape = [int(d) for d in g.Tensors(t).ShapeAsNumpy()]
        outputs.append(proto.make_tensor_value_info(name, TensorProto.FLOAT, ["n", *shape[1:]]))
    nodes, inits = _fuse_prelu(nodes, inits)
    nodes, inits = _fuse_pads(nodes, inits)
    graph = proto.make_graph(nodes, Path(path).stem, [graph_in], outputs, inits)
    # opset 18 (reductions take their axes as an input), IR 8: ONNX Runtime 1.14 on
    return proto.make_model(graph, opset_imports=[proto.make_opsetid("", 18)], ir_version=8,
                            producer_name="crowdsort.tflite_onnx")


def _fuse_prelu(nodes: list, inits: list) -> tuple[list, list]:
    """The two spellings of PReLU these graphs use, made one PRelu node each:
    ``relu(x) + c · (x − |x|)`` (MobileFaceNet: slope 2c) and ``relu(x) + c · −relu(−x)`` (ONet:
    slope c). Five element-wise passes over the activation become one (ONNX Runtime runs the
    converted MobileFaceNet ~2.5× slower without this)."""
    from . import onnx_proto as proto

    made = {n.output[0]: n for n in nodes}
    consts = {t.name: t for t in inits}
    fused, dead, new_inits = {}, set(), []

    def producer(name, kind):
        n = made.get(name)
        return n if n is not None and n.op_type == kind else None

    for n in nodes:
        if n.op_type != "Add":
            continue
        relu, mul = (producer(n.input[0], "Relu"), producer(n.input[1], "Mul"))
        if relu is None or mul is None:
            continue
        c_name, other = (mul.input[0], mul.input[1]) if mul.input[0] in consts else (mul.input[1], mul.input[0])
        if c_name not in consts:
            continue
        x = relu.input[0]
        sub, neg = producer(other, "Sub"), producer(other, "Neg")
        if sub is not None and sub.input[0] == x and (a := producer(sub.input[1], "Abs")) is not None and a.input[0] == x:
            factor, chain = 2.0, [sub, a]
        elif (neg is not None and (r := producer(neg.input[0], "Relu")) is not None
              and (m := producer(r.input[0], "Neg")) is not None and m.input[0] == x):
            factor, chain = 1.0, [neg, r, m]
        else:
            continue
        slope = (proto.to_array(consts[c_name]) * factor).astype(np.float32)
        name = f"{c_name}_prelu"
        new_inits.append(proto.from_array(slope, name))
        fused[id(n)] = proto.make_node("PRelu", [x, name], [n.output[0]], name=f"{n.name}_prelu")
        dead.update(id(k) for k in [relu, mul, *chain])
    nodes = [fused.get(id(n), n) for n in nodes if id(n) not in dead]
    used = {i for n in nodes for i in n.input}
    return nodes, [t for t in inits + new_inits if t.name in used]


def _fuse_pads(nodes: list, inits: list) -> tuple[list, list]:
    """TFLite's explicit zero ``PAD`` ops, made ONNX Runtime-friendly (BlazeFace has 43 of 91 convs
    behind one; each ``Pad`` also leaves ONNX Runtime's blocked NCHWc layout and back: 44% of the
    full-range model's time): a spatial pad feeding only a VALID ``Conv`` becomes the conv's own
    ``pads``; a pad of channels at their end (BlazeFace's residuals as channels grow) a 1×1 ``Conv``
    copying the channels in, zeros after."""
    from . import onnx_proto as proto

    consts = {t.name: t for t in inits}
    users: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            users.setdefault(i, []).append(n)
    channels = {}  # a tensor's channel count, where a Conv's weights tell it (and ops keeping it pass it on)
    for n in nodes:
        if n.op_type == "Conv" and n.input[1] in consts:
            channels[n.output[0]] = int(consts[n.input[1]].dims[0])
        elif n.op_type in ("Relu", "MaxPool", "Add", "PRelu") and n.input[0] in channels:
            channels[n.output[0]] = channels[n.input[0]]
        elif n.op_type == "Pad" and n.input[0] in channels and n.input[1] in consts:
            pads = proto.to_array(consts[n.input[1]]).astype(int)
            if len(pads) == 8:
                channels[n.output[0]] = channels[n.input[0]] + int(pads[1] + pads[5])
    replaced, dead, new_inits = {}, set(), []

    def attr(n, name, default=None):
        return next((proto.attribute_value(a) for a in n.attribute if a.name == name), default)

    for n in nodes:
        if n.op_type != "Pad" or n.input[1] not in consts or len(n.input) > 2 and n.input[2]:
            continue
        pads = proto.to_array(consts[n.input[1]]).astype(int)
        if len(pads) != 8 or (pads < 0).any() or attr(n, "mode", b"constant") not in (b"constant", "constant"):
            continue
        begin, end = pads[:4], pads[4:]
        after = users.get(n.output[0], [])
        if not begin[:2].any() and not end[:2].any():  # spatial only: into the convs' pads
            if not after or any(u.op_type != "Conv" or u.input[0] != n.output[0]
                                or attr(u, "auto_pad", b"NOTSET") not in (b"VALID", "VALID") for u in after):
                continue
            for u in after:
                kept = [a for a in u.attribute if a.name != "auto_pad"]
                del u.attribute[:]
                u.attribute.extend(kept)
                u.attribute.append(proto.make_attribute("pads", [int(begin[2]), int(begin[3]), int(end[2]), int(end[3])]))
                u.input[0] = n.input[0]
            dead.add(id(n))
        elif not begin.any() and not end[0] and not end[2:].any() and n.input[0] in channels:
            c_in = channels[n.input[0]]
            w = np.zeros((c_in + int(end[1]), c_in, 1, 1), np.float32)
            w[np.arange(c_in), np.arange(c_in)] = 1.0
            name = f"{n.output[0]}_eye"
            new_inits.append(proto.from_array(w, name))
            replaced[id(n)] = proto.make_node("Conv", [n.input[0], name], [n.output[0]], name=f"{n.name}_conv",
                                               kernel_shape=[1, 1])
    nodes = [replaced.get(id(n), n) for n in nodes if id(n) not in dead]
    used = {i for n in nodes for i in n.input}
    return nodes, [t for t in inits + new_inits if t.name in used]


def onnx_model_file(tflite_path: str | os.PathLike) -> Path:
    """The ONNX conversion of ``tflite_path``, made once and kept in the model cache under the
    source's SHA-256 (a changed file is converted again)."""
    tflite_path = Path(tflite_path)
    dest = cache_dir() / f"{tflite_path.stem}-{_sha256(tflite_path)[:16]}-v{GRAPH_VERSION}.onnx"
    if dest.is_file():
        return dest
    atomic_write_bytes(dest, convert(tflite_path).SerializeToString())
    log.info("converted %s to ONNX: %s", tflite_path.name, dest)
    return dest


class OnnxTFLiteModel:
    """A ``.tflite`` run by ONNX Runtime through its conversion, with :class:`~crowdsort.models.tflite.TFLiteModel`'s
    ``run(x) -> {output name: array}``; any batch size at once, CUDA where present."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None, providers=None):
        self.path, self.threads, self.providers = Path(path), threads, providers
        self._session = None

    def __getstate__(self):
        return {"path": self.path, "threads": self.threads, "providers": self.providers}

    def __setstate__(self, state):
        self.__init__(**state)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        if self._session is None:
            from .ort_session import onnx_providers, onnx_session

            self._session = onnx_session(lambda: onnx_model_file(self.path), self.threads,
                                         self.providers or onnx_providers())
            self._names = [o.name for o in self._session.get_outputs()]
        outs = self._session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})
        return dict(zip(self._names, outs))
