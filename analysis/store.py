"""The on-disk dataset: one class owns the layout, every write is atomic.

A dataset folder ``D`` holds one folder per extraction run (``D/faces``) and per cluster
run (``D/cluster``). An extraction run is a :class:`FaceStore`::

    D/faces/
      extract.json            parameters of the run and format version
      images.parquet          one row per source image: hash, size, status, error, n_faces
      faces.parquet           one row per face: provenance, box, landmarks, crop
      parts/                  checkpoints of an unfinished run (merged when it finishes)
      crops/<stem>-<id>.jpg   aligned crops
      embeddings/<model>.parquet   face_id → L2-normalised float32 vector, per model
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

FORMAT_VERSION = 1

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
}
# List columns: landmarks and crop_landmarks are 4 (x, y) points flattened; keypoints are
# the engine's own points flattened.
FACE_LIST_COLUMNS = ("landmarks", "crop_landmarks", "keypoints")


def _safe_name(name: str) -> str:
    """A model name as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_table(df: pd.DataFrame | pa.Table, path: Path) -> None:
    """Atomically write a DataFrame or Arrow table as Parquet."""
    table = df if isinstance(df, pa.Table) else pa.Table.from_pandas(df, preserve_index=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".parquet")
    os.close(fd)
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def empty_frame(columns: dict[str, str], lists: tuple[str, ...] = ()) -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype=t) for c, t in columns.items()})
    for c in lists:
        df[c] = pd.Series(dtype=object)
    return df


def _conform(df: pd.DataFrame, columns: dict[str, str], lists: tuple[str, ...] = ()) -> pd.DataFrame:
    if df.empty:
        return empty_frame(columns, lists)
    out = df.reindex(columns=list(columns) + list(lists))
    # Columns a file from an older version lacks read as zero/empty.
    for c, t in columns.items():
        if out[c].isna().all() and c not in df:
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
            frames.append(pd.read_parquet(main))
        if self.parts_dir.exists():
            frames += [pd.read_parquet(p) for p in sorted(self.parts_dir.glob(f"*-{name}.parquet"))]
        frames = [f for f in frames if len(f)]
        if not frames:
            return empty_frame(columns, lists)
        return _conform(pd.concat(frames, ignore_index=True), columns, lists)

    def load_images(self) -> pd.DataFrame:
        """One row per source image, the latest record of each (checkpoints included)."""
        df = self._read("images", IMAGE_COLUMNS)
        return df.drop_duplicates("image_path", keep="last").reset_index(drop=True)

    def load_faces(self, include_gone: bool = False) -> pd.DataFrame:
        """One row per face; faces of images re-processed later are replaced by the new ones."""
        images = self._read("images", IMAGE_COLUMNS)
        faces = self._read("faces", FACE_COLUMNS, FACE_LIST_COLUMNS)
        if len(faces):
            # A face belongs to the latest processing (record) of its image: faces of an earlier
            # record, e.g. before the file changed or the run's parameters did, are dropped.
            latest = images.drop_duplicates("image_path", keep="last").set_index("image_path")["record"]
            current = faces["record"].to_numpy() == latest.reindex(faces["image_path"]).to_numpy()
            faces = faces[current].drop_duplicates("face_id", keep="last")
        if not include_gone:
            faces = faces[~faces["gone"]]
        return faces.reset_index(drop=True)

    def write_part(self, images: pd.DataFrame, faces: pd.DataFrame) -> None:
        """Checkpoint a batch of processed images so an interrupted run resumes after it."""
        stamp = f"{time.time_ns():020d}"
        # faces first: a part's images file is the commit marker read back with it.
        write_table(_conform(faces, FACE_COLUMNS, FACE_LIST_COLUMNS), self.parts_dir / f"{stamp}-faces.parquet")
        write_table(_conform(images, IMAGE_COLUMNS), self.parts_dir / f"{stamp}-images.parquet")

    def consolidate(self, gone_paths: set[str] = frozenset()) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Merge checkpoints into the main tables; mark images in ``gone_paths`` and their faces gone."""
        images = self.load_images()
        faces = self.load_faces(include_gone=True)
        if gone_paths:
            images.loc[images["image_path"].isin(gone_paths), "status"] = "gone"
            faces.loc[faces["image_path"].isin(gone_paths), "gone"] = True
        write_table(_conform(faces, FACE_COLUMNS, FACE_LIST_COLUMNS), self.root / "faces.parquet")
        write_table(_conform(images, IMAGE_COLUMNS), self.root / "images.parquet")
        if self.parts_dir.exists():
            for p in self.parts_dir.glob("*.parquet"):
                p.unlink()
            self.parts_dir.rmdir()
        return images, faces

    # -- embeddings -----------------------------------------------------------------------------
    def _embedding_path(self, model: str) -> Path:
        return self.root / "embeddings" / f"{_safe_name(model)}.parquet"

    def load_embeddings(self, model: str) -> tuple[np.ndarray, np.ndarray]:
        """``(face_ids, vectors)`` cached for ``model``; empty arrays when none."""
        path = self._embedding_path(model)
        if not path.exists():
            return np.array([], dtype=object), np.zeros((0, 0), dtype=np.float32)
        table = pq.read_table(path)
        stored = (table.schema.metadata or {}).get(b"model", b"").decode()
        if stored != model:
            raise ValueError(f"{path}: holds vectors of model {stored!r}, not {model!r}")
        ids = table.column("face_id").to_numpy(zero_copy_only=False)
        vec = table.column("vector").combine_chunks()
        dim = vec.type.list_size
        X = vec.flatten().to_numpy().astype(np.float32, copy=False).reshape(-1, dim)
        return ids, X

    def vectors(self, model: str, ids) -> tuple[np.ndarray, np.ndarray]:
        """Cached vectors of ``model`` for ``ids`` in that order (those found), and the found mask."""
        cached_ids, X = self.load_embeddings(model)
        pos = {f: i for i, f in enumerate(cached_ids)}
        rows = np.array([pos.get(f, -1) for f in ids], dtype=np.int64)
        found = rows >= 0
        return X[rows[found]] if len(cached_ids) else np.zeros((0, 0), np.float32), found

    def save_embeddings(self, model: str, ids, X: np.ndarray) -> None:
        """Add vectors of ``model`` to its cache (existing ids are replaced)."""
        old_ids, old_X = self.load_embeddings(model)
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(old_ids):
            if old_X.shape[1] != X.shape[1]:
                raise ValueError(f"model {model!r}: dimension changed ({old_X.shape[1]} → {X.shape[1]})")
            keep = ~np.isin(old_ids, ids)
            ids = np.concatenate([old_ids[keep], np.asarray(ids, dtype=object)])
            X = np.vstack([old_X[keep], X])
        dim = X.shape[1]
        vec = pa.FixedSizeListArray.from_arrays(pa.array(X.ravel(), type=pa.float32()), dim)
        table = pa.table({"face_id": pa.array(list(ids), type=pa.string()), "vector": vec})
        table = table.replace_schema_metadata({"model": model, "format_version": str(FORMAT_VERSION)})
        write_table(table, self._embedding_path(model))

    # -- kNN graphs -------------------------------------------------------------------------
    def _graph_path(self, model: str, face_ids, k: int, method: str) -> Path:
        import hashlib

        h = hashlib.blake2b("\n".join(map(str, face_ids)).encode(), digest_size=8).hexdigest()
        return self.root / "graphs" / f"{_safe_name(model)}-k{k}-{method}-{h}.npz"

    def load_graph(self, model: str, face_ids, k: int, method: str):
        """The cached kNN graph for exactly these faces (in this order), or None."""
        from .neighbors import KNNGraph

        p = self._graph_path(model, face_ids, k, method)
        if not p.exists():
            return None
        with np.load(p) as z:
            return KNNGraph(z["indices"], z["distances"], str(z["method"]))

    def save_graph(self, model: str, face_ids, graph, method: str) -> None:
        import io

        buf = io.BytesIO()
        np.savez(buf, indices=graph.indices, distances=graph.distances, method=graph.method)
        atomic_write_bytes(self._graph_path(model, face_ids, graph.n_neighbors, method), buf.getvalue())


class EmbeddingWriter:
    """New vectors of one model, added to the store's cache every ``every`` items and when the
    ``with`` block ends, also by an error or Ctrl-C: a stopped run keeps what it embedded."""

    def __init__(self, store: FaceStore, model: str, every: int):
        self.store, self.model, self.every = store, model, every
        self.ids: list = []
        self.vecs: list[np.ndarray] = []

    def add(self, ids, vecs: np.ndarray) -> None:
        if len(ids):
            self.ids.extend(ids)
            self.vecs.append(vecs)
        if len(self.ids) >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.ids:
            self.store.save_embeddings(self.model, np.array(self.ids, dtype=object), np.vstack(self.vecs))
            self.ids, self.vecs = [], []

    def __enter__(self) -> "EmbeddingWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.flush()

