"""The crowdsort command on the example photos (built from scikit-image's and matplotlib's sample photos)."""
import json
from pathlib import Path

import pandas as pd
import pytest

from crowdsort.cli import COMMANDS, main


def test_every_command_has_help(capsys):
    for cmd in COMMANDS:
        with pytest.raises(SystemExit) as e:
            main([cmd.name, "--help"])
        assert e.value.code == 0
        assert cmd.name in capsys.readouterr().out


@pytest.fixture(scope="module")
def example_ds(tmp_path_factory, example_photos):
    root = tmp_path_factory.mktemp("ex")
    assert main(["example", str(root / "images")]) == 0
    assert main(["-q", "extract-faces", "-d", str(root / "ds"), "--from", f"{root}/images/*", "--workers", "2"]) == 0
    return root / "ds"


def test_extract_and_cluster_example(example_ds, capsys):
    """Folders 000/… by size plus noise/, one assignment row per face, summary json."""
    assert main(["-q", "cluster", "-d", str(example_ds)]) == 0
    out = example_ds / "cluster"
    info = json.loads((out / "clusters.json").read_text())
    table = pd.read_csv(out / "assignments.csv")
    assert info["n_items"] == len(table) >= 15 and info["model"] == "mobilefacenet"
    assert info["sizes"] == sorted(info["sizes"], reverse=True)
    for c, size in enumerate(info["sizes"]):
        assert len(list((out / f"{c:03d}").iterdir())) == size
    assert set(table.columns) >= {"face_id", "crop_path", "source_image", "cluster", "membership", "prototype"}
    assert table.groupby("cluster")["prototype"].any().drop(-1, errors="ignore").all()
    # Faces of the two people never share a cluster (group photos and awkward files aside).
    solo = table[table["source_image"].str.contains("/eileen_collins/|/grace_hopper/")]
    person = solo["source_image"].str.extract(r"/(eileen_collins|grace_hopper)/")[0]
    assert (solo[solo["cluster"] >= 0].groupby("cluster").apply(lambda g: person[g.index].nunique()) == 1).all()


def test_a_new_run_replaces_only_a_run_crowdsort_wrote(example_ds, capsys):
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run2"]) == 0
    capsys.readouterr()
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run2", "--top", "1"]) == 0  # as dtst does
    assert "note: replaced the cluster run" in capsys.readouterr().err
    (example_ds / "run2" / ".crowdsort-manifest.json").unlink()  # a run of an older crowdsort: --clean needed
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run2"]) == 1
    assert "pass --clean" in capsys.readouterr().err
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run2", "--clean", "--top", "1", "--link", "symlink"]) == 0
    info = json.loads((example_ds / "run2" / "clusters.json").read_text())
    assert info["n_clusters"] == 1 and (example_ds / "run2" / "000").is_dir()


def test_a_folder_of_the_users_as_to_is_refused_without_offering_clean(example_ds, capsys):
    """--clean would refuse to delete a folder crowdsort did not write: the refusal says so at once
    rather than suggesting --clean."""
    mine = example_ds / "my-notes"
    mine.mkdir()
    (mine / "todo.txt").write_text("keep me")
    for clean in ([], ["--clean"]):
        assert main(["-q", "cluster", "-d", str(example_ds), "--to", "my-notes", *clean]) == 1
        err = capsys.readouterr().err
        assert "refusing to delete it" in err and "pass --clean" not in err and len(err.splitlines()) == 1
    assert (mine / "todo.txt").read_text() == "keep me"


def test_a_cluster_run_that_fails_says_it_replaced_nothing(example_ds, capsys, monkeypatch):
    """A run that fails before its new run is in place says nothing of replacing the old one
    (it printed "note: replacing the cluster run" first, then failed); the old run stays."""
    from crowdsort.storage import export

    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run3"]) == 0
    before = (example_ds / "run3" / "clusters.json").read_text()
    capsys.readouterr()
    assert main(["-q", "cluster", "-d", str(example_ds), "--from", "nope", "--to", "run3"]) == 1
    err = capsys.readouterr().err
    assert "no extraction run" in err and "replac" not in err

    def fail(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export, "publish", fail)  # the new run is made, then cannot be put in place
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run3", "--top", "1"]) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "replac" not in err
    assert (example_ds / "run3" / "clusters.json").read_text() == before
    monkeypatch.undo()
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run3", "--top", "1"]) == 0
    assert "note: replaced the cluster run" in capsys.readouterr().err


def test_the_dashboard_opens_a_clustered_dataset_from_its_caches(example_ds, monkeypatch):
    """``crowdsort cluster`` makes the dashboard's kNN graph and map ahead, where the dashboard
    reads them: opening the dataset afterwards computes neither (its first page took 30-42 s)."""
    from crowdsort.clustering import neighbors
    from crowdsort.review import opening, project
    from crowdsort import pipeline

    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run4"]) == 0

    def computed(*a, **k):
        raise AssertionError("computed when the dashboard opened")
    monkeypatch.setattr(project, "umap_layout", computed)
    monkeypatch.setattr(neighbors, "knn_graph", computed)
    monkeypatch.setattr(pipeline, "knn_graph", computed)
    session = opening.open_review(example_ds, progress=False)
    assert session.layout.shape == (len(session.table), 2)


def test_clean_never_deletes_a_foreign_folder(example_ds, capsys):
    (example_ds / "mine").mkdir()
    (example_ds / "mine" / "keep.txt").write_text("precious")
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "mine", "--clean"]) == 1
    assert "not a crowdsort cluster run" in capsys.readouterr().err
    assert (example_ds / "mine" / "keep.txt").read_text() == "precious"


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["-q", "extract-faces", "-d", str(tmp_path), "--from", str(tmp_path / "nope*")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no file or folder matches" in err
    assert main(["-q", "cluster", "-d", str(tmp_path / "none")]) == 1
    assert "run crowdsort extract-faces" in capsys.readouterr().err


@pytest.mark.parametrize("algorithm", ["rnn-dbscan", "dbscan", "optics", "agglomerative", "chinese-whispers"])
def test_every_algorithm_from_the_cli(example_ds, algorithm):
    to = f"run-{algorithm}"
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", to, "--algorithm", algorithm]) == 0
    info = json.loads((example_ds / to / "clusters.json").read_text())
    assert info["algorithm"] == algorithm and info["n_items"] == len(pd.read_csv(example_ds / to / "assignments.csv"))


def test_prototypes_and_saved_model(example_ds, tmp_path):
    """--proto-out holds each cluster's prototypes; --model-out assigns faces back to their clusters."""
    from crowdsort.clustering.cluster import assign_to_clusters
    from crowdsort.storage.export import load_cluster_model
    from crowdsort.clustering.neighbors import KNNGraph

    protos, model = tmp_path / "protos", tmp_path / "model.npz"
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "run-protos", "--num-protos", "2",
                 "--proto-out", str(protos), "--model-out", str(model)]) == 0
    table = pd.read_csv(example_ds / "run-protos" / "assignments.csv")
    listed = pd.read_csv(protos / "prototypes.csv")
    assert set(listed["face_id"]) == set(table.loc[table["prototype"], "face_id"])
    for c, g in listed.groupby("cluster"):
        members = set(table.loc[table["cluster"] == c, "face_id"])
        assert set(g["face_id"]) <= members and len(g) == min(2, len(members))
    m = load_cluster_model(model)
    assert m["meta"]["format_version"] == 1 and m["meta"]["model"] == "mobilefacenet"
    graph = KNNGraph(m["knn_indices"], m["knn_distances"])
    labels, _ = assign_to_clusters(m["vectors"], m["labels"], graph, m["vectors"])
    clustered = m["labels"] >= 0
    assert (labels[clustered] == m["labels"][clustered]).mean() >= 0.95
    assert list(m["face_ids"]) == list(table["face_id"])


def _refs_of(ds, path):
    """A one-person library from a face's own vector (no detection needed)."""
    import numpy as np

    from crowdsort.naming.identify import References, save_references
    from crowdsort.storage.store import FaceStore

    ids, X = FaceStore(ds / "faces").load_embeddings("mobilefacenet")
    save_references(References("mobilefacenet", np.array(["Ada"], dtype=object), X[:1], ["ada.jpg"]), path)


def _use_run(d, names, refs):
    """apply-labels --export, protos write and label-clusters on the run ``cl`` of dataset ``d``."""
    assert main(["-q", "apply-labels", "-d", d, "--cluster-run", "cl", "--labels", str(names), "--to", "named.csv",
                 "--export", "named", "--clean"]) == 0
    assert main(["-q", "protos", "write", "-d", d, "--cluster-run", "cl", "--to", "protos", "--clean"]) == 0
    assert main(["-q", "label-clusters", "-d", d, "--cluster-run", "cl", "--refs", str(refs), "--to", "lab.csv"]) == 0


def test_a_cluster_run_is_read_from_any_folder(example_ds, tmp_path, monkeypatch, capsys):
    """A run clustered from one folder is used from any other (crop paths were recorded relative
    to the folder cluster ran in: apply-labels --export failed with a bare [Errno 2] elsewhere,
    label-clusters asked to re-run cluster); a run written that way is still read."""
    import shutil

    ds = tmp_path / "work" / "ds"
    shutil.copytree(example_ds, ds, ignore=shutil.ignore_patterns("cluster", "run*", "mine"))
    monkeypatch.chdir(tmp_path / "work")
    assert main(["-q", "cluster", "-d", "ds", "--to", "cl"]) == 0
    table = pd.read_csv(ds / "cl" / "assignments.csv")
    assert table["crop_path"].str.startswith("faces/crops/").all()  # relative to the dataset
    assert json.loads((ds / "cl" / "clusters.json").read_text())["source"] == "faces"
    names, refs = tmp_path / "names.csv", tmp_path / "refs.h5"
    names.write_text("label,cluster\nAda,0\n")
    _refs_of(ds, refs)
    for cwd, d in ((tmp_path, str(ds)), (ds, "."), (ds / "faces", "..")):
        monkeypatch.chdir(cwd)
        _use_run(d, names, refs)
        assert len(list((ds / "named" / "Ada").iterdir())) == (table["cluster"] == 0).sum()
        assert (ds / "protos" / "000").is_dir() and "Ada" in set(pd.read_csv(ds / "lab.csv")["label"])

    # runs of older versions: paths relative to the folder cluster ran in, or absolute
    info = json.loads((ds / "cl" / "clusters.json").read_text())
    for crop, source in ((lambda p: f"ds/{p}", "ds/faces"), (lambda p: str(ds / p), str(ds / "faces"))):
        table.assign(crop_path=table["crop_path"].map(crop)).to_csv(ds / "cl" / "assignments.csv", index=False)
        (ds / "cl" / "clusters.json").write_text(json.dumps({**info, "source": source}))
        monkeypatch.chdir(ds)
        _use_run(".", names, refs)
        assert len(list((ds / "named" / "Ada").iterdir())) == (table["cluster"] == 0).sum()
    # a crop that is gone is named in one line (it was a bare [Errno 2])
    gone = ds / table.loc[table["cluster"] == 0, "crop_path"].iloc[0]
    gone.unlink()
    assert main(["-q", "apply-labels", "-d", ".", "--cluster-run", "cl", "--labels", str(names), "--to", "named.csv",
                 "--export", "named", "--clean"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(gone) in err and "extract-faces" in err


def test_a_hand_edited_assignments_csv_is_refused_in_one_line(example_ds, tmp_path, capsys):
    """Issue 32 (low): a garbled assignments.csv (a column gone, a cluster that is not a number, a
    face the run never had, an empty or non-UTF-8 file) gave pandas' or a KeyError's traceback;
    each is one line naming the file and the fix."""
    assert main(["-q", "cluster", "-d", str(example_ds), "--to", "edited"]) == 0
    path = example_ds / "edited" / "assignments.csv"
    good = path.read_bytes()
    table = pd.read_csv(path)
    names = tmp_path / "names.csv"
    names.write_text("label,cluster\nAda,0\n")
    edits = {
        "no cluster column": (table.drop(columns=["cluster"]).to_csv(index=False).encode(), "no cluster column"),
        "a word for a cluster": (table.assign(cluster=table["cluster"].astype(object).where(
            table.index != 3, "bob")).to_csv(index=False).encode(), "line 5: cluster 'bob' is not a cluster number"),
        "a fraction": (table.assign(cluster=table["cluster"].astype(float).where(table.index != 0, 1.5))
                       .to_csv(index=False).encode(), "line 2: cluster 1.5 is not a cluster number"),
        "an unknown face": (table.assign(face_id=table["face_id"].where(table.index != 1, "nobody"))
                            .to_csv(index=False).encode(), "face_id 'nobody' is not a face of"),
        "a face twice": (pd.concat([table, table.iloc[:1]]).to_csv(index=False).encode(), "is listed twice"),
        "a prototype word": (table.assign(prototype=table["prototype"].astype(object).where(table.index != 0, "maybe"))
                             .to_csv(index=False).encode(), "prototype 'maybe' is not True or False"),
        "empty": (b"", "empty"),
        "latin-1": (good.replace(b"face_id", "face_id\u00e9".encode("latin-1"), 1), "not UTF-8 text"),
        "not a table": (b'face_id,cluster\n"a,1\n', "not a CSV table"),
    }
    try:
        for what, (content, message) in edits.items():
            path.write_bytes(content)
            for argv in (["apply-labels", "-d", str(example_ds), "--cluster-run", "edited", "--labels", str(names),
                          "--to", str(tmp_path / "out.csv")],
                         ["protos", "write", "-d", str(example_ds), "--cluster-run", "edited", "--to", "p-edited"]):
                assert main(["-q", *argv]) == 1, what
                err = capsys.readouterr().err.strip()
                assert "\n" not in err and "Traceback" not in err, (what, err)
                assert str(path) in err and message in err and "crowdsort cluster" in err, (what, err)
        path.unlink()
        assert main(["-q", "protos", "write", "-d", str(example_ds), "--cluster-run", "edited", "--to", "p-edited"]) == 1
        assert "assignments.csv: missing" in capsys.readouterr().err
    finally:
        path.write_bytes(good)
    assert main(["-q", "protos", "write", "-d", str(example_ds), "--cluster-run", "edited", "--to", "p-edited"]) == 0


# What a clean run may write to stderr with -q: our own one-line notes (the example's broken files
# are "skipped: ..."). Anything else is noise: a Python warning ("...Warning: "), absl/glog lines
# ("W0000 00:00:...", "I1207 ..."), TFLite's "INFO: Created TensorFlow Lite XNNPACK delegate",
# onnxruntime's "[W:onnxruntime:...]", a logger's "WARNING ..." (issue 29).
OUR_STDERR = ("skipped: ", "note: ")


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and not line.startswith(OUR_STDERR)]


@pytest.mark.parametrize("engine", [None, "dlib"])
def test_a_clean_run_prints_no_third_party_warnings_or_log_lines(example_ds, tmp_path, engine):
    """``crowdsort extract-faces`` then ``cluster`` as a user runs them (a new process, Python's
    own warning filters): stderr holds our notes only."""
    import subprocess
    import sys

    images = example_ds.parent / "images"
    ds = tmp_path / "ds"
    runs = [["extract-faces", "-d", str(ds), "--from", f"{images}/*", "--to", "faces",
             *(["--engine", engine] if engine else [])],
            ["cluster", "-d", str(ds), "--from", "faces", "--to", "cluster"]]
    for argv in runs:
        done = subprocess.run([sys.executable, "-m", main.__module__, "-q", *argv], capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode == 0, done.stderr
        assert _noise(done.stderr) == [], f"crowdsort {argv[0]} wrote to stderr:\n{done.stderr}"
        assert done.stdout.strip()  # its one-line summary
