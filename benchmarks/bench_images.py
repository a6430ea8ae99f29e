"""Whole-image embedding speed: images/s for EfficientNet-Lite0 and CLIP ViT-B/32 (random
weights: speed only) at batch sizes 1/16/64, beside the decode + preprocess rate alone.

    python benchmarks/bench_images.py [--n 256] [--device cpu]

Images are generated JPEGs (640×480 photos from scikit-image, shifted and recoloured) so
the figures need nothing outside the project.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
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


def main() -> None:
    import pandas as pd
    import torch

    from analysis.image_embed import create_image_embedder, embed_images
    from analysis.images import read_image
    from analysis.store import FaceStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda: {torch.cuda.is_available()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_images(Path(tmp), args.n)
        items = pd.DataFrame({"item_id": [f"{i}" for i in range(len(paths))], "path": paths})
        for model, weights in (("efficientnet", None), ("clip", "none")):
            emb = create_image_embedder(model, weights, device=args.device).prepare()
            t = time.perf_counter()
            for p in paths:
                emb.preprocess(read_image(p, max_pixels=4_000_000))
            decode = len(paths) / (time.perf_counter() - t)
            print(f"{emb.name}: decode + preprocess alone {decode:.0f} img/s (one thread)")
            for bs in (1, 16, 64):
                store = FaceStore(Path(tmp) / f"store-{model}-{bs}")
                emb.embed_batch(np.stack([emb.preprocess(read_image(paths[0]))] * min(bs, 4)))  # warm-up
                t = time.perf_counter()
                X, errors = embed_images(store, items, emb, batch_size=bs, progress=False)
                dt = time.perf_counter() - t
                print(f"  batch {bs:3d}: {len(X) / dt:6.1f} img/s ({1000 * dt / len(X):.1f} ms/img)")


if __name__ == "__main__":
    main()
