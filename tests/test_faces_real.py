"""The face pipeline on real photos from ../shared/data (skipped without it, failing under CI)."""
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdsort.clustering.cluster import make_clusterer
from crowdsort.faces.embed import embed_faces, load_embedder
from crowdsort.extract import ExtractParams, extract_faces
from crowdsort.clustering.metrics import bcubed
from crowdsort.clustering.neighbors import knn_graph
from crowdsort.pipeline import cluster_params, default_algorithm
from crowdsort.storage.store import FaceStore


def iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("engine", ["blazeface", "dlib"])
def test_detection_recall_on_annotated_group_photos(tmp_path, faces_dir, engine):
    """Recall ≥ 0.9 against the boxes in GROUP_ANNOTATIONS.json (IoU ≥ 0.4)."""
    ann = json.loads((faces_dir / "GROUP_ANNOTATIONS.json").read_text())
    boxed = {k: v["boxes_xywh"] for k, v in ann.items() if "boxes_xywh" in v}
    store = FaceStore(tmp_path / "faces")
    patterns = ",".join(str(faces_dir / "group" / name) for name in boxed)
    extract_faces(patterns, store, ExtractParams(engine=engine), progress=False)
    faces = store.load_faces()
    found = total = 0
    for name, boxes in boxed.items():
        dets = faces[faces["image_path"].str.endswith("/" + name)][["x0", "y0", "x1", "y1"]].to_numpy()
        for x, y, w, h in boxes:
            total += 1
            found += any(iou((x, y, x + w, y + h), d) >= 0.4 for d in dets)
    print(f"{engine}: detection recall {found}/{total} = {found / total:.3f}")
    assert found / total >= 0.9


def _identities(faces):
    return faces["image_path"].map(lambda p: Path(p).parent.name).to_numpy()


def _cluster_score(store, model="dlib"):
    """BCubed of the default face clustering of ``model`` (what ``crowdsort cluster`` runs) over
    people with >= 3 photos and over all faces."""
    from crowdsort.pipeline import model_cluster_params

    faces = store.load_faces()
    faces = faces[~faces["image_path"].str.contains("/group/")].reset_index(drop=True)
    X = embed_faces(store, faces, load_embedder(model), progress=False)
    algorithm = default_algorithm(model)
    params = {**model_cluster_params(model, algorithm), **cluster_params(algorithm)}
    labels = make_clusterer(algorithm, **params).fit(X, graph=knn_graph(X, 15)).labels_
    ident = _identities(faces)
    counts = pd.Series(ident).value_counts()
    keep = (counts[ident] >= 3).to_numpy()
    return bcubed(ident[keep], labels[keep]), bcubed(ident, labels), len(faces)


# The default's measured figures (benchmarks/eval_defaults.py) less 0.01 for platform noise:
# lfw-dev .964 / .951, celeba-dev .964 / .949, faces/ .988 (F over >= 3 photos / all faces).
MARGIN = 0.01


def test_clustering_faces_bcubed(faces_store):
    """Default clustering of faces/ with dlib (25 people, 94 portraits)."""
    (p, r, f), (_, _, f_all), n = _cluster_score(faces_store)
    print(f"faces/: {n} faces, BCubed P={p:.3f} R={r:.3f} F={f:.3f} (≥3 photos); F={f_all:.3f} all")
    assert f >= 0.988 - MARGIN


@pytest.mark.parametrize("name, floor", [("lfw", (0.964, 0.951)), ("celeba", (0.964, 0.949))])
def test_clustering_dev_sets_bcubed(request, name, floor):
    """lfw-dev (people with 3-5 photos, 400 with one) and celeba-dev (10-20 photos, 202 with one
    or two): one default holds on both, people not split and strangers not swallowed."""
    (p, r, f), (pa, ra, fa), n = _cluster_score(request.getfixturevalue(f"{name}_store"))
    print(f"{name}-dev: {n} faces, BCubed P={p:.3f} R={r:.3f} F={f:.3f} (≥3 photos); "
          f"all faces P={pa:.3f} R={ra:.3f} F={fa:.3f}")
    assert n >= {"lfw": 1030, "celeba": 1970}[name]  # every photo gives its face (short-range fallback)
    assert f >= floor[0] - MARGIN and fa >= floor[1] - MARGIN


# MobileFaceNet, the default model (benchmarks/eval_models.py; its cuts chosen by the worse of
# lfw-dev and celeba-dev): lfw-dev .993 / .992, celeba-dev .975 / .967, faces/ 1.000 / 1.000.
@pytest.mark.parametrize("name, floor", [("faces", (1.0, 1.0)), ("lfw", (0.993, 0.992)), ("celeba", (0.975, 0.967))])
def test_default_model_clusters_the_dev_sets(request, name, floor):
    """The default identity model and clustering: one setting for people with 3-5 photos and
    with 10-20, strangers left out."""
    (p, r, f), (pa, ra, fa), n = _cluster_score(request.getfixturevalue(f"{name}_store"), "mobilefacenet")
    print(f"{name}: {n} faces, mobilefacenet BCubed P={p:.3f} R={r:.3f} F={f:.3f} (≥3 photos); "
          f"all faces P={pa:.3f} R={ra:.3f} F={fa:.3f}")
    assert f >= floor[0] - MARGIN and fa >= floor[1] - MARGIN


def test_no_cluster_holds_two_faces_of_one_photo(tmp_path, faces_dir):
    """faces/ with every face of its group photos: the cluster command never puts two faces of
    one photo in one cluster, whatever the algorithm."""
    from crowdsort.pipeline import cluster_faces

    ds = tmp_path / "ds"
    extract_faces(str(faces_dir), FaceStore(ds / "faces"), workers=2, progress=False)
    faces = FaceStore(ds / "faces").load_faces()
    assert faces["image_path"].duplicated().sum() >= 10  # group photos: several faces each
    for algorithm in (None, "hdbscan", "chinese-whispers"):
        s = cluster_faces(ds, "faces", "c", algorithm=algorithm, progress=False, clean=True)
        a = pd.read_csv(ds / "c" / "assignments.csv")
        clustered = a[a["cluster"] >= 0]
        assert not clustered.duplicated(["cluster", "source_image"]).any(), s["algorithm"]
        assert s["n_clusters"] >= 20


def test_rerun_skips_and_tracks_changes(tmp_path, faces_dir):
    """Re-run detects nothing new; a changed file is re-processed; a deleted one is marked gone."""
    src = tmp_path / "photos"
    shutil.copytree(faces_dir / "obama", src / "obama")
    shutil.copytree(faces_dir / "biden", src / "biden")
    store = FaceStore(tmp_path / "ds" / "faces")
    first = extract_faces(str(src), store, progress=False)
    assert first["processed"] == 6 and first["faces"] >= 6
    ids = set(store.load_faces()["face_id"])
    again = extract_faces(str(src), store, progress=False)
    assert again["processed"] == 0 and again["faces"] == 0 and set(store.load_faces()["face_id"]) == ids
    # Same bytes, new mtime: hashed, found unchanged, not re-detected.
    (src / "obama" / "obama1.jpg").touch()
    assert extract_faces(str(src), store, progress=False)["processed"] == 0
    shutil.copy(faces_dir / "biden" / "biden.jpg", src / "obama" / "obama1.jpg")
    (src / "obama" / "obama2.jpg").unlink()
    third = extract_faces(str(src), store, progress=False)
    assert third["processed"] == 1 and third["gone"] == 1
    all_faces = store.load_faces(include_gone=True)
    gone = all_faces[all_faces["gone"]]
    assert len(gone) and (gone["image_path"].str.endswith("obama2.jpg")).all()
    assert not store.load_faces()["image_path"].str.endswith("obama2.jpg").any()


def test_same_file_name_in_two_folders_keeps_both(tmp_path, faces_dir):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    shutil.copy(faces_dir / "obama" / "obama1.jpg", tmp_path / "a" / "img1.jpg")
    shutil.copy(faces_dir / "biden" / "biden.jpg", tmp_path / "b" / "img1.jpg")
    store = FaceStore(tmp_path / "ds" / "faces")
    extract_faces(f"{tmp_path}/a,{tmp_path}/b", store, ExtractParams(max_faces=1), progress=False)
    faces = store.load_faces()
    assert len(faces) == 2 and faces["crop_path"].nunique() == 2
    assert all(store.crop_file(p).is_file() for p in faces["crop_path"])


def test_bad_files_are_reported_and_batch_goes_on(tmp_path, faces_dir):
    """Truncated JPEG, text named .jpg, CMYK, 16-bit PNG, EXIF-rotated, zero-byte: the good
    ones give faces, the broken ones are recorded with a reason, none stops the batch."""
    from PIL import Image

    d = tmp_path / "bad"
    d.mkdir()
    good = faces_dir / "obama" / "obama1.jpg"
    data = good.read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (d / "text.jpg").write_text("not a photo")
    (d / "zero.jpg").write_bytes(b"")
    im = Image.open(good)
    im.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((np.asarray(im.convert("L"), dtype=np.uint16) * 257)).save(d / "grey16.png")
    exif = Image.Exif()
    exif[0x0112] = 8  # stored rotated; upright after EXIF is applied
    im.transpose(Image.ROTATE_270).save(d / "rotated.jpg", exif=exif.tobytes())
    store = FaceStore(tmp_path / "ds" / "faces")
    s = extract_faces(str(d), store, workers=2, progress=False)
    assert s["failed"] == 3 and s["processed"] == 3
    images = store.load_images().set_index("image_path")
    errors = images[images["status"] == "error"]
    assert sorted(Path(p).name for p in errors.index) == ["text.jpg", "truncated.jpg", "zero.jpg"]
    assert all(Path(p).name in e for p, e in errors["error"].items())
    faces = store.load_faces()
    assert set(faces["image_path"].map(lambda p: Path(p).name)) == {"cmyk.jpg", "grey16.png", "rotated.jpg"}
    rot = faces[faces["image_path"].str.endswith("rotated.jpg")].iloc[0]
    lm = np.asarray(rot["landmarks"]).reshape(-1, 2)
    assert abs(lm[0, 1] - lm[1, 1]) < 0.2 * abs(lm[1, 0] - lm[0, 0])  # eyes level: upright


def test_changed_parameters_replace_old_faces(tmp_path, faces_dir):
    """A re-run with other parameters re-processes, and faces the new run drops disappear."""
    store = FaceStore(tmp_path / "faces")
    photo = str(faces_dir / "group" / "obama_and_biden.jpg")
    assert extract_faces(photo, store, progress=False)["faces"] == 2
    s = extract_faces(photo, store, ExtractParams(max_faces=1), progress=False)
    assert s["processed"] == 1 and len(store.load_faces()) == 1


def test_interrupted_run_resumes(tmp_path, faces_dir, monkeypatch):
    """Checkpointed images are not processed again after a crash before the final merge."""
    store = FaceStore(tmp_path / "faces")

    def crash(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(FaceStore, "consolidate", crash)
    with pytest.raises(KeyboardInterrupt):
        extract_faces(str(faces_dir / "colin_powell"), store, checkpoint_every=3, progress=False)
    monkeypatch.undo()
    assert store.parts_dir.is_dir() and len(store.load_images()) == 8
    s = extract_faces(str(faces_dir / "colin_powell"), store, progress=False)
    assert s["processed"] == 0 and s["unchanged"] == 8 and len(store.load_faces()) >= 8
    assert not store.parts_dir.exists()


@pytest.mark.parametrize("algorithm", ["snn-whispers", "hdbscan", "rnn-dbscan", "dbscan", "agglomerative",
                                       "chinese-whispers"])
def test_real_prototypes_are_members_and_scores_reported(faces_store, algorithm):
    """Every algorithm on faces/: prototypes belong to their cluster; BCubed reported
    (snn-whispers, the default, and hdbscan ≥ 0.97 on identities with ≥ 3 photos)."""
    from crowdsort.clustering.cluster import make_clusterer, prototypes
    from crowdsort.pipeline import cluster_params

    faces = faces_store.load_faces()
    faces = faces[~faces["image_path"].str.contains("/group/")].reset_index(drop=True)
    X = embed_faces(faces_store, faces, load_embedder("dlib"), progress=False)
    est = make_clusterer(algorithm, **cluster_params(algorithm)).fit(X, graph=knn_graph(X, 15))
    labels = est.labels_
    for c, rows in prototypes(X, labels, 3, getattr(est, "reverse_counts_", None)).items():
        assert (labels[rows] == c).all()
    ident = _identities(faces)
    keep = (pd.Series(ident).value_counts()[ident] >= 3).to_numpy()
    p, r, f = bcubed(ident[keep], labels[keep])
    print(f"faces/ {algorithm}: BCubed P={p:.3f} R={r:.3f} F={f:.3f}")
    if algorithm in ("snn-whispers", "hdbscan"):
        assert f >= 0.97


def test_graph_is_cached_and_reused(tmp_path, faces_store):
    """The cluster command stores the kNN graph keyed by model, K and faces, and reuses it."""
    from crowdsort.pipeline import cluster_faces

    ds = faces_store.root.parent
    cluster_faces(ds, "faces", "c1", progress=False)
    graphs = sorted((faces_store.root / "graphs").glob("*.npz"))
    assert len(graphs) == 1
    stamp = graphs[0].stat().st_mtime_ns
    cluster_faces(ds, "faces", "c2", algorithm="rnn-dbscan", params={"n_neighbors": 5}, progress=False)
    assert graphs[0].stat().st_mtime_ns == stamp and len(list((faces_store.root / "graphs").glob("*.npz"))) == 1


def _fresh_copy(store: FaceStore, tmp_path: Path) -> FaceStore:
    """The extraction without any cached vectors."""
    shutil.copytree(store.root, tmp_path / "faces", ignore=shutil.ignore_patterns("embeddings", "graphs", "projections"))
    return FaceStore(tmp_path / "faces")


def test_parallel_embedding_equals_one_process(faces_store, tmp_path):
    faces = faces_store.load_faces()
    one = embed_faces(faces_store, faces, load_embedder("dlib"), progress=False)
    store = _fresh_copy(faces_store, tmp_path)
    assert len(store.load_embeddings("dlib")[0]) == 0
    two = embed_faces(store, faces, load_embedder("dlib"), batch_size=8, workers=2, progress=False)
    assert two.shape == one.shape and np.abs(two - one).max() < 1e-5


def test_interrupted_embedding_keeps_its_work_and_resumes(faces_store, tmp_path):
    faces = faces_store.load_faces()
    store = _fresh_copy(faces_store, tmp_path)
    emb = load_embedder("dlib")
    calls = []
    real = emb.embed

    def stops_at_the_fourth_batch(crops, lms):
        calls.append(len(crops))
        if len(calls) == 4:
            raise RuntimeError("stopped half way")
        return real(crops, lms)

    emb.embed = stops_at_the_fourth_batch
    with pytest.raises(RuntimeError, match="half way"):
        embed_faces(store, faces, emb, batch_size=10, save_every=20, workers=1, progress=False)
    assert len(store.load_embeddings("dlib")[0]) == 30  # three batches done before the stop, all kept
    calls[:] = [0] * 10  # the next run does not stop
    X = embed_faces(store, faces, emb, batch_size=10, workers=1, progress=False)
    assert sum(calls) == len(faces) - 30 and X.shape == (len(faces), 128)  # only the rest embedded
