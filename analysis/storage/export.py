"""Writing a cluster run: numbered folders, assignments.csv and clusters.json.

The run is built in a hidden temporary folder beside the target and renamed into place, so
an interrupted export never leaves a half-written run where a finished one is expected.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .paths import DatasetFiles
from .store import FORMAT_VERSION, as_created, atomic_write_bytes, atomic_write_text, writer_alive

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


MANIFEST = ".crowdsort-manifest.json"
# What an output folder is, by kind: the word in messages and the file older versions wrote
# into it before manifests existed.
OUTPUT_KINDS = {
    "cluster-run": ("a crowdsort cluster run", "clusters.json"),
    "prototypes": ("a crowdsort prototype folder", "prototypes.csv"),
    "export": ("a crowdsort export", "labels.csv"),
}
_TMP_PREFIX = ".crowdsort-tmp-"


def _files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or p.is_symlink())


def _legacy_cluster_run(out: Path) -> bool:
    """A cluster run written before manifests: only the names such a run holds, folders of files."""
    for p in out.iterdir():
        if p.name in ("assignments.csv", "clusters.json"):
            continue
        if not (p.is_dir() and not p.is_symlink() and (p.name == "noise" or p.name.isdigit())):
            return False
        if any(q.is_dir() and not q.is_symlink() for q in p.iterdir()):
            return False
    return (out / "clusters.json").is_file()


def prepare_output(out: Path, clean: bool, kind: str = "cluster-run", option: str = "--to",
                   replace_own: bool = False) -> str:
    """``new`` for an empty or missing ``out``, ``replace`` for one that may be replaced:
    with ``clean``, or with ``replace_own`` (a new run into the same folder, as dtst does) when
    it is one crowdsort wrote, i.e. its manifest lists every file in it (a user's file inside
    stops it). Anything else is refused (:class:`OutputExistsError`)."""
    what, legacy = OUTPUT_KINDS[kind]
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise OutputExistsError(f"{out} is not a folder; choose another {option}")
    run = run_folder_of(out)
    if run is not None:  # its files would be mixed into the dataset's
        raise OutputExistsError(f"{out} is inside {run[1]} ({run[0]}); choose another {option} outside it")
    if not (out.exists() and any(out.iterdir())):
        return "new"
    manifest = out / MANIFEST
    listed_run = manifest.is_file()
    legacy_run = not listed_run and kind == "cluster-run" and _legacy_cluster_run(out)
    if not listed_run and not legacy_run:  # --clean would not delete it either: say so at once
        raise OutputExistsError(f"{out} is not empty and is not {what} (no {MANIFEST}): refusing to delete it; "
                                f"choose another {option}")
    if not clean and not (replace_own and listed_run):
        raise OutputExistsError(f"{out} is not empty; pass --clean to replace {what} (runs are never mixed)")
    if legacy_run:
        return "replace"
    try:
        info = json.loads(manifest.read_text())
        listed = set(info["files"])
    except (OSError, ValueError, KeyError, TypeError):
        raise OutputExistsError(f"{manifest} is damaged: refusing to delete {out}; check it and delete it yourself "
                                f"if it holds nothing of yours, or choose another {option}") from None
    if info.get("kind") != kind:
        raise OutputExistsError(f"{out} holds a crowdsort {info.get('kind')}, not {what}: choose another {option}")
    foreign = [f for f in _files_under(out) if f != MANIFEST and f not in listed]
    if foreign:
        raise OutputExistsError(f"{out} holds files crowdsort did not write ({', '.join(foreign[:3])}"
                                f"{', …' if len(foreign) > 3 else ''}): refusing to replace it; move them out or "
                                f"choose another {option}")
    return "replace"


# A file in a folder that makes it crowdsort's: an extraction run's tables (extract-faces,
# extract-frames), a cluster run's summary, the manifest of any folder crowdsort published.
RUN_MARKERS = {
    "extract.json": "an extraction run", "images.parquet": "an extraction run", "faces.parquet": "an extraction run",
    "frames.parquet": "an extract-frames folder", "videos.parquet": "an extract-frames folder",
    "clusters.json": "a cluster run", MANIFEST: "a crowdsort output folder",
}
# What makes a folder a run that extract-faces / extract-frames may add to (a killed first run
# leaves extract.json or its checkpoints before any table).
EXTRACTION_MARKERS = {"faces": ("images.parquet", "faces.parquet", "extract.json", "parts"),
                      "frames": ("frames.parquet", "videos.parquet", ".parts")}


def run_folder_of(path: str | os.PathLike) -> tuple[Path, str] | None:
    """``(folder, what it is)`` of the crowdsort run ``path`` lies in, if any: a file written
    there would be mixed into the dataset (and make a cluster run one crowdsort may no longer
    replace)."""
    for folder in Path(os.path.abspath(path)).parents:
        for marker, what in RUN_MARKERS.items():
            if (folder / marker).exists():
                return folder, what
    return None


def check_output_file(path: str | os.PathLike, ours: Callable[[Path], bool], option: str = "--to") -> None:
    """Refuse (:class:`OutputExistsError`) to write the file ``path`` where that would replace
    what crowdsort may not: a folder, anything inside a dataset's run, or an existing file that
    ``ours`` does not recognise as one crowdsort wrote (the rule :func:`prepare_output` keeps
    for folders). Called before a command's work and again just before its write."""
    path = Path(path)
    run = run_folder_of(path)
    if run is not None:
        raise OutputExistsError(f"{path} is inside {run[1]} ({run[0]}), among the dataset's own files; "
                                f"choose another {option} outside it")
    if path.is_dir():
        raise OutputExistsError(f"{path} is a folder; choose another {option} (a file name)")
    if (path.exists() or path.is_symlink()) and not ours(path):
        raise OutputExistsError(f"{path} exists and crowdsort did not write it: refusing to replace it; choose "
                                f"another {option} or delete it")


def csv_header(columns: Sequence[str]) -> Callable[[Path], bool]:
    """Recognises a CSV crowdsort wrote for a command: its header starts with ``columns``
    (the columns the command always writes first; some add optional ones after)."""
    def ours(path: Path) -> bool:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                first = next(csv.reader(f), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return False
        return first[:len(columns)] == list(columns)
    return ours


def write_csv(path: str | os.PathLike, df: pd.DataFrame, header: Sequence[str], option: str = "--to") -> None:
    """Write a command's table: the file checked as :func:`check_output_file` (it may have
    appeared since the command began), its cells safe for spreadsheets, atomically."""
    assert list(df.columns[:len(header)]) == list(header), (list(df.columns), header)  # what csv_header recognises
    check_output_file(path, csv_header(header), option)
    atomic_write_text(Path(path), csv_text(df))


# A text cell a spreadsheet would run as a formula (OWASP's list: = + - @, tab, CR), or one
# already quoted so (a name that starts with ' before one of them keeps its own quote).
_FORMULA = re.compile(r"'*[=+\-@\t\r]")
_QUOTED = re.compile(r"'+[=+\-@\t\r]")


def _text_columns(df: pd.DataFrame) -> list:
    return [c for c in df.columns if df[c].dtype == object or isinstance(df[c].dtype, pd.StringDtype)]


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` for a CSV that people open in spreadsheets: a text cell that starts like a formula
    (a person named ``=HYPERLINK(...)``, a file named ``+1.jpg``) gets a leading ``'``, which
    spreadsheets show as text. Numbers, negative ones too, stay as they are.
    :func:`read_own_csv` takes the quote off again."""
    out = df.copy()
    for c in _text_columns(out):
        out[c] = [f"'{v}" if isinstance(v, str) and _FORMULA.match(v) else v for v in out[c]]
    return out


def csv_text(df: pd.DataFrame) -> str:
    """The CSV text of ``df`` as crowdsort hands tables out (files, the dashboard's downloads)."""
    return csv_safe(df).to_csv(index=False)


def read_own_csv(path: str | os.PathLike, **kwargs) -> pd.DataFrame:
    """A CSV crowdsort wrote (:func:`csv_safe`), as it was before: one ``'`` taken off text
    cells quoted against formulas."""
    df = pd.read_csv(path, **kwargs)
    for c in _text_columns(df):
        df[c] = [v[1:] if isinstance(v, str) and _QUOTED.match(v) else v for v in df[c]]
    return df


def check_extraction_folder(folder: str | os.PathLike, kind: str = "faces", option: str = "--to",
                            leftover: Callable[[str], bool] | None = None) -> None:
    """Extraction writes only into a new or empty folder or a run of its own ``kind`` (faces or
    frames): never into a cluster run or a user's folder, whose files would be mixed with the
    run's. ``leftover(name)``: a file a first run killed before its tables may have left (it is
    resumed). Refused with :class:`OutputExistsError`."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} is not a folder; choose another {option}")
    run = run_folder_of(folder)
    if run is not None:
        raise OutputExistsError(f"{folder} is inside {run[1]} ({run[0]}); choose another {option} outside it")
    if not folder.exists() or not any(folder.iterdir()):
        return
    if any((folder / m).exists() for m in EXTRACTION_MARKERS[kind]):
        return
    if leftover is not None and all(p.is_file() and leftover(p.name) for p in folder.iterdir()):
        return
    own = next((what for m, what in RUN_MARKERS.items() if (folder / m).exists()), None)
    what = f"is {own}" if own else "is not empty and is not an extraction run"
    raise OutputExistsError(f"{folder} {what}: extraction writes only into a new or empty folder or its own run; "
                            f"choose another {option}")


def _remove_stale_builds(parent: Path) -> None:
    """Build folders left by a run that was killed (their pid is no longer alive)."""
    for p in parent.glob(f"{_TMP_PREFIX}*"):
        try:
            pid = int(p.name[len(_TMP_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if not writer_alive(pid, p):
            shutil.rmtree(p, ignore_errors=True)


def publish(out: str | os.PathLike, build, kind: str, clean: bool = False, option: str = "--to",
            replace_own: bool = False):
    """Write an output folder atomically: ``build(tmp)`` fills a hidden folder beside ``out``,
    a manifest of every file is added, and the folder is renamed into place (replacing a
    previous one only as :func:`prepare_output` allows). Returns what ``build`` returns."""
    out = Path(out)
    prepare_output(out, clean, kind, option, replace_own)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_builds(out.parent)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{_TMP_PREFIX}{os.getpid()}-"))
    try:
        as_created(tmp, folder=True)
        result = build(tmp)
        (tmp / MANIFEST).write_text(json.dumps({"tool": "crowdsort", "kind": kind, "format_version": FORMAT_VERSION,
                                                "files": _files_under(tmp)}, indent=0))
        prepare_output(out, clean, kind, option, replace_own)  # again: the folder may have changed meanwhile
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f"{_TMP_PREFIX}{os.getpid()}-old-"))
            out.rename(old / "x")
            tmp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def write_cluster_run(out: str | os.PathLike, items: pd.DataFrame, info: dict,
                      link: str = "copy", clean: bool = False, files: DatasetFiles | None = None) -> pd.DataFrame:
    """Write the run for ``items`` (one row per item with ``file``, ``cluster`` and any other
    columns for assignments.csv) into ``out``. Returns the assignments table written.
    ``files``: the files that may be placed (:class:`paths.DatasetFiles`); None: any."""
    if files is not None:
        files.check(items["file"])

    def build(tmp: Path) -> pd.DataFrame:
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
        csv_safe(table).to_csv(tmp / "assignments.csv", index=False)
        labels = table["cluster"].to_numpy()
        sizes = [int((labels == c).sum()) for c in range(labels.max() + 1)] if (labels >= 0).any() else []
        summary = {
            "format_version": FORMAT_VERSION, **info,
            "n_items": int(len(labels)), "n_clusters": len(sizes), "n_noise": int((labels < 0).sum()),
            "sizes": sizes,
        }
        (tmp / "clusters.json").write_text(json.dumps(summary, indent=2, default=_json_default))
        return table
    return publish(out, build, "cluster-run", clean, replace_own=True)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def write_prototypes(out: str | os.PathLike, items: pd.DataFrame, clean: bool = False,
                     files: DatasetFiles | None = None) -> None:
    """``out/<cluster>/<rank>-<crop name>``: the prototypes of each cluster, best first.
    ``files``: as :func:`write_cluster_run`'s."""
    protos = items[items["prototype"] & (items["cluster"] >= 0)].sort_values(["cluster", "prototype_rank"])
    if files is not None:
        files.check(protos["file"])

    def build(tmp: Path) -> None:
        rows = []
        for _, r in protos.iterrows():
            d = tmp / folder_name(int(r["cluster"]))
            d.mkdir(exist_ok=True)
            dst = d / f"{int(r['prototype_rank'])}-{Path(r['file']).name}"
            shutil.copy2(r["file"], dst)
            rows.append({"cluster": int(r["cluster"]), "rank": int(r["prototype_rank"]), "face_id": r["face_id"],
                         "path": str(dst.relative_to(tmp))})
        csv_safe(pd.DataFrame(rows, columns=["cluster", "rank", "face_id", "path"])).to_csv(tmp / "prototypes.csv",
                                                                                          index=False)
    publish(out, build, "prototypes", clean, "--proto-out / --to")


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


def is_cluster_model(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a model :func:`save_cluster_model` wrote (and may replace)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(str(z["meta"])).get("format") == MODEL_FORMAT
    except Exception:  # not an npz, no meta, damaged: any of numpy's and zipfile's errors
        return False


def load_cluster_model(path: str | os.PathLike) -> dict:
    """Read a model written by :func:`save_cluster_model`; checks format and version."""
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        if meta.get("format") != MODEL_FORMAT or meta.get("format_version") != 1:
            raise ValueError(f"{path}: not a crowdsort cluster model (version 1)")
        return {"vectors": z["vectors"], "labels": z["labels"], "face_ids": z["face_ids"],
                "knn_indices": z["knn_indices"], "knn_distances": z["knn_distances"], "meta": meta}


def write_named_folders(out: str | os.PathLike, table: pd.DataFrame, link: str = "copy", clean: bool = False,
                        files: DatasetFiles | None = None) -> None:
    """``out/<label>/<crop>`` for a labelled table (``crop_path``, ``label``) plus ``labels.csv``.

    Built beside ``out`` and renamed into place like a cluster run; ``clean`` replaces only a
    folder this function wrote before. Two labels never share a folder. ``files``: as
    :func:`write_cluster_run`'s (the table may have been edited by hand).
    """
    if files is not None:
        files.check(table["crop_path"])
    folders = label_folders(table["label"].astype(str))

    def build(tmp: Path) -> None:
        paths = []
        for src, label in zip(table["crop_path"], table["label"].astype(str)):
            d = tmp / folders[label]
            d.mkdir(exist_ok=True)
            dst = _free_name(d / Path(src).name)
            _place(Path(src), dst, link)
            paths.append(f"{d.name}/{dst.name}")
        csv_safe(table.assign(output_path=paths)).to_csv(tmp / "labels.csv", index=False)
    publish(out, build, "export", clean, "folder")


def label_folders(labels) -> dict[str, str]:
    """A distinct folder name per label: ``a/b`` and ``a_b`` both make ``a_b`` safe, so the
    second gets ``a_b~2`` rather than sharing a folder (and a name) with the first."""
    out, used = {}, set()
    for label in sorted(set(labels)):
        base = safe_folder(label)
        name, n = base, 2
        while name.lower() in used:  # case-insensitive file systems too
            name, n = f"{base}~{n}", n + 1
        used.add(name.lower())
        out[label] = name
    return out


def safe_folder(label: str, max_bytes: int = 200) -> str:
    """A folder name for a person's label: path separators and control characters replaced,
    cut to fit a file name (255 bytes on most file systems, with room for ``~N``)."""
    name = re.sub(r'[\x00-\x1f/\\:*?"<>|]+', "_", label).strip(" .")
    name = name.encode("utf-8")[:max_bytes].decode("utf-8", "ignore").rstrip(" .")
    return name or "_"
