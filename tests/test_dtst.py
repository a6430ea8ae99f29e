"""dtst users switch without changing a command (issue 12): paths read inside -d, dtst's
FFHQ-style dataset crops, --dry-run, one spelling per concept."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:  # closed: no unclosed-file ResourceWarning
        return im.size


ROOT = Path(__file__).resolve().parents[1]


# -- FFHQ crops ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ffhq_run(tmp_path_factory, need_shared):
    """Two real photos, one of them cut so the face touches the edge, extracted with --crop ffhq."""
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    src = need_shared("faces") / "angelina" / "img2.jpg"  # a 454 px crop, clear of the edges
    root = tmp_path_factory.mktemp("ffhq")
    photos = root / "photos"
    photos.mkdir()
    shutil.copy(src, photos / "whole.jpg")
    im = Image.open(src)
    store = FaceStore(root / "probe" / "faces")
    extract_faces(str(photos / "whole.jpg"), store, ExtractParams(max_faces=1), progress=False)
    face = store.load_faces().iloc[0]
    # cut through the face, just left of its nose: the crop must leave the photo
    cut = int(face["landmarks"][4])
    im.crop((cut - 10, 0, im.width, im.height)).save(photos / "edge.jpg", quality=95)
    ds = root / "ds"
    extract_faces(str(photos), FaceStore(ds / "faces"), ExtractParams(max_faces=1, crop="ffhq"), progress=False)
    return photos, ds


def test_ffhq_crop_is_four_eye_distances_at_natural_resolution(ffhq_run):
    from crowdsort.storage.store import FaceStore

    _, ds = ffhq_run
    faces = FaceStore(ds / "faces").load_faces()
    whole = faces[faces["image_path"].str.endswith("whole.jpg")].iloc[0]
    lm = np.asarray(whole["landmarks"]).reshape(-1, 2)
    eye_distance = np.hypot(*(lm[1] - lm[0]))
    width, height = _size(ds / "faces" / whole["dataset_crop_path"])
    side = width
    assert width == height == whole["dataset_crop_size"]
    assert 3.9 <= side / eye_distance <= 4.8, (side, eye_distance)
    assert whole["crop_style"] == "ffhq" and not whole["partial"]
    # natural resolution: more pixels than the 256 px identity crop when the face is big
    assert side > 256 and _size(ds / "faces" / whole["crop_path"]) == (256, 256)


def test_ffhq_crop_at_the_edge_is_padded_or_skipped(ffhq_run, tmp_path):
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    photos, ds = ffhq_run
    faces = FaceStore(ds / "faces").load_faces()
    edge = faces[faces["image_path"].str.endswith("edge.jpg")].iloc[0]
    assert edge["partial"]
    crop = np.asarray(Image.open(ds / "faces" / edge["dataset_crop_path"]))
    # the part outside the photo (left) is mirrored and blurred, not black
    assert crop[:, :10].mean() > 40 and crop[:, :10].std() < crop[:, -crop.shape[1] // 3:].std() * 1.5
    black = FaceStore(tmp_path / "np" / "faces")
    extract_faces(str(photos / "edge.jpg"), black, ExtractParams(max_faces=1, crop="ffhq", padding=False), progress=False)
    plain = np.asarray(Image.open(black.root / black.load_faces().iloc[0]["dataset_crop_path"]))
    assert plain[:, :5].mean() < 5  # --no-padding: outside the photo is black
    skipping = FaceStore(tmp_path / "sk" / "faces")
    extract_faces(str(photos), skipping, ExtractParams(max_faces=1, crop="ffhq", skip_partial=True), progress=False)
    kept = skipping.load_faces()
    assert not kept["image_path"].str.endswith("edge.jpg").any() and kept["image_path"].str.endswith("whole.jpg").any()


def test_max_size_caps_and_never_upscales(ffhq_run, tmp_path):
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    photos, _ = ffhq_run
    store = FaceStore(tmp_path / "cap" / "faces")
    extract_faces(str(photos / "whole.jpg"), store, ExtractParams(max_faces=1, crop="ffhq", max_size=128), progress=False)
    crop = store.root / store.load_faces().iloc[0]["dataset_crop_path"]
    assert _size(crop) == (128, 128)
    crop.unlink()  # a dataset crop deleted by hand is made again
    extract_faces(str(photos / "whole.jpg"), store, ExtractParams(max_faces=1, crop="ffhq", max_size=128), progress=False)
    assert _size(crop) == (128, 128)
    from crowdsort.faces.ffhq import ffhq_crop

    small = np.zeros((60, 60, 3), np.uint8)
    crop, _ = ffhq_crop(small, np.array([[25, 25], [35, 25], [30, 30], [30, 37]], float), max_size=1024)
    assert crop.shape[0] < 60  # the face's own size, not 1024


def test_identity_vectors_ignore_the_dataset_crop(ffhq_run, tmp_path):
    """The embeddings read the aligned identity crop whatever dataset crop is written."""
    from crowdsort.faces.embed import DlibEmbedder, embed_faces
    from crowdsort.extract import ExtractParams, extract_faces
    from crowdsort.storage.store import FaceStore

    photos, ds = ffhq_run
    plain = FaceStore(tmp_path / "plain" / "faces")
    extract_faces(str(photos), plain, ExtractParams(max_faces=1), progress=False)
    ffhq = FaceStore(ds / "faces")
    a = embed_faces(plain, plain.load_faces().sort_values("image_path"), DlibEmbedder(), progress=False, workers=1)
    b = embed_faces(ffhq, ffhq.load_faces().sort_values("image_path"), DlibEmbedder(), progress=False, workers=1)
    np.testing.assert_allclose(a, b, atol=1e-5)


# -- dtst's documented commands, literally --------------------------------------------------------
# The "Extracting features" page of dtst's tutorial, `dtst` replaced by `crowdsort`, run by a shell
# from the folder holding scratch/ (unquoted globs included: the shell leaves `images/*` alone
# there, and crowdsort reads it inside -d as dtst does).
PATH_A = [
    "crowdsort extract-faces -d scratch/crowd --from images/* --to faces",
    "crowdsort extract-faces -d scratch/crowd --from images/* --to faces --max-faces 1",
    "crowdsort extract-faces -d scratch/crowd --from images/* --to faces --engine dlib",
    "crowdsort extract-faces -d scratch/crowd --from images/* --to faces --skip-partial",
    "crowdsort extract-faces -d scratch/crowd --from images/* --to faces-dlib --engine dlib",
    "crowdsort cluster -d scratch/crowd --from faces --to cluster",
]
TUNING = [
    "crowdsort cluster -d scratch/crowd --from faces --to cluster --top 5",
    "crowdsort cluster -d scratch/crowd --from faces --to cluster --min-cluster-size 20",
    "crowdsort cluster -d scratch/crowd --from faces --to cluster --min-cluster-size 20 --clean",
]
PATH_B = "crowdsort cluster -d scratch/crowd --from images/* --to cluster --model clip"


@pytest.fixture
def scratch(tmp_path, need_shared):
    """scratch/crowd/images/search1 and search2 with real photos, as dtst's tutorial has them."""
    faces = need_shared("faces")
    images = tmp_path / "scratch" / "crowd" / "images"
    for search, people in {"search1": ["angelina", "ariel_sharon"], "search2": ["colin_powell", "group"]}.items():
        for person in people:
            shutil.copytree(faces / person, images / search / person)
    return tmp_path


def sh(cmd: str, cwd: Path, env=None) -> subprocess.CompletedProcess:
    bin_dir = Path(__import__("sys").executable).parent  # the crowdsort of this environment
    env = {**__import__("os").environ, "PATH": f"{bin_dir}:{__import__('os').environ['PATH']}", **(env or {})}
    return subprocess.run(cmd, shell=True, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def numbered(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def test_dtst_tutorial_commands_run_as_written(scratch):
    crowd = scratch / "scratch" / "crowd"
    for cmd in PATH_A:
        r = sh(cmd, scratch)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        assert "note:" not in r.stderr  # read inside -d, not found by the fallback
    assert list((crowd / "faces" / "crops").glob("*.jpg")) and list((crowd / "faces-dlib" / "crops").glob("*.jpg"))
    faces = pd.read_parquet(crowd / "faces" / "faces.parquet")
    assert not faces["partial"].any() and (faces["engine"] == "blazeface").all()  # the last run: --skip-partial
    cluster = crowd / "cluster"
    assert (cluster / "000").is_dir() and (cluster / "assignments.csv").exists()
    n_clusters = len(numbered(cluster))
    assert n_clusters >= 3  # three people with 6-8 photos each

    r = sh(TUNING[0], scratch)
    assert r.returncode == 0, r.stderr
    assert 1 <= len(numbered(cluster)) <= 5 and (cluster / "noise").is_dir()
    for cmd in TUNING[1:]:
        r = sh(cmd, scratch)
        assert r.returncode == 0, f"{cmd}\n{r.stderr[-2000:]}"
        sizes = [len(list(d.iterdir())) for d in numbered(cluster)]
        assert all(s >= 20 for s in sizes) and (cluster / "noise").is_dir()


def test_dtst_general_images_path(scratch, clip_weights):
    weights, _ = clip_weights
    r = sh(PATH_B, scratch, env={"CROWDSORT_CLIP_WEIGHTS": str(weights)})
    assert r.returncode == 0, r.stderr[-2000:]
    cluster = scratch / "scratch" / "crowd" / "cluster"
    info = __import__("json").loads((cluster / "clusters.json").read_text())
    assert info["kind"] == "images" and info["n_items"] == len(list((scratch / "scratch" / "crowd" / "images").rglob("*.jpg")))
    assert numbered(cluster) or (cluster / "noise").is_dir()


def test_the_old_spelling_still_works_with_a_note(scratch, capsys):
    """`--from scratch/crowd/images/*` (read from the current folder) keeps working, said once."""
    r = sh("crowdsort extract-faces -d scratch/crowd --from 'scratch/crowd/images/*' --to faces -q", scratch)
    assert r.returncode == 0 and r.stderr.count("note:") == 1 and "current folder" in r.stderr


def test_dry_run_writes_nothing(scratch):
    crowd = scratch / "scratch" / "crowd"
    before = sorted(crowd.rglob("*"))
    r = sh("crowdsort extract-faces -d scratch/crowd --from images/* --to faces --dry-run", scratch)
    assert r.returncode == 0 and "to process" in r.stdout and sorted(crowd.rglob("*")) == before
    assert sh("crowdsort extract-faces -d scratch/crowd --from images/* -q", scratch).returncode == 0
    before = sorted(crowd.rglob("*"))
    r = sh("crowdsort extract-faces -d scratch/crowd --from images/* --dry-run", scratch)
    assert "0 to process" in r.stdout and sorted(crowd.rglob("*")) == before
    r = sh("crowdsort cluster -d scratch/crowd --dry-run", scratch)
    assert r.returncode == 0 and "to embed" in r.stdout and ": new" in r.stdout
    assert sorted(crowd.rglob("*")) == before


def test_one_spelling_per_concept():
    from crowdsort.cli import build_parser, main

    parser = build_parser()
    # -q / -v after the subcommand
    args = parser.parse_args(["cluster", "-d", "x", "-q"])
    assert args.quiet and not args.verbose
    args = parser.parse_args(["-v", "cluster", "-d", "x"])
    assert args.verbose and not args.quiet
    # the dataset is -d everywhere; the old positional spelling of dashboard still parses
    assert parser.parse_args(["dashboard", "-d", "x"]).dataset_opt == "x"
    assert parser.parse_args(["dashboard", "x"]).dataset == "x"
    # runs are read as --from (extraction) and --cluster-run (cluster), old names kept
    a = parser.parse_args(["dashboard", "-d", "x", "--faces", "f", "--run", "r"])
    b = parser.parse_args(["dashboard", "-d", "x", "--from", "f", "--cluster-run", "r"])
    assert (a.faces, a.run) == (b.faces, b.run) == ("f", "r")


def test_every_option_shows_its_default(capsys):
    import argparse

    from crowdsort.cli import build_parser

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = []
    for p in list(parsers(build_parser()))[1:]:
        for action in p._actions:
            if not action.option_strings or action.required or action.dest in ("help", "quiet", "verbose"):
                continue
            if "default" not in p.formatter_class(p.prog)._get_help_string(action):
                missing.append(f"{p.prog} {action.option_strings[0]}")
    assert not missing, missing


def test_extract_frames_as_dtst_writes_it_then_faces_from_the_frames(tmp_path, need_shared):
    videos = need_shared("videos")
    crowd = tmp_path / "scratch" / "crowd"
    (crowd / "videos").mkdir(parents=True)
    shutil.copy(videos / "hamilton_short.mp4", crowd / "videos")
    r = sh("crowdsort extract-frames -d scratch/crowd --from videos --to images/frames --keyframes 1", tmp_path)
    assert r.returncode == 0, r.stderr
    frames = pd.read_parquet(crowd / "images" / "frames" / "frames.parquet")
    names = sorted(p.name for p in (crowd / "images" / "frames").glob("*.jpg"))
    assert names == [f"hamilton_short_{i:04d}.jpg" for i in range(len(frames))] and len(frames) >= 4
    assert frames["keyframe"].all() and frames["time_s"].is_monotonic_increasing
    again = sh("crowdsort extract-frames -d scratch/crowd --from videos --to images/frames --keyframes 1", tmp_path)
    assert "0 processed, 1 unchanged" in again.stdout
    r = sh("crowdsort extract-faces -d scratch/crowd --from images/* --to faces -q", tmp_path)
    assert r.returncode == 0, r.stderr
    faces = pd.read_parquet(crowd / "faces" / "faces.parquet")
    assert faces["image_path"].str.contains("hamilton_short_").any()
