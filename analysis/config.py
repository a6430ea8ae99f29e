"""Model settings from a TOML file, for what a user sets once rather than on every command.

    # ~/.config/crowdsort/config.toml (or the file named by $CROWDSORT_CONFIG)
    [clip]
    arch = "ViT-L-14"
    weights = "models/open_clip_vit_l14.safetensors"   # relative to this file
    [arcface]
    weights = "buffalo_l"
    [efficientnet]
    weights = "/models/efficientnet_lite0.pth"

A command-line option beats an environment variable, which beats this file, which beats the
built-in default.
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

PATH_KEYS = {"weights"}  # values that may be files: relative ones are relative to the config file


def config_path() -> Path:
    if os.environ.get("CROWDSORT_CONFIG"):
        return Path(os.environ["CROWDSORT_CONFIG"]).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "crowdsort" / "config.toml"


@lru_cache(maxsize=4)
def _read(path: Path, mtime: float) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        text = path.read_bytes().decode("utf-8")  # TOML is UTF-8, whatever the locale
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}); save it as "
                         "UTF-8 or point CROWDSORT_CONFIG elsewhere") from None
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror}); fix it or point CROWDSORT_CONFIG elsewhere") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not valid TOML ({e}); fix the file or point CROWDSORT_CONFIG elsewhere") from None


def setting(section: str, key: str) -> str | None:
    """``[section] key`` of the config file, or None (no file, no such entry)."""
    path = config_path()
    if not path.is_file():
        if os.environ.get("CROWDSORT_CONFIG"):
            raise FileNotFoundError(f"CROWDSORT_CONFIG={path}: no such file")
        return None
    table = _read(path, path.stat().st_mtime).get(section, {})
    if not isinstance(table, dict):  # `clip = "x"` where `[clip]` was meant
        raise ValueError(f"{path}: {section} = {table!r} is a value where the section [{section}] belongs; write "
                         f"[{section}] on a line of its own and its settings ({key} = \"…\") under it")
    value = table.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        kind = "table" if isinstance(value, dict) else "list"
        raise ValueError(f"{path}: [{section}] {key} is a {kind}; write one value, {key} = \"…\"")
    value = str(value)
    if key in PATH_KEYS and not value.startswith(("local-dir:", "hf-hub:")):
        p = Path(value).expanduser()
        if not p.is_absolute() and (path.parent / p).exists():
            return str(path.parent / p)
    return value


def resolve(option: str | None, env: str | None, section: str, key: str, default: str | None = None) -> str | None:
    """The option, else the environment variable ``env``, else the config file, else ``default``."""
    if option:
        return option
    if env and os.environ.get(env):
        return os.environ[env]
    from_file = setting(section, key)
    return from_file if from_file is not None else default
