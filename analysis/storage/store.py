"""The on-disk dataset: one class owns the layout, every write is atomic.

A dataset folder ``D`` holds one folder per extraction run (``D/faces``) and per cluster
run (``D/cluster``). An extraction run is a :class:`FaceStore`::

    D/faces/
      extract.json            parameters of the run and format version
      images.parquet          one row per source image: hash, size, status, error, n_faces
      faces.parquet           one row per face: provenance, box, landmarks, crop
      migration.json          while a dataset of format 1 is migrated (crowdsort.storage.migrate)
      parts/                  checkpoints of an unfinished run (merged when it finishes)
      crops/<stem>-<id>.jpg   aligned crops (what the identity models read)
      ffhq/<stem>-<id>.jpg    dataset crops (--crop ffhq), at the photo's resolution
      embeddings/<model>.parquet   face_id → L2-normalised float32 vector, per model

The dataset ``D`` is the extraction run's parent folder. Since format 2 its tables record a photo
inside ``D`` relative to ``D`` (``photos/a.jpg``) and its face ids are made of that relative path,
so a dataset moved, copied or mounted elsewhere reads the same (format 1 recorded absolute paths:
:mod:`crowdsort.storage.migrate` rewrites such a dataset once). A photo outside ``D`` is recorded absolute.
The tables are read with absolute ``image_path`` (as this process opens the files) and a
column ``image_key``, the path as recorded.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 1: image paths and the face ids made of them absolute; 2: relative to the dataset

IMAGE_COLUMNS = {
    "image_path": "string", "image_hash": "string", "size_bytes": "int64", "mtime_ns": "int64",
    "width": "int32", "height": "int32", "n_faces": "int32", "status": "string", "error": "string",
    "signature": "string", "record": "int64",
}
FACE_COLUMNS = {
    "face_id": "string", "image_path": "string", "image_hash": "string", "face_index": "int32",
    "x0": "float32", "y0": "float32", "x1": "float32", "y1": "float32",
    "score": "float32", "prominence": "float32", "engine": "string", "crop_path": "string",
    "crop_size": "int32", "partial": "bool", "gone": "bool", "image_width": "int32", "image_height": "int32",
    "record": "int64",
    # a dataset crop written beside the identity crop (extract-faces --crop ffhq); "" and 0 if none
    "crop_style": "string", "dataset_crop_path": "string", "dataset_crop_size": "int32",
    # a face from a video: its frame (counted from 0 in decode order), time, shot and track in
    # that video (crowdsort.video.faces); a photo's face has -1 and NaN
    "frame": "int64", "time_s": "float64", "shot": "int32", "track": "int32",
}
# What a missing value of these columns reads as (a photo's face, or a table from before them).
COLUMN_DEFAULTS = {"frame": -1, "time_s": float("nan"), "shot": -1, "track": -1}
# List columns: landmarks and crop_landmarks are 4 (x, y) points flattened; keypoints are
# the engine's own points flattened.
FACE_LIST_COLUMNS = ("landmarks", "crop_landmarks", "keypoints")


def _safe_name(name: str) -> str:
    """A model name as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _tmp_prefix() -> str:
    # the writer's pid in the name tells a file being written from one left by a killed run
    return f".tmp-{os.getpid()}-"


def writer_alive(pid: int, path: Path) -> bool:
    """Whether the process ``pid`` that named the temporary ``path`` may still be writing it.

    A killed run's workers can linger as zombies (a container's init may never reap them) and
    pids are reused, so a live pid alone is not proof: the process must be running and have
    started before the file was last touched."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no procfs: trust the pid
        return True
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return False
    try:
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
        return started <= path.lstat().st_mtime + 2.0
    except (OSError, StopIteration, ValueError, IndexError):
        return True


def remove_stale_temp(folder: Path) -> int:
    """Remove temporary files in ``folder`` left by writers that were killed; returns how many."""
    n = 0
    for p in folder.glob(".tmp-*"):
        try:
            pid = int(p.name.split("-")[1])
        except (ValueError, IndexError):
            continue
        if not writer_alive(pid, p):
            p.unlink(missing_ok=True)
            n += 1
    return n


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: once, and put straight back
    os.umask(mask)
    return mask


def as_created(path: str | os.PathLike, folder: bool = False) -> None:
    """Give a temporary file (or folder) the mode a plain ``open`` (``mkdir``) would have: mkstemp
    makes 0600 and mkdtemp 0700, which would hide outputs from the user's group and others."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def remove_stale_folders(parent: Path, prefix: str) -> int:
    """Remove folders ``parent/<prefix><pid>-…`` of processes that are gone (a run killed with
    kill -9 cleans nothing up); returns how many."""
    import glob
    import shutil

    n = 0
    for p in parent.glob(f"{glob.escape(prefix)}*"):
        try:
            pid = int(p.name[len(prefix):].split("-")[0])
        except ValueError:  # not named with a pid
            continue
        if p.is_dir() and not p.is_symlink() and not writer_alive(pid, p):
            shutil.rmtree(p, ignore_errors=True)
            n += 1
    return n


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix())
    try:
        as_created(tmp)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def signals_deferred():
    """Ctrl-C and SIGTERM wait until the block ends: a checkpoint being written when the run is
    stopped is finished first (else the stop would discard, mid-write, the very work it saves)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    came: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, h in before.items():
            signal.signal(s, h)
        if came:  # now the stop it asked for
            raise KeyboardInterrupt(f"signal {came[0]}")


def write_table(df: pd.DataFrame | pa.Table, path: Path) -> None:
    """Atomically write a DataFrame or Arrow table as Parquet."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(), suffix=".parquet")
    os.close(fd)
    try:
        as_created(tmp)
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def face_id(image_path: str, image_hash: str, engine: str, box) -> str:
    """Stable id: same file, same content, same detection → same id on every run.

    ``image_path``: the file as the dataset records it (:func:`paths.source_record`: relative to
    the dataset when inside it), so a moved or copied dataset keeps its ids; a video frame's is
    ``<path>#<frame>``. ``box``: 4 numbers, or 4 strings already formatted (:mod:`crowdsort.storage.migrate`)."""
    coords = ",".join(v if isinstance(v, str) else f"{v:.1f}" for v in box)
    key = f"{image_path}|{image_hash}|{engine}|{coords}"
    return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()


class DamagedFileError(ValueError):
    """A file of the dataset that cannot be read; the message names it and the fix."""


def read_parquet(path: Path, fix: str) -> pd.DataFrame:
    """A table of the dataset, or one line naming the file and ``fix``."""
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:
        raise DamagedFileError(f"{path} is damaged ({_reason(e)}); {fix}") from None


def read_cache(path: Path, load):
    """``load(path)`` for a cache file; a damaged one is removed (it is rebuilt) and None returned."""
    if not path.exists():
        return None
    try:
        return load(path)
    except Exception as e:  # any decoder error: the cache is derived data
        log.warning("%s is damaged (%s): removed, it is rebuilt", path, _reason(e))
        path.unlink(missing_ok=True)
        return None


def _reason(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]


def empty_frame(columns: dict[str, str], lists: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    for c in lists:
        df[c] = pd.Series(dtype=object)
    return df


def _conform(df: pd.DataFrame, columns: dict[str, str], lists: tuple[str, ...] = ()) -> pd.DataFrame:
    if df.empty:
        return empty_frame(columns, lists)
    out = df.reindex(columns=list(columns) + list(lists))
    # Columns a file from an older version lacks read as zero/empty, or as their stated default.
    for c, t in columns.items():
        if c in COLUMN_DEFAULTS:
            out[c] = out[c].astype("float64").fillna(COLUMN_DEFAULTS[c])
        elif out[c].isna().all() and c not in df:
            out[c] = "" if t == "string" else (False if t == "bool" else 0)
    return out.astype(columns)


class FaceStore:
    """An extraction run: tables, crops, checkpoints and the embedding cache."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    # -- layout ---------------------------------------------------------------------------
    @property
    def crops_dir(self) -> Path:
        return self.root / "crops"

    @property
    def parts_dir(self) -> Path:
        return self.root / "parts"

    @property
    def dataset(self) -> Path:
        """The dataset this extraction run belongs to: its parent folder."""
        return self.root.parent

    def recorded(self, paths: pd.Series) -> pd.Series:
        """Image paths as the tables record them (:func:`paths.source_record`): relative to the
        dataset for a file inside it (as given or with links followed), else as they are."""
        s = pd.Series(paths, dtype="string")
        for root in dict.fromkeys((os.path.realpath(self.dataset), os.path.abspath(self.dataset))):
            prefix = root.rstrip(os.sep) + os.sep
            inside = s.str.startswith(prefix).fillna(False).to_numpy(bool)
            if inside.any():
                s[inside] = s[inside].str.slice(len(prefix))
        return s

    def absolute(self, recorded: pd.Series) -> pd.Series:
        """Recorded image paths as this process opens them (:func:`paths.source_file`)."""
        s = pd.Series(recorded, dtype="string")
        relative = (~s.str.startswith(os.sep).fillna(True) & (s.str.len() > 0).fillna(False)).to_numpy(bool)
        if relative.any():
            s[relative] = os.path.realpath(self.dataset).rstrip(os.sep) + os.sep + s[relative]
        return s

    def _as_recorded(self, df: pd.DataFrame) -> pd.DataFrame:
        if len(df) and "image_path" in df:
            df = df.copy()
            df["image_path"] = self.recorded(df["image_path"]).to_numpy()
        return df

    def exists(self) -> bool:
        return (self.root / "images.parquet").exists() or self.parts_dir.exists()

    def crop_file(self, rel: str) -> Path:
        return self.root / rel

    # -- run parameters -----------------------------------------------------------------------
    def read_params(self) -> dict:
        p = self.root / "extract.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def write_params(self, params: dict) -> None:
        atomic_write_text(self.root / "extract.json", json.dumps({"format_version": FORMAT_VERSION, **params}, indent=2))

    # -- tables ---------------------------------------------------------------------------------
    def _read(self, name: str, columns: dict[str, str], lists: tuple[str, ...] = ()) -> pd.DataFrame:
        frames = []
        main = self.root / f"{name}.parquet"
        if main.exists():
            frames.append(read_parquet(main, f"delete {self.root / 'images.parquet'} and {self.root / 'faces.parquet'}"
                                             " and re-run crowdsort extract-faces to rebuild them"))
        frames += [df for _, df in self._parts(name)]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_frame(columns, lists)
        out = _conform(pd.concat(frames, ignore_index=True), columns, lists)
        out["image_path"] = self.recorded(out["image_path"]).to_numpy()  # a record absolute but inside: as relative
        return out

    def _parts(self, name: str):
        """``(stamp, table)`` of each checkpoint; a checkpoint is its images and faces files
        together, and one whose either file is damaged is dropped whole, so its images are
        simply processed again."""
        if not self.parts_dir.exists():
            return []
        out = []
        for p in sorted(self.parts_dir.glob(f"*-{name}.parquet")):
            stamp = p.name.split("-")[0]
            try:
                pair = {n: pd.read_parquet(self.parts_dir / f"{stamp}-{n}.parquet") for n in ("faces", "images")}
            except (OSError, ValueError, pa.ArrowException) as e:
                log.warning("checkpoint %s is incomplete or damaged (%s): removed, its images are processed again",
                            self.parts_dir / stamp, _reason(e))
                for twin in self.parts_dir.glob(f"{stamp}-*.parquet"):
                    twin.unlink(missing_ok=True)
                continue
            out.append((stamp, pair[name]))
        return out

    def load_images(self) -> pd.DataFrame:
        """One row per source image, the latest record of each (checkpoints included)."""
        df = self._read("images", IMAGE_COLUMNS)
        df = df.drop_duplicates("image_path", keep="last").reset_index(drop=True)
        df["image_path"] = self.absolute(df["image_path"]).to_numpy()
        return df

    def load_faces(self, include_gone: bool = False) -> pd.DataFrame:
        """One row per face; faces of images re-processed later are replaced by the new ones."""
        faces = self._read("faces", FACE_COLUMNS, FACE_LIST_COLUMNS)
        images = self._read("images", IMAGE_COLUMNS)
        if len(faces):
            # A face belongs to the latest processing (record) of its image: faces of an earlier
            # record, e.g. before the file changed or the run's parameters did, are dropped.
            latest = images.drop_duplicates("image_path", keep="last").set_index("image_path")["record"]
            current = faces["record"].to_numpy() == latest.reindex(faces["image_path"]).to_numpy()
            faces = faces[current].drop_duplicates("face_id", keep="last")
        if not include_gone:
            faces = faces[~faces["gone"]]
        faces = faces.reset_index(drop=True)
        faces["image_key"] = faces["image_path"].to_numpy()
        faces["image_path"] = self.absolute(faces["image_path"]).to_numpy()
        return faces

    def write_part(self, images: pd.DataFrame, faces: pd.DataFrame) -> None:
        """Checkpoint a batch of processed images so an interrupted run resumes after it."""
        stamp = f"{time.time_ns():020d}"
        with signals_deferred():
            # faces first: a part's images file is the commit marker read back with it.
            write_table(_conform(self._as_recorded(faces), FACE_COLUMNS, FACE_LIST_COLUMNS),
                        self.parts_dir / f"{stamp}-faces.parquet")
            write_table(_conform(self._as_recorded(images), IMAGE_COLUMNS), self.parts_dir / f"{stamp}-images.parquet")

    def consolidate(self, gone_paths: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Merge checkpoints into the main tables; mark images in ``gone_paths`` and their faces gone."""
        images = self.load_images()
        faces = self.load_faces(include_gone=True)
        if gone_paths:
            images.loc[images["image_path"].isin(gone_paths), "status"] = "gone"
            faces.loc[faces["image_path"].isin(gone_paths), "gone"] = True
        write_table(_conform(self._as_recorded(faces), FACE_COLUMNS, FACE_LIST_COLUMNS), self.root / "faces.parquet")
        write_table(_conform(self._as_recorded(images), IMAGE_COLUMNS), self.root / "images.parquet")
        if self.parts_dir.exists():
            for p in self.parts_dir.glob("*.parquet"):
                p.unlink()
            self.parts_dir.rmdir()
        self._remove_orphan_crops(faces)
        return images, faces

    def _remove_orphan_crops(self, faces: pd.DataFrame) -> None:
        """Crops no face row lists: those of an earlier processing of a file that changed (or
        of a video sampled at another rate). Called under the dataset's lock, after the tables."""
        listed = set(faces["crop_path"]) | set(faces["dataset_crop_path"].fillna(""))
        for folder in ("crops", "ffhq"):
            d = self.root / folder
            if d.is_dir():
                for p in d.glob("*.jpg"):
                    if f"{folder}/{p.name}" not in listed:
                        p.unlink(missing_ok=True)

    # -- embeddings -----------------------------------------------------------------------------
    # One model's cache is a main file plus append-only parts: a checkpoint writes only the new
    # vectors (never the whole cache again), and the parts are merged into the main file when
    # a run ends. Every vector is checked when read; a bad one counts as not cached.
    def _embedding_path(self, model: str) -> Path:
        return self.root / "embeddings" / f"{_safe_name(model)}.parquet"

    def _embedding_parts(self, model: str) -> Path:
        return self.root / "embeddings" / f"{_safe_name(model)}.parts"

    def has_embeddings(self, model: str) -> bool:
        """Whether vectors of ``model`` are cached here (merged, or in parts a run left)."""
        return self._embedding_path(model).exists() or self._embedding_parts(model).exists()

    def _read_vectors(self, path: Path, model: str):
        table = read_cache(path, pq.read_table)
        if table is None:
            return None
        stored = (table.schema.metadata or {}).get(b"model", b"").decode()
        if stored != model:
            raise DamagedFileError(f"{path}: holds vectors of model {stored!r}, not {model!r}; delete it (a cache)")
        ids = table.column("face_id").to_numpy(zero_copy_only=False)
        vec = table.column("vector").combine_chunks()
        return ids, vec.flatten().to_numpy().astype(np.float32, copy=False).reshape(-1, vec.type.list_size), path

    def load_embeddings(self, model: str, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(face_ids, vectors)`` cached for ``model`` (the latest of each id); empty arrays when none.

        Vectors that are not finite, not of unit norm or not of the model's dimension ``dim``
        (the main file's when not given) are left out with a warning, so they are embedded again.
        """
        files = [self._embedding_path(model)]
        parts = self._embedding_parts(model)
        if parts.exists():
            files += sorted(parts.glob("*.parquet"))
        read = [r for r in (self._read_vectors(f, model) for f in files) if r is not None and len(r[0])]
        if not read:
            return np.array([], dtype=object), np.zeros((0, dim or 0), dtype=np.float32)
        dim = dim or read[0][1].shape[1]
        for ids, X, path in read:
            if X.shape[1] != dim:
                log.warning("%s: %d-D vectors, the model gives %d-D: left out (embedded again)", path, X.shape[1], dim)
        read = [(ids, X, path) for ids, X, path in read if X.shape[1] == dim]
        if not read:
            return np.array([], dtype=object), np.zeros((0, dim), dtype=np.float32)
        ids = np.concatenate([r[0] for r in read])
        X = np.vstack([r[1] for r in read])
        good = np.isfinite(X).all(axis=1) & (np.abs(np.linalg.norm(X, axis=1) - 1) < 1e-3)
        if not good.all():
            log.warning("%s: %d cached %s vectors are damaged (not finite or not unit length): embedded again",
                        self._embedding_path(model).parent, int((~good).sum()), model)
        last = ~pd.Series(ids).duplicated(keep="last").to_numpy()
        keep = good & last
        return ids[keep], X[keep]

    def vectors(self, model: str, ids, dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Cached vectors of ``model`` for ``ids`` in that order (those found), and the found mask."""
        cached_ids, X = self.load_embeddings(model, dim)
        rows = pd.Index(cached_ids).get_indexer(list(ids)) if len(cached_ids) else np.full(len(ids), -1)
        found = rows >= 0
        return X[rows[found]] if len(cached_ids) else np.zeros((0, 0), np.float32), found

    def save_embeddings(self, model: str, ids, X: np.ndarray) -> None:
        """Add vectors of ``model`` to its cache as a new part (ids cached before are replaced)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        vec = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), type=pa.float32()), X.shape[1])
        table = pa.table({"face_id": pa.array(list(ids), type=pa.string()), "vector": vec})
        table = table.replace_schema_metadata({"model": model, "format_version": str(FORMAT_VERSION)})
        write_table(table, self._embedding_parts(model) / f"{time.time_ns():020d}-{os.getpid()}.parquet")

    def compact_embeddings(self, model: str) -> None:
        """Merge the parts of ``model``'s cache into its main file (one process at a time)."""
        parts = self._embedding_parts(model)
        # a run killed while it wrote the merged file leaves its temporary file beside it
        remove_stale_temp(self._embedding_path(model).parent)
        if not parts.exists() or not any(parts.glob("*.parquet")):
            return
        if not os.access(parts.parent, os.W_OK):
            return  # a read-only dataset: its parts are read as they are (load_embeddings reads both)
        with file_lock(parts.parent / ".compact.lock"):
            merged = sorted(parts.glob("*.parquet"))
            if not merged:
                return
            ids, X = self.load_embeddings(model)
            vec = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), type=pa.float32()), X.shape[1])
            table = pa.table({"face_id": pa.array(list(ids), type=pa.string()), "vector": vec})
            table = table.replace_schema_metadata({"model": model, "format_version": str(FORMAT_VERSION)})
            write_table(table, self._embedding_path(model))
            for p in merged:  # only what was merged: another process may have added a part since
                p.unlink(missing_ok=True)
            remove_stale_temp(parts)

    # -- kNN graphs -------------------------------------------------------------------------
    def _graph_path(self, model: str, face_ids, k: int, method: str) -> Path:
        import hashlib

        h = hashlib.blake2b("\n".join(map(str, face_ids)).encode(), digest_size=8).hexdigest()
        return self.root / "graphs" / f"{_safe_name(model)}-k{k}-{method}-{h}.npz"

    def load_graph(self, model: str, face_ids, k: int, method: str):
        """The cached kNN graph for exactly these faces (in this order), or None."""
        from ..clustering.neighbors import KNNGraph

        def load(p):
            # our own handle: np.load leaves its file open when a damaged .npz fails to open as a zip
            with open(p, "rb") as f, np.load(f) as z:
                g = KNNGraph(z["indices"], z["distances"], str(z["method"]))
            if g.indices.shape != g.distances.shape or len(g.indices) != len(face_ids):
                raise ValueError(f"shape {g.indices.shape} does not fit {len(face_ids)} items")
            if len(g.indices) and (g.indices.max() >= len(face_ids) or not np.isfinite(g.distances[g.indices >= 0]).all()):
                raise ValueError("neighbour indices or distances out of range")
            return g
        return read_cache(self._graph_path(model, face_ids, k, method), load)

    def save_graph(self, model: str, face_ids, graph, method: str) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, indices=graph.indices, distances=graph.distances, method=graph.method)
        atomic_write_bytes(self._graph_path(model, face_ids, graph.n_neighbors, method), buf.getvalue())


class EmbeddingWriter:
    """New vectors of one model, added to the store's cache every ``every`` items or ``seconds``
    and when the ``with`` block ends, also by an error, Ctrl-C or SIGTERM (the CLI turns it into
    Ctrl-C): a stopped run keeps what it embedded; a killed one, all but the last ``seconds``."""

    def __init__(self, store: FaceStore, model: str, every: int, seconds: float = 20.0):
        self.store, self.model, self.every, self.seconds = store, model, every, seconds
        self.ids: list = []
        self.vecs: list[np.ndarray] = []
        self._last = time.monotonic()

    def add(self, ids, vecs: np.ndarray) -> None:
        if len(ids):
            self.ids.extend(ids)
            self.vecs.append(vecs)
        if len(self.ids) >= self.every or time.monotonic() - self._last > self.seconds:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            with signals_deferred():
                self.store.save_embeddings(self.model, np.array(self.ids, dtype=object), np.vstack(self.vecs))
                self.ids, self.vecs = [], []
        self._last = time.monotonic()

    def __enter__(self) -> "EmbeddingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
        if exc[0] is None:
            self.store.compact_embeddings(self.model)


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive ``fcntl`` lock held while the block runs (waits for another holder)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
