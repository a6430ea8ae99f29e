"""Model settings: option > environment variable > config file > default."""
from __future__ import annotations

import pytest

from analysis.config import resolve, setting
from analysis.embed import load_embedder
from analysis.models import ModelNotFoundError


@pytest.fixture
def config(tmp_path, monkeypatch):
    path = tmp_path / "conf" / "config.toml"
    path.parent.mkdir()
    (path.parent / "clip.safetensors").write_bytes(b"weights")
    path.write_text('[clip]\narch = "ViT-L-14"\nweights = "clip.safetensors"\n[arcface]\nweights = "antelopev2"\n')
    monkeypatch.setenv("CROWDSORT_CONFIG", str(path))
    monkeypatch.delenv("CROWDSORT_CLIP_WEIGHTS", raising=False)
    return path


def test_precedence_and_paths_relative_to_the_file(config, monkeypatch):
    assert setting("clip", "weights") == str(config.parent / "clip.safetensors")
    assert setting("clip", "missing") is None and setting("nope", "weights") is None
    assert resolve(None, "CROWDSORT_CLIP_WEIGHTS", "clip", "weights", "default") == str(config.parent / "clip.safetensors")
    monkeypatch.setenv("CROWDSORT_CLIP_WEIGHTS", "from-env")
    assert resolve(None, "CROWDSORT_CLIP_WEIGHTS", "clip", "weights", "default") == "from-env"
    assert resolve("option", "CROWDSORT_CLIP_WEIGHTS", "clip", "weights", "default") == "option"
    assert resolve(None, None, "efficientnet", "weights", "default") == "default"


def test_clip_and_arcface_read_the_file(config):
    pytest.importorskip("torch")
    from analysis.image_embed import create_image_embedder

    enc = create_image_embedder("clip")
    assert enc.arch == "ViT-L-14" and enc.weights == str(config.parent / "clip.safetensors")
    with pytest.raises(ModelNotFoundError, match="antelopev2"):  # the pack named in the file is looked for
        load_embedder("arcface")


def test_a_broken_or_missing_config_is_one_clear_error(config, tmp_path, monkeypatch):
    config.write_text("[clip\nweights = 1\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        setting("clip", "weights")
    monkeypatch.setenv("CROWDSORT_CONFIG", str(tmp_path / "nowhere.toml"))
    with pytest.raises(FileNotFoundError, match="CROWDSORT_CONFIG"):
        setting("clip", "weights")
