"""The ArcFace path with a small ONNX model generated here (same input/output shape as a pack)."""
import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from crowdsort.faces.embed import ArcFaceEmbedder, load_embedder  # noqa: E402
from crowdsort.models.files import ModelNotFoundError  # noqa: E402


def make_arcface_like(path, dim=512, seed=0):
    """Conv 3→8 (stride 4) → flatten → Gemm to ``dim``: input N×3×112×112, output N×dim."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (8, 3, 4, 4)).astype(np.float32), "w")
    g = numpy_helper.from_array(rng.normal(0, 0.01, (8 * 28 * 28, dim)).astype(np.float32), "g")
    nodes = [
        helper.make_node("Conv", ["input.1", "w"], ["c"], strides=[4, 4]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Flatten", ["r"], ["f"]),
        helper.make_node("Gemm", ["f", "g"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "arcface-like",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", dim])], [w, g])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return make_arcface_like(tmp_path_factory.mktemp("arc") / "w600k_r50.onnx")


def test_embeds_aligned_crops(model_file):
    """512-D unit vectors; the input is the template warp, so a shifted face gives the same vector."""
    from crowdsort.faces.align import CROP_TEMPLATE

    emb = load_embedder("arcface", model_file)
    rng = np.random.default_rng(1)
    crop = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    shifted = np.roll(crop, (7, -5), axis=(0, 1))
    lm = CROP_TEMPLATE
    v = emb.embed([crop, shifted], [lm, lm + [-5, 7]])
    assert v.shape == (2, 512) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    assert float(v[0] @ v[1]) > 0.99
    assert emb.input_mean == 127.5  # no Sub/Mul in the graph: insightface's default scaling


def test_pack_folder_and_home(tmp_path, model_file, monkeypatch):
    pack = tmp_path / "models" / "buffalo_l"
    pack.mkdir(parents=True)
    (pack / "w600k_r50.onnx").write_bytes(model_file.read_bytes())
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_HOME", str(tmp_path / "models"))
    emb = load_embedder("arcface", "buffalo_l")
    assert isinstance(emb, ArcFaceEmbedder) and emb.name == "arcface-buffalo_l"
    assert load_embedder("arcface", pack).model_file == pack / "w600k_r50.onnx"


def test_missing_or_partial_pack_names_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match=r"buffalo_l.*expected w600k_r50.onnx.*folder missing"):
        load_embedder("arcface", "buffalo_l")
    (tmp_path / "buffalo_s").mkdir()
    (tmp_path / "buffalo_s" / "det_500m.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match=r"expected w600k_mbf.onnx \(found: det_500m.onnx\)"):
        load_embedder("arcface", "buffalo_s")


def test_cluster_command_with_arcface(tmp_path, model_file, example_photos):
    """extract → cluster --model arcface end to end; vectors cached apart from dlib's."""
    from crowdsort.cli import main
    from crowdsort.example import build_example
    from crowdsort.storage.store import FaceStore

    build_example(tmp_path / "images", shots_per_person=3)
    ds = tmp_path / "ds"
    assert main(["-q", "extract-faces", "-d", str(ds), "--from", str(tmp_path / "images")]) == 0
    assert main(["-q", "cluster", "-d", str(ds), "--model", "arcface", "--weights", str(model_file)]) == 0
    ids, X = FaceStore(ds / "faces").load_embeddings("arcface-w600k_r50")
    assert X.shape[1] == 512 and len(ids) == len(FaceStore(ds / "faces").load_faces())
    assert (ds / "cluster" / "assignments.csv").exists()
    # identification through the same model: refs embedded with it; a dlib library is refused
    refs = tmp_path / "refs"
    for person in ("eileen_collins", "grace_hopper"):
        (refs / person).mkdir(parents=True)
        src = sorted((tmp_path / "images" / person).glob("*.jpg"))[0]
        (refs / person / src.name).write_bytes(src.read_bytes())
    assert main(["-q", "refs", "embed", str(refs), str(tmp_path / "refs.h5"), "--model", "arcface",
                 "--weights", str(model_file)]) == 0
    assert main(["-q", "identify", "-d", str(ds), "--refs", str(tmp_path / "refs.h5"), "--model", "arcface",
                 "--weights", str(model_file), "--to", str(tmp_path / "ids.csv")]) == 0
    import pandas as pd

    ids_csv = pd.read_csv(tmp_path / "ids.csv")
    assert len(ids_csv) == len(ids) and ids_csv["distance"].between(-0.01, 2.01).all()
    assert main(["-q", "label-clusters", "-d", str(ds), "--refs", str(tmp_path / "refs.h5"),
                 "--weights", str(model_file)]) == 0
    assert main(["-q", "identify", "-d", str(ds), "--refs", str(tmp_path / "refs.h5")]) == 1  # dlib faces vs arcface refs
