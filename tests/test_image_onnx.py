"""Whole-image models on ONNX Runtime (analysis/things/image_onnx.py): the same vectors as PyTorch on
real photos, exported once into the model cache, a damaged export made again, and PyTorch
kept where the export fails."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from crowdsort.things import image_onnx  # noqa: E402
from crowdsort.cli import main  # noqa: E402
from crowdsort.things.image_embed import EfficientNetLite0, create_image_embedder  # noqa: E402
from crowdsort.storage.images import find_images, read_image  # noqa: E402


@pytest.fixture(scope="module")
def real_images(need_shared):
    """The 12 photos of ../shared/data/images (8 categories), preprocessed for EfficientNet."""
    return [read_image(p, max_pixels=4_000_000) for p in find_images(str(need_shared("images")))]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROWDSORT_CACHE", str(tmp_path / "models"))
    return tmp_path / "models"


def _cosines(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_efficientnet_onnx_vectors_equal_torchs_and_are_reused_from_the_cache(real_images, cache):
    """auto runs ONNX Runtime on a CPU with PyTorch's vectors (so both share the cache name);
    a second load reuses the export; a damaged cached export is exported again."""
    before = image_onnx.EXPORTS
    onnx = create_image_embedder("efficientnet").prepare()
    torch_ = create_image_embedder("efficientnet", backend="torch").prepare()
    assert onnx.runs_on == "onnxruntime" and torch_.runs_on == "torch" and onnx.name == torch_.name
    assert image_onnx.EXPORTS == before + 1
    batch = np.stack([onnx.preprocess(rgb) for rgb in real_images])
    cos = _cosines(onnx.embed_batch(batch), torch_.embed_batch(batch))
    assert len(cos) == 12 and np.median(cos) >= 0.9999 and cos.min() >= 0.999, (np.median(cos), cos.min())

    [exported] = cache.glob("efficientnet-lite0-*.onnx")
    mtime = exported.stat().st_mtime_ns
    EfficientNetLite0().prepare()  # a later load, as a new run would do it
    assert image_onnx.EXPORTS == before + 1 and exported.stat().st_mtime_ns == mtime
    assert not [p for p in cache.iterdir() if p.name.startswith(".part-")]  # no temporary file left
    exported.write_bytes(exported.read_bytes()[:1000])  # cut short (a full disk, say)
    again = EfficientNetLite0().prepare()
    assert image_onnx.EXPORTS == before + 2 and again.runs_on == "onnxruntime"
    assert np.allclose(again.embed_batch(batch[:2]), onnx.embed_batch(batch[:2]), atol=1e-4)


def test_failed_export_warns_once_and_runs_on_torch(cache, monkeypatch, caplog):
    def broken(embedder, path):
        raise RuntimeError("no ONNX form for this op")

    monkeypatch.setattr(image_onnx, "export", broken)
    with caplog.at_level(logging.WARNING, logger="crowdsort.things.image_embed"):
        emb = EfficientNetLite0().prepare()
        v = emb.embed_batch(np.zeros((2, 3, 224, 224), np.float32))
        emb.prepare()
    assert emb.runs_on == "torch" and v.shape == (2, 1280)
    assert len(caplog.records) == 1 and "no ONNX form" in caplog.text
    with pytest.raises(RuntimeError, match="no ONNX form"):  # asked for by name: no silent fallback
        EfficientNetLite0(backend="onnx").prepare()
    with pytest.raises(ValueError, match="unknown backend"):
        EfficientNetLite0(backend="tensorrt").prepare()


def test_clustering_images_is_the_same_on_onnx_as_on_torch(tmp_path, need_shared, cache, monkeypatch):
    """crowdsort cluster on images/: the same assignments whichever runs the model."""
    src = str(need_shared("images"))
    runs = []
    for onnx in (True, False):
        monkeypatch.setattr(EfficientNetLite0, "onnx_by_default", onnx)
        ds = tmp_path / f"ds-{onnx}"
        assert main(["-q", "cluster", "-d", str(ds), "--from", src, "--to", "cluster", "--model", "efficientnet",
                     "--min-cluster-size", "2"]) == 0
        runs.append(pd.read_csv(ds / "cluster" / "assignments.csv").sort_values("item_id")["cluster"].to_numpy())
    assert len(runs[0]) == 12 and (runs[0] == runs[1]).all()


def test_clip_onnx_vectors_equal_torchs(real_images, clip_weights, cache):
    """CLIP ViT-B-32 (generated weights, none can be downloaded here) exported with its
    attention, named by the weights file; auto stays on PyTorch, which measured as fast."""
    weights, _ = clip_weights
    torch_ = create_image_embedder("clip", str(weights)).prepare()
    assert torch_.runs_on == "torch"
    onnx = create_image_embedder("clip", str(weights), backend="onnx").prepare()
    assert onnx.runs_on == "onnxruntime" and onnx.name == torch_.name
    [exported] = cache.glob("clip-ViT-B-32-vit-b-32-test-*.onnx")
    batch = np.stack([onnx.preprocess(rgb) for rgb in real_images[:6]])
    cos = _cosines(onnx.embed_batch(batch), torch_.embed_batch(batch))
    assert np.median(cos) >= 0.9999 and cos.min() >= 0.999, (np.median(cos), cos.min())
