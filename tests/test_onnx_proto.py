"""crowdsort's own ONNX messages (analysis/models/onnx_proto.py): the schema is onnx-ml.proto's
where kept, the helpers write the bytes onnx.helper writes, the converted graphs pass onnx's
checker, and the conversions run where the onnx package is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import crowdsort
from crowdsort.models import onnx_proto as proto
from test_blazeface import model_file  # installed into the user's cache, else skipped (failed under CI)


def test_schema_is_onnx_s_where_kept():
    onnx = pytest.importorskip("onnx")
    ours = proto.ModelProto.DESCRIPTOR.file.pool
    checked = 0
    for name in ["ModelProto", "GraphProto", "NodeProto", "AttributeProto", "TensorProto", "ValueInfoProto",
                 "TypeProto", "TypeProto.Tensor", "TensorShapeProto", "TensorShapeProto.Dimension", "OperatorSetIdProto"]:
        mine = ours.FindMessageTypeByName(f"onnx.{name}")
        theirs = onnx.onnx_ml_pb2.DESCRIPTOR.pool.FindMessageTypeByName(f"onnx.{name}")
        for f in mine.fields:
            t = theirs.fields_by_name[f.name]
            assert (f.number, f.type, f.is_repeated, f.has_presence, f.is_packed) == \
                   (t.number, t.type, t.is_repeated, t.has_presence, t.is_packed), f.full_name
            assert (f.message_type and f.message_type.full_name) == (t.message_type and t.message_type.full_name)
            assert (f.containing_oneof and f.containing_oneof.name) == (t.containing_oneof and t.containing_oneof.name)
            if f.enum_type:
                assert {v.name: v.number for v in f.enum_type.values}.items() <= \
                       {v.name: v.number for v in t.enum_type.values}.items()
            checked += 1
    assert checked > 60


def _graph(helper, numpy_helper, TensorProto):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32), "w"),
             numpy_helper.from_array(np.arange(8, dtype=np.int64), "pads"),
             numpy_helper.from_array(rng.integers(0, 255, (2, 2), dtype=np.uint8), "u8"),
             numpy_helper.from_array(rng.normal(size=3).astype(np.float16), "h"),
             numpy_helper.from_array(np.float32([0.5]).reshape(1, 1, 1, 1), "scalarish")]
    nodes = [helper.make_node("Pad", ["x", "pads"], ["p"], name="pad", mode="constant"),
             helper.make_node("Conv", ["p", "w"], ["c"], name="conv", strides=[1, 1], kernel_shape=[1, 1],
                              auto_pad="VALID", group=1),
             helper.make_node("LeakyRelu", ["c"], ["y"], name="act", alpha=0.25),
             helper.make_node("Resize", ["y", "", "s"], ["z"], scales_unused=[1.0, 2.5])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["n", 4, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8,
                             producer_name="test", doc_string="graph version 1")


def test_helpers_write_onnx_helper_s_bytes():
    onnx = pytest.importorskip("onnx")
    theirs = _graph(onnx.helper, onnx.numpy_helper, onnx.TensorProto)
    ours = _graph(proto, proto, proto.TensorProto)
    assert ours.SerializeToString() == theirs.SerializeToString()


def test_tensors_round_trip_and_onnx_s_typed_fields_read():
    for a in [np.arange(12, dtype=np.float32).reshape(3, 4), np.int64([-1, 5]), np.uint8([[1, 2]]),
              np.float16([0.5, -2]), np.zeros((0, 3), np.float32), np.array(2.5, np.float64)]:
        back = proto.to_array(proto.TensorProto.FromString(proto.from_array(a, "t").SerializeToString()))
        assert back.dtype == a.dtype and back.shape == a.shape and np.array_equal(back, a)
    with pytest.raises(TypeError, match="no ONNX tensor type"):
        proto.from_array(np.array(["a"]))
    onnx = pytest.importorskip("onnx")
    for dtype, values in [(onnx.TensorProto.FLOAT, [1.5, -2.0]), (onnx.TensorProto.INT64, [3, -4]),
                          (onnx.TensorProto.INT32, [7, 8])]:
        typed = onnx.helper.make_tensor("t", dtype, [2], values, raw=False)
        assert not typed.HasField("raw_data")
        mine = proto.to_array(proto.TensorProto.FromString(typed.SerializeToString()))
        assert np.array_equal(mine, onnx.numpy_helper.to_array(typed)) and mine.dtype == onnx.numpy_helper.to_array(typed).dtype


def test_fields_left_out_survive_a_read():
    """A third-party model (ArcFace's) read here keeps what the subset does not name."""
    onnx = pytest.importorskip("onnx")
    model = _graph(onnx.helper, onnx.numpy_helper, onnx.TensorProto)
    onnx.helper.set_model_props(model, {"author": "someone"})
    model.graph.value_info.append(onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, None))
    model.functions.add().name = "f"
    mine = proto.ModelProto.FromString(model.SerializeToString())
    assert [n.name for n in mine.graph.node][:3] == ["pad", "conv", "act"]
    assert onnx.ModelProto.FromString(mine.SerializeToString()) == model


@pytest.mark.parametrize("key", ["blazeface-short", "blazeface-full", "mobilefacenet", "mtcnn-onet", "dlib-resnet"])
def test_converted_graphs_pass_onnx_s_checker(key):
    onnx = pytest.importorskip("onnx")
    if key == "dlib-resnet":
        from crowdsort.models.dlib_onnx import convert

        data = convert(model_file(key))
    else:
        from crowdsort.models.tflite_onnx import convert

        data = convert(model_file(key)).SerializeToString()
    onnx.checker.check_model(onnx.ModelProto.FromString(data), full_check=True)


def test_conversions_run_without_the_onnx_package(tmp_path):
    short = model_file("blazeface-short")
    code = f"""
import sys
sys.modules["onnx"] = None  # import onnx fails, as where it is not installed
import numpy as np
from crowdsort.models.tflite_onnx import OnnxTFLiteModel
from crowdsort.models.dlib_onnx import build_onnx
out = OnnxTFLiteModel({str(short)!r}).run(np.zeros((2, 128, 128, 3), np.float32))
assert {{k: v.shape[0] for k, v in out.items()}} == {{"regressors": 2, "classificators": 2}}, out.keys()
from crowdsort.faces.embed import dlib_embedder
assert type(dlib_embedder()).__name__ == "DlibOnnxEmbedder"
"""
    root = Path(crowdsort.__file__).parents[1]
    env = {**os.environ, "CROWDSORT_CACHE": str(tmp_path),
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert list(tmp_path.glob("face_detection_short_range-*.onnx"))  # converted here, not found in a cache
