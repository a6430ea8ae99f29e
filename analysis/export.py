"""Writing a cluster run: numbered folders, assignments.csv and clusters.json.

The run is built in a hidden temporary folder beside the target and renamed into place, so
an interrupted export never leaves a half-written run where a finished one is expected.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .store import FORMAT_VERSION

LINK_MODES = ("copy", "hardlink", "symlink")


class OutputExistsError(FileExistsError):
    """The output folder is not empty and ``clean`` was not given."""


def folder_name(label: int) -> str:
    return "noise" if label < 0 else f"{label:03d}"


def _place(src: Path, dst: Path, link: str) -> None:
    if link == "copy":
        shutil.copy2(src, dst)
    elif link == "hardlink":
        try:
            os.link(src, dst)
        except OSError:  # across file systems
            shutil.copy2(src, dst)
    elif link == "symlink":
        os.symlink(src.resolve(), dst)
    else:
        raise ValueError(f"unknown link mode {link!r}; choose one of: {', '.join(LINK_MODES)}")


def prepare_output(out: Path, clean: bool) -> None:
    """Refuse a non-empty ``out`` unless ``clean``; only ever clean a previous cluster run."""
    if out.exists() and any(out.iterdir()):
        if not clean:
            raise OutputExistsError(
                f"{out} is not empty; pass --clean to replace it (runs are never mixed)")
        if not (out / "clusters.json").exists():
            raise OutputExistsError(
                f"{out} is not empty and holds no clusters.json: refusing to delete a folder "
                "that is not a crowdsort cluster run; choose another --to")


def write_cluster_run(out: str | os.PathLike, items: pd.DataFrame, info: dict,
                      link: str = "copy", clean: bool = False) -> pd.DataFrame:
    """Write the run for ``items`` (one row per item with ``file``, ``cluster`` and any other
    columns for assignments.csv) into ``out``. Returns the assignments table written."""
    out = Path(out)
    prepare_output(out, clean)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        table = items.copy()
        table["folder"] = [folder_name(c) for c in table["cluster"]]
        names = []
        for src, folder in zip(table["file"], table["folder"]):
            d = tmp / folder
            d.mkdir(exist_ok=True)
            dst = d / Path(src).name
            _place(Path(src), dst, link)
            names.append(f"{folder}/{dst.name}")
        table["output_path"] = names
        table = table.drop(columns=["file"])
        table.to_csv(tmp / "assignments.csv", index=False)
        labels = table["cluster"].to_numpy()
        sizes = [int((labels == c).sum()) for c in range(labels.max() + 1)] if (labels >= 0).any() else []
        summary = {
            "format_version": FORMAT_VERSION, **info,
            "n_items": int(len(labels)), "n_clusters": len(sizes), "n_noise": int((labels < 0).sum()),
            "sizes": sizes,
        }
        (tmp / "clusters.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        if out.exists():
            old = out.with_name(f".{out.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return table


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))
