"""Whole-image embedding speed: images/s for EfficientNet-Lite0 and CLIP ViT-B/32 (random
weights: speed only), decode + preprocess alone beside the old path (PyTorch) and ONNX
Runtime on every core (the default where it is faster), each through ``embed_images``.

    python benchmarks/bench_images.py [--n 128] [--images DIR] [--batch-size 32] [--device cpu]

Images are generated JPEGs (640×480 photos from scikit-image, shifted and recoloured) so
the figures need nothing outside the project; ``--images`` times a folder instead (its
files repeated up to ``--n``). The model runs once before timing; the ONNX export (first
use of a weights file) is timed apart.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_images(folder: Path, n: int) -> list[str]:
    import skimage.data
    from PIL import Image

    bases = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = Image.fromarray(bases[i % len(bases)]).resize((640, 480))
        arr = np.roll(np.asarray(img), rng.integers(0, 80), axis=1)
        arr = np.clip(arr * rng.uniform(0.7, 1.2, 3), 0, 255).astype(np.uint8)
        p = folder / f"{i:05d}.jpg"
        Image.fromarray(arr).save(p, quality=90)
        paths.append(str(p))
    return paths


def _rate(paths, items, emb, tmp: Path, tag: str, batch_size: int, workers: int) -> float:
    from crowdsort.things.image_embed import embed_images
    from crowdsort.storage.store import FaceStore

    t = time.perf_counter()
    X, _ = embed_images(FaceStore(tmp / f"store-{tag}"), items, emb, batch_size=batch_size, workers=workers,
                        progress=False)
    return len(X) / (time.perf_counter() - t)


def main() -> None:
    import pandas as pd
    import torch

    from crowdsort.things.image_embed import create_image_embedder
    from crowdsort.storage.images import find_images, read_image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128)
    ap.add_argument("--images", default=None, help="a folder of images to time instead of generated ones")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--device", default=None)
    ap.add_argument("--models", default="efficientnet,clip")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda: {torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["CROWDSORT_CACHE"] = str(tmp / "models")  # the export is timed, never an old one reused
        if args.images:
            found = [str(p) for p in find_images(args.images)]
            paths = (found * -(-args.n // len(found)))[:max(args.n, len(found))]
        else:
            paths = make_images(tmp, args.n)
        items = pd.DataFrame({"item_id": [f"{i}" for i in range(len(paths))], "path": paths})
        print(f"{len(paths)} images ({'from ' + args.images if args.images else 'generated, 640x480'}), "
              f"batch {args.batch_size}")
        for model in args.models.split(","):
            weights = "none" if model == "clip" else None
            old = create_image_embedder(model, weights, device=args.device, backend="torch").prepare()
            new = create_image_embedder(model, weights, device=args.device, backend="onnx")
            for attr in ("model", "transform", "dim", "size", "_path"):  # the same weights, loaded once
                if hasattr(old, attr):
                    setattr(new, attr, getattr(old, attr))
            t = time.perf_counter()
            new.prepare()
            export_s = time.perf_counter() - t
            default = "onnx" if new.onnx_by_default and new.runs_on == "onnxruntime" else "torch"

            def load(p):
                return old.preprocess(read_image(p, max_pixels=4_000_000))

            load(paths[0])
            t = time.perf_counter()
            for p in paths:
                load(p)
            decode1 = len(paths) / (time.perf_counter() - t)
            with ThreadPoolExecutor(2) as pool:
                t = time.perf_counter()
                list(pool.map(load, paths))
                decode2 = len(paths) / (time.perf_counter() - t)
            warm = np.stack([load(paths[0])] * 4)
            old.embed_batch(warm), new.embed_batch(warm)
            print(f"{old.name}: decode + preprocess alone {decode1:.1f} img/s (1 thread), {decode2:.1f} (2 threads)")
            r_old = _rate(paths, items, old, tmp, f"{model}-old", args.batch_size, 2)
            print(f"  torch (old path, {torch.get_num_threads()} threads, 2 decode threads): {r_old:6.1f} img/s"
                  f"{'  <- default' if default == 'torch' else ''}")
            print(f"  onnx  (onnxruntime, {new.threads or 'all'} cores, export {export_s:.1f} s)"
                  f"{'  <- default (2 decode threads)' if default == 'onnx' else ''}:")
            for workers in (1, 2):
                r = _rate(paths, items, new, tmp, f"{model}-new-{workers}", args.batch_size, workers)
                print(f"        {workers} decode thread(s): {r:6.1f} img/s  ({r / r_old:.2f}x the old path, "
                      f"{r / decode2:.2f}x decode-only on 2 threads)")
            print(f"  load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
