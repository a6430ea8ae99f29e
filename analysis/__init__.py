"""crowdsort: turn a folder of photos into people and things.

The public API, one import away (``from crowdsort import extract_faces, FaceStore``); each name
is loaded on first use, so ``import crowdsort`` stays quick and pulls in no model runtime::

    from crowdsort import ExtractParams, FaceStore, extract_faces, cluster_faces, open_review

    extract_faces("photos/*", FaceStore("D/faces"), ExtractParams(max_faces=1))
    cluster_faces("D", to="cluster")         # D/cluster/000/…, noise/, assignments.csv
    session = open_review("D")                # what the dashboard shows, and its corrections

The modules behind it, by what they do: ``faces`` (detect, align, crop, embed), ``video``
(frames, shots, tracks), ``clustering`` (the kNN graph and the estimators), ``naming``
(references, identification, Wikidata), ``review`` (the session and the Panel app),
``storage`` (the dataset on disk, exports), ``models`` (model files and their runtimes),
``scale`` (process pool, Ray), ``things`` (whole images); ``extract`` and ``pipeline`` run
them over a dataset, ``cli`` is the command line.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    # a dataset's faces
    "ExtractParams": "extract", "extract_faces": "extract",
    "FaceStore": "storage.store",
    "load_detector": "faces.detect",
    "load_embedder": "faces.embed", "embed_faces": "faces.embed",
    # clustering (scikit-learn estimators over a cached kNN graph)
    "cluster_faces": "pipeline", "cluster_images": "pipeline", "load_cluster_run": "pipeline",
    "SharedNeighborWhispers": "clustering.cluster", "make_clusterer": "clustering.cluster",
    "knn_graph": "clustering.neighbors", "bcubed": "clustering.metrics",
    # naming
    "load_references": "naming.identify", "identify_faces": "naming.identify",
    "identify_dataset": "pipeline", "label_clusters": "pipeline", "apply_labels": "pipeline",
    # review
    "open_review": "review.opening", "open_image_review": "review.opening",
    "ReviewSession": "review.session", "ReviewApp": "review.app",
    # models and the example
    "install_model": ("models.install", "install"), "resolve_model_file": "models.install",
    "build_example": "example",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    target = _API.get(name)
    if target is None:
        raise AttributeError(f"module 'crowdsort' has no attribute {name!r}")
    module, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # looked up once
    return value


def __dir__():
    return sorted([*globals(), *_API])
