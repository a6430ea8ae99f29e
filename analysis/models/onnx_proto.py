"""The ONNX messages crowdsort writes its converted graphs with (and reads a model's first nodes
with), without the ``onnx`` package: ONNX Runtime brings protobuf, and the onnx package (52 MB
installed) was only ever used to build these messages.

The schema is ``onnx/onnx-ml.proto``'s (Apache-2.0, https://github.com/onnx/onnx), cut to the
fields crowdsort sets or reads, with their numbers, types, labels and packing unchanged
(proto2), in a private descriptor pool, so it never meets the onnx package's own registration.
A model parsed here keeps the fields left out as unknown fields. The helpers set fields as
``onnx.helper`` and ``onnx.numpy_helper`` do, so a graph serialises to the same bytes
(tests/test_onnx_proto.py checks both against onnx where it is installed).
"""
from __future__ import annotations

import numbers

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64, "int32": _F.TYPE_INT32,
           "float": _F.TYPE_FLOAT, "double": _F.TYPE_DOUBLE, "uint64": _F.TYPE_UINT64}

# message: [(field, number, type, flags)]; type is a scalar, ".onnx.Message" or "enum .onnx.Enum";
# flags: "r" repeated, "p" packed (repeated), "o" in the oneof ``value``
_MESSAGES = {
    "AttributeProto": [
        ("name", 1, "string", ""), ("ref_attr_name", 21, "string", ""), ("doc_string", 13, "string", ""),
        ("type", 20, "enum .onnx.AttributeProto.AttributeType", ""), ("f", 2, "float", ""), ("i", 3, "int64", ""),
        ("s", 4, "bytes", ""), ("t", 5, ".onnx.TensorProto", ""), ("g", 6, ".onnx.GraphProto", ""),
        ("tp", 14, ".onnx.TypeProto", ""), ("floats", 7, "float", "r"), ("ints", 8, "int64", "r"),
        ("strings", 9, "bytes", "r"), ("tensors", 10, ".onnx.TensorProto", "r"), ("graphs", 11, ".onnx.GraphProto", "r"),
        ("type_protos", 15, ".onnx.TypeProto", "r")],
    "ValueInfoProto": [("name", 1, "string", ""), ("type", 2, ".onnx.TypeProto", ""), ("doc_string", 3, "string", "")],
    "NodeProto": [
        ("input", 1, "string", "r"), ("output", 2, "string", "r"), ("name", 3, "string", ""),
        ("op_type", 4, "string", ""), ("domain", 7, "string", ""), ("overload", 8, "string", ""),
        ("attribute", 5, ".onnx.AttributeProto", "r"), ("doc_string", 6, "string", "")],
    "ModelProto": [
        ("ir_version", 1, "int64", ""), ("opset_import", 8, ".onnx.OperatorSetIdProto", "r"),
        ("producer_name", 2, "string", ""), ("producer_version", 3, "string", ""), ("domain", 4, "string", ""),
        ("model_version", 5, "int64", ""), ("doc_string", 6, "string", ""), ("graph", 7, ".onnx.GraphProto", "")],
    "GraphProto": [
        ("node", 1, ".onnx.NodeProto", "r"), ("name", 2, "string", ""), ("initializer", 5, ".onnx.TensorProto", "r"),
        ("doc_string", 10, "string", ""), ("input", 11, ".onnx.ValueInfoProto", "r"),
        ("output", 12, ".onnx.ValueInfoProto", "r"), ("value_info", 13, ".onnx.ValueInfoProto", "r")],
    "TensorProto": [
        ("dims", 1, "int64", "r"), ("data_type", 2, "int32", ""), ("float_data", 4, "float", "p"),
        ("int32_data", 5, "int32", "p"), ("string_data", 6, "bytes", "r"), ("int64_data", 7, "int64", "p"),
        ("name", 8, "string", ""), ("doc_string", 12, "string", ""), ("raw_data", 9, "bytes", ""),
        ("double_data", 10, "double", "p"), ("uint64_data", 11, "uint64", "p")],
    "TensorShapeProto": [("dim", 1, ".onnx.TensorShapeProto.Dimension", "r")],
    "TensorShapeProto.Dimension": [
        ("dim_value", 1, "int64", "o"), ("dim_param", 2, "string", "o"), ("denotation", 3, "string", "")],
    "TypeProto": [("tensor_type", 1, ".onnx.TypeProto.Tensor", "o"), ("denotation", 6, "string", "")],
    "TypeProto.Tensor": [("elem_type", 1, "int32", ""), ("shape", 2, ".onnx.TensorShapeProto", "")],
    "OperatorSetIdProto": [("domain", 1, "string", ""), ("version", 2, "int64", "")],
}
_ENUMS = {
    "AttributeProto.AttributeType": {
        "UNDEFINED": 0, "FLOAT": 1, "INT": 2, "STRING": 3, "TENSOR": 4, "GRAPH": 5, "SPARSE_TENSOR": 11,
        "TYPE_PROTO": 13, "FLOATS": 6, "INTS": 7, "STRINGS": 8, "TENSORS": 9, "GRAPHS": 10, "SPARSE_TENSORS": 12,
        "TYPE_PROTOS": 14},
    "TensorProto.DataType": {
        "UNDEFINED": 0, "FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6, "INT64": 7,
        "STRING": 8, "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13, "COMPLEX64": 14,
        "COMPLEX128": 15, "BFLOAT16": 16},
}


def _file() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(name="crowdsort/onnx-ml-subset.proto", package="onnx", syntax="proto2")
    made = {}
    for full in sorted(_MESSAGES, key=lambda n: n.count(".")):  # outer messages before nested ones
        outer, _, inner = full.rpartition(".")
        parent = made[outer].nested_type if outer else fd.message_type
        msg = made[full] = parent.add(name=inner)
        if any("o" in flags for *_, flags in _MESSAGES[full]):
            msg.oneof_decl.add(name="value")
        for name, number, kind, flags in _MESSAGES[full]:
            f = msg.field.add(name=name, number=number,
                              label=_F.LABEL_REPEATED if flags in ("r", "p") else _F.LABEL_OPTIONAL)
            if kind.startswith("enum "):
                f.type, f.type_name = _F.TYPE_ENUM, kind[5:]
            elif kind.startswith("."):
                f.type, f.type_name = _F.TYPE_MESSAGE, kind
            else:
                f.type = _SCALAR[kind]
            if flags == "p":
                f.options.packed = True
            if flags == "o":
                f.oneof_index = 0
    for full, values in _ENUMS.items():
        outer, _, inner = full.rpartition(".")
        enum = made[outer].enum_type.add(name=inner)
        for name, number in values.items():
            enum.value.add(name=name, number=number)
    return fd


def _classes() -> dict:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    get = getattr(message_factory, "GetMessageClass", None)  # protobuf 4.21 on
    if get is None:
        get = message_factory.MessageFactory(pool).GetPrototype
    return {name: get(pool.FindMessageTypeByName(f"onnx.{name}")) for name in _MESSAGES if "." not in name}


_C = _classes()
AttributeProto, ValueInfoProto, NodeProto = _C["AttributeProto"], _C["ValueInfoProto"], _C["NodeProto"]
ModelProto, GraphProto, TensorProto = _C["ModelProto"], _C["GraphProto"], _C["TensorProto"]
TypeProto, OperatorSetIdProto = _C["TypeProto"], _C["OperatorSetIdProto"]

_NP_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
             np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint16): TensorProto.UINT16,
             np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
             np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL,
             np.dtype(np.float16): TensorProto.FLOAT16, np.dtype(np.float64): TensorProto.DOUBLE,
             np.dtype(np.uint32): TensorProto.UINT32, np.dtype(np.uint64): TensorProto.UINT64}
_TENSOR_TYPES = {v: k for k, v in _NP_TYPES.items()}


def from_array(arr: np.ndarray, name: str | None = None):
    """A numeric array as a ``TensorProto`` (its little-endian bytes as ``raw_data``)."""
    arr = np.asarray(arr)
    if arr.dtype.newbyteorder("=") not in _NP_TYPES:
        raise TypeError(f"no ONNX tensor type for numpy {arr.dtype}")
    tensor = TensorProto()
    tensor.dims.extend(arr.shape)
    if name:
        tensor.name = name
    tensor.data_type = _NP_TYPES[arr.dtype.newbyteorder("=")]
    tensor.raw_data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
    return tensor


def to_array(tensor) -> np.ndarray:
    """A numeric ``TensorProto``'s values (``raw_data`` or the typed field ONNX keeps them in)."""
    dtype = _TENSOR_TYPES.get(tensor.data_type)
    if dtype is None:
        raise TypeError(f"tensor {tensor.name!r}: ONNX data type {tensor.data_type} is not read here")
    dims = tuple(tensor.dims)
    if tensor.HasField("raw_data"):
        return np.frombuffer(tensor.raw_data, dtype=dtype.newbyteorder("<")).astype(dtype).reshape(dims)
    if dtype == np.float16:  # kept as its bits in int32_data
        return np.asarray(tensor.int32_data, np.uint16).view(np.float16).reshape(dims)
    field = {np.float32: "float_data", np.float64: "double_data", np.int64: "int64_data",
             np.uint32: "uint64_data", np.uint64: "uint64_data"}.get(dtype.type, "int32_data")
    return np.asarray(getattr(tensor, field), dtype).reshape(dims)


def make_attribute(key: str, value):
    """An attribute whose type follows the value's: int, float, str/bytes, or a list of ints or floats."""
    attr = AttributeProto()
    attr.name = key
    if isinstance(value, numbers.Integral):
        attr.i, attr.type = int(value), AttributeProto.INT
    elif isinstance(value, numbers.Real):
        attr.f, attr.type = float(value), AttributeProto.FLOAT
    elif isinstance(value, (str, bytes)):
        attr.s, attr.type = value.encode() if isinstance(value, str) else value, AttributeProto.STRING
    else:
        value = list(value)
        if value and all(isinstance(v, numbers.Integral) for v in value):
            attr.ints.extend(value)
            attr.type = AttributeProto.INTS
        elif value and all(isinstance(v, numbers.Real) for v in value):
            attr.floats.extend(value)
            attr.type = AttributeProto.FLOATS
        else:
            raise TypeError(f"attribute {key!r}: {value!r} is not an int, float or string, or a list of ints or floats")
    return attr


def attribute_value(attr):
    """An attribute's value (``f``, ``i``, ``s``, ``floats`` or ``ints`` by its type)."""
    kind = attr.type
    if kind in (AttributeProto.FLOATS, AttributeProto.INTS):
        return list(attr.floats if kind == AttributeProto.FLOATS else attr.ints)
    field = {AttributeProto.FLOAT: "f", AttributeProto.INT: "i", AttributeProto.STRING: "s"}.get(kind)
    if field is None:
        raise TypeError(f"attribute {attr.name!r} of ONNX type {kind} is not read here")
    return getattr(attr, field)


def make_node(op_type: str, inputs, outputs, name: str | None = None, **attrs):
    """A node; its attributes sorted by name, as onnx.helper stores them."""
    node = NodeProto()
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    if name:
        node.name = name
    node.attribute.extend(make_attribute(k, v) for k, v in sorted(attrs.items()) if v is not None)
    return node


def make_tensor_value_info(name: str, elem_type: int, shape):
    """A graph input or output: a tensor of ``elem_type``, each dimension a size or a name."""
    info = ValueInfoProto()
    info.name = name
    tensor = info.type.tensor_type
    tensor.elem_type = elem_type
    tensor.shape.SetInParent()  # an empty shape is a scalar, not an unknown rank
    for d in shape:
        dim = tensor.shape.dim.add()
        if isinstance(d, str):
            dim.dim_param = d
        else:
            dim.dim_value = int(d)
    return info


def make_graph(nodes, name: str, inputs, outputs, initializer=()):
    graph = GraphProto()
    graph.node.extend(nodes)
    graph.name = name
    graph.input.extend(inputs)
    graph.output.extend(outputs)
    graph.initializer.extend(initializer)
    return graph


def make_opsetid(domain: str, version: int):
    opset = OperatorSetIdProto()
    opset.domain, opset.version = domain, version
    return opset


def make_model(graph, opset_imports, ir_version: int, producer_name: str, doc_string: str | None = None):
    model = ModelProto()
    model.ir_version = ir_version
    model.graph.CopyFrom(graph)
    model.opset_import.extend(opset_imports)
    model.producer_name = producer_name
    if doc_string:
        model.doc_string = doc_string
    return model
