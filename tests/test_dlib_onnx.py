"""dlib's face ResNet on ONNX Runtime (analysis/models/dlib_onnx.py): same vectors as dlib, converted
once into the model cache, and a damaged .dat refused in one line naming it."""
from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from crowdsort.models import dlib_onnx  # noqa: E402
from crowdsort.faces.embed import DlibEmbedder, DlibOnnxEmbedder, _read_crops, default_workers, load_embedder  # noqa: E402
from crowdsort.models.install import resolve_model_file  # noqa: E402


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDSORT_CACHE", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One conversion for the tests that only need a converted model."""
    folder = tmp_path_factory.mktemp("models")
    old = os.environ.get("CROWDSORT_CACHE")
    os.environ["CROWDSORT_CACHE"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("CROWDSORT_CACHE", None)
    else:
        os.environ["CROWDSORT_CACHE"] = old


def test_onnx_vectors_equal_dlibs_on_real_faces(faces_store, shared_cache):
    faces = faces_store.load_faces().iloc[::2]  # every other photo: dlib's own net takes ~0.15 s a face
    crops = _read_crops([faces_store.crop_file(p) for p in faces["crop_path"]])
    assert len(crops) >= 50
    onnx = load_embedder("dlib")
    assert isinstance(onnx, DlibOnnxEmbedder) and onnx.name == "dlib" and onnx.dim == 128
    got = onnx.embed(crops)
    want = load_embedder("dlib-native").embed(crops)
    cos = (got * want).sum(axis=1)
    assert np.median(cos) >= 0.9999 and cos.min() >= 0.999, (np.median(cos), cos.min())


def test_dlib_native_is_the_same_model_to_the_rest_of_the_code():
    from crowdsort.naming.identify import default_threshold
    from crowdsort.pipeline import default_algorithm

    native = load_embedder("dlib-native")
    assert type(native) is DlibEmbedder and native.name == load_embedder("dlib").name == "dlib"
    assert default_algorithm("dlib-native") == default_algorithm("dlib")
    assert default_threshold("dlib-native") == default_threshold("dlib")
    # dlib's net runs on one core: a process per core; ONNX Runtime spreads over the cores itself
    assert default_workers(load_embedder("dlib")) == 1
    assert default_workers(native) == max(1, os.cpu_count() or 1)


def test_cli_offers_dlib_native():
    from crowdsort.cli import build_parser

    args = build_parser().parse_args(["cluster", "-d", "x", "--model", "dlib-native"])
    assert args.model == "dlib-native"


def test_converted_model_is_cached_and_reused(cache):
    cache.mkdir(parents=True)
    stale = cache / ".part-killed.onnx"  # what a conversion killed half way two hours ago left
    stale.write_bytes(b"half")
    os.utime(stale, (stale.stat().st_atime - 7200, stale.stat().st_mtime - 7200))
    before = dlib_onnx.CONVERSIONS
    first = dlib_onnx.onnx_model()
    assert first.parent == cache and first.suffix == ".onnx" and dlib_onnx.CONVERSIONS == before + 1
    mtime = first.stat().st_mtime_ns
    again = DlibOnnxEmbedder().prepare()  # a later load, as a new run would do it
    assert dlib_onnx.onnx_model() == first and first.stat().st_mtime_ns == mtime
    assert dlib_onnx.CONVERSIONS == before + 1
    assert not [p for p in cache.iterdir() if p.name.startswith(".part-")]  # no temporary file left
    # a cached file cut short (a full disk, say) is converted again rather than failing
    first.write_bytes(first.read_bytes()[:1000])
    assert again._open_session() is not None and dlib_onnx.CONVERSIONS == before + 2


@pytest.mark.parametrize("damage", ["truncated", "garbage", "other-model", "missing"])
def test_damaged_dat_is_one_line_naming_the_file(cache, tmp_path, monkeypatch, damage):
    good = resolve_model_file("dlib-resnet").read_bytes()
    bad = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    if damage == "truncated":
        bad.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    elif damage == "other-model":  # the 5-point shape predictor: a dlib file, not this network
        bad.write_bytes(resolve_model_file("dlib-shape-5").read_bytes())
    monkeypatch.setenv("CROWDSORT_DLIB_RESNET", str(bad))
    with pytest.raises((ValueError, FileNotFoundError)) as e:  # what the CLI prints as one line
        load_embedder("dlib").prepare()
    msg = str(e.value)
    assert str(bad) in msg and "\n" not in msg, msg
    assert "Fix:" in msg or damage == "missing"  # models.py: "model file … (from CROWDSORT_DLIB_RESNET) does not exist"
    assert not list(cache.glob("*.onnx"))  # nothing half-made is cached


def test_without_onnxruntime_dlib_falls_back_to_dlibs_own_network(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    with caplog.at_level(logging.WARNING, logger="crowdsort.faces.embed"):
        emb = load_embedder("dlib")
    assert type(emb) is DlibEmbedder and emb.name == "dlib"
    assert len(caplog.records) == 1 and "onnxruntime" in caplog.text


def test_embed_faces_in_one_process_or_several_gives_the_same_vectors(faces_store, shared_cache, tmp_path):
    import shutil

    from crowdsort.faces.embed import embed_faces
    from crowdsort.storage.store import FaceStore

    store = FaceStore(tmp_path / "faces")
    shutil.copytree(faces_store.root, store.root)
    shutil.rmtree(store.root / "embeddings", ignore_errors=True)
    faces = store.load_faces().iloc[:32]
    emb, calls = load_embedder("dlib"), []
    real = emb.embed
    emb.embed = lambda crops, lms: calls.append(len(crops)) or real(crops, lms)
    one = embed_faces(store, faces, emb, batch_size=4, progress=False)  # chips made a batch ahead
    assert calls == [4] * 8  # ... and still handed to embed, so what wraps it sees every batch
    shutil.rmtree(store.root / "embeddings")
    two = embed_faces(store, faces, load_embedder("dlib"), batch_size=4, progress=False, workers=2)
    direct = load_embedder("dlib").embed(_read_crops([store.crop_file(p) for p in faces["crop_path"]]))
    assert np.allclose(one, two, atol=1e-5) and np.allclose(one, direct, atol=1e-5)
