"""extract-frames on the real videos in ../shared/data/videos, and on broken ones made from them."""
from __future__ import annotations

import os
import re
import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from crowdsort.video.frames import (FRAME_COLUMNS, VIDEO_COLUMNS, FrameStore, extract_frames, file_hash, find_videos,
                             in_pool)
from crowdsort.storage.images import content_hash

HAMILTON = "hamilton_short.mp4"
CROWD = "crowd_walk.mp4"


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:  # closed: no unclosed-file ResourceWarning
        return im.size


def _run(src, ds, **kw):
    return extract_frames(str(src), ds, progress=False, **kw)


def _files(root) -> dict:
    """Every file under ``root`` with what an atomic rewrite changes (inode, mtime)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            if n != ".crowdsort.lock":
                st = os.stat(os.path.join(dirpath, n))
                out[os.path.join(dirpath, n)] = (st.st_ino, st.st_mtime_ns)
    return out


def _key_packets(path) -> list[float]:
    """PyAV's own list of key-frame packets: their times from the stream's start."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return sorted(float((p.pts - s.start_time) * s.time_base)
                      for p in c.demux(s) if p.is_keyframe and p.pts is not None)


def _make_video(path, seconds=3, rate=10, gop=10, rotation=None, pixel_aspect=None):
    """A small MPEG-4 video: a white block in the top-left corner, a key frame every ``gop`` frames."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size = gop
        if rotation is not None:
            s.set_display_rotation(rotation)
        if pixel_aspect is not None:
            s.codec_context.sample_aspect_ratio = pixel_aspect
        for i in range(seconds * rate):
            a = np.full((48, 64, 3), 40, np.uint8)
            a[:12, :16] = 255
            a[40:, 60:] = i  # frames differ
            for p in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _damage_middle(path, nbytes=300):
    """Overwrite ``nbytes`` from the start of the video's middle packet (its data in the file):
    a few frames the decoder refuses, the container around them whole."""
    with av.open(str(path)) as c:
        packets = [p for p in c.demux(c.streams.video[0]) if p.size]
        pos = packets[len(packets) // 2].pos
    data = bytearray(Path(path).read_bytes())
    data[pos:pos + nbytes] = np.random.default_rng(0).integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))


def _cut_end(path, seconds):
    """Cut the file just before its packets of the last ``seconds`` (its declared duration stays)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        end = float(c.duration / 1e6)
        pos = min(p.pos for p in c.demux(s) if p.size and float(p.pts * s.time_base) >= end - seconds - 1e-6)
    Path(path).write_bytes(Path(path).read_bytes()[:pos])


def _make_audio(path, codec):
    """One second of a 440 Hz tone, no video stream."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=44100)
        fmt = s.codec_context.codec.audio_formats[0].name
        t = np.arange(44100) / 44100
        tone = np.sin(2 * np.pi * 440 * t) * 0.3
        layout = s.codec_context.layout.name
        channels = s.codec_context.layout.nb_channels
        for i in range(0, 44100, 1152):
            chunk = np.tile(tone[i:i + 1152], (channels, 1))
            if fmt.startswith("s16"):
                chunk = (chunk * 32767).astype(np.int16)
            else:
                chunk = chunk.astype(np.float32)
            if not fmt.endswith("p"):
                chunk = chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
            frame.sample_rate = 44100
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def videos(need_shared):
    return need_shared("videos")


@pytest.fixture(scope="module")
def real_run(videos, tmp_path_factory):
    """Both real videos at the default 10 s."""
    ds = tmp_path_factory.mktemp("real") / "ds"
    return ds, _run(f"{videos / HAMILTON},{videos / CROWD}", ds)


@pytest.fixture(scope="module")
def bad_dir(videos, tmp_path_factory):
    """Broken files beside two good ones (one generated, one real)."""
    d = tmp_path_factory.mktemp("bad")
    data = (videos / HAMILTON).read_bytes()
    (d / "empty.mp4").write_bytes(b"")
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # its index ('moov') is at the end
    (d / "notes.mp4").write_text("not a video, just notes\n")
    _make_audio(d / "tone.mp4", "aac")
    _make_audio(d / "tone.mkv", "mp2")
    # the same video with its index first ("faststart"), and as Matroska, cut in half: they open, then stop
    for name, options in (("cut_short.mp4", {"movflags": "faststart"}), ("half.mkv", {})):
        whole = d / f"whole-{name}"
        with av.open(str(videos / HAMILTON)) as i, av.open(str(whole), "w", options=options) as o:
            out = o.add_stream_from_template(i.streams.video[0])
            for p in i.demux(i.streams.video[0]):
                if p.dts is not None:
                    p.stream = out
                    o.mux(p)
        data = whole.read_bytes()
        whole.unlink()
        (d / name).write_bytes(data[: len(data) // 2])
    _make_video(d / "good.avi")
    shutil.copyfile(videos / CROWD, d / "crowd.MP4")
    return d


def test_find_videos(tmp_path, videos):
    """Folders are scanned recursively, extensions matched in any case, other files ignored;
    what is passed over is reported; only no video at all is an error."""
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("a/x.mp4", "a/b/y.MOV", "a/z.webm", "a/notes.txt", "a/b/pic.jpg"):
        (tmp_path / rel).write_bytes(b"")
    (tmp_path / "a" / "dead.mkv").symlink_to(tmp_path / "nowhere.mkv")
    skipped = []
    found = find_videos(f"{tmp_path / 'a'},{tmp_path / 'missing' / '*.mp4'},{tmp_path / 'a' / 'notes.txt'}", skipped)
    assert [p.name for p in found] == ["y.MOV", "x.mp4", "z.webm"]
    reasons = dict(skipped)
    assert reasons[str(tmp_path / "missing" / "*.mp4")] == "matches nothing"
    assert "dangling" in reasons[str(tmp_path / "a" / "dead.mkv")]
    assert "not a video file name" in reasons[str(tmp_path / "a" / "notes.txt")]
    with pytest.raises(FileNotFoundError, match="no videos found"):
        find_videos(str(tmp_path / "a" / "b" / "*.jpg"))
    assert file_hash(videos / HAMILTON) == content_hash((videos / HAMILTON).read_bytes())


def test_frame_names_and_table(real_run, videos):
    """Default 10 s: the first key frame of each video, named <stem>_0000.jpg; both tables hold
    their documented columns, key frames only, times increasing, index = time × fps."""
    ds, s = real_run
    root = ds / "images" / "frames"
    assert sorted(p.name for p in root.glob("*.jpg")) == ["crowd_walk_0000.jpg", "hamilton_short_0000.jpg"]
    assert s["processed"] == 2 and s["failed"] == 0 and s["frames"] == 2 == s["frames_total"]
    frames = pd.read_parquet(root / "frames.parquet")
    vids = pd.read_parquet(root / "videos.parquet")
    assert list(frames.columns) == list(FRAME_COLUMNS) and list(vids.columns) == list(VIDEO_COLUMNS)
    assert frames["keyframe"].all()
    assert set(frames["output"]) == {"images/frames/crowd_walk_0000.jpg", "images/frames/hamilton_short_0000.jpg"}
    for r in frames.itertuples():
        with Image.open(ds / r.output) as im:
            assert im.size == (r.width, r.height)
        assert r.video_hash == file_hash(r.video_path)
    assert dict(zip(frames["output"].str.split("/").str[-1], zip(frames["width"], frames["height"]))) == {
        "crowd_walk_0000.jpg": (1920, 1080), "hamilton_short_0000.jpg": (640, 360)}
    v = vids.set_index(vids["video_path"].str.split("/").str[-1])
    assert (v["status"] == "ok").all() and v.loc[HAMILTON, "n_frames"] == 1
    assert v.loc[HAMILTON, "duration_s"] == pytest.approx(9.176, abs=0.01)
    assert v.loc[CROWD, "duration_s"] == pytest.approx(4.2, abs=0.01)
    assert v.loc[HAMILTON, "size_bytes"] == (videos / HAMILTON).stat().st_size


def test_keyframes_1_on_hamilton(videos, tmp_path):
    """keyframes=1 on the 9.2 s clip: its 6 key frames (all ≥ 1 s apart) at the times of PyAV's
    key packets; frame_index is each one's position in a full decode, and the image is that frame."""
    s = _run(videos / HAMILTON, tmp_path / "ds", keyframes=1)
    frames = FrameStore(tmp_path / "ds" / "images" / "frames").load_frames()
    keys = _key_packets(videos / HAMILTON)
    assert s["frames"] == len(frames) == len(keys) == 6
    np.testing.assert_allclose(frames["time_s"], keys, atol=1e-6)
    assert np.all(np.diff(frames["time_s"]) >= 1.0)
    assert list(frames["output"]) == [f"images/frames/hamilton_short_{i:04d}.jpg" for i in range(6)]
    fps = Fraction(2997, 100)
    assert list(frames["frame_index"]) == [round(Fraction(t).limit_denominator(10**6) * fps) for t in frames["time_s"]]
    with av.open(str(videos / HAMILTON)) as c:
        decoded = {i: (f.key_frame, f.to_ndarray(format="rgb24")) for i, f in enumerate(c.decode(c.streams.video[0]))
                   if i in set(frames["frame_index"])}
    assert list(frames["frame_index"]) == [0, 60, 120, 163, 211, 271]  # shot cuts at 20, 82, 211
    for r in frames.itertuples():
        key, rgb = decoded[r.frame_index]
        written = np.asarray(Image.open(tmp_path / "ds" / r.output).convert("RGB"), dtype=np.int16)
        assert key and np.abs(written - rgb).mean() < 3


def test_rerun_does_nothing(videos, tmp_path):
    """A second run rewrites no file; a touched but unchanged video is hashed, not decoded."""
    src = tmp_path / "v"
    src.mkdir()
    shutil.copyfile(videos / HAMILTON, src / "clip.mp4")
    ds = tmp_path / "ds"
    _run(src, ds, keyframes=1)
    before = _files(ds)
    s = _run(src, ds, keyframes=1)
    assert _files(ds) == before
    assert s["unchanged"] == 1 and s["processed"] == 0 and s["to_skip"] == [str(src / "clip.mp4")]
    os.utime(src / "clip.mp4", ns=(1, 1))
    s = _run(src, ds, keyframes=1)
    assert s["unchanged"] == 1 and s["frames"] == 0
    assert {k: v for k, v in _files(ds).items() if k.endswith(".jpg")} == {
        k: v for k, v in before.items() if k.endswith(".jpg")}
    assert FrameStore(ds / "images" / "frames").load_videos()["mtime_ns"].tolist() == [1]


def test_changed_video_redone_and_deleted_marked_gone(videos, tmp_path):
    """A video whose content changed is redone (its old frames replaced, extra ones removed);
    other parameters redo everything; a deleted one is marked gone, its frames kept."""
    src = tmp_path / "v"
    src.mkdir()
    shutil.copyfile(videos / HAMILTON, src / "clip.mp4")
    _make_video(src / "small.mp4")
    ds = tmp_path / "ds"
    root = ds / "images" / "frames"
    _run(src, ds, keyframes=1)
    assert len(list(root.glob("clip_*.jpg"))) == 6
    small_before = _files(root / "small_0000.jpg")
    shutil.copyfile(videos / CROWD, src / "clip.mp4")  # now another video, with one key frame
    s = _run(src, ds, keyframes=1)
    assert s["processed"] == 1 and s["unchanged"] == 1 and s["to_process"] == [str(src / "clip.mp4")]
    assert sorted(p.name for p in root.glob("clip_*")) == ["clip_0000.jpg"]
    assert _size(root / "clip_0000.jpg") == (1920, 1080)
    assert _files(root / "small_0000.jpg") == small_before
    frames = FrameStore(root).load_frames()
    clip = frames[frames["video_path"] == str(src / "clip.mp4")]
    assert len(clip) == 1 and clip["video_hash"].iloc[0] == file_hash(videos / CROWD)

    s = _run(src, ds, keyframes=1, fmt="png")  # other parameters: every video redone
    assert s["processed"] == 2 and not list(root.glob("*.jpg")) and len(list(root.glob("*.png"))) == 4

    (src / "small.mp4").unlink()
    s = _run(src, ds, keyframes=1, fmt="png")
    assert s["gone"] == 1 and s["unchanged"] == 1
    store = FrameStore(root)
    v = store.load_videos().set_index("video_path")
    assert v.loc[str(src / "small.mp4"), "status"] == "gone"
    gone = store.load_frames(include_gone=True).query("gone")
    assert len(gone) == 3 and all((ds / o).exists() for o in gone["output"])
    assert len(store.load_frames()) == 1


def test_same_stem_in_two_folders(videos, tmp_path):
    """Two clip.mp4 in different folders: the first keeps dtst's name, the second gets a hash of
    its path; the names stay when a third one appears on a later run."""
    for sub in ("b", "c"):
        (tmp_path / sub).mkdir()
    shutil.copyfile(videos / CROWD, tmp_path / "b" / "clip.mp4")
    _make_video(tmp_path / "c" / "Clip.mkv")
    ds = tmp_path / "ds"
    _run(f"{tmp_path / 'b'},{tmp_path / 'c'}", ds)
    names = FrameStore(ds / "images" / "frames").load_videos().set_index("video_path")["name"]
    assert names[str(tmp_path / "b" / "clip.mp4")] == "clip"
    assert names[str(tmp_path / "c" / "Clip.mkv")].startswith("Clip-")
    (tmp_path / "a").mkdir()
    shutil.copyfile(tmp_path / "c" / "Clip.mkv", tmp_path / "a" / "clip.webm")
    _run(f"{tmp_path / 'a'},{tmp_path / 'b'},{tmp_path / 'c'}", ds)
    again = FrameStore(ds / "images" / "frames").load_videos().set_index("video_path")["name"]
    assert again[names.index].equals(names) and len(set(again.str.casefold())) == 3
    assert len(list((ds / "images" / "frames").glob("*.jpg"))) == 3


def test_bad_files_reported_and_batch_goes_on(bad_dir, tmp_path):
    """Zero-byte, truncated, text and audio-only files each get one line naming the file and the
    reason (status error in the videos table); the good videos are extracted all the same, and a
    video cut off part-way keeps the frames before the cut."""
    ds = tmp_path / "ds"
    s = _run(bad_dir, ds, keyframes=1)
    errors = {e.split(": ", 1)[0]: e.split(": ", 1)[1] for e in s["errors"]}
    expect = {
        "empty.mp4": r"empty file \(0 bytes\)",
        "truncated.mp4": r"truncated \(the file ends at byte 306,964, inside its 'mdat' box",
        "notes.mp4": r"not a video \(a text file\)",
        "tone.mp4": r"no video stream \(audio only",
        "tone.mkv": r"no video stream \(audio only",
        "cut_short.mp4": r"truncated: the video stops after \d+ of its 275 frames",
        "half.mkv": r"truncated: the video stops at 4\.\d s of 9\.2 s",
    }
    assert {os.path.basename(p) for p in errors} == set(expect)
    for p, reason in errors.items():
        assert os.path.dirname(p) == str(bad_dir) and "\n" not in reason
        assert re.match(expect[os.path.basename(p)], reason), reason
    assert s["failed"] == 7 and s["processed"] == 2
    v = FrameStore(ds / "images" / "frames").load_videos()
    v = v.set_index(v["video_path"].map(os.path.basename))
    assert (v.loc[list(expect), "status"] == "error").all()
    assert v.loc["good.avi", "status"] == "ok" and v.loc["good.avi", "n_frames"] == 3
    assert v.loc["crowd.MP4", "n_frames"] == 1
    good = FrameStore(ds / "images" / "frames").load_frames().query("video_path.str.endswith('good.avi')")
    assert good["time_s"].tolist() == [0.0, 1.0, 2.0] and good["frame_index"].tolist() == [0, 10, 20]
    assert 1 <= v.loc["cut_short.mp4", "n_frames"] < 6
    assert sorted(p.name for p in (ds / "images" / "frames").glob("*.jpg")) == [
        "crowd_0000.jpg", *[f"cut_short_{i:04d}.jpg" for i in range(v.loc["cut_short.mp4", "n_frames"])],
        "good_0000.jpg", "good_0001.jpg", "good_0002.jpg", "half_0000.jpg", "half_0001.jpg", "half_0002.jpg"]
    # unreadable files are not read again until they change
    assert _run(bad_dir, ds, keyframes=1)["unchanged"] == 9


def test_dry_run_writes_nothing(bad_dir, tmp_path):
    """A dry run creates nothing, not even the dataset folder; it lists what it would process
    and counts the key frames that would be written from the packets alone. On an existing
    dataset it changes no file and lists the videos it would skip."""
    ds = tmp_path / "ds"
    dry = _run(bad_dir, ds, keyframes=1, dry_run=True)
    assert not ds.exists()
    assert dry["dry_run"] and len(dry["to_process"]) == 9 and dry["to_skip"] == []
    real = _run(bad_dir, ds, keyframes=1)
    assert dry["frames"] == real["frames"] and sorted(dry["errors"]) == sorted(real["errors"])
    before = _files(ds)
    (bad_dir / "good.avi").touch()
    again = _run(bad_dir, ds, keyframes=1, dry_run=True)
    assert _files(ds) == before and len(again["to_skip"]) == 9 and again["frames"] == 0
    assert _run(bad_dir, ds, keyframes=5, dry_run=True)["frames"] == 4  # crowd, cut_short, good, half: 1 each


def test_two_workers_same_as_one(bad_dir, tmp_path):
    """Two worker processes give the same tables and byte-identical frames as one."""
    one, two = tmp_path / "one", tmp_path / "two"
    s1 = _run(bad_dir, one, keyframes=1)
    s2 = _run(bad_dir, two, keyframes=1, workers=2)
    keys = ("processed", "failed", "frames", "errors")
    assert {k: sorted(s1[k]) if k == "errors" else s1[k] for k in keys} == {
        k: sorted(s2[k]) if k == "errors" else s2[k] for k in keys}
    t1, t2 = FrameStore(one / "images" / "frames"), FrameStore(two / "images" / "frames")
    pd.testing.assert_frame_equal(t1.load_frames().drop(columns="record"), t2.load_frames().drop(columns="record"))
    pd.testing.assert_frame_equal(t1.load_videos().drop(columns="record"), t2.load_videos().drop(columns="record"))
    for f in t1.load_frames()["output"]:
        assert (one / f).read_bytes() == (two / f).read_bytes()


def test_interrupted_run_resumes(bad_dir, tmp_path, monkeypatch):
    """Each video is committed on its own: a run killed while committing the second video keeps
    the first, its half-written commit is ignored, and the next run does only the others;
    frame files a killed run left without rows are replaced or removed."""
    import crowdsort.video.frames as frames_mod

    ds = tmp_path / "ds"
    store = FrameStore(ds / "images" / "frames")
    committed = []
    real_write = frames_mod.write_table

    def write_or_die(df, path):
        if path.name.endswith("-videos.parquet") and committed:
            raise KeyboardInterrupt  # killed between a video's frame rows and its row
        real_write(df, path)
        if path.name.endswith("-videos.parquet"):
            committed.append(df["video_path"].iloc[0])

    monkeypatch.setattr(frames_mod, "write_table", write_or_die)
    with pytest.raises(KeyboardInterrupt):
        _run(bad_dir, ds, keyframes=1)
    monkeypatch.setattr(frames_mod, "write_table", real_write)
    assert len(list(store.parts_dir.glob("*-frames.parquet"))) == 2  # crowd's, and cut_short's uncommitted
    assert store.load_videos()["video_path"].tolist() == committed == [str(bad_dir / "crowd.MP4")]
    assert store.load_frames()["output"].tolist() == ["images/frames/crowd_0000.jpg"]
    (store.root / "good_0009.jpg").write_bytes(b"left by a killed run")
    s = _run(bad_dir, ds, keyframes=1)
    assert s["unchanged"] == 1 and s["processed"] + s["failed"] == 8
    assert not store.parts_dir.exists()
    on_disk = {p.name for p in store.root.glob("*.jpg")}
    assert on_disk == {os.path.basename(o) for o in store.load_frames()["output"]}
    assert "good_0009.jpg" not in on_disk


def test_rotated_video_written_upright(tmp_path):
    """A video stored sideways with a display rotation (phones) gives upright frames."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation")
    _make_video(tmp_path / "phone.mp4", seconds=1, rotation=90)
    _run(tmp_path / "phone.mp4", tmp_path / "ds")
    im = np.asarray(Image.open(tmp_path / "ds" / "images" / "frames" / "phone_0000.jpg").convert("L"))
    assert im.shape == (64, 48)  # tall
    assert im[-12:, :8].mean() > 200 and im[:12, :8].mean() < 100  # top-left block turned to bottom-left


def test_non_square_pixels_stretched(tmp_path):
    """Anamorphic video (pixels twice as wide as tall, as on DVDs) is written at display aspect."""
    _make_video(tmp_path / "dvd.mkv", seconds=1, pixel_aspect=Fraction(2, 1))
    _run(tmp_path / "dvd.mkv", tmp_path / "ds")
    assert _size(tmp_path / "ds" / "images" / "frames" / "dvd_0000.jpg") == (128, 48)


def test_cover_art_is_not_a_video(tmp_path):
    """A song with its album cover (an attached picture, which FFmpeg lists as a video stream)
    is reported as audio only, not extracted as a one-frame video."""
    path = tmp_path / "song.mp4"
    with av.open(str(path), "w") as c:
        audio = c.add_stream("aac", rate=44100)
        cover = c.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        try:
            cover.disposition = av.stream.Disposition.attached_pic
        except TypeError:  # older PyAV (15 cannot)
            pytest.skip("this PyAV cannot mark a stream as cover art")
        for p in cover.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
            c.mux(p)
        for p in cover.encode():
            c.mux(p)
        silence = av.AudioFrame.from_ndarray(np.zeros((2, 1024), np.float32), format="fltp", layout="stereo")
        silence.sample_rate = 44100
        for p in [*audio.encode(silence), *audio.encode()]:
            c.mux(p)
    s = _run(path, tmp_path / "ds")
    assert s["errors"] == [f"{path}: no video stream (audio only: 1 audio stream and cover art)"]


def test_key_frames_that_cannot_be_decoded_are_passed_over_and_counted(tmp_path, caplog):
    """Damaged packets in the middle of a video (every frame a key frame): the others are
    written, the video is ok, and its row and a warning say how many could not be decoded."""
    path = tmp_path / "damaged.mp4"
    _make_video(path, gop=1)
    _damage_middle(path)
    with caplog.at_level("WARNING"):
        s = _run(path, tmp_path / "ds", keyframes=0)
    v = FrameStore(tmp_path / "ds" / "images" / "frames").load_videos().iloc[0]
    assert s["errors"] == [] and s["processed"] == 1 and v["status"] == "ok"
    assert 25 <= v["n_frames"] < 30 and s["frames"] == v["n_frames"]
    lost = 30 - v["n_frames"]
    assert re.fullmatch(rf"{re.escape(str(path))}: {lost} of the 30 key frames read could not be decoded \(.+\); "
                        rf"the {v['n_frames']} others are kept", v["error"]), v["error"]
    assert v["error"] in caplog.text


def test_a_matroska_video_cut_short_by_under_a_second_is_kept_and_said(tmp_path, caplog):
    """0.4 s of 3 s missing at the end (under the second that makes it unreadable): its key
    frames before the cut are written, and its row and a warning say how much is missing."""
    path = tmp_path / "short.mkv"
    _make_video(path)
    _cut_end(path, 0.4)
    with caplog.at_level("WARNING"):
        s = _run(path, tmp_path / "ds", keyframes=0)
    v = FrameStore(tmp_path / "ds" / "images" / "frames").load_videos().iloc[0]
    assert s["errors"] == [] and v["status"] == "ok" and v["n_frames"] == 3
    assert v["error"] == (f"{path}: truncated: the video stops at 2.6 s of 3.0 s (26 frames found, about 4 "
                          "missing at its end); the frames before are kept")
    assert v["error"] in caplog.text


def test_parameters_checked(videos, tmp_path):
    with pytest.raises(ValueError, match="format must be one of jpg, png"):
        _run(videos / HAMILTON, tmp_path / "ds", fmt="gif")
    with pytest.raises(ValueError, match="keyframes must be 0 or more"):
        _run(videos / HAMILTON, tmp_path / "ds", keyframes=-1)
    assert not (tmp_path / "ds").exists()


def _exit_on_bad(task):
    if task == "bad":
        os._exit(3)  # what a decoder segfault looks like to the pool
    return task.upper()


def test_crashing_worker_is_reported():
    """A worker that dies takes only its own video: the others in flight are retried."""
    out = list(in_pool(_exit_on_bad, ["a", "bad", "c", "d", "e"], 2, lambda t: f"crashed:{t}"))
    assert sorted(out) == ["A", "C", "D", "E", "crashed:bad"]
