"""A dataset moved, copied or mounted elsewhere keeps its photos, face ids and names (issue 32).

Real photos of ../shared/data/faces are copied into a small dataset (``D/photos``), extracted,
clustered and named through the dashboard's session (:func:`opening.open_review`); the folder is
then moved and copied, and extract-faces, cluster and the dashboard run again. A dataset of the
older format (1: image paths and the face ids made of them absolute) is made by
:func:`format_1`, which runs crowdsort as it was before, and is opened at its place and moved.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

PEOPLE = ("colin_powell", "arnold_schwarzenegger", "ariel_sharon")
PER_PERSON = 4


def make_photos(dataset: Path, faces_dir: Path) -> Path:
    photos = dataset / "photos"
    photos.mkdir(parents=True)
    for person in PEOPLE:
        for f in sorted((faces_dir / person).iterdir())[:PER_PERSON]:
            shutil.copy2(f, photos / f"{person}-{f.name}")
    return dataset


def extract(dataset: Path) -> dict:
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    return extract_faces(str(dataset / "photos"), FaceStore(dataset / "faces"), ExtractParams(max_faces=1),
                         progress=False)


def cluster(dataset: Path) -> pd.DataFrame:
    from crowdsort.pipeline import cluster_faces

    cluster_faces(dataset, progress=False)
    return pd.read_csv(dataset / "cluster" / "assignments.csv", dtype={"face_id": str})


def raw(dataset: Path, table: str = "faces") -> pd.DataFrame:
    """A table as it lies on disk."""
    return pd.read_parquet(dataset / "faces" / f"{table}.parquet")


def by_photo(dataset: Path) -> dict[str, str]:
    """Photo file name → its face's id (one face a photo)."""
    faces = raw(dataset)
    return dict(zip(faces["image_path"].map(lambda p: Path(p).name), faces["face_id"]))


def person_ids(dataset: Path, person: str) -> list[str]:
    """The face ids of ``person``'s photos, in the photos' order."""
    return [fid for name, fid in sorted(by_photo(dataset).items()) if name.startswith(person)]


def renamed(before: Path, after: Path) -> dict[str, str]:
    """Old face id → new one, by photo."""
    old, new = by_photo(before), by_photo(after)
    return {old[name]: new[name] for name in old}


def review(dataset: Path):
    """The dashboard's session, clustered as the dashboard does first."""
    from crowdsort.review.opening import open_review
    from crowdsort.pipeline import default_algorithm

    session = open_review(dataset, progress=False)
    session.recluster(default_algorithm(session.model), {})
    return session


def name_and_reject(dataset: Path) -> tuple[str, str]:
    """Put Colin Powell's faces in one cluster named after him and reject one of Schwarzenegger's
    faces, in the dashboard's session; ``(a face of Powell, the rejected face)``."""
    session = review(dataset)
    powell, rejected = person_ids(dataset, PEOPLE[0]), person_ids(dataset, PEOPLE[1])[0]
    session.move(powell, "Colin Powell")
    session.reject([rejected])
    assert session.names()[session.cluster_of(powell[0])] == "Colin Powell"
    powell = powell[0]
    return powell, rejected


def assert_names_attached(dataset: Path, powell: str, rejected: str) -> None:
    session = review(dataset)
    assert session.names()[session.cluster_of(powell)] == "Colin Powell"
    assert rejected in session.ann.rejected and session.cluster_of(rejected) < 0
    named = session.labelled_table().query("label == 'Colin Powell'")
    assert len(named) >= 2 and all(os.path.isfile(p) for p in named["crop_path"])
    assert all(os.path.isfile(p) and Path(p).is_relative_to(dataset.resolve()) for p in named["source_image"])


@contextlib.contextmanager
def format_1():
    """crowdsort as it was before issue 32 (dataset format 1): a photo recorded by its absolute
    path, its face ids made of that path, extract.json format 1, nothing migrated."""
    import crowdsort.storage.migrate
    import crowdsort.storage.paths
    import crowdsort.storage.store

    mp = pytest.MonkeyPatch()
    mp.setattr(crowdsort.storage.paths, "source_record", lambda dataset, path: os.path.abspath(path))
    mp.setattr(crowdsort.storage.store.FaceStore, "recorded", lambda self, paths: pd.Series(paths, dtype="string"))
    mp.setattr(crowdsort.storage.store, "FORMAT_VERSION", 1)
    mp.setattr(crowdsort.storage.migrate, "needs_migration", lambda store: False)
    try:
        yield
    finally:
        mp.undo()


def make_format_1(dataset: Path, faces_dir: Path) -> tuple[str, str]:
    """An older version's dataset at ``dataset``: extracted, clustered and named; returns
    :func:`name_and_reject`'s faces."""
    make_photos(dataset, faces_dir)
    with format_1():
        extract(dataset)
        cluster(dataset)
        powell, rejected = name_and_reject(dataset)
    faces = raw(dataset)
    assert json.loads((dataset / "faces" / "extract.json").read_text())["format_version"] == 1
    assert all(p.startswith(str(dataset.resolve()) + os.sep) for p in faces["image_path"])
    return powell, rejected


@pytest.fixture(scope="module")
def old_dataset(tmp_path_factory, faces_dir):
    """``(folder, Powell's face, rejected face)``: a format-1 dataset; tests copy it (a copy is a move)."""
    dataset = tmp_path_factory.mktemp("old") / "made-by-1"
    return (dataset, *make_format_1(dataset, faces_dir))


def test_a_moved_or_copied_dataset_keeps_its_photos_ids_and_names(tmp_path, faces_dir):
    first = make_photos(tmp_path / "first", faces_dir)
    assert extract(first)["processed"] == len(PEOPLE) * PER_PERSON
    faces = raw(first)
    assert set(faces["image_path"]) == {f"photos/{p.name}" for p in (first / "photos").iterdir()}
    assert set(raw(first, "images")["image_path"]) == set(faces["image_path"])
    ids = sorted(faces["face_id"])
    before = cluster(first)
    powell, rejected = name_and_reject(first)

    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(first, moved)
    copied = tmp_path / "copy"
    shutil.copytree(moved, copied)
    for dataset in (moved, copied):
        s = extract(dataset)
        assert (s["processed"], s["gone"], s["unchanged"]) == (0, 0, len(ids)), dataset
        assert sorted(raw(dataset)["face_id"]) == ids
        assert not raw(dataset)["gone"].any()
        after = cluster(dataset)
        assert sorted(after["face_id"]) == sorted(before["face_id"])
        assert all((dataset / p).is_file() for p in after["crop_path"])
        assert_names_attached(dataset, powell, rejected)


def test_an_older_versions_dataset_moved_keeps_its_names_and_photos(old_dataset, tmp_path, faces_dir):
    made, powell, rejected = old_dataset
    dataset = tmp_path / "moved"
    shutil.copytree(made, dataset)  # the dataset somewhere else: its records name `made`
    log = (dataset / "annotations.jsonl").read_bytes()
    old_ids = set(raw(dataset)["face_id"])

    s = extract(dataset)
    assert (s["processed"], s["gone"], s["unchanged"]) == (0, 0, len(old_ids))
    faces = raw(dataset)
    assert not faces["gone"].any() and not faces["image_path"].map(os.path.isabs).any()
    # the ids a run of this version gives the same photos
    fresh = make_photos(tmp_path / "fresh", faces_dir)
    extract(fresh)
    assert sorted(faces["face_id"]) == sorted(raw(fresh)["face_id"])
    assert not set(faces["face_id"]) & old_ids
    params = json.loads((dataset / "faces" / "extract.json").read_text())
    assert params["format_version"] == 2 and params["migrated_from"] == str(made.resolve())
    assert not (dataset / "faces" / "migration.json").exists()
    assert (dataset / "annotations.jsonl.absolute-ids.bak").read_bytes() == log
    # the cluster run made before names the new ids
    assert set(pd.read_csv(dataset / "cluster" / "assignments.csv", dtype={"face_id": str})["face_id"]) == \
        set(faces["face_id"])

    new = renamed(made, dataset)
    assert_names_attached(dataset, new[powell], new[rejected])
    cluster(dataset)
    assert extract(dataset)["processed"] == 0
    assert_names_attached(dataset, new[powell], new[rejected])


def test_an_older_versions_dataset_opened_where_it_was_is_migrated_once(tmp_path, faces_dir):
    dataset = tmp_path / "here"
    powell, rejected = make_format_1(dataset, faces_dir)
    old = by_photo(dataset)
    session = review(dataset)  # the dashboard opens it: migrated
    assert not raw(dataset)["image_path"].map(os.path.isabs).any()
    new = by_photo(dataset)
    new = {old[name]: new[name] for name in old}
    assert session.names()[session.cluster_of(new[powell])] == "Colin Powell"
    assert session.ann.rejected == {new[rejected]}
    stamp = (dataset / "faces" / "faces.parquet").stat().st_mtime_ns
    review(dataset)
    assert (dataset / "faces" / "faces.parquet").stat().st_mtime_ns == stamp  # migrated once
    assert extract(dataset)["processed"] == 0


def test_an_interrupted_migration_is_finished_by_the_next_run(old_dataset, tmp_path, monkeypatch):
    import crowdsort.storage.migrate

    made, powell, rejected = old_dataset
    dataset = tmp_path / "moved"
    shutil.copytree(made, dataset)
    real = crowdsort.storage.migrate._rewrite_parquet

    def killed(path, maps):
        if path.name == "faces.parquet":
            raise KeyboardInterrupt("killed")
        real(path, maps)
    monkeypatch.setattr(crowdsort.storage.migrate, "_rewrite_parquet", killed)
    with pytest.raises(KeyboardInterrupt):
        extract(dataset)
    assert (dataset / "faces" / "migration.json").exists()
    monkeypatch.setattr(crowdsort.storage.migrate, "_rewrite_parquet", real)
    s = extract(dataset)
    assert (s["processed"], s["gone"]) == (0, 0)
    assert not (dataset / "faces" / "migration.json").exists()
    new = renamed(made, dataset)
    assert_names_attached(dataset, new[powell], new[rejected])
