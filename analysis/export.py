"""Writing a cluster run: numbered folders, assignments.csv and clusters.json.

The run is built in a hidden temporary folder beside the target and renamed into place, so
an interrupted export never leaves a half-written run where a finished one is expected.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from .store import FORMAT_VERSION, atomic_write_bytes

LINK_MODES = ("copy", "hardlink", "symlink")


class OutputExistsError(FileExistsError):
    """The output folder is not empty and ``clean`` was not given."""


def folder_name(label: int) -> str:
    return "noise" if label < 0 else f"{label:03d}"


def unnamed_label(cluster: int) -> str:
    """What a face of an unnamed cluster is labelled in name tables: ``cluster 003`` or ``noise``."""
    return "noise" if cluster < 0 else f"cluster {cluster:03d}"


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


def _free_name(dst: Path) -> Path:
    """``dst``, or ``stem~2.ext``, ``stem~3.ext``… when two sources share a file name."""
    n = 2
    while dst.exists() or dst.is_symlink():
        dst = dst.with_name(f"{dst.stem.rsplit('~', 1)[0]}~{n}{dst.suffix}")
        n += 1
    return dst


def prepare_output(out: Path, clean: bool, marker: str = "clusters.json", option: str = "--to",
                   what: str = "a crowdsort cluster run") -> None:
    """Refuse a non-empty ``out`` unless ``clean``; only ever clean a folder holding ``marker``,
    the file crowdsort writes into that kind of output (a cluster run by default)."""
    if out.exists() and any(out.iterdir()):
        if not clean:
            raise OutputExistsError(f"{out} is not empty; pass --clean to replace it (runs are never mixed)")
        if not (out / marker).exists():
            raise OutputExistsError(
                f"{out} is not empty and holds no {marker}: refusing to delete a folder that is not "
                f"{what}; choose another {option}")


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
            dst = _free_name(d / Path(src).name)
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


def write_prototypes(out: str | os.PathLike, items: pd.DataFrame, clean: bool = False) -> None:
    """``out/<cluster>/<rank>-<crop name>``: the prototypes of each cluster, best first."""
    out = Path(out)
    prepare_output(out, clean, "prototypes.csv", "--proto-out / --to", "a prototype folder")
    if out.exists():
        shutil.rmtree(out)
    protos = items[items["prototype"] & (items["cluster"] >= 0)].sort_values(["cluster", "prototype_rank"])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, r in protos.iterrows():
        d = out / folder_name(int(r["cluster"]))
        d.mkdir(exist_ok=True)
        dst = d / f"{int(r['prototype_rank'])}-{Path(r['file']).name}"
        shutil.copy2(r["file"], dst)
        rows.append({"cluster": int(r["cluster"]), "rank": int(r["prototype_rank"]), "face_id": r["face_id"],
                     "path": str(dst.relative_to(out))})
    pd.DataFrame(rows).to_csv(out / "prototypes.csv", index=False)


MODEL_FORMAT = "crowdsort-cluster-model"


def save_cluster_model(path: str | os.PathLike, X: np.ndarray, labels: np.ndarray, face_ids, graph, info: dict) -> None:
    """Save what is needed to assign new faces to these clusters later.

    Format (``.npz``, version 1): ``vectors`` float32 (n, d) L2-normalised, ``labels`` int64
    (cluster by size, -1 noise), ``face_ids`` str, ``knn_indices`` int32 / ``knn_distances``
    float32 (n, k) cosine, and ``meta``: JSON with ``format`` ("crowdsort-cluster-model"),
    ``format_version``, ``model``, ``algorithm`` and ``parameters``.
    """
    meta = json.dumps({"format": MODEL_FORMAT, "format_version": 1, **info}, default=_json_default)
    buf = io.BytesIO()
    np.savez_compressed(buf, vectors=np.asarray(X, dtype=np.float32), labels=np.asarray(labels, dtype=np.int64),
                        face_ids=np.asarray(face_ids, dtype=str), knn_indices=graph.indices,
                        knn_distances=graph.distances, meta=np.array(meta))
    atomic_write_bytes(Path(path), buf.getvalue())


def load_cluster_model(path: str | os.PathLike) -> dict:
    """Read a model written by :func:`save_cluster_model`; checks format and version."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != 1:
            raise ValueError(f"{path}: not a crowdsort cluster model (version 1)")
        return {"vectors": z["vectors"], "labels": z["labels"], "face_ids": z["face_ids"],
                "knn_indices": z["knn_indices"], "knn_distances": z["knn_distances"], "meta": meta}


def write_named_folders(out: str | os.PathLike, table: pd.DataFrame, link: str = "copy", clean: bool = False) -> None:
    """``out/<label>/<crop>`` for a labelled table (``crop_path``, ``label``) plus ``labels.csv``.

    Built beside ``out`` and renamed into place like a cluster run; ``clean`` replaces only a
    folder this function wrote before.
    """
    out = Path(out)
    prepare_output(out, clean, "labels.csv", "folder", "a crowdsort export")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        paths = []
        for src, label in zip(table["crop_path"], table["label"]):
            d = tmp / safe_folder(str(label))
            d.mkdir(exist_ok=True)
            dst = _free_name(d / Path(src).name)
            _place(Path(src), dst, link)
            paths.append(f"{d.name}/{dst.name}")
        table.assign(output_path=paths).to_csv(tmp / "labels.csv", index=False)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def safe_folder(label: str) -> str:
    """A folder name for a person's label: path separators and control characters replaced."""
    import re

    name = re.sub(r'[\x00-\x1f/\\:*?"<>|]+', "_", label).strip(" .")
    return name or "_"
