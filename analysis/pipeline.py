"""The end-to-end jobs the CLI, dashboard and notebooks call: thin glue over the modules."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .cluster import ALGORITHMS, make_clusterer, prototypes, relabel_by_size
from .embed import embed_faces, load_embedder
from .export import prepare_output, save_cluster_model, write_cluster_run, write_prototypes
from .neighbors import knn_graph
from .store import FaceStore

# Chosen by measurement (benchmarks/eval_clustering.py, dlib embeddings, one face per photo,
# BCubed F over identities with ≥ 3 photos): HDBSCAN(2, 1) gives 1.000 on faces/ and 0.981 on
# lfw-dev, the best of every algorithm and setting tried; min_cluster_size 5 gives 0.933 and
# 0.675 (lfw-dev people have 3-5 photos).
DEFAULT_ALGORITHM = "hdbscan"
DEFAULT_MIN_CLUSTER_SIZE = 2
DEFAULT_MIN_SAMPLES = 1
GRAPH_NEIGHBORS = 15


def cluster_params(algorithm: str, min_cluster_size=None, min_samples=None, knn=None, eps=None) -> dict:
    """Estimator parameters for ``algorithm`` from the CLI's flat options (None: default)."""
    if algorithm == "hdbscan":
        return {"min_cluster_size": min_cluster_size or DEFAULT_MIN_CLUSTER_SIZE,
                "min_samples": DEFAULT_MIN_SAMPLES if min_samples is None else min_samples}
    if algorithm == "rnn-dbscan":
        return {"n_neighbors": knn or 5}
    if algorithm in ("dbscan", "optics"):
        return {k: v for k, v in {"eps": eps, "min_samples": min_samples}.items() if v is not None}
    if algorithm == "agglomerative":
        return {k: v for k, v in {"distance_threshold": eps, "min_cluster_size": min_cluster_size}.items() if v is not None}
    if algorithm == "chinese-whispers":
        return {k: v for k, v in {"threshold": eps, "min_cluster_size": min_cluster_size}.items() if v is not None}
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")


def cached_graph(store: FaceStore, model: str, face_ids, X: np.ndarray, k: int, ann: str):
    """kNN graph from the store's cache (keyed by model, K, method and the faces), else built and cached."""
    graph = store.load_graph(model, face_ids, k, ann)
    if graph is None:
        graph = knn_graph(X, k, ann)
        store.save_graph(model, face_ids, graph, ann)
    return graph


def cluster_faces(
    dataset: str | os.PathLike,
    source: str = "faces",
    to: str = "cluster",
    model: str = "dlib",
    weights: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    params: dict | None = None,
    ann: str = "auto",
    top: int | None = None,
    num_protos: int = 3,
    proto_out: str | os.PathLike | None = None,
    model_out: str | os.PathLike | None = None,
    link: str = "copy",
    clean: bool = False,
    progress: bool = True,
) -> dict:
    """Embed (cached) and cluster the faces of ``dataset/source``; write ``dataset/to``.

    Returns the run summary (also written as ``clusters.json``).
    """
    dataset = Path(dataset)
    store = FaceStore(dataset / source)
    if not store.exists():
        raise FileNotFoundError(f"{store.root}: no extraction run here; run crowdsort extract-faces -d {dataset} --to {source} first")
    out = dataset / to
    prepare_output(out, clean)  # fail before the expensive part
    params = dict(cluster_params(algorithm) if params is None else params)
    est = make_clusterer(algorithm, **params)
    faces = store.load_faces()
    if len(faces) < 2:
        raise ValueError(f"{store.root}: {len(faces)} face(s) extracted; clustering needs at least 2")
    embedder = load_embedder(model, weights)
    X = embed_faces(store, faces, embedder, progress=progress)
    k = min(max(GRAPH_NEIGHBORS, params.get("n_neighbors", 0), params.get("min_samples") or 0), len(X) - 1)
    graph = cached_graph(store, embedder.name, faces["face_id"].tolist(), X, k, ann)
    est.fit(X, graph=graph)
    labels = relabel_by_size(est.labels_, top)
    probs = getattr(est, "probabilities_", np.ones(len(labels)))
    probs = np.where(labels >= 0, probs, 0.0)
    protos = prototypes(X, labels, num_protos, getattr(est, "reverse_counts_", None))
    rank = np.full(len(labels), -1)
    for rows in protos.values():
        rank[rows] = np.arange(len(rows))
    items = pd.DataFrame({
        "face_id": faces["face_id"],
        "crop_path": [str(store.crop_file(p)) for p in faces["crop_path"]],
        "source_image": faces["image_path"],
        "face_index": faces["face_index"],
        "cluster": labels,
        "membership": np.round(probs, 4),
        "prototype": rank >= 0,
        "prototype_rank": rank,
    })
    items["file"] = items["crop_path"]
    info = {
        "model": embedder.name, "algorithm": algorithm,
        "parameters": {**params, "n_neighbors_graph": graph.n_neighbors, "ann": graph.method, "top": top,
                       "num_protos": num_protos},
        "source": str(store.root),
    }
    write_cluster_run(out, items, info, link=link, clean=clean)
    if proto_out:
        write_prototypes(proto_out, items, clean=clean)
    if model_out:
        save_cluster_model(model_out, X, labels, faces["face_id"].to_numpy(), graph, info)
    return json.loads((out / "clusters.json").read_text())
