"""A labelled video reel made from celeba-dev photos, and how the video pipeline scores on it.

    python benchmarks/reel.py [--shared ../shared/data] [--work scratch/reel] [--people 8] [--seed 0 1 2 3 4]

The reel: hard-cut shots of one or two people (two photos side by side), each photo slowly
panned and zoomed over its shot, 640x360 at 25 fps, H.264 (PyAV). Half the people are enrolled
(celeba-dev has references for them), half are not; each person recurs in three shots with
different photos. Only photos in which the detector found exactly one face when the set was
built are used (manifest.csv), so every face's person is known from where it lies.

Then ``extract-faces`` (default sampling), ``cluster`` (by track) and ``identify --per-shot``
with celeba-dev/references, scored:

* cut precision / recall (a found cut within 2 frames of a true one);
* per-shot naming precision / recall of enrolled people: (shot, person) pairs named against the
  (shot, enrolled person) pairs on screen;
* BCubed F of the track clusters across shots (each track labelled by the person whose photo
  holds its faces; tracks of no single person are left out and counted).

Prints the table, one column per seed (a reel each) and the worst; ``tests/test_video.py`` runs
seed 0.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

W, H, FPS, SHOT_FRAMES = 640, 360, 25, 50


def _pick(shared: Path, people: int, rng) -> tuple[pd.DataFrame, list[str]]:
    m = pd.read_csv(shared / "celeba-dev" / "manifest.csv")
    enrolled = sorted(m.loc[m["role"] == "reference", "identity"].unique())
    single = m[(m["role"] == "cluster") & (m["detected_faces"] == 1)]
    counts = single["identity"].value_counts()
    rich = counts[counts >= 3].index
    others = sorted(set(single["identity"]) - set(enrolled))
    pool_in = [p for p in enrolled if p in rich]
    pool_out = [p for p in others if p in rich]
    chosen = list(rng.choice(pool_in, people // 2, replace=False)) + list(rng.choice(pool_out, people - people // 2,
                                                                                      replace=False))
    photos = single[single["identity"].isin(chosen)]
    return photos, chosen


def _plan(chosen: list[str], rng) -> list[list[str]]:
    """Shots of one or two people; each person in three shots."""
    slots = [p for p in chosen for _ in range(3)]
    rng.shuffle(slots)
    shots, i = [], 0
    while i < len(slots):
        two = i + 1 < len(slots) and slots[i + 1] != slots[i] and rng.random() < 0.5
        shots.append(slots[i:i + 2] if two else slots[i:i + 1])
        i += 2 if two else 1
    return shots


def _panel(img, w: int, h: int, t: float, direction: int) -> np.ndarray:
    """The photo fitted into w×h, zoomed from 1.0 to 1.12 and panned sideways over t in [0, 1]."""
    from PIL import Image

    scale = min(w / img.width, h / img.height) * (1.0 + 0.12 * t)
    big = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), (20, 20, 20))
    dx = round((w - big.width) / 2 + direction * 12 * (t - 0.5))
    dy = round((h - big.height) / 2)
    canvas.paste(big, (dx, dy))
    return np.asarray(canvas)


def build_reel(shared: Path, out: Path, people: int = 8, seed: int = 0) -> dict:
    """Write the reel to ``out``; returns its truth: cuts, and per shot the people and where
    each one's panel lies (x range in the frame)."""
    import av
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    photos, chosen = _pick(shared, people, rng)
    by_person = {p: list(rng.permutation(photos.loc[photos["identity"] == p, "file"].to_numpy())) for p in chosen}
    shots = _plan(chosen, rng)
    truth = {"cuts": [], "shots": [], "enrolled": sorted(set(chosen[: people // 2]))}
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=FPS, options={"crf": "23", "preset": "veryfast"})
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        frame_no = 0
        for k, who in enumerate(shots):
            if k:
                truth["cuts"].append(frame_no)
            imgs = [ImageOps.exif_transpose(Image.open(shared / "celeba-dev" / by_person[p].pop())).convert("RGB")
                    for p in who]
            w = W // len(who)
            truth["shots"].append({"people": who, "x": [(i * w, (i + 1) * w) for i in range(len(who))],
                                   "start": frame_no})
            for f in range(SHOT_FRAMES):
                t = f / (SHOT_FRAMES - 1)
                frame = np.hstack([_panel(im, w, H, t, 1 if i % 2 == 0 else -1) for i, im in enumerate(imgs)])
                for p in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    c.mux(p)
                frame_no += 1
        for p in s.encode():
            c.mux(p)
    truth["n_frames"] = frame_no
    return truth


def _person_of(face, truth) -> str | None:
    shot = truth["shots"][int(face["shot"])] if 0 <= face["shot"] < len(truth["shots"]) else None
    if shot is None:
        return None
    cx = (face["x0"] + face["x1"]) / 2
    for who, (a, b) in zip(shot["people"], shot["x"]):
        if a <= cx < b:
            return who
    return None


def score(ds: Path, truth: dict, cuts_found: list[int]) -> dict:
    from crowdsort.clustering.metrics import bcubed
    from crowdsort.storage.store import FaceStore

    true_cuts = truth["cuts"]
    hit = [c for c in cuts_found if any(abs(c - t) <= 2 for t in true_cuts)]
    found = [t for t in true_cuts if any(abs(c - t) <= 2 for c in cuts_found)]
    faces = FaceStore(ds / "faces").load_faces()
    faces = faces[faces["track"] >= 0]
    faces = faces.assign(person=[_person_of(f, truth) for _, f in faces.iterrows()])
    per_track = faces.groupby("track")["person"].agg(lambda p: p.iloc[0] if p.nunique() == 1 and p.notna().all()
                                                     else None)
    a = pd.read_csv(ds / "cluster" / "assignments.csv")
    a = a[a["track"] >= 0].drop_duplicates("track").set_index("track")["cluster"]
    known = per_track.dropna()
    labels = a.reindex(known.index).fillna(-1).astype(int).to_numpy()
    p, r, f = bcubed(known.to_numpy(), labels)
    shots = pd.read_csv(ds / "shots.csv")
    named = {(int(s), lab) for s, lab in zip(shots["shot"], shots["label"]) if lab != "unknown"}
    on_screen = {(k, who) for k, sh in enumerate(truth["shots"]) for who in sh["people"] if who in truth["enrolled"]}
    tp = len(named & on_screen)
    return {"cuts": len(true_cuts), "cut_precision": len(hit) / max(len(cuts_found), 1),
            "cut_recall": len(found) / max(len(true_cuts), 1),
            "named": len(named), "naming_precision": tp / max(len(named), 1),
            "naming_recall": tp / max(len(on_screen), 1),
            "tracks": int(per_track.size), "tracks_of_no_single_person": int(per_track.isna().sum()),
            "track_bcubed_p": p, "track_bcubed_r": r, "track_bcubed_f": f}


def run(shared: Path, work: Path, people: int = 8, seed: int = 0) -> dict:
    from crowdsort.cli import main as cli
    from crowdsort.video.faces import load_shots
    from crowdsort.storage.store import FaceStore

    ds = work / "ds"
    video = ds / "videos" / "reel.mp4"
    truth = build_reel(shared, video, people, seed)
    for cmd in (["extract-faces", "-d", str(ds), "--from", "videos", "--workers", "2"],
                ["cluster", "-d", str(ds), "--clean"],
                ["identify", "-d", str(ds), "--refs", str(shared / "celeba-dev" / "references"), "--per-shot"]):
        if cli(["-q", *cmd]) != 0:
            raise RuntimeError(f"crowdsort {' '.join(cmd)} failed")
    shots = load_shots(FaceStore(ds / "faces"))
    return score(ds, truth, shots["start_frame"].tolist()[1:])


def main(argv=None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--work", default=str(here / "scratch" / "reel"))
    ap.add_argument("--people", type=int, default=8)
    ap.add_argument("--seed", type=int, nargs="+", default=[0])
    args = ap.parse_args(argv)
    import shutil

    results = []
    for seed in args.seed:
        shutil.rmtree(Path(args.work) / "ds", ignore_errors=True)
        results.append(run(Path(args.shared), Path(args.work), args.people, seed))
    print("| measure | " + " | ".join(f"seed {s}" for s in args.seed) + " | worst |")
    print("|---" * (len(args.seed) + 2) + "|")
    for k in results[0]:
        vals = [r[k] for r in results]
        worst = min(vals) if isinstance(vals[0], float) else ""
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in vals]
        print(f"| {k} | " + " | ".join(cells) + (f" | {worst:.3f} |" if worst != "" else " | |"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
