"""Format 1 → 2: a dataset whose records were absolute is made relative to itself, once.

Format 1 (crowdsort until issue 32) recorded every photo by its absolute path and made each face
id of that path: a dataset moved, copied or mounted elsewhere saw every photo as gone, extracted
them again under new ids, and every name of ``annotations.jsonl`` was left on ids that no longer
existed. Format 2 records a photo inside the dataset relative to it (:func:`paths.source_record`)
and makes its face ids of that relative path.

:func:`migrate_store` rewrites a format-1 extraction run, at its place or moved:

1. The folder the dataset was in when its paths were recorded (``from_root``) is found: for each
   recorded folder of photos, the shortest tail of one of its files that lies in the dataset now
   with the recorded size names a candidate root; the candidate most files agree on wins (the
   dataset's own folder, as given or with links followed, counts too). Paths under it become
   relative; paths elsewhere (photos outside the dataset) stay absolute, and so do their ids.
2. Each face under it gets the id a run would now give it: the key it was made of is checked
   against its old id (the box's rounding recovered from the stored float32 box), and made again
   of the relative path. A face whose old id cannot be reproduced keeps it.
3. A journal, ``<run>/migration.json`` (the maps), is written before anything else; then
   ``annotations.jsonl`` (a copy kept as ``annotations.jsonl.absolute-ids.bak``) and the older
   ``annotations.json``, every cluster run's ``assignments.csv``, every embeddings file, the
   checkpoints and the tables are rewritten, each atomically, the derived caches (kNN graphs,
   maps) removed, ``extract.json`` given format 2, and the journal removed last. Every step is
   idempotent (a new id or path is never an old one), so a run killed anywhere is finished by
   the next one, from the journal. Crops keep their file names (rows name them).

It runs under the dataset's lock: by extract-faces and cluster (which hold it) and by the
dashboard when it opens a dataset (which takes it, or leaves the migration to the run that
holds it).
"""
from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .store import FORMAT_VERSION, FaceStore, atomic_write_bytes, atomic_write_text, write_table

log = logging.getLogger(__name__)

JOURNAL = "migration.json"
ANNOTATIONS_BACKUP = ".absolute-ids.bak"  # annotations.jsonl → annotations.jsonl.absolute-ids.bak
CACHE_FOLDERS = ("graphs", "projections")  # keyed by a hash of the face ids: rebuilt


def needs_migration(store: FaceStore) -> bool:
    """Whether ``store`` is an extraction run of format 1, or one whose migration was interrupted."""
    if (store.root / JOURNAL).exists():
        return True
    if not store.exists():
        return False
    try:
        version = int(store.read_params().get("format_version", 1))
    except (ValueError, TypeError, OSError):
        version = 1
    return version < 2


def migrate_store(store: FaceStore, locked: bool = False, dataset: str | os.PathLike | None = None) -> dict | None:
    """Rewrite a format-1 run as format 2 (see the module's docstring); None when there was
    nothing to do, else ``{"from_root", "ids", "paths"}`` (counts). ``locked``: the caller holds
    the dataset's lock; else it is taken here (:class:`locks.DatasetBusyError` if another holds it).
    ``dataset``: the folder of its annotations and cluster runs (default: the run's parent, which
    its paths are relative to)."""
    if not needs_migration(store):
        return None
    dataset = Path(dataset) if dataset is not None else store.dataset
    if locked:
        return _migrate(store, dataset)
    from .locks import DatasetLock

    with DatasetLock(dataset, "migrate"):
        return _migrate(store, dataset) if needs_migration(store) else None


def migrate_if_free(store: FaceStore, dataset: str | os.PathLike | None = None) -> None:
    """:func:`migrate_store` by a reader (the dashboard): when another process holds the dataset,
    the dataset is read as it is and the run holding it migrates it."""
    from .locks import DatasetBusyError

    try:
        migrate_store(store, dataset=dataset)
    except DatasetBusyError as e:
        log.warning("%s: not migrated to relative paths now (%s)", store.root, e)


# -- the maps -----------------------------------------------------------------------------------
def _raw(store: FaceStore, name: str) -> list[pd.DataFrame]:
    files = [store.root / f"{name}.parquet"] if (store.root / f"{name}.parquet").exists() else []
    if store.parts_dir.exists():
        files += sorted(store.parts_dir.glob(f"*-{name}.parquet"))
    out = []
    for f in files:
        try:
            out.append(pd.read_parquet(f))
        except (OSError, ValueError, pa.ArrowException):  # a damaged checkpoint: read (and dropped) as before
            continue
    return out


def _under(path: str, root: str) -> str | None:
    prefix = root.rstrip(os.sep) + os.sep
    return path[len(prefix):] if path.startswith(prefix) else None


def find_old_roots(dataset: Path, images: pd.DataFrame) -> list[str]:
    """The folders the dataset was in when ``images`` (absolute ``image_path``, ``size_bytes``)
    were recorded, those most files agree on first; empty when no recorded file is found in it
    now (see the module's docstring). A dataset moved and extracted again by format 1 has two:
    its faces under both are the same faces, and they get the same ids again."""
    here = list(dict.fromkeys((os.path.realpath(dataset), os.path.abspath(dataset))))
    sizes = {p: int(s) if pd.notna(s) else 0 for p, s in zip(images["image_path"], images["size_bytes"])
             if isinstance(p, str) and os.path.isabs(p)}
    folders: dict[str, list[str]] = {}
    for p in sizes:
        folders.setdefault(os.path.dirname(p), []).append(p)
    votes: Counter = Counter()
    for files in folders.values():
        root = next((r for r in here if _under(files[0], r) is not None), None)
        for p in files[:3] if root is None else ():  # a few files of the folder: one may be deleted since
            parts = Path(p).parts
            for i in range(2, len(parts)):  # the longest tail first: the shortest old root
                candidate = Path(here[0], *parts[i:])
                if candidate.is_file() and (not sizes[p] or candidate.stat().st_size == sizes[p]):
                    root = str(Path(*parts[:i]))
                    break
            if root is not None:
                break
        if root is not None:
            votes[root] += len(files)
    return [r for r, _ in votes.most_common()]


def _box_strings(box: np.ndarray):
    """The ways the float64 box the detector gave may have been printed (``%.1f``), from the
    float32 the table keeps: the nearest first."""
    options = []
    for v in np.asarray(box, np.float32):
        near = [f"{float(v):.1f}"]
        for w in (np.nextafter(v, np.float32(-np.inf)), np.nextafter(v, np.float32(np.inf))):
            for x in (float(w), (float(w) + float(v)) / 2):
                s = f"{x:.1f}"
                if s not in near:
                    near.append(s)
        options.append(near)
    return itertools.product(*options)


def _new_id(row, old_path: str, new_path: str) -> str | None:
    from .store import face_id

    frame = int(row.frame) if pd.notna(row.frame) else -1
    suffix = f"#{frame}" if frame >= 0 else ""
    box = np.array([row.x0, row.y0, row.x1, row.y1], np.float32)
    for coords in _box_strings(box):
        if face_id(old_path + suffix, row.image_hash, row.engine, coords) == row.face_id:
            return face_id(new_path + suffix, row.image_hash, row.engine, coords)
    return None


def plan_migration(store: FaceStore) -> dict:
    """The journal: ``from_root``, ``paths`` {old: new}, ``ids`` {old: new}, ``tracks`` {old item: new}."""
    images = pd.concat(_raw(store, "images") or [pd.DataFrame({"image_path": []})], ignore_index=True)
    faces = pd.concat(_raw(store, "faces") or [pd.DataFrame({"image_path": [], "face_id": []})], ignore_index=True)
    known = pd.concat([images[["image_path"]], faces[["image_path"]]], ignore_index=True)
    table = images.drop_duplicates("image_path", keep="last") if len(images) else images
    if "size_bytes" not in table:
        table = table.assign(size_bytes=0)
    roots = find_old_roots(store.dataset, table)
    here = list(dict.fromkeys((*roots, os.path.realpath(store.dataset), os.path.abspath(store.dataset))))
    paths = {}
    for p in known["image_path"].dropna().unique():
        if isinstance(p, str) and os.path.isabs(p):
            rel = next((r for r in (_under(p, h) for h in here) if r), None)
            if rel is not None:
                paths[p] = rel
    ids, tracks, kept = {}, {}, 0
    if paths and len(faces):
        moved = faces[faces["image_path"].isin(paths.keys())].drop_duplicates("face_id", keep="last")
        for col, default in (("frame", -1), ("track", -1)):
            if col not in moved:
                moved = moved.assign(**{col: default})
        for row in moved.itertuples(index=False):
            new = _new_id(row, row.image_path, paths[row.image_path])
            if new is None:
                kept += 1
            elif new != row.face_id:
                ids[row.face_id] = new
            if pd.notna(row.track) and int(row.track) >= 0:
                tracks[f"{row.image_path}#{int(row.track)}"] = f"{paths[row.image_path]}#{int(row.track)}"
    if kept:
        log.warning("%s: %d face ids could not be made again from their records; they keep their ids", store.root, kept)
    return {"from_root": roots[0] if roots else None, "roots": roots, "paths": paths, "ids": ids, "tracks": tracks}


# -- the rewrite --------------------------------------------------------------------------------
def _migrate(store: FaceStore, dataset: Path) -> dict:
    journal = store.root / JOURNAL
    if journal.exists():
        plan = json.loads(journal.read_text())
        log.warning("%s: finishing the migration to relative paths that was interrupted", store.root)
    else:
        plan = plan_migration(store)
        _backup_annotations(dataset)
        atomic_write_text(journal, json.dumps(plan))
    names = {**plan["ids"], **plan["tracks"]}
    for f in ("annotations.jsonl", "annotations.json"):
        _rewrite_annotations(dataset / f, names)
    for run in _cluster_runs(dataset):
        _rewrite_assignments(run / "assignments.csv", plan["ids"])
    emb = store.root / "embeddings"
    if emb.is_dir():
        for f in sorted([*emb.glob("*.parquet"), *emb.glob("*.parts/*.parquet")]):
            _rewrite_parquet(f, {"face_id": plan["ids"]})
    tables = [store.root / "images.parquet", store.root / "faces.parquet"]
    if store.parts_dir.exists():
        tables = sorted(store.parts_dir.glob("*.parquet")) + tables
    for f in tables:
        if f.exists():
            _rewrite_parquet(f, {"face_id": plan["ids"], "image_path": plan["paths"]})
    for folder in CACHE_FOLDERS:
        shutil.rmtree(store.root / folder, ignore_errors=True)
    params = store.read_params()
    params.pop("format_version", None)
    if plan["from_root"]:
        params["migrated_from"] = plan["from_root"]
    store.write_params(params)  # format 2 from now on
    journal.unlink()
    log.info("%s: paths and face ids made relative to the dataset (%d paths, %d ids; recorded under %s)",
             store.root, len(plan["paths"]), len(plan["ids"]), plan["from_root"])
    return {"from_root": plan["from_root"], "paths": len(plan["paths"]), "ids": len(plan["ids"])}


def _rewrite_parquet(path: Path, maps: dict[str, dict]) -> None:
    """``path`` with the values of these columns mapped; left as it is when none changes (or
    when it cannot be read: a damaged file is reported, and rebuilt, where it is read)."""
    try:
        table = pq.read_table(path)
    except (OSError, ValueError, pa.ArrowException):
        return
    changed = False
    for col, mapping in maps.items():
        if col not in table.column_names or not mapping:
            continue
        values = table.column(col).to_pylist()
        new = [mapping.get(v, v) for v in values]
        if new != values:
            table = table.set_column(table.column_names.index(col), pa.field(col, table.schema.field(col).type),
                                     pa.array(new, type=table.schema.field(col).type))
            changed = True
    if changed:
        write_table(table, path)


def _cluster_runs(dataset: Path) -> list[Path]:
    runs = [*dataset.glob("*/clusters.json"), *dataset.glob("*/*/clusters.json")]
    return [p.parent for p in runs if (p.parent / "assignments.csv").is_file()]


def _rewrite_assignments(path: Path, ids: dict) -> None:
    """The ``face_id`` column of a cluster run's table mapped, every other byte as it was."""
    if not ids:
        return
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or "face_id" not in rows[0]:
        return
    col = rows[0].index("face_id")
    changed = False
    for row in rows[1:]:
        if len(row) > col and row[col] in ids:
            row[col] = ids[row[col]]
            changed = True
    if changed:
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(rows)
        atomic_write_text(path, out.getvalue())


def _backup_annotations(dataset: Path) -> None:
    """A copy of the corrections as they were before any migration (kept: never overwritten)."""
    for name in ("annotations.jsonl", "annotations.json"):
        src = dataset / name
        dst = src.with_name(src.name + ANNOTATIONS_BACKUP)
        if src.is_file() and not dst.exists():
            atomic_write_bytes(dst, src.read_bytes())


def _map_change(d: dict, names: dict) -> dict:
    out = dict(d)
    if isinstance(d.get("names"), dict):
        out["names"] = {names.get(k, k): v for k, v in d["names"].items()}
    for key in ("rejected", "not_face", "left"):
        if isinstance(d.get(key), list):
            out[key] = [names.get(v, v) if isinstance(v, str) else v for v in d[key]]
    if isinstance(d.get("groups"), list):
        out["groups"] = [[names.get(v, v) if isinstance(v, str) else v for v in g] if isinstance(g, list) else g
                         for g in d["groups"]]
    if isinstance(d.get("snapshot"), dict):
        out["snapshot"] = _map_change(d["snapshot"], names)
    return out


def _rewrite_annotations(path: Path, names: dict) -> None:
    """The face (and track) ids of a log of corrections (or of a format-1 ``annotations.json``)
    mapped, under the log's lock; a line that is not JSON, or a last line still being written,
    is kept as it is (the reader says what is wrong with it, as before)."""
    import fcntl

    if not names or not path.is_file():
        return
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # writers append under it: none is lost (they look again after it)
        try:
            data = f.read()
            if path.suffix == ".json":
                try:
                    doc = json.loads(data)
                except ValueError:
                    return
                new = json.dumps(_map_change(doc, names) if isinstance(doc, dict) else doc, indent=2).encode()
            else:
                lines = data.split(b"\n")
                out = []
                for line in lines[:-1]:
                    try:
                        op = json.loads(line)
                    except ValueError:
                        out.append(line)
                        continue
                    mapped = _map_change(op, names) if isinstance(op, dict) else op
                    out.append(line if mapped == op else json.dumps(mapped, ensure_ascii=False).encode())
                new = b"\n".join(out + [lines[-1]])
            if new != data:
                atomic_write_bytes(path, new)
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


__all__ = ["FORMAT_VERSION", "migrate_store", "migrate_if_free", "needs_migration", "plan_migration", "find_old_roots"]
