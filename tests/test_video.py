"""extract-faces on videos (issue 14): sampled frames, shots found in the same decode, faces
linked into tracks within each shot; on the real clips in ../shared/data/videos and broken files."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crowdsort.cli import main
from crowdsort.video.shots import read_scenes_csv
from crowdsort.storage.store import FaceStore
from crowdsort.video.tracks import link_tracks
from crowdsort.video.faces import load_shots, sampling_rule, shots_dir
from test_frames import CROWD, HAMILTON, bad_dir, videos  # noqa: F401  (fixtures: broken files, the clips)
from test_frames import _cut_end, _damage_middle

HAMILTON_CUTS = [20, 82, 211]  # SOURCES.md


def extract(ds, src, *extra) -> int:
    return main(["-q", "extract-faces", "-d", str(ds), "--from", str(src), "--workers", "2", *extra])


@pytest.fixture(scope="module")
def clips(videos, tmp_path_factory):  # noqa: F811
    """Both clips and the two reference photos, in one run at the default sampling."""
    ds = tmp_path_factory.mktemp("video") / "ds"
    assert extract(ds, videos) == 0
    store = FaceStore(ds / "faces")
    return store, store.load_faces(), store.load_images()


def _of(faces, name):
    return faces[faces["image_path"].map(os.path.basename) == name]


def test_faces_trace_back_to_their_frame(clips, videos):  # noqa: F811
    store, faces, images = clips
    assert set(images["image_path"].map(os.path.basename)) == {HAMILTON, CROWD, "alex-lacamoire.png",
                                                                "lin-manuel-miranda.png"}
    assert (images["status"] == "ok").all()
    photos = faces[~faces["image_path"].str.endswith(".mp4")]
    assert len(photos) == 2 and (photos[["frame", "shot", "track"]] == -1).all().all()
    assert photos["time_s"].isna().all()
    for name, fps in ((HAMILTON, 30000 / 1001), (CROWD, 25.0)):
        f = _of(faces, name)
        assert len(f) >= 20
        # sampled at 5 a second: the first frame of each 0.2 s, times the frames' own
        frames = np.unique(f["frame"])
        assert np.allclose(f["time_s"], f["frame"] / fps, atol=1e-3)
        rule = sampling_rule(5.0)
        expected = [i for i in range(int(f["frame"].max()) + 1) if rule(i, i / fps)]
        assert set(frames) <= set(expected) and len(frames) >= 0.8 * len(expected)
        assert all((store.root / c).is_file() for c in f["crop_path"])
        assert f["crop_path"].str.contains(r"_f\d{6}-").all()


def test_shots_found_in_the_same_decode(clips):
    store, faces, _ = clips
    shots = load_shots(store)
    h = shots[shots["image_path"].str.endswith(HAMILTON)]
    assert h["start_frame"].tolist() == [0] + HAMILTON_CUTS
    assert h["end_frame"].tolist() == [c - 1 for c in HAMILTON_CUTS] + [274]
    assert shots[shots["image_path"].str.endswith(CROWD)]["n_frames"].tolist() == [105]
    f = _of(faces, HAMILTON)
    start = h["start_frame"].to_numpy()
    assert (f["shot"].to_numpy() == np.searchsorted(start, f["frame"].to_numpy(), side="right") - 1).all()
    # the PySceneDetect scene list beside it, read back to the same shots
    video_hash = f["image_hash"].iloc[0]
    scenes = read_scenes_csv(shots_dir(store.root, video_hash) / "hamilton_short-Scenes.csv")
    assert scenes["start_frame"].tolist() == h["start_frame"].tolist()
    # and the cut list skelshop reads as ffprobe shots (from 0, as our own reader takes it)
    cuts = shots_dir(store.root, video_hash) / "hamilton_short-cuts.txt"
    assert cuts.read_text().split() == [str(c) for c in HAMILTON_CUTS]
    assert read_scenes_csv(cuts, 275, 30)["start_frame"].tolist() == h["start_frame"].tolist()


def test_small_faces_of_a_1080p_frame_are_found_in_tiles(videos):  # noqa: F811
    """crowd_walk frame 50: BlazeFace over the whole 1920×1080 frame finds 1 of the 4 near faces
    (each ~50–100 px); with the 3×3 tiles chosen for that width, each once."""
    import av

    from crowdsort.faces.detect import _overlap, auto_tiles, detect_tiled, load_detector

    with av.open(str(videos / CROWD)) as c:
        rgb = next(f for i, f in enumerate(c.decode(video=0)) if i == 50).to_ndarray(format="rgb24")
    det = load_detector("blazeface").prepare()
    assert auto_tiles(rgb.shape[1]) == 3 and auto_tiles(640) == 1
    whole, tiled = detect_tiled(det, rgb, 1), detect_tiled(det, rgb, 3)
    assert len(whole) <= 2 and len(tiled) >= 4
    assert all(_overlap(a.box, b.box) < 0.5 for i, a in enumerate(tiled) for b in tiled[i + 1:])
    assert all(np.all((f.landmarks[:2] >= f.box[:2]) & (f.landmarks[:2] <= f.box[2:])) for f in tiled)


def test_tracks_stay_in_their_shot_and_hold_one_person(clips):
    """A track never crosses a cut, and never holds two faces of one frame. On crowd_walk the
    person who walks the whole clip is one track (checked with dlib vectors: every face of it
    near the track's mean), not one per frame."""
    from crowdsort.faces.embed import embed_faces, load_embedder

    store, faces, _ = clips
    for name in (HAMILTON, CROWD):
        f = _of(faces, name)
        assert (f.groupby("track")["shot"].nunique() == 1).all()
        assert not f.duplicated(["track", "frame"]).any()
        assert f["track"].nunique() < len(f) / 2
    crowd = _of(faces, CROWD)
    longest = crowd.groupby("track")["frame"].agg(["min", "max", "size"]).sort_values("size").iloc[-1]
    assert longest["max"] - longest["min"] >= 0.8 * 104 and longest["size"] >= 15
    rows = crowd[crowd["track"] == longest.name]
    X = embed_faces(store, rows, load_embedder("dlib"), progress=False)
    mean = X.mean(0) / np.linalg.norm(X.mean(0))
    d = 1 - X @ mean
    print(f"crowd_walk: longest track {longest['size']} faces over frames {longest['min']}-{longest['max']}; "
          f"dlib distance to its mean: median {np.median(d):.3f}, max {d.max():.3f}")
    assert np.median(d) < 0.05 and (d < 0.12).mean() >= 0.9


def test_rerun_skips_videos_and_a_new_rate_redoes_only_them(videos, tmp_path, capsys):  # noqa: F811
    ds = tmp_path / "ds"
    src = f"{videos / HAMILTON},{videos / 'references'}"
    assert extract(ds, src) == 0
    first = FaceStore(ds / "faces").load_faces()
    capsys.readouterr()
    assert extract(ds, src) == 0
    assert "0 processed, 3 unchanged" in capsys.readouterr().out
    pd.testing.assert_frame_equal(FaceStore(ds / "faces").load_faces(), first)
    assert main(["extract-faces", "-q", "-d", str(ds), "--from", src, "--every", "10"]) == 0
    out = capsys.readouterr().out
    assert "2 images and 1 videos: 1 processed, 2 unchanged" in out
    again = FaceStore(ds / "faces").load_faces()
    video, before = _of(again, HAMILTON), _of(first, HAMILTON)
    assert (video["frame"] % 10 == 0).all() and len(video) >= 15
    # a frame both rates sample gives the same face (same id); the others' crops are gone
    both = set(before.loc[before["frame"] % 10 == 0, "face_id"])
    assert both and both <= set(video["face_id"])
    dropped = before[~before["face_id"].isin(video["face_id"])]
    assert len(dropped) and not any((ds / "faces" / c).exists() for c in dropped["crop_path"])


def test_bad_videos_reported_and_batch_goes_on(bad_dir, videos, tmp_path, capsys):  # noqa: F811
    """Zero-byte, truncated, text and audio-only files get one line each naming the file; the
    good video and the photos beside them are extracted all the same. A video that breaks off
    part-way is refused whole, its crops removed."""
    ds = tmp_path / "ds"
    assert extract(ds, f"{bad_dir},{videos / 'references'}") == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("skipped: ")]
    named = {os.path.basename(line.split(": ")[1]) for line in lines}
    assert named == {"empty.mp4", "truncated.mp4", "notes.mp4", "tone.mp4", "tone.mkv", "cut_short.mp4", "half.mkv"}
    assert any(re.search(r"notes\.mp4: not a video \(a text file\)", line) for line in lines)
    assert any(re.search(r"half\.mkv: truncated: the video stops at 4\.\d s of 9\.2 s", line) for line in lines)
    store = FaceStore(ds / "faces")
    faces = store.load_faces()
    assert set(faces["image_path"].map(os.path.basename)) >= {"crowd.MP4", "alex-lacamoire.png",
                                                              "lin-manuel-miranda.png"}
    crops = {p.name for p in (store.root / "crops").iterdir()}
    assert crops == {os.path.basename(c) for c in faces["crop_path"]}  # nothing of the broken ones left


def _face_video(path, frames=40, rate=10):
    """A face (scikit-image's astronaut) drifting right over a plain background, MPEG-4."""
    import av
    from PIL import Image

    skdata = pytest.importorskip("skimage.data")
    face = Image.fromarray(skdata.astronaut()).crop((80, 0, 400, 330)).resize((160, 165))
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        s.codec_context.gop_size = 10
        for i in range(frames):
            im = Image.new("RGB", (320, 240), (90, 110, 130))
            im.paste(face, (40 + 2 * i, 30))
            for p in [*s.encode(av.VideoFrame.from_image(im))]:
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_frames_that_cannot_be_decoded_cost_their_faces_only(tmp_path, capfd):
    """Damaged packets in the middle of a video: the frames that decode keep their faces (the
    video was refused whole), and its row and a warning line say how many frames were lost."""
    src = tmp_path / "in"
    src.mkdir()
    _face_video(src / "whole.mp4")
    _face_video(src / "damaged.mp4")
    _damage_middle(src / "damaged.mp4")
    ds = tmp_path / "ds"
    assert extract(ds, src) == 0
    store = FaceStore(ds / "faces")
    faces, images = store.load_faces(), store.load_images().set_index("image_path")
    whole, damaged = (len(_of(faces, f"{n}.mp4")) for n in ("whole", "damaged"))
    assert whole == 20 and 0.7 * whole <= damaged <= whole
    row = images.loc[str(src / "damaged.mp4")]
    assert row["status"] == "ok" and row["n_faces"] == damaged and images.loc[str(src / "whole.mp4"), "error"] == ""
    assert re.fullmatch(rf"{re.escape(str(src / 'damaged.mp4'))}: \d+ of its 40 frames could not be decoded "
                        r"\(.+\); the \d+ others are kept", row["error"]), row["error"]
    assert row["error"] in capfd.readouterr().err


def test_a_matroska_video_cut_short_by_under_a_second_keeps_its_faces_and_says_so(tmp_path, capfd):
    path = tmp_path / "short.mkv"
    _face_video(path, frames=30)
    _cut_end(path, 0.4)
    assert extract(tmp_path / "ds", path) == 0
    row = FaceStore(tmp_path / "ds" / "faces").load_images().iloc[0]
    assert row["status"] == "ok" and row["n_faces"] == 13  # frames 0, 2, ... 24 of the 26 left
    assert row["error"] == (f"{path}: truncated: the video stops at 2.6 s of 3.0 s (26 frames found, about 4 "
                            "missing at its end); the frames before are kept")
    assert row["error"] in capfd.readouterr().err


def test_given_shots_replace_detected_cuts(videos, tmp_path, capsys):  # noqa: F811
    """--shots: a PySceneDetect scene list for one video, or a folder of <stem>-Scenes.csv (a
    video without one has its cuts detected); read inside the dataset; a bad file is one line."""
    from crowdsort.video.shots import shots_from_cuts, write_scenes_csv

    ds = tmp_path / "ds"
    (ds / "given").mkdir(parents=True)
    write_scenes_csv(shots_from_cuts([20, 82], 275, 30000 / 1001), ds / "given" / "hamilton_short-Scenes.csv",
                     30000 / 1001)
    assert extract(ds, f"{videos / HAMILTON},{videos / CROWD}", "--shots", "given") == 0
    shots = load_shots(FaceStore(ds / "faces"))
    assert shots[shots["image_path"].str.endswith(HAMILTON)]["start_frame"].tolist() == [0, 20, 82]
    assert shots[shots["image_path"].str.endswith(CROWD)]["start_frame"].tolist() == [0]
    faces = _of(FaceStore(ds / "faces").load_faces(), HAMILTON)
    assert sorted(faces["shot"].unique()) == [0, 1, 2]
    # a cut list for one video, and a file that is not one
    (ds / "cuts.txt").write_text("# cut frames\n211\n")
    assert extract(ds, videos / HAMILTON, "--shots", "cuts.txt") == 0
    shots = load_shots(FaceStore(ds / "faces"))
    assert shots[shots["image_path"].str.endswith(HAMILTON)]["start_frame"].tolist() == [0, 211]
    (ds / "bad.csv").write_text("Scene Number,Start Frame\n1,abc\n")
    capsys.readouterr()
    assert extract(ds, videos / HAMILTON, "--shots", "bad.csv") == 0
    assert re.search(r"skipped: .*hamilton_short\.mp4: its shots \(--shots\) cannot be used: .*bad\.csv: ",
                     capsys.readouterr().err)
    assert main(["extract-faces", "-d", str(ds), "--from", str(videos), "--shots", "missing.csv"]) != 0
    assert "missing.csv: no such shots file or folder" in capsys.readouterr().err


def test_skelshop_corpus_description(videos, tmp_path, capsys):  # noqa: F811
    """--corpus: skelshop's corpus CSV as the input list, paths under --corpus-base, a row's psd
    group as its shots; a row whose video is missing is one line and the others go on; a re-run
    redoes nothing. Every video's cut list is written for skelshop (ffprobe shots, from 0).
    Progress counts the frames decoded inside a video."""
    from crowdsort.video.shots import write_scenes_csv, shots_from_cuts

    ds, base = tmp_path / "ds", tmp_path / "corpus"
    (base / "shots").mkdir(parents=True)
    (base / "clips").symlink_to(videos)
    write_scenes_csv(shots_from_cuts([20, 82], 275, 30000 / 1001), base / "shots" / "h-Scenes.csv", 30000 / 1001)
    ds.mkdir()
    (ds / "corpus.csv").write_text("video,group,group_typ,faces,segsout\n"
                                   f"clips/{HAMILTON},shots/h-Scenes.csv,psd,out/h.h5,out/h.csv\n"
                                   "clips/gone.mp4,,,out/g.h5,out/g.csv\n")
    capsys.readouterr()
    args = ["extract-faces", "-d", str(ds), "--corpus", "corpus.csv", "--corpus-base", str(base)]
    assert main(args) == 0
    out = capsys.readouterr()
    assert re.search(r"video frames: \d+", out.err)  # progress inside a video, not only per file
    assert re.search(r"skipped: .*corpus\.csv row 3: .*gone\.mp4 does not exist", out.err)
    assert "1 videos: 1 processed" in out.out
    store = FaceStore(ds / "faces")
    shots = load_shots(store)
    assert shots["start_frame"].tolist() == [0, 20, 82]
    h = store.load_images()["image_hash"].iloc[0]
    assert (shots_dir(store.root, h) / "hamilton_short-cuts.txt").read_text() == "20\n82\n"
    assert main(args) == 0
    assert "0 processed, 1 unchanged" in capsys.readouterr().out
    (ds / "bad.csv").write_text("path,shots\nx.mp4,\n")
    assert main(["extract-faces", "-d", str(ds), "--corpus", "bad.csv"]) != 0
    assert "needs a 'video' column" in capsys.readouterr().err


def test_a_corpus_row_with_a_trailing_comma_is_read_and_one_with_cells_past_the_header_refused(tmp_path):
    """A trailing comma (an empty cell past the header, as spreadsheets write) is read; a row
    with more values than the header has columns is refused in one line naming the file and
    the row (counted in the file's lines, blank ones too)."""
    from crowdsort.video.corpus import CorpusError, read_corpus

    corpus = tmp_path / "corpus.csv"
    corpus.write_text("video,group\nclips/a.mp4,\n\nclips/b.mp4,shots/b-Scenes.csv,\nclips/c.mp4,,,\n")
    rows = read_corpus(corpus)
    assert [(r.line, r.video.name, r.shots and r.shots.name) for r in rows] == [
        (2, "a.mp4", None), (4, "b.mp4", "b-Scenes.csv"), (5, "c.mp4", None)]
    corpus.write_text("video,group\nclips/a.mp4,\n\nclips/b.mp4,shots/b.csv,psd\n")
    with pytest.raises(CorpusError) as e:
        read_corpus(corpus)
    assert str(e.value).startswith(f"{corpus}: row 4 has 1 value past the header's 2 columns ('psd')")
    assert "\n" not in str(e.value)


def test_sampling_options_checked(videos, tmp_path, capsys):  # noqa: F811
    assert main(["extract-faces", "-d", str(tmp_path / "ds"), "--from", str(videos), "--fps", "0"]) != 0
    assert "--fps must be a positive number" in capsys.readouterr().err
    assert main(["extract-faces", "-d", str(tmp_path / "ds"), "--from", str(videos), "--every", "0"]) != 0
    assert "--every must be 1 or more" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["extract-faces", "-d", str(tmp_path / "ds"), "--from", str(videos), "--fps", "2", "--every", "3"])
    assert not (tmp_path / "ds").exists()


def test_clustering_by_track(clips, tmp_path):
    """One item per track: all faces of a track in one cluster, two tracks seen in one frame
    never in one cluster; assignments.csv has a row per face with its frame, shot and track."""
    import shutil

    from crowdsort.pipeline import cluster_faces

    ds = tmp_path / "ds"  # a copy without vectors: what this run embeds is seen below
    shutil.copytree(clips[0].root, ds / "faces", ignore=shutil.ignore_patterns("embeddings", "graphs"))
    store, faces = FaceStore(ds / "faces"), clips[1]
    s = cluster_faces(ds, "faces", "bytrack", progress=False)
    a = pd.read_csv(ds / "bytrack" / "assignments.csv")
    assert len(a) == len(faces) and s["tracks"] == faces[faces["track"] >= 0].groupby(["image_path", "track"]).ngroups
    video = a[a["track"] >= 0]
    assert (video.groupby(["source_image", "track"])["cluster"].nunique() == 1).all()
    clustered = video[video["cluster"] >= 0].drop_duplicates(["source_image", "track", "frame"])
    assert not clustered.duplicated(["cluster", "source_image", "frame"]).any()
    assert s["n_clusters"] >= 2
    # only each track's best faces were embedded (5 a track at most), every face still placed
    from crowdsort.faces.embed import load_embedder

    ids, _ = store.load_embeddings(load_embedder().name)
    embedded = faces[faces["face_id"].isin(ids) & (faces["track"] >= 0)]
    assert embedded.groupby(["image_path", "track"]).size().max() <= 5 < faces.groupby(["image_path", "track"]).size().max()
    # apply-labels names every face of a named track cluster (embedded or not), with its frame;
    # the timeline spans its tracks
    big = video[video["cluster"] >= 0].groupby("cluster").size().idxmax()
    (ds / "labels.csv").write_text(f"label,cluster\nSinger,{big}\n")
    assert main(["-q", "apply-labels", "-d", str(ds), "--labels", "labels.csv", "--cluster-run", "bytrack",
                 "--to", "named.csv", "--timeline", "on-screen.csv"]) == 0
    named = pd.read_csv(ds / "named.csv")
    assert set(named["face_id"]) == set(a.loc[a["cluster"] == big, "face_id"]) and (named["label"] == "Singer").all()
    seen = named[named["track"] >= 0]  # a photo of the same person may share the cluster
    assert (seen["frame"] >= 0).all() and len(seen) >= 10
    tl = pd.read_csv(ds / "on-screen.csv")
    assert set(tl["label"]) == {"Singer"} and len(tl) >= 1
    assert tl["start_s"].min() == pytest.approx(seen["time_s"].min()) and tl["end_s"].max() == pytest.approx(seen["time_s"].max())


def test_the_tracker_s_identity_vectors_come_from_the_crops(clips):
    """What the tracker compares where boxes are ambiguous: dlib vectors of the saved crops, near
    the mean of one walker's faces for each of his, far from it for another person."""
    from crowdsort.video.faces import face_vectors

    store, faces, _ = clips
    crowd = _of(faces, CROWD)
    walker = crowd[crowd["track"] == crowd.groupby("track").size().idxmax()]
    rows = pd.concat([walker, _of(faces, "lin-manuel-miranda.png")]).to_dict("records")
    V = face_vectors(rows, store.root)(list(range(len(rows))))
    assert np.allclose(np.linalg.norm(V, axis=1), 1, atol=1e-4)
    m = V[:-1].mean(0) / np.linalg.norm(V[:-1].mean(0))
    d = 1 - V @ m
    assert np.median(d[:-1]) < 0.05 and d[:-1].max() < d[-1]  # dlib on 100 px video faces: 0.10 vs 0.12


def test_dashboard_shows_a_track_as_one_item(clips):
    """In the dashboard a video's track is one item (its best face shown), two tracks seen in one
    frame never share a cluster, naming a cluster names every face of its tracks, and the source
    view is the video's frame with the face's box drawn."""
    import io

    from PIL import Image

    from crowdsort.review.opening import open_review
    from crowdsort.review.sources import source_jpeg
    from crowdsort.video.faces import video_frame

    store, faces, _ = clips
    session = open_review(store.root.parent, progress=False)
    t = session.table
    tracks = faces[faces["track"] >= 0].groupby(["image_path", "track"]).ngroups
    assert len(t) == tracks + (faces["track"] < 0).sum()
    assert t.loc[t["track"] >= 0, "n_faces"].sum() == (faces["track"] >= 0).sum()
    labels = session.recluster("snn-whispers", {})
    video = t.assign(cluster=labels)[(t["track"] >= 0) & (labels >= 0)]
    frames = video.groupby("cluster")["picture"].agg(lambda s: [k for keys in s for k in keys])
    assert all(len(f) == len(set(f)) for f in frames)  # no frame twice in one cluster
    c = int(video.groupby("cluster")["n_faces"].sum().idxmax())
    session.name(c, "Singer")
    named = session.labelled_table().query("label == 'Singer'")
    items = t["item_id"][labels == c]
    assert len(named) == session.item_faces["item_id"].isin(items).sum() > len(items)
    assert set(named["face_id"]) == set(session.item_faces.loc[session.item_faces["item_id"].isin(items), "face_id"])
    # the source: the video frame at the face's time, its box outlined in red
    row = int(np.flatnonzero((labels == c) & (t["track"] >= 0).to_numpy())[0])
    r = t.iloc[row]
    frame = np.asarray(video_frame(r["source_image"], r["time_s"]))
    shown = np.asarray(Image.open(io.BytesIO(source_jpeg(r["source_image"], r["box"], r["time_s"], 4000))))
    assert shown.shape == frame.shape
    x0, y0, x1, y1 = np.asarray(r["box"]).round().astype(int)
    edge = shown[max(y0, 0) + 1:min(y1, frame.shape[0]) - 1, max(x0, 0)].astype(int)
    assert (edge[:, 0] > 180).mean() > 0.8 and (edge[:, 2] < 110).mean() > 0.8


def test_identify_per_shot_names_lin_manuel_miranda_where_he_sings(clips, videos, capsys):  # noqa: F811
    """hamilton_short with videos/references: Lin-Manuel Miranda is named in the two shots where
    he sings (0 and 2, checked on the crops) and nowhere else; nobody else is named (Alex
    Lacamoire is seen only in profile at the piano, 0.097 from his reference with dlib: unknown)."""
    store = clips[0]
    ds = store.root.parent
    assert main(["-q", "identify", "-d", str(ds), "--refs", str(videos / "references"), "--per-shot"]) == 0
    assert "named as 1 people" in capsys.readouterr().out
    shots = pd.read_csv(ds / "shots.csv")
    assert list(shots.columns[:14]) == ["video", "shot", "shot_start_frame", "shot_end_frame", "shot_start_s",
                                        "shot_end_s", "track", "start_frame", "end_frame", "start_s", "end_s",
                                        "label", "distance", "frames_under"]
    named = shots[shots["label"] != "unknown"]
    assert named["label"].unique().tolist() == ["lin_manuel_miranda"]
    assert named["video"].map(os.path.basename).unique().tolist() == [HAMILTON]
    assert sorted(named["shot"]) == [0, 2]
    assert (named["frames_under"] >= 1).all() and not named.duplicated(["video", "shot", "label"]).any()
    h = shots[shots["video"].str.endswith(HAMILTON)]
    assert h.groupby("shot")["shot_start_frame"].first().tolist() == [0] + HAMILTON_CUTS
    line = pd.read_csv(ds / "shots-timeline.csv")
    assert line["label"].unique().tolist() == ["lin_manuel_miranda"] and len(line) == 2
    assert line["start_s"].iloc[0] == 0 and 2.7 <= line["start_s"].iloc[1] < line["end_s"].iloc[1] <= 7.1


def test_labelled_reel(need_shared, tmp_path):
    """A reel of hard-cut shots made from celeba-dev photos (benchmarks/reel.py, seed 0: 8 people,
    4 enrolled, each in 3 shots, 17 shots): cuts, per-shot naming and track clusters scored.
    Measured: cuts 1.0 / 1.0, naming precision 1.0 and recall 0.83 (issue 14 asks 0.9), track
    clusters BCubed F 0.94; held here to those figures less a margin for platform noise."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import reel

    r = reel.run(need_shared("celeba-dev").parent, tmp_path)
    print(r)
    assert r["cut_precision"] == 1.0 and r["cut_recall"] == 1.0
    assert r["naming_precision"] >= 0.9 and r["naming_recall"] >= 0.75
    assert r["track_bcubed_f"] >= 0.9 and r["tracks_of_no_single_person"] == 0


# -- tracks, on made-up boxes ---------------------------------------------------------------------
def _box(cx, cy, w=50):
    return [cx - w / 2, cy - w / 2, cx + w / 2, cy + w / 2]


def test_two_faces_walking_side_by_side_are_two_tracks():
    frames = np.repeat(np.arange(0, 50, 5), 2)
    t = frames / 25
    boxes = [_box(100 + 4 * f, 200 + k * 70) for f in range(0, 50, 5) for k in (0, 1)]
    tracks = link_tracks(frames, t, np.zeros(len(frames)), boxes)
    assert tracks.tolist() == [0, 1] * 10


def test_faces_passing_each_other_keep_their_tracks():
    """Each moves 20 px a sample towards the other: past the middle, the nearest last centre is
    the other face's; the expected one (at the track's velocity) is its own."""
    frames = np.repeat(np.arange(0, 30, 5), 2)
    boxes = [_box(100 + 4 * f, 100) if k == 0 else _box(200 - 4 * f, 100) for f in range(0, 30, 5) for k in (0, 1)]
    tracks = link_tracks(frames, frames / 25, np.zeros(len(frames)), boxes)
    assert tracks.tolist() == [0, 1] * 6


def test_ambiguous_boxes_are_settled_by_the_faces_vectors():
    """Two people close together swap sides between two samples (each 40 px of a 100 px box):
    by boxes alone the nearer pairing swaps their tracks; their identity vectors keep them."""
    frames = np.array([0, 0, 5, 5])
    boxes = [_box(100, 100, 100), _box(160, 100, 100), _box(140, 100, 100), _box(120, 100, 100)]
    who = np.array([0, 1, 0, 1])  # the face at 140 is the first person, moved right
    assert link_tracks(frames, frames / 25, np.zeros(4), boxes).tolist() == [0, 1, 1, 0]
    ids = np.eye(8)[[0, 1]]
    asked = []

    def appearance(rows):
        asked.extend(rows)
        return ids[who[rows]]
    assert link_tracks(frames, frames / 25, np.zeros(4), boxes, appearance=appearance).tolist() == [0, 1, 0, 1]
    assert sorted(set(asked)) == [0, 1, 2, 3]
    # an unambiguous scene asks for no vector
    asked.clear()
    link_tracks([0, 5], [0, 0.2], [0, 0], [_box(100, 100), _box(104, 100)], appearance=appearance)
    assert asked == []


def test_a_cut_or_a_long_absence_starts_a_new_track():
    frames = np.array([0, 5, 10, 15, 100])
    shots = np.array([0, 0, 1, 1, 1])
    boxes = [_box(100, 100)] * 5
    assert link_tracks(frames, frames / 25, shots, boxes).tolist() == [0, 0, 1, 1, 2]  # 3.4 s gap > 1 s
    # a jump across the frame, or to another size, is not the same face
    assert link_tracks([0, 5], [0, 0.2], [0, 0], [_box(100, 100), _box(400, 100)]).tolist() == [0, 1]
    assert link_tracks([0, 5], [0, 0.2], [0, 0], [_box(100, 100, 40), _box(100, 100, 100)]).tolist() == [0, 1]
