"""Face detectors side by side: crowdsort's BlazeFace (MediaPipe's models on ONNX Runtime, no MediaPipe)
against MediaPipe's own face detection solution (when mediapipe is installed), and dlib's HOG.

    python benchmarks/bench_detectors.py [--data ../shared/data] [--engines blazeface,mediapipe-solution]
                                         [--limit N] [--fps 5]

- group: the 11 photos of ``faces/group``; on the 4 with boxes in ``GROUP_ANNOTATIONS.json``, the
  annotated faces found (a detection with IoU ≥ 0.4, as tests/test_faces_real.py scores) and the
  detections matching no annotated face ("unmatched": false faces, or small background faces the
  annotation leaves out); faces found in all 11;
- lfw-dev, celeba-dev: photos (one person each) with a face found, and faces found;
- crowd_walk.mp4 (1920x1080): faces per sampled frame at ``--fps`` with the tiling extract-faces
  uses (3×3 tiles at 1920 px, :func:`crowdsort.faces.detect.auto_tiles`);
- images/s: detection alone (decoding excluded) over lfw-dev and celeba-dev, one process;
  ms/frame: one tiled video frame.

Also, where two engines ran: how often they find the same number of faces per photo, and how far
the matched boxes lie apart. Prints a Markdown table; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def read_rgb(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        return np.asarray(ImageOps.exif_transpose(im).convert("RGB"))


def photos(folder: Path, limit: int | None) -> list[Path]:
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    return found[:limit] if limit else found


def video_frames(path: Path, fps: float, limit: int | None) -> list[np.ndarray]:
    from crowdsort.video.shots import decode_frames
    from crowdsort.video.faces import sampling_rule

    keep = sampling_rule(fps)
    frames = [np.asarray(pic.convert("RGB")) for _, _, _, pic in decode_frames(path, keep=keep) if pic is not None]
    return frames[:limit] if limit else frames


def run_engine(engine: str, sets: dict, frames: list[np.ndarray], ann: dict) -> dict:
    from crowdsort.faces.detect import auto_tiles, detect_tiled, load_detector

    det = load_detector(engine).prepare()
    det.detect(np.zeros((64, 64, 3), np.uint8))  # warm-up (sessions, graph)
    out = {"faces": {}}
    secs = n_img = 0
    for name, items in sets.items():
        for path, rgb in items:
            t = time.perf_counter()
            faces = det.detect(rgb)
            if name != "group":
                secs += time.perf_counter() - t
                n_img += 1
            out["faces"][(name, path.name)] = [f.box for f in faces]
    out["images_s"] = n_img / secs if secs else float("nan")
    # group photos with boxes
    found = total = unmatched = 0
    for fname, row in ann.items():
        boxes = [(x, y, x + w, y + h) for x, y, w, h in row.get("boxes_xywh", [])]
        if not boxes:
            continue
        dets = out["faces"].get(("group", fname), [])
        total += len(boxes)
        found += sum(any(iou(b, d) >= 0.4 for d in dets) for b in boxes)
        unmatched += sum(not any(iou(b, d) >= 0.4 for b in boxes) for d in dets)
    out["group"] = (found, total, unmatched, sum(len(v) for (s, _), v in out["faces"].items() if s == "group"))
    for name in sets:
        if name == "group":
            continue
        hits = [v for (s, _), v in out["faces"].items() if s == name]
        out[name] = (sum(bool(v) for v in hits), len(hits), sum(len(v) for v in hits))
    if frames:
        counts, t = [], time.perf_counter()
        for rgb in frames:
            counts.append(len(detect_tiled(det, rgb, auto_tiles(rgb.shape[1]))))
        out["video"] = (float(np.mean(counts)), len(frames), (time.perf_counter() - t) / len(frames) * 1000, counts)
    return out


def agreement(a: dict, b: dict) -> str:
    same = total = 0
    shifts = []
    for key, boxes in a["faces"].items():
        other = b["faces"].get(key, [])
        total += 1
        same += len(boxes) == len(other)
        for box in boxes:
            best = max(other, key=lambda o: iou(box, o), default=None)
            if best is not None and iou(box, best) >= 0.5:
                shifts.append(np.abs(np.asarray(box) - best).max() / max(best[2] - best[0], 1))
    shifts = np.array(shifts) if shifts else np.zeros(1)
    return (f"same face count on {same}/{total} photos; matched boxes' largest corner shift, as a share of "
            f"the box width: median {np.median(shifts):.4f}, 99th percentile {np.percentile(shifts, 99):.4f}, "
            f"max {shifts.max():.4f}")


def main(argv=None) -> int:
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(here.parent / "shared" / "data"))
    ap.add_argument("--engines", default="blazeface,mediapipe-solution",
                    help="comma-separated engines (crowdsort.faces.detect.DETECTORS); those not installed are skipped")
    ap.add_argument("--limit", type=int, default=None, help="at most N photos a set and N video frames (a quick run)")
    ap.add_argument("--fps", type=float, default=5.0, help="video frames sampled a second")
    args = ap.parse_args(argv)
    data = Path(args.data)
    ann = json.loads((data / "faces" / "GROUP_ANNOTATIONS.json").read_text())
    sets = {"group": photos(data / "faces" / "group", None),
            "lfw-dev": photos(data / "lfw-dev", args.limit),
            "celeba-dev": photos(data / "celeba-dev", args.limit)}
    sets = {k: [(p, read_rgb(p)) for p in v] for k, v in sets.items()}
    video = data / "videos" / "crowd_walk.mp4"
    frames = video_frames(video, args.fps, args.limit) if video.is_file() else []
    results = {}
    for engine in args.engines.split(","):
        try:
            results[engine] = run_engine(engine, sets, frames, ann)
        except ImportError as e:
            print(f"{engine}: skipped ({e})", file=sys.stderr)
    g_total = results and next(iter(results.values()))["group"][1]
    print(f"CPU: {os.cpu_count()} cores visible, {len(os.sched_getaffinity(0))} usable\n")
    print(f"| engine | group: annotated faces found (of {g_total}) | unmatched detections | faces in 11 group "
          f"photos | lfw-dev photos with a face | lfw-dev faces | celeba-dev photos with a face | celeba-dev faces "
          f"| crowd_walk faces per frame ({len(frames)} frames, tiled) | images/s (lfw+celeba) | ms per tiled frame |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for engine, r in results.items():
        f, t, u, n = r["group"]
        lfw, cel = r["lfw-dev"], r["celeba-dev"]
        v = r.get("video", (float("nan"), 0, float("nan"), []))
        print(f"| {engine} | {f}/{t} | {u} | {n} | {lfw[0]}/{lfw[1]} | {lfw[2]} | {cel[0]}/{cel[1]} | {cel[2]} "
              f"| {v[0]:.2f} | {r['images_s']:.1f} | {v[2]:.0f} |")
    names = list(results)
    for other in names[1:]:
        print(f"\n{names[0]} vs {other}: {agreement(results[names[0]], results[other])}")
        a, b = results[names[0]].get("video"), results[other].get("video")
        if a and b:
            print(f"{names[0]} vs {other}, crowd_walk: same face count on "
                  f"{sum(x == y for x, y in zip(a[3], b[3]))}/{len(a[3])} frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
