"""The end-to-end jobs the CLI, dashboard and notebooks call: thin glue over the modules."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .cluster import HDBSCAN, prototypes, relabel_by_size
from .embed import embed_faces, load_embedder
from .export import prepare_output, write_cluster_run
from .neighbors import knn_graph
from .store import FaceStore

# Chosen by measurement (benchmarks/eval_faces.py, dlib embeddings, one face per photo):
# HDBSCAN(2, 1) gives BCubed F 1.000 on faces/ and 0.981 on lfw-dev identities with ≥ 3
# photos, where min_cluster_size 5 gives 0.933 and 0.675 (lfw-dev clusters hold 3–5 photos).
DEFAULT_MIN_CLUSTER_SIZE = 2
DEFAULT_MIN_SAMPLES = 1


def cluster_faces(
    dataset: str | os.PathLike,
    source: str = "faces",
    to: str = "cluster",
    model: str = "dlib",
    weights: str | None = None,
    min_cluster_size: int = DEFAULT_MIN_CLUSTER_SIZE,
    min_samples: int | None = DEFAULT_MIN_SAMPLES,
    n_neighbors: int = 15,
    ann: str = "auto",
    top: int | None = None,
    num_protos: int = 3,
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
    faces = store.load_faces()
    if len(faces) < 2:
        raise ValueError(f"{store.root}: {len(faces)} face(s) extracted; clustering needs at least 2")
    embedder = load_embedder(model, weights)
    X = embed_faces(store, faces, embedder, progress=progress)
    graph = knn_graph(X, max(n_neighbors, min_samples or 1), ann)
    est = HDBSCAN(min_cluster_size, min_samples, n_neighbors=n_neighbors, ann=ann).fit(X, graph=graph)
    labels = relabel_by_size(est.labels_, top)
    probs = np.where(labels >= 0, est.probabilities_, 0.0)
    is_proto = np.zeros(len(labels), dtype=bool)
    for rows in prototypes(X, labels, num_protos).values():
        is_proto[rows] = True
    items = pd.DataFrame({
        "face_id": faces["face_id"],
        "crop_path": [str(store.crop_file(p)) for p in faces["crop_path"]],
        "source_image": faces["image_path"],
        "face_index": faces["face_index"],
        "cluster": labels,
        "membership": np.round(probs, 4),
        "prototype": is_proto,
    })
    items["file"] = items["crop_path"]
    info = {
        "model": embedder.name, "algorithm": "hdbscan",
        "parameters": {"min_cluster_size": min_cluster_size, "min_samples": min_samples,
                       "n_neighbors": graph.n_neighbors, "ann": graph.method, "top": top,
                       "num_protos": num_protos},
        "source": str(store.root),
    }
    write_cluster_run(out, items, info, link=link, clean=clean)
    return json.loads((out / "clusters.json").read_text())
