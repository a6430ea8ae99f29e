"""Video throughput of extract-faces: decode, detection, and seconds of video per second.

    python benchmarks/bench_video.py [--videos ../shared/data/videos] [--fps 5] [--repeat 3]

For each clip (hamilton_short: 640x360, crowd_walk: 1920x1080): every frame decoded alone
(small grey pictures for the cut detector, as extract-faces does), then the whole per-video
work at the default sampling (decode + cuts + detection, alignment and crops of the sampled
frames + tracks), one process, the best of ``--repeat`` runs. Detection frames/s is the sampled
frames over the time beyond decoding. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from crowdsort.faces.detect import load_detector
    from crowdsort.extract import ExtractParams
    from crowdsort.video.shots import decode_frames
    from crowdsort.video.faces import process_video, sampling_rule

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", default=str(here.parent / "shared" / "data" / "videos"))
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    params = ExtractParams(fps=args.fps)
    detector = load_detector(params.engine).prepare()
    print(f"| clip | size | frames | s of video | decode frames/s | sampled | detection frames/s "
          f"| faces | video s per s ({args.fps:g} fps sampling) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in ("hamilton_short.mp4", "crowd_walk.mp4"):
        path = str(Path(args.videos) / name)
        best_decode = best_all = float("inf")
        for _ in range(args.repeat):
            t = time.perf_counter()
            fps_out, keep = [], sampling_rule(args.fps)
            n = sampled = 0
            for t_s, index, _, _ in decode_frames(path, fps_out=fps_out):
                n, sampled = n + 1, sampled + keep(index, t_s)
            best_decode = min(best_decode, time.perf_counter() - t)
            with tempfile.TemporaryDirectory() as root:
                t = time.perf_counter()
                row, faces = process_video(path, detector, params, Path(root))
                best_all = min(best_all, time.perf_counter() - t)
        seconds = n / fps_out[0]
        detect = max(best_all - best_decode, 1e-9)
        print(f"| {name} | {row['width']}x{row['height']} | {n} | {seconds:.2f} | {n / best_decode:.0f} | {sampled} "
              f"| {sampled / detect:.1f} | {len(faces)} | {seconds / best_all:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
