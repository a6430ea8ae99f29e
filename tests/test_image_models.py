"""Whole-image clustering: EfficientNet-Lite0 (offline default) and the CLIP loading path."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

from crowdsort.cli import main  # noqa: E402
from crowdsort.things.image_embed import EfficientNetLite0, create_image_embedder  # noqa: E402
from crowdsort.models.files import ModelNotFoundError  # noqa: E402


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0().prepare()


def test_efficientnet_weights_and_preprocessing_classify_correctly(effnet):
    """The mapped weights with (x - 127) / 128 recognise ImageNet classes: the cat and the espresso."""
    import skimage.data
    import torch

    for img, classes in [(skimage.data.chelsea(), range(281, 286)), (skimage.data.coffee(), [967, 968])]:
        with torch.inference_mode():
            logits = effnet.model(torch.from_numpy(effnet.preprocess(img)[None]))
        assert int(logits.argmax()) in classes
    v = effnet.embed_batch(effnet.preprocess(skimage.data.coffee())[None])
    assert v.shape == (1, 1280)


@pytest.fixture(scope="module")
def mixed_photos(tmp_path_factory, need_shared):
    """../shared/data/images (8 categories, no people) plus 20 photos of people from faces/."""
    images = need_shared("images")
    faces = need_shared("faces")
    root = tmp_path_factory.mktemp("mixed") / "photos"
    shutil.copytree(images, root / "images", ignore=shutil.ignore_patterns("*.md"))
    people = sorted(p for d in ("obama", "biden", "angelina", "jennifer", "mark", "jack", "elon", "marissa",
                                "sundar", "jeff", "kit_harington", "rose_leslie") for p in (faces / d).glob("*.jpg"))[:20]
    (root / "people").mkdir()
    for p in people:
        shutil.copy(p, root / "people" / f"{p.parent.name}-{p.name}")
    (root / "images" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


def test_efficientnet_separates_people_photos_from_animals(tmp_path, mixed_photos):
    """The check: the nearest neighbour of each people photo is a people photo (≥ 0.9), at most
    one of the six animal photos (animals/cats/dogs) has a people photo as nearest neighbour
    (the lone cat has no other cat to be near), and no cluster at --min-cluster-size 2 mixes
    people and animals. Fair because the people photos are full
    news/portrait photos (backgrounds, clothes), not face crops, and the animals include the
    dog-face collage, the hardest negative for a face-like signal."""
    ds = tmp_path / "ds"
    assert main(["-q", "cluster", "-d", str(ds), "--from", str(mixed_photos), "--to", "cluster",
                 "--model", "efficientnet", "--min-cluster-size", "2"]) == 0
    items = pd.read_csv(ds / "cluster" / "assignments.csv")
    info = json.loads((ds / "cluster" / "clusters.json").read_text())
    assert len(items) == 32 and any("broken.jpg" in e for e in info["errors"])
    kind = items["source_image"].map(lambda p: "people" if "/people/" in p else Path(p).parent.name).to_numpy()

    from crowdsort.storage.store import FaceStore

    ids, X = FaceStore(ds / "images").load_embeddings("efficientnet-lite0")
    X = X[[list(ids).index(i) for i in items["item_id"]]]
    S = X @ X.T
    np.fill_diagonal(S, -np.inf)
    nn = kind[S.argmax(1)]
    people = kind == "people"
    animals = np.isin(kind, ["animals", "cats", "dogs"])
    print(f"people photos with a people photo as nearest neighbour: {(nn[people] == 'people').mean():.3f}")
    assert (nn[people] == "people").mean() >= 0.9
    assert (nn[animals] == "people").sum() <= 1
    for c, g in items[items["cluster"] >= 0].groupby("cluster"):
        k = set(kind[g.index])
        assert not ("people" in k and k & {"animals", "cats", "dogs"}), (c, k)
    # same category nearer than other categories, for most images of categories with ≥ 2 images
    multi = [i for i in range(len(kind)) if (kind == kind[i]).sum() >= 2 and kind[i] != "people"]
    S2 = X @ X.T
    nearer = [S2[i, (kind == kind[i]) & (np.arange(len(kind)) != i)].mean() > S2[i, kind != kind[i]].mean() for i in multi]
    assert np.mean(nearer) >= 0.7

    # a re-run embeds nothing new: every vector comes from the cache
    calls = []
    orig = EfficientNetLite0.embed_batch
    EfficientNetLite0.embed_batch = lambda self, b: calls.append(len(b)) or orig(self, b)
    try:
        assert main(["-q", "cluster", "-d", str(ds), "--from", str(mixed_photos), "--to", "cluster",
                     "--model", "efficientnet", "--clean"]) == 0
    finally:
        EfficientNetLite0.embed_batch = orig
    assert calls == []


def test_clip_loads_weights_from_a_file(tmp_path, mixed_photos, clip_weights):
    """A ViT-B-32 made without weights, saved, and loaded back through --weights FILE."""
    import torch

    weights, model = clip_weights
    enc = create_image_embedder("clip", str(weights)).prepare()
    assert enc.dim == 512 and enc.name.startswith("clip-ViT-B-32-vit-b-32-test-")
    for a, b in zip(enc.model.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    ds = tmp_path / "ds"
    src = mixed_photos / "images"
    assert main(["-q", "cluster", "-d", str(ds), "--from", str(src), "--to", "cluster", "--model", "clip",
                 "--weights", str(weights), "--batch-size", "4"]) == 0
    info = json.loads((ds / "cluster" / "clusters.json").read_text())
    assert info["model"] == enc.name and info["n_items"] == 12
    # vectors are kept per model: efficientnet beside clip, never mixed
    assert main(["-q", "cluster", "-d", str(ds), "--from", str(src), "--to", "c2", "--model", "efficientnet"]) == 0
    names = sorted(p.name for p in (ds / "images" / "embeddings").glob("*.parquet"))
    assert len(names) == 2 and names[1].startswith("efficientnet")


def test_clip_without_weights_offline_is_one_clear_error(tmp_path, monkeypatch, capsys):
    pytest.importorskip("open_clip")
    monkeypatch.setenv("CROWDSORT_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="pass --weights"):
        create_image_embedder("clip").prepare()
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        create_image_embedder("clip", str(tmp_path / "missing.safetensors")).prepare()
    (tmp_path / "a.jpg").write_bytes(b"x")
    assert main(["-q", "cluster", "-d", str(tmp_path / "ds"), "--from", str(tmp_path / "a.jpg"), "--model", "clip"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "open_clip_model.safetensors" in err
