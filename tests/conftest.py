"""Shared fixtures: the real photos in ../shared/data, and small generated inputs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("CROWDSORT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def _need(path: Path) -> Path:
    if path.exists():
        return path
    if os.environ.get("CI") == "true":
        pytest.fail(f"{path} is missing: CI must run the tests on the real photos in ../shared/data")
    pytest.skip(f"{path} not found (real labelled photos live in ../shared/data; set CROWDSORT_SHARED_DATA)")


@pytest.fixture(scope="session", autouse=True)
def no_user_config(tmp_path_factory):
    """A user's ~/.config/crowdsort/config.toml must not change what the tests load."""
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path_factory.mktemp("xdg-config"))
    os.environ.pop("CROWDSORT_CONFIG", None)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    return _need(SHARED / "faces")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _need(SHARED / "lfw-dev" / "faces")


@pytest.fixture(scope="session")
def faces_store(tmp_path_factory, faces_dir):
    """faces/ extracted once (most prominent face per photo), for the tests that read it."""
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    store = FaceStore(tmp_path_factory.mktemp("faces-ds") / "faces")
    extract_faces(str(faces_dir), store, ExtractParams(max_faces=1), workers=2, progress=False)
    return store


@pytest.fixture(scope="session")
def lfw_store(tmp_path_factory, lfw_dir):
    """lfw-dev extracted once (1,035 photos, one face each): clustering and identification read it."""
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    store = FaceStore(tmp_path_factory.mktemp("lfw") / "faces")
    extract_faces(str(lfw_dir), store, ExtractParams(max_faces=1), workers=2, progress=False)
    return store


@pytest.fixture(scope="session")
def celeba_store(tmp_path_factory):
    """celeba-dev extracted once (1,978 photos, one face each)."""
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    src = _need(SHARED / "celeba-dev" / "faces")
    store = FaceStore(tmp_path_factory.mktemp("celeba") / "faces")
    extract_faces(str(src), store, ExtractParams(max_faces=1), workers=2, progress=False)
    return store


@pytest.fixture(scope="session")
def need_shared():
    """``need_shared("references")``: that folder of ../shared/data, or skip (fail under CI)."""
    return lambda rel: _need(SHARED / rel)


@pytest.fixture(scope="session")
def clip_weights(tmp_path_factory):
    """``(file, model)``: an open_clip ViT-B-32 made without weights (none can be downloaded
    here) and saved, standing in for a user's weights file."""
    open_clip = pytest.importorskip("open_clip")
    import torch

    torch.manual_seed(0)
    model, _, _ = open_clip.create_model_and_transforms("ViT-B-32")
    weights = tmp_path_factory.mktemp("clip") / "vit-b-32-test.bin"
    torch.save(model.state_dict(), weights)
    return weights, model


@pytest.fixture(scope="session")
def example_photos():
    """The example's source photos (crowdsort.example.PHOTOS): from installed scikit-image/matplotlib,
    the model cache, or their pinned wheels through pip; skip where none can be had (fail under CI)."""
    from crowdsort.example import photo_files
    from crowdsort.models.files import ModelNotFoundError

    try:
        return photo_files()
    except ModelNotFoundError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"the example's photos cannot be had here: {e}")
