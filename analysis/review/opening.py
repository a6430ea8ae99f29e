"""The dashboard's data: a :class:`~crowdsort.review.session.ReviewSession` opened over a dataset's faces
(vectors, kNN graph and map cached in the dataset, corrections from its annotations) or over an
image cluster run's images."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..faces.embed import DEFAULT_FACE_MODEL, embed_faces, load_embedder
from ..naming.identify import load_references
from ..storage.migrate import migrate_if_free
from ..storage.paths import DatasetFiles
from ..pipeline import GRAPH_NEIGHBORS, cached_graph, extraction_store, load_image_run, stored_vectors, track_items
from .project import MapInBackground, cached_layout, stored_layout
from .session import Annotations, ReviewSession
from ..storage.store import FaceStore, read_cache
from ..video.tracks import item_keys, picture_keys

log = logging.getLogger(__name__)
FIRST_PAGE_S = 5.0  # a map computed in the background starts after these seconds, or when its tab is opened


def open_review(dataset, source: str = "faces", model: str | None = None, weights=None, refs=None,
                progress: bool = True, per_track: int = 5, map_later: bool = False):
    """A :class:`review.ReviewSession` over the faces of ``dataset/source``: vectors embedded
    (cached), the kNN graph and the UMAP map computed once and stored in the dataset, and the
    dataset's saved corrections (``dataset/annotations.jsonl``). A video's faces come as one item
    per track (its ``per_track`` best faces' mean vector; ``session.item_faces`` lists every face of
    every item), so naming or moving a track does so for all its faces. ``map_later``: a map not
    stored yet is computed in a thread (``session.map_job``, :class:`project.MapInBackground`;
    ``session.layout`` is None until it is done), not before the session is returned."""
    dataset = Path(dataset)
    store = extraction_store(dataset, source)
    migrate_if_free(store, dataset)  # a dataset of absolute paths (format 1), moved or not: its names kept
    faces = store.load_faces()
    if len(faces) < 2:
        raise ValueError(f"{store.root}: {len(faces)} face(s); the dashboard needs at least 2")
    embedder = load_embedder(model or reviewed_model(store), weights)
    table, X, members = face_items(store, faces, embedder, per_track, progress)
    if refs is not None and not hasattr(refs, "vectors"):
        refs = load_references(refs, model, weights, progress=progress)
        refs.check_model(embedder.name)
    session = _review(store, embedder.name, X, table, dataset / "annotations.jsonl", refs, "faces", map_later)
    session.item_faces = members
    session.files = DatasetFiles(dataset, store.load_images()["image_path"], runs=[store.root])  # what it may show
    return session


def face_items(store: FaceStore, faces: pd.DataFrame, embedder, per_track: int = 5, progress: bool = True):
    """``(table, vectors, members)`` the dashboard shows of ``store``: one row per photo face,
    one per video track (its best face's row; ``members``: every face of every track, else None).
    The ids and vectors the review's graph and map are keyed by: :func:`prepare_review` makes
    them with this same function, so what ``crowdsort cluster`` stores is what the dashboard reads."""
    table = pd.DataFrame({"face_id": faces["face_id"], "source_image": faces["image_path"],
                          "face_index": faces["face_index"],
                          "crop_path": [str(store.crop_file(p)) for p in faces["crop_path"]],
                          "picture": picture_keys(faces), "frame": faces["frame"], "time_s": faces["time_s"],
                          "shot": faces["shot"], "track": faces["track"],
                          "box": list(faces[["x0", "y0", "x1", "y1"]].to_numpy(np.float64))})
    members = None
    if (faces["track"] >= 0).any():  # a video's track is one item, shown by its best face
        keys = item_keys(faces)
        ids, X, groups, best = track_items(store, faces, keys, embedder, per_track, progress)
        members = table.drop(columns="picture").assign(item_id=keys)
        table = table.iloc[best].reset_index(drop=True).assign(
            item_id=ids, picture=groups, n_faces=pd.Series(keys).value_counts().reindex(ids).to_numpy())
        table = table[["item_id", *[c for c in table.columns if c != "item_id"]]]
    else:
        X = embed_faces(store, faces, embedder, progress=progress)
    return table, X, members


def review_graph(store: FaceStore, model: str, ids, X: np.ndarray):
    """The review's kNN graph over these items, read from the store's cache or built and stored."""
    return cached_graph(store, model, ids, X, min(GRAPH_NEIGHBORS, len(X) - 1), "auto")


def prepare_review(store: FaceStore, model: str, ids, X: np.ndarray):
    """``(graph, layout)`` of the review over these items: the kNN graph and the UMAP map, each
    read from the store's cache or computed and stored there. ``crowdsort cluster`` calls it
    ahead, so the dashboard's first page only reads them."""
    graph = review_graph(store, model, ids, X)
    layout = cached_layout(store, model, ids, X, graph)
    return graph, layout


def prepare_face_review(store: FaceStore, embedder, per_track: int = 5) -> None:
    """What the dashboard over ``store``'s faces needs, made and cached now (``crowdsort cluster``
    does it once its run is written): the same items as :func:`open_review`'s."""
    table, X, _ = face_items(store, store.load_faces(), embedder, per_track, progress=False)
    prepare_review(store, embedder.name, table.iloc[:, 0].tolist(), X)


def prepare_image_review(dataset, run: str = "cluster") -> None:
    """The same for an image cluster run (:func:`open_image_review`'s items, read back from the run)."""
    items, info = load_image_run(dataset, run)
    store = FaceStore(Path(dataset) / "images")
    ids = items["item_id"].tolist()
    prepare_review(store, info["model"], ids, stored_vectors(store, info["model"], ids))


def prepare_ahead(make) -> None:
    """The dashboard's kNN graph and map of a run just written, made now and cached where the
    dashboard reads them (:func:`prepare_review`): its first page then reads them
    (a map of 1k faces took 30 s when first opened). The run is written by then: a failure here
    leaves the map to the dashboard, and says so."""
    try:
        make()
    except Exception as e:  # noqa: BLE001 (UMAP's and numba's errors are of many kinds; the run stands)
        log.warning("the dashboard's map was not made ahead (%s); the dashboard makes it when it first opens", e)


def reviewed_model(store: FaceStore) -> str | None:
    """The identity model a dataset is reviewed with when none is named: the default model once
    its vectors are there, else dlib's where a dataset made before holds only those (its
    corrections are by face id, so they carry over when the default model's run comes)."""
    return "dlib" if store.has_embeddings("dlib") and not store.has_embeddings(DEFAULT_FACE_MODEL) else None


def open_image_review(dataset, run: str = "cluster", map_later: bool = False):
    """A :class:`review.ReviewSession` over the images of an image cluster run
    (``crowdsort cluster --model efficientnet|clip``): its vectors come from the dataset's image
    cache, so no model is loaded; corrections are kept in ``dataset/images/annotations.jsonl``.
    ``map_later``: as :func:`open_review`'s."""
    items, info = load_image_run(dataset, run)
    store = FaceStore(Path(dataset) / "images")
    X = stored_vectors(store, info["model"], items["item_id"].tolist())
    table = pd.DataFrame({"item_id": items["item_id"], "source_image": items["source_image"],
                          "crop_path": items["source_image"]})
    session = _review(store, info["model"], X, table, store.root / "annotations.jsonl", None, "images", map_later)
    # the run's table may be edited: its pictures are the indexed ones, or still hold what was clustered
    session.files = DatasetFiles(dataset, indexed_images(store),
                                 contents=dict(zip(items["source_image"], items["item_id"])))
    return session


def indexed_images(store: FaceStore) -> list[str]:
    """The images an image clustering found (``images/index.parquet``): those the page may show."""
    index = read_cache(store.root / "index.parquet", pd.read_parquet)
    return [] if index is None else index["path"].tolist()


def _review(store: FaceStore, model: str, X: np.ndarray, table: pd.DataFrame, annotations: Path, refs, kind: str,
            map_later: bool = False):
    ids = table.iloc[:, 0].tolist()
    if map_later:
        graph = review_graph(store, model, ids, X)  # the clustering needs it now; seconds at most
        layout = stored_layout(store, model, ids)
    else:
        graph, layout = prepare_review(store, model, ids, X)
    session = ReviewSession(ids, X, graph, layout, Annotations.load(annotations), table, refs, kind=kind, model=model)
    if layout is None:  # a dataset clustered by the Python API (no map made ahead)

        def compute(on_epoch):
            session.layout = cached_layout(store, model, ids, X, graph, on_epoch=on_epoch)
            return session.layout  # set before the job says it is done
        # held for the first page's seconds (the dashboard's URL is printed when this returns)
        session.map_job = MapInBackground(compute, len(ids), hold_s=FIRST_PAGE_S).start()
    return session
