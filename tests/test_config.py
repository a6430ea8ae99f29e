"""Model settings: option > environment variable > config file > default."""
from __future__ import annotations

import pytest

from crowdsort.config import resolve, setting
from crowdsort.faces.embed import load_embedder
from crowdsort.models.files import ModelNotFoundError


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
    from crowdsort.things.image_embed import create_image_embedder

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


@pytest.mark.parametrize("text, says", [
    ('clip = "ViT-L-14"\n', r'clip = .ViT-L-14. .*\[clip\]'),  # a section written as a key: it crashed
    ('[clip]\nweights = ["a.pt", "b.pt"]\n', r"\[clip\] weights is a list.*weights = \""),
])
def test_a_misshapen_config_is_one_line_naming_the_file(config, text, says):
    config.write_text(text)
    with pytest.raises(ValueError, match=says) as e:
        setting("clip", "weights")
    assert str(config) in str(e.value) and "\n" not in str(e.value)


def test_a_config_that_is_not_utf8_is_named(config, capsys):
    from crowdsort.cli import main

    config.write_bytes('[clip]\narch = "Café"\n'.encode("latin-1"))  # saved by an editor in Latin-1
    with pytest.raises(ValueError, match="not UTF-8") as e:
        setting("clip", "arch")
    assert str(config) in str(e.value) and "\n" not in str(e.value)
    # as the command says it: one line, naming the file
    from PIL import Image

    photos = config.parent / "photos"
    photos.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(photos / f"{i}.jpg")
    assert main(["-q", "cluster", "-d", str(config.parent / "ds"), "--model", "clip", "--from", str(photos)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(config) in err and "UTF-8" in err
