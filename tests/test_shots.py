"""Shot cuts on the real videos in ../shared/data/videos, scene lists, and broken inputs."""
from __future__ import annotations

import re

import av
import numpy as np
import pandas as pd
import pytest

from crowdsort.video.frames import VideoError
from crowdsort.video.shots import (SCENES_HEADER, SHOT_COLUMNS, ShotsFileError, cut_scores, detect_cuts, detect_shots,
                            frame_signatures, read_scenes_csv, scenes_csv_name, shots_from_cuts, write_scenes_csv,
                            write_shots)
from test_frames import _make_audio as make_audio  # one generator of audio-only files

HAMILTON = "hamilton_short.mp4"
CROWD = "crowd_walk.mp4"
HAMILTON_CUTS = [20, 82, 211]  # SOURCES.md


@pytest.fixture(scope="module")
def videos(need_shared):
    return need_shared("videos")


@pytest.fixture(scope="module")
def hamilton(videos):
    return frame_signatures(videos / HAMILTON)


@pytest.fixture(scope="module")
def crowd(videos):
    return frame_signatures(videos / CROWD)


def test_hamilton_cuts_exactly_the_known_ones(hamilton):
    assert len(hamilton.diffs) == 275 and hamilton.fps == pytest.approx(29.97, abs=0.01)
    assert detect_cuts(hamilton.diffs) == HAMILTON_CUTS
    # margins of the default rule: the weakest cut well above 1, the strongest non-cut well below
    scores = cut_scores(hamilton.diffs)
    others = np.delete(scores, HAMILTON_CUTS)
    assert scores[HAMILTON_CUTS].min() > 1.3 and others.max() < 0.6
    # SOURCES.md's own measure: no other pair above 14 (frames 21-25 move fast)
    assert np.delete(hamilton.diffs, HAMILTON_CUTS).max() < 14 < 20 < hamilton.diffs[HAMILTON_CUTS].min()


def test_hamilton_shots(videos):
    shots = detect_shots(videos / HAMILTON)
    assert list(shots.columns) == list(SHOT_COLUMNS)
    assert shots[["shot", "start_frame", "end_frame", "n_frames"]].values.tolist() == [
        [0, 0, 19, 20], [1, 20, 81, 62], [2, 82, 210, 129], [3, 211, 274, 64]]
    assert shots["start_s"].iloc[1] == pytest.approx(20 / 29.97, abs=1e-3)
    assert (shots["end_s"].iloc[:-1].to_numpy() == shots["start_s"].iloc[1:].to_numpy()).all()
    assert shots["end_s"].iloc[-1] == pytest.approx(275 / 29.97, abs=1e-3)


def test_crowd_walk_is_one_shot(crowd):
    assert len(crowd.diffs) == 105
    assert detect_cuts(crowd.diffs) == []
    assert cut_scores(crowd.diffs).max() < 0.5
    shots = shots_from_cuts([], len(crowd.diffs), crowd.fps, crowd.times_s)
    assert shots[["start_frame", "end_frame", "n_frames"]].values.tolist() == [[0, 104, 105]]
    assert shots["end_s"].iloc[0] == pytest.approx(4.2)


def test_rule_on_synthetic_scores():
    d = np.full(100, 2.0)
    d[0] = 0
    d[[30, 35, 70]] = 40  # 35 is too soon after 30
    assert detect_cuts(d) == [30, 70]
    assert detect_cuts(d, min_shot_frames=5) == [30, 35, 70]
    d[50:60] = 40  # sustained change: not a run of cuts
    assert detect_cuts(d) == [30, 70]
    d2 = np.full(50, 1.0)
    d2[20] = 15  # 15x its neighbours, below the absolute threshold
    assert detect_cuts(d2) == [] and detect_cuts(d2, threshold=10) == [20]
    assert detect_cuts(np.zeros(0)) == [] and detect_cuts(np.zeros(1)) == []
    with pytest.raises(ValueError, match="min_shot_frames"):
        detect_cuts(d, min_shot_frames=0)


def test_scenes_csv_format_and_round_trip(hamilton, videos, tmp_path):
    shots = shots_from_cuts(HAMILTON_CUTS, len(hamilton.diffs), hamilton.fps, hamilton.times_s)
    assert scenes_csv_name(videos / HAMILTON) == "hamilton_short-Scenes.csv"
    path = tmp_path / scenes_csv_name(videos / HAMILTON)
    write_scenes_csv(shots, path, hamilton.fps)
    lines = path.read_text().splitlines()
    assert lines[0] == "Timecode List:,00:00:00.667,00:00:02.736,00:00:07.040"
    assert lines[1] == ",".join(SCENES_HEADER) == (
        "Scene Number,Start Frame,Start Timecode,Start Time (seconds),End Frame,End Timecode,"
        "End Time (seconds),Length (frames),Length (timecode),Length (seconds)")
    # PySceneDetect: Start Frame from 1, End Frame = exclusive end from 0 (= last frame from 1)
    assert lines[2] == "1,1,00:00:00.000,0.000,20,00:00:00.667,0.667,20,00:00:00.667,0.667"
    assert lines[5] == "4,212,00:00:07.040,7.040,275,00:00:09.176,9.176,64,00:00:02.135,2.135"
    assert len(lines) == 6
    back = read_scenes_csv(path, n_frames=275)
    pd.testing.assert_frame_equal(back.drop(columns=["start_s", "end_s"]), shots.drop(columns=["start_s", "end_s"]))
    np.testing.assert_allclose(back[["start_s", "end_s"]], shots[["start_s", "end_s"]], atol=1e-3)
    # without the Timecode List row, as RFC 4180 CSV
    (tmp_path / "plain.csv").write_text("\n".join(lines[1:]) + "\n")
    pd.testing.assert_frame_equal(read_scenes_csv(tmp_path / "plain.csv"), back)
    with pytest.raises(ShotsFileError, match="past the video's 200"):
        read_scenes_csv(path, n_frames=200)


def test_one_shot_scene_list(tmp_path):
    shots = shots_from_cuts([], 105, 25.0)
    write_scenes_csv(shots, tmp_path / "c-Scenes.csv", 25.0)
    lines = (tmp_path / "c-Scenes.csv").read_text().splitlines()
    assert lines[0] == "Timecode List:"
    assert lines[2] == "1,1,00:00:00.000,0.000,105,00:00:04.200,4.200,105,00:00:04.200,4.200"
    pd.testing.assert_frame_equal(read_scenes_csv(tmp_path / "c-Scenes.csv"), shots)


def test_plain_cut_list(tmp_path):
    p = tmp_path / "cuts.txt"
    p.write_text("frame\n20\n\n# comment\n82\n211\n")
    shots = read_scenes_csv(p, n_frames=275, fps=29.97)
    assert shots[["start_frame", "end_frame"]].values.tolist() == [[0, 19], [20, 81], [82, 210], [211, 274]]
    with pytest.raises(ShotsFileError, match=re.escape(str(p)) + ".*frame count"):
        read_scenes_csv(p)
    p.write_text("20\n300\n")
    with pytest.raises(ShotsFileError, match="past the video's 275"):
        read_scenes_csv(p, n_frames=275, fps=29.97)
    p.write_text("20\nabc\n")
    with pytest.raises(ShotsFileError, match="line 2 is not a frame number"):
        read_scenes_csv(p, n_frames=275, fps=29.97)
    with pytest.raises(ShotsFileError, match="cannot read"):
        read_scenes_csv(tmp_path / "missing.csv", n_frames=275, fps=29.97)


def test_an_empty_shots_file_is_refused_not_read_as_no_cuts(tmp_path):
    """0 bytes (or blank lines only) is a file whose writing failed, not a video of one shot;
    a list of no cuts says so in a comment or a header."""
    p = tmp_path / "cuts.txt"
    for text in ("", "\n \n"):
        p.write_text(text)
        with pytest.raises(ShotsFileError) as e:
            read_scenes_csv(p, n_frames=275, fps=29.97)
        assert str(e.value) == (f"{p}: the shots file is empty: write its cuts (a scene list, or one frame number "
                                "a line; a comment line alone for a video of one shot) or leave --shots out")
    p.write_text("# one shot\n")
    assert read_scenes_csv(p, n_frames=275, fps=29.97)["start_frame"].tolist() == [0]


def test_write_shots_table(tmp_path):
    shots = shots_from_cuts([20], 40, 10.0)
    write_shots(shots, tmp_path / "shots.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "shots.parquet"), shots)


@pytest.fixture(scope="module")
def bad_dir(videos, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-shots")
    data = (videos / HAMILTON).read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "notes.mp4").write_text("not a video, just notes\n")
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # its index ('moov') is at the end
    make_audio(d / "tone.mp4", "aac")
    whole = d / "whole.mp4"  # index first ("faststart"), then cut in half: opens, then stops
    with av.open(str(videos / HAMILTON)) as i, av.open(str(whole), "w", options={"movflags": "faststart"}) as o:
        out = o.add_stream_from_template(i.streams.video[0])
        for p in i.demux(i.streams.video[0]):
            if p.dts is not None:
                p.stream = out
                o.mux(p)
    (d / "cut_short.mp4").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    whole.unlink()
    return d


@pytest.mark.parametrize("name, reason", [
    ("empty.mp4", r"empty file \(0 bytes\)"),
    ("notes.mp4", r"not a video \(a text file\)"),
    ("truncated.mp4", r"truncated \(the file ends at byte"),
    ("tone.mp4", r"no video stream \(audio only"),
    ("cut_short.mp4", r"truncated: the video stops after \d+ of its 275 frames"),
])
def test_bad_inputs_raise_one_line(bad_dir, name, reason):
    path = bad_dir / name
    with pytest.raises(VideoError) as e:
        detect_shots(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    assert re.search(reason, msg), msg
