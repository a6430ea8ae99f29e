"""The end-to-end jobs the CLI, dashboard and notebooks call: thin glue over the modules."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from .clustering.cluster import ALGORITHMS, make_clusterer, prototypes, relabel_by_size, separate_cannot_link
from .faces.embed import DEFAULT_FACE_MODEL, DLIB_MODELS, embed_faces, embedder_name, load_embedder
from .storage.export import (prepare_output, read_own_csv, save_cluster_model, unnamed_label, write_cluster_run,
                     write_prototypes)
from .storage.locks import DatasetLock
from .clustering.neighbors import knn_graph
from .storage.paths import DatasetFiles, dataset_relative, recorded_paths
from .storage.store import FaceStore
from .video.tracks import best_faces, face_quality, item_keys, picture_keys, pool_items

# Chosen by measurement (benchmarks/eval_defaults.py: dlib vectors, one face per photo, BCubed F
# over people with >= 3 photos / over all faces, judged by the worse of lfw-dev and celeba-dev):
# snn-whispers .964 / .949, against HDBSCAN(2, 1) .867 / .873 (it splits people with 10-20
# photos) and Chinese whispers at 0.06 .949 / .941. Its thresholds are dlib distances, so other
# models (ArcFace, whose vectors could not be measured here, and whole-image models) keep
# HDBSCAN(2, 1), which adapts to the scale of the distances.
DEFAULT_FACE_ALGORITHM = "snn-whispers"
# The face clustering's thresholds are distances of one identity model. The estimators' own
# defaults are dlib's; MobileFaceNet's, chosen the same way (worse of lfw-dev and celeba-dev,
# benchmarks/eval_models.py --grid): snn-whispers 0.38 / 0.44 with the
# shared-neighbour term at scale 0.5 gives .975 / .967 on the worse set (celeba-dev), and
# lfw-dev .993 / .992, faces/ 1.000; 0.38-0.42 at scale 0.5-0.6 all lie within .004 of it.
# Its distances are ~5x dlib's (same-person median .23 against .05), hence the scale.
FACE_CLUSTER_DEFAULTS = {
    "mobilefacenet": {"snn-whispers": {"threshold": 0.38, "mutual_threshold": 0.44, "scale": 0.5},
                      "chinese-whispers": {"threshold": 0.40}},
}
DEFAULT_ALGORITHM = "hdbscan"
DEFAULT_MIN_CLUSTER_SIZE = 2
DEFAULT_MIN_SAMPLES = 1
GRAPH_NEIGHBORS = 15


def default_algorithm(model: str | None = None, kind: str = "faces") -> str:
    """The clustering used when none is asked for (see the measurements above); ``None``: the
    default identity model."""
    tuned = model is None or model in DLIB_MODELS or model in FACE_CLUSTER_DEFAULTS
    return DEFAULT_FACE_ALGORITHM if kind == "faces" and tuned else DEFAULT_ALGORITHM


def model_cluster_params(model: str | None, algorithm: str) -> dict:
    """The parameters of ``algorithm`` measured for ``model``'s distances (empty: the
    estimator's own defaults, dlib's)."""
    return dict(FACE_CLUSTER_DEFAULTS.get(model or DEFAULT_FACE_MODEL, {}).get(algorithm, {}))


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
    if algorithm in ("chinese-whispers", "snn-whispers"):
        return {k: v for k, v in {"threshold": eps, "min_cluster_size": min_cluster_size}.items() if v is not None}
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")


def output_plan(out: Path, clean: bool) -> str:
    """What a run would do to its output folder: ``new``, ``replace``, or ``refused: why``."""
    from .storage.export import OutputExistsError

    try:
        return prepare_output(out, clean, replace_own=True)
    except OutputExistsError as e:
        return f"refused: {e}"


def extraction_store(dataset, source: str = "faces") -> FaceStore:
    """The extraction run ``dataset/source``; a clear error when there is none."""
    store = FaceStore(Path(dataset) / source)
    if not store.exists():
        raise FileNotFoundError(f"{store.root}: no extraction run here; run crowdsort extract-faces -d {dataset} --to {source} first")
    return store


def cached_graph(store: FaceStore, model: str, face_ids, X: np.ndarray, k: int, ann: str):
    """kNN graph from the store's cache (keyed by model, K, method and the faces), else built and cached."""
    graph = store.load_graph(model, face_ids, k, ann)
    if graph is None:
        graph = knn_graph(X, k, ann)
        store.save_graph(model, face_ids, graph, ann)
    return graph


def _graph_k(params: dict, n: int) -> int:
    return min(max(GRAPH_NEIGHBORS, params.get("n_neighbors", 0), params.get("min_samples") or 0), n - 1)


def fit_labels(est, X: np.ndarray, graph, top: int | None, num_protos: int, groups=None):
    """Fit ``est`` on the graph; ``(labels by size, membership, prototype rank or -1)`` per item.
    ``groups``: the photo of each face; faces of one photo never share a cluster."""
    est.fit(X, graph=graph)
    labels = est.labels_ if groups is None else separate_cannot_link(X, est.labels_, groups)
    labels = relabel_by_size(labels, top)
    probs = getattr(est, "probabilities_", np.ones(len(labels)))
    probs = np.where(labels >= 0, probs, 0.0)
    protos = prototypes(X, labels, num_protos, getattr(est, "reverse_counts_", None))
    rank = np.full(len(labels), -1)
    for rows in protos.values():
        rank[rows] = np.arange(len(rows))
    return labels, probs, rank


def run_info(model: str, algorithm: str, params: dict, graph, top, num_protos: int, store: FaceStore, dataset,
             **extra) -> dict:
    """What ``clusters.json`` records about how a run was made; ``source``, the store the
    vectors are cached in, relative to the dataset (:func:`run_source` reads it)."""
    return {"model": model, "algorithm": algorithm,
            "parameters": {**params, "n_neighbors_graph": graph.n_neighbors, "ann": graph.method, "top": top,
                           "num_protos": num_protos},
            "source": dataset_relative(dataset, store.root), **extra}


def cluster_faces(
    dataset: str | os.PathLike,
    source: str = "faces",
    to: str = "cluster",
    model: str | None = None,
    weights: str | None = None,
    algorithm: str | None = None,
    params: dict | None = None,
    ann: str = "auto",
    top: int | None = None,
    num_protos: int = 3,
    proto_out: str | os.PathLike | None = None,
    model_out: str | os.PathLike | None = None,
    link: str = "copy",
    clean: bool = False,
    progress: bool = True,
    workers: int | None = None,
    dry_run: bool = False,
    per_track: int | None = 5,
    backend: str = "local",
    ray_address: str | None = None,
    ray_gpus: float | None = None,
) -> dict:
    """Embed (cached) and cluster the faces of ``dataset/source``; write ``dataset/to``.

    A video's faces are clustered by track: one item per track, its vector the mean of its
    ``per_track`` best faces' (all with None or 0), so a track's faces share one cluster, and
    two tracks seen in one frame never do.

    ``algorithm``: None for :func:`default_algorithm` of ``model``.
    ``workers``: embedding processes (default: one per core for dlib-native, one for dlib and ArcFace).
    Returns the run summary (also written as ``clusters.json``); with ``dry_run``, what would
    be done (faces, how many to embed, what happens to the output), nothing written.
    """
    dataset = Path(dataset)
    if dry_run:
        store = extraction_store(dataset, source)
        faces = store.load_faces()
        name = embedder_name(model, weights)
        _, found = store.vectors(name, faces.loc[best_faces(faces, per_track), "face_id"])
        return {"dry_run": True, "faces": len(faces), "to_embed": int((~found).sum()), "model": name,
                "output": output_plan(dataset / to, clean)}
    with DatasetLock(dataset, "cluster"):
        return _cluster_faces(dataset, source, to, model, weights, algorithm, params, ann, top, num_protos, proto_out,
                              model_out, link, clean, progress, per_track,
                              dict(workers=workers, backend=backend, ray_address=ray_address, ray_gpus=ray_gpus))


def _cluster_faces(dataset, source, to, model, weights, algorithm, params, ann, top, num_protos, proto_out,
                   model_out, link, clean, progress, per_track, run) -> dict:
    from .storage.migrate import migrate_store

    store = extraction_store(dataset, source)
    migrate_store(store, locked=True, dataset=dataset)  # a dataset of absolute paths (format 1): made relative
    out = dataset / to
    plan = prepare_output(out, clean, replace_own=True)  # fail before the expensive part
    faces = store.load_faces()
    embedder = load_embedder(model, weights)
    algorithm = algorithm or default_algorithm(embedder.name)
    # the model's measured cuts, under whatever the caller set
    params = {**model_cluster_params(embedder.name, algorithm), **(cluster_params(algorithm) if params is None else params)}
    est = make_clusterer(algorithm, **params)
    keys = item_keys(faces)  # a video's faces are clustered by track, a photo's one by one
    ids, X, groups, first = track_items(store, faces, keys, embedder, per_track, progress, run)
    if len(ids) < 2:
        raise ValueError(f"{store.root}: {len(faces)} face(s) in {len(ids)} item(s) extracted; clustering needs "
                         "at least 2")
    graph = cached_graph(store, embedder.name, ids.tolist(), X, _graph_k(params, len(X)), ann)
    item_labels, item_probs, item_rank = fit_labels(est, X, graph, top, num_protos, groups=groups)
    at = pd.Index(ids).get_indexer(keys)  # every face takes its item's cluster
    rank = np.where(np.arange(len(faces)) == first[at], item_rank[at], -1)  # an item's prototype: its best face
    labels, probs = item_labels[at], item_probs[at]
    crops = [store.crop_file(p) for p in faces["crop_path"]]  # as this process opens them
    items = pd.DataFrame({
        "face_id": faces["face_id"],
        "crop_path": [dataset_relative(dataset, p) for p in crops],
        "source_image": [dataset_relative(dataset, p) for p in faces["image_path"]],
        "face_index": faces["face_index"],
        "frame": faces["frame"],
        "time_s": faces["time_s"].round(4),
        "shot": faces["shot"],
        "track": faces["track"],
        "cluster": labels,
        "membership": np.round(probs, 4),
        "prototype": rank >= 0,
        "prototype_rank": rank,
    })
    # the folders hold the dataset crops where they were written (what a dataset builder picks from);
    # "file" is what is copied now, from this folder (assignments.csv does not keep it)
    dataset_crops = faces["dataset_crop_path"].fillna("").to_numpy()
    items["file"] = np.where(dataset_crops != "", [str(store.crop_file(p)) for p in dataset_crops], list(map(str, crops)))
    info = run_info(embedder.name, algorithm, params, graph, top, num_protos, store, dataset,
                    tracks=int((faces["track"] >= 0).groupby(keys).any().sum()), per_track=per_track)
    files = DatasetFiles(dataset, runs=[store.root])  # the crops, links followed, must be the run's
    write_cluster_run(out, items, info, link=link, clean=clean, files=files)
    if proto_out:
        write_prototypes(proto_out, items, clean=clean, files=files)
    if model_out:
        save_cluster_model(model_out, X, item_labels, ids, graph, info)
    summary = {**json.loads((out / "clusters.json").read_text()), "replaced": plan == "replace"}
    return summary


def track_items(store, faces, keys, embedder, per_track, progress, run=None):
    """``(item ids, vectors, cannot-link keys, row of each item's best face)``; ``run``: how the
    embedding runs (:func:`embed.embed_faces`' workers, backend, ray_address, ray_gpus). A track's vector
    is the unit mean of its best faces' (:func:`tracks.best_faces`); its cannot-link keys are the
    frames it is seen in, a photo face's its photo."""
    chosen = best_faces(faces, per_track)
    V = embed_faces(store, faces[chosen].reset_index(drop=True), embedder, progress=progress, **(run or {}))
    ids, X = pool_items(V, keys[chosen])
    by_item = pd.Series(picture_keys(faces)).groupby(keys).agg(frozenset)
    q = pd.Series(np.where(chosen, face_quality(faces), -np.inf))
    best = q.groupby(keys).idxmax()
    return ids, X, by_item.reindex(ids).tolist(), best.reindex(ids).to_numpy()


def cluster_images(
    dataset: str | os.PathLike,
    patterns: str | list[str],
    to: str = "cluster",
    model: str = "efficientnet",
    weights: str | None = None,
    arch: str | None = None,
    algorithm: str = DEFAULT_ALGORITHM,
    params: dict | None = None,
    ann: str = "auto",
    top: int | None = None,
    num_protos: int = 3,
    proto_out: str | os.PathLike | None = None,
    link: str = "copy",
    clean: bool = False,
    batch_size: int = 32,
    device: str | None = None,
    progress: bool = True,
    dry_run: bool = False,
    workers: int | None = None,
    backend: str = "local",
    ray_address: str | None = None,
    ray_gpus: float | None = None,
) -> dict:
    """Cluster whole images matched by ``patterns`` by visual similarity; write ``dataset/to``.

    Vectors are cached in ``dataset/images/`` per model and content hash, so a re-run (or
    another clustering) embeds only new images. Unreadable files are listed in the summary
    (``errors``) and left out. ``dry_run``: the images found and what happens to the output.
    ``backend`` ``ray``: the embedding on ``workers`` Ray actors (:func:`image_embed.embed_images`).
    """
    dataset = Path(dataset)
    if dry_run:
        from .storage.images import find_images

        skipped: list = []
        return {"dry_run": True, "images": len(find_images(patterns, skipped=skipped)),
                "skipped": [[str(p), r] for p, r in skipped], "output": output_plan(dataset / to, clean)}
    with DatasetLock(dataset, "cluster"):
        return _cluster_images(dataset, patterns, to, model, weights, arch, algorithm, params, ann, top, num_protos,
                               proto_out, link, clean, batch_size, device, progress,
                               dict(backend=backend, actors=workers or 1, ray_address=ray_address, ray_gpus=ray_gpus))


def _cluster_images(dataset, patterns, to, model, weights, arch, algorithm, params, ann, top, num_protos, proto_out,
                    link, clean, batch_size, device, progress, run) -> dict:
    from .things.image_embed import create_image_embedder, embed_images, index_images
    from .storage.store import write_table

    out = dataset / to
    plan = prepare_output(out, clean, replace_own=True)
    params = dict(cluster_params(algorithm) if params is None else params)
    est = make_clusterer(algorithm, **params)
    store = FaceStore(dataset / "images")
    skipped: list = []
    index = index_images(patterns, store.root / "index.parquet", skipped)
    embedder = create_image_embedder(model, weights, arch, device)
    ok = index[index["status"] == "ok"]
    X, errors = embed_images(store, ok, embedder, batch_size=batch_size, progress=progress, **run)
    index.loc[index["item_id"].isin(errors), "status"] = "error"
    index.loc[index["item_id"].isin(errors), "error"] = index["item_id"].map(errors)
    write_table(index, store.root / "index.parquet")
    ok = index[index["status"] == "ok"].reset_index(drop=True)
    if len(ok) < 2:
        raise ValueError(f"{len(ok)} readable image(s) match {patterns!r}; clustering needs at least 2")
    ids = ok["item_id"].tolist()
    graph = cached_graph(store, embedder.name, ids, X, _graph_k(params, len(X)), ann)
    labels, probs, rank = fit_labels(est, X, graph, top, num_protos)
    items = pd.DataFrame({"item_id": ok["item_id"], "source_image": [dataset_relative(dataset, p) for p in ok["path"]],
                          "cluster": labels,
                          "membership": np.round(probs, 4), "prototype": rank >= 0, "prototype_rank": rank,
                          "file": ok["path"]})
    info = run_info(embedder.name, algorithm, params, graph, top, num_protos, store, dataset, kind="images",
                    errors=index.loc[index["status"] == "error", "error"].tolist(),
                    skipped=[[str(path), reason] for path, reason in skipped])
    write_cluster_run(out, items, info, link=link, clean=clean)
    if proto_out:
        write_prototypes(proto_out, items.rename(columns={"item_id": "face_id"}), clean=clean)
    summary = {**json.loads((out / "clusters.json").read_text()), "replaced": plan == "replace"}
    return summary


# -- naming ----------------------------------------------------------------------------------------
# Columns of assignments.csv that name files (recorded relative to the dataset).
RUN_FILE_COLUMNS = ("crop_path", "source_image", "file")


def load_cluster_run(dataset: str | os.PathLike, run: str = "cluster") -> tuple[pd.DataFrame, dict]:
    """``(assignments, clusters.json)`` of a cluster run in ``dataset``; its files as absolute
    paths, whatever folder the run was made from or is read from (:func:`paths.recorded_paths`)."""
    root = Path(dataset) / run
    if not (root / "clusters.json").exists():
        raise FileNotFoundError(f"{root}: no cluster run here (no clusters.json); run crowdsort cluster -d {dataset} --to {run} first")
    try:
        info = json.loads((root / "clusters.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{root / 'clusters.json'}: damaged ({str(e).splitlines()[0]}); "
                         f"{_REMAKE_RUN.format(dataset=dataset, run=run)}") from None
    if not isinstance(info, dict):
        raise ValueError(f"{root / 'clusters.json'}: damaged (not a JSON object); {_REMAKE_RUN.format(dataset=dataset, run=run)}")
    items = read_assignments(root / "assignments.csv", info.get("kind", "faces"), dataset, run)
    for col in RUN_FILE_COLUMNS:
        if col in items:
            items[col] = recorded_paths(dataset, items[col].tolist())
    if info.get("kind", "faces") == "faces" and isinstance(info.get("source"), str):
        store = FaceStore(run_source(dataset, info))
        if store.exists():
            known = set(store.load_faces()["face_id"])
            unknown = [f for f in items["face_id"] if f not in known]
            if unknown:
                raise ValueError(f"{root / 'assignments.csv'}: face_id {unknown[0]!r} is not a face of {store.root} "
                                 f"({len(unknown)} in all); {_REMAKE_RUN.format(dataset=dataset, run=run)}")
    return items, info


_REMAKE_RUN = "undo the edit, or remake the run: crowdsort cluster -d {dataset} --to {run}"
_RUN_COLUMNS = {"faces": ("face_id", "cluster", "crop_path", "source_image", "face_index", "prototype"),
                "images": ("item_id", "cluster", "source_image")}  # what the commands and the dashboard read


def read_assignments(path: Path, kind: str, dataset, run: str) -> pd.DataFrame:
    """A run's assignments.csv, checked: a hand-edited or damaged one is refused in one line that
    names the file and the fix (not a parser's traceback or a KeyError later)."""
    fix = _REMAKE_RUN.format(dataset=dataset, run=run)
    ids = {"face_id": str, "item_id": str}
    try:
        items = read_own_csv(path, dtype=ids)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (the run's table of who is in which cluster); {fix}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start}); save it as UTF-8 CSV, or {fix}") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path}: empty; {fix}") from None
    except (pd.errors.ParserError, ValueError) as e:
        raise ValueError(f"{path}: not a CSV table crowdsort can read ({str(e).splitlines()[0]}); {fix}") from None
    missing = [c for c in _RUN_COLUMNS.get(kind, ()) if c not in items.columns]
    if missing:
        raise ValueError(f"{path}: no {', '.join(missing)} column{'s' if len(missing) > 1 else ''} "
                         f"(found {', '.join(map(str, items.columns)) or 'none'}); {fix}")
    key = "item_id" if kind == "images" else "face_id"
    line = lambda i: i + 2  # noqa: E731 (the header is line 1)
    blank = items[key].isna() | (items[key].astype(str).str.strip() == "")
    if blank.any():
        raise ValueError(f"{path}: line {line(int(np.flatnonzero(blank)[0]))} has no {key}; {fix}")
    dup = items[key].duplicated()
    if dup.any():
        raise ValueError(f"{path}: {key} {_cell(items[key][dup], 0)!r} is listed twice; {fix}")
    number = pd.to_numeric(items["cluster"], errors="coerce")
    bad = np.flatnonzero((number.isna() | (number != number.round()) | (number < -1)).to_numpy())
    if len(bad):
        raise ValueError(f"{path}: line {line(int(bad[0]))}: cluster {_cell(items['cluster'], bad[0])!r} is not a cluster "
                         f"number (0, 1, … or -1 for noise); {fix}")
    items["cluster"] = number.astype(int)
    if "prototype" in items and items["prototype"].dtype != bool:
        flags = items["prototype"].map(lambda v: {"true": True, "false": False, "1": True, "0": False}.get(
            str(v).strip().lower()))
        bad = np.flatnonzero(flags.isna().to_numpy())
        if len(bad):
            raise ValueError(f"{path}: line {line(int(bad[0]))}: prototype {_cell(items['prototype'], bad[0])!r} is not "
                             f"True or False; {fix}")
        items["prototype"] = flags.astype(bool)
    return items


def _cell(column: pd.Series, i: int):
    """Row ``i``'s value as Python writes it (numpy 2's repr of a float is ``np.float64(1.5)``)."""
    return column.astype(object).iloc[int(i)]


def run_source(dataset: str | os.PathLike, info: dict) -> Path:
    """The extraction run a cluster run's vectors are cached in (``clusters.json``'s ``source``,
    relative to the dataset; an older run's relative to the folder it ran in)."""
    return Path(recorded_paths(dataset, [info.get("source", "")])[0])


def stored_vectors(store: FaceStore, model: str, face_ids) -> np.ndarray:
    """Cached vectors of ``model`` for ``face_ids`` (in that order); error if any is missing."""
    X, found = store.vectors(model, face_ids)
    if not found.all():
        raise ValueError(f"{store.root}: {(~found).sum()} faces have no {model} vectors; re-run crowdsort cluster")
    return X


def identify_dataset(dataset, refs, source: str = "faces", threshold=None, margin=None, one_per_image: bool = False,
                     cluster_run: str | None = None, model: str | None = None, weights=None,
                     progress: bool = True) -> pd.DataFrame:
    """Identify every face of ``dataset/source`` against ``refs`` (a References, folder or HDF5).

    ``cluster_run``: pool evidence over that run's clusters (see :func:`identify.pooled_identify`).
    """
    from .naming.identify import References, identify_faces, load_references, pooled_identify

    store = extraction_store(dataset, source)
    embedder = load_embedder(model, weights)
    if not isinstance(refs, References):
        refs = load_references(refs, model, weights, progress=progress)
    faces = store.load_faces()
    refs.check_model(embedder.name)
    X = embed_faces(store, faces, embedder, progress=progress)
    if cluster_run:
        items, _ = load_cluster_run(dataset, cluster_run)
        cluster = items.set_index("face_id")["cluster"].reindex(faces["face_id"]).fillna(-1).astype(int).to_numpy()
        result = pooled_identify(X, cluster, refs, threshold, margin)
    else:
        result = identify_faces(X, refs, threshold, margin, faces["image_path"].to_numpy() if one_per_image else None)
    cols = ["face_id", "image_path", "face_index", "x0", "y0", "x1", "y1", "crop_path"]
    out = faces[cols].rename(columns={"image_path": "source_image"}).reset_index(drop=True)
    out["crop_path"] = [str(store.crop_file(p)) for p in out["crop_path"]]
    return pd.concat([out, result], axis=1)


def identify_shots(dataset, refs, source: str = "faces", threshold=None, margin=None, per_track: int | None = 5,
                   model: str | None = None, weights=None, cluster_run: str | None = "cluster",
                   progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(per-shot table, timeline)`` of the videos of ``dataset/source``: each track named from
    ``refs`` over its ``per_track`` best faces (:mod:`identify_shots`), a person at most once a shot.

    ``cluster_run``: where that face cluster run of the same faces exists, a track in a cluster
    is named on the evidence of the whole cluster (None: each track on its own)."""
    from .naming.identify import References, load_references
    from .naming.identify_shots import identify_tracks, shot_rows, timeline
    from .video.faces import load_shots

    store = extraction_store(dataset, source)
    embedder = load_embedder(model, weights)
    if not isinstance(refs, References):
        refs = load_references(refs, model, weights, progress=progress)
    refs.check_model(embedder.name)
    faces = store.load_faces()
    faces = faces[(faces["track"] >= 0) & best_faces(faces, per_track)].reset_index(drop=True)
    if not len(faces):
        raise ValueError(f"{store.root}: no faces from videos; extract them first (crowdsort extract-faces -d {dataset} "
                         "--from VIDEOS)")
    X = embed_faces(store, faces, embedder, progress=progress)
    cluster = None
    run = Path(dataset) / cluster_run / "clusters.json" if cluster_run else None
    if run is not None and run.exists():
        items, info = load_cluster_run(dataset, cluster_run)
        if info.get("kind", "faces") == "faces" and run_source(dataset, info).resolve() == store.root.resolve():
            cluster = items.set_index("face_id")["cluster"].reindex(faces["face_id"]).fillna(-1).astype(int).to_numpy()
    tracks = identify_tracks(X, faces, refs, threshold, margin, cluster)
    return shot_rows(tracks, load_shots(store)), timeline(tracks)


def label_clusters(dataset, refs, cluster_run: str = "cluster", threshold=None, margin=None,
                   one_to_one: bool = False, prototypes_only: bool = False, weights=None,
                   progress: bool = True) -> pd.DataFrame:
    """A name per cluster of a run from a reference library; columns ``label, cluster, …``.

    Evidence is every member's vector (all are cached in the store), or only the prototypes.
    """
    from .naming.identify import References, identify_clusters, load_references, model_kind

    items, info = load_cluster_run(dataset, cluster_run)
    if not isinstance(refs, References):
        refs = load_references(refs, model_kind(info["model"]), weights, progress=progress)
    refs.check_model(info["model"])
    rows = items[items["cluster"] >= 0]
    if prototypes_only:
        rows = rows[rows["prototype"]]
    X = stored_vectors(FaceStore(run_source(dataset, info)), info["model"], rows["face_id"].tolist())
    named = identify_clusters(X, rows["cluster"].to_numpy(), refs, threshold, margin, one_to_one)
    named["size"] = items["cluster"].value_counts().reindex(named["cluster"]).to_numpy()
    return named[["label", "cluster", "size", "best", "distance", "margin", "known"]]


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """A ``label,cluster`` CSV (hand-written, from label-clusters or the dashboard); ``unknown`` rows dropped.
    Read as crowdsort's own (:func:`export.read_own_csv`): a name it wrote as ``'=x`` is ``=x``."""
    from .naming.identify import UNKNOWN

    df = read_own_csv(path, dtype={"label": str})
    if not {"label", "cluster"} <= set(df.columns):
        raise ValueError(f"{path}: needs columns label,cluster (found {', '.join(df.columns)})")
    df = df.dropna(subset=["label"])
    df = df[(df["label"].str.strip() != "") & (df["label"] != UNKNOWN)]
    number = pd.to_numeric(df["cluster"], errors="coerce")
    bad = df[number.isna() | (number != number.round())]
    if len(bad):
        raise ValueError(f"{path}: cluster {_cell(bad['cluster'], 0)!r} (label {_cell(bad['label'], 0)!r}) is not a "
                         "cluster number; use the numbers of the run's folders (000, 001, …) or -1 for noise")
    df["cluster"] = number.astype(int)
    dup = df[df["cluster"].duplicated(keep=False)]
    if len(dup):
        raise ValueError(f"{path}: cluster {dup['cluster'].iloc[0]} has two labels; keep one row per cluster")
    return df[["label", "cluster"]]


def apply_labels(dataset, labels, cluster_run: str = "cluster", keep_unlabeled: bool = False,
                 export: str | os.PathLike | None = None, clean: bool = False) -> pd.DataFrame:
    """One row per face of the run with its person's name; unlabelled clusters kept as ``cluster NNN``
    (``noise`` for noise) only with ``keep_unlabeled``. ``export``: a folder per name."""
    items, info = load_cluster_run(dataset, cluster_run)
    table = labels if isinstance(labels, pd.DataFrame) else read_labels(labels)
    unknown = sorted(set(table["cluster"]) - set(items["cluster"]))
    if unknown:
        raise ValueError(f"labels name clusters {unknown[:5]} that run {cluster_run} does not have; "
                         "were the labels made for another run?")
    name = items["cluster"].map(table.set_index("cluster")["label"])
    video = [c for c in ("frame", "time_s", "shot", "track") if c in items.columns]  # runs from before videos lack them
    out = items[["face_id", "source_image", "face_index", "crop_path", "cluster", *video]].copy()
    out["labelled"] = name.notna().to_numpy()
    out["label"] = name.fillna(items["cluster"].map(unnamed_label))
    if not keep_unlabeled:
        out = out[out["labelled"]]
    out = out.reset_index(drop=True)
    if export:
        from .storage.export import write_named_folders

        _require_crops(out["crop_path"], Path(dataset) / cluster_run)
        write_named_folders(export, out, clean=clean, files=run_files(dataset, info))  # crop_path may be edited
    return out


def _require_crops(paths: pd.Series, run: Path) -> None:
    """One line naming a crop a run lists that is gone (else the copy fails with a bare [Errno 2])."""
    gone = [p for p in paths if not os.path.isfile(p)]
    if gone:
        raise FileNotFoundError(f"{gone[0]}: a crop listed in {run / 'assignments.csv'} is missing ({len(gone)} in all);"
                                " re-run crowdsort extract-faces on the photos to remake the crops")


def run_files(dataset, info: dict) -> DatasetFiles:
    """The files a cluster run's tables may name: the dataset's, and its extraction run's where
    that lies elsewhere (a dataset copied or moved keeps naming the first one's crops). Only a
    real extraction run counts: clusters.json can be edited as well."""
    source = run_source(dataset, info) if isinstance(info.get("source"), str) else None
    runs = [source] if source is not None and FaceStore(source).exists() else []
    return DatasetFiles(dataset, runs=runs)


def labelled_timeline(named: pd.DataFrame) -> pd.DataFrame:
    """Who is on screen when, from :func:`apply_labels`' rows of a clustering by track: each
    named track spans its faces' times (see :func:`identify_shots.timeline`)."""
    from .naming.identify_shots import timeline

    v = named[named.get("track", pd.Series(-1, index=named.index)) >= 0] if "track" in named else named.iloc[:0]
    tracks = (v.groupby(["source_image", "track"], sort=False)
               .agg(video=("source_image", "first"), shot=("shot", "first"), label=("label", "first"),
                    known=("labelled", "first"), start_s=("time_s", "min"), end_s=("time_s", "max"))
               .reset_index(drop=True)) if len(v) else pd.DataFrame(
        columns=["video", "shot", "label", "known", "start_s", "end_s"])
    return timeline(tracks.astype({"known": bool}))


def load_image_run(dataset, run: str) -> tuple[pd.DataFrame, dict]:
    """:func:`load_cluster_run`, refusing a face cluster run."""
    items, info = load_cluster_run(dataset, run)
    if info.get("kind") != "images":
        raise ValueError(f"{Path(dataset) / run}: a face cluster run; open the faces with crowdsort dashboard {dataset}"
                         " (without --run)")
    return items, info
