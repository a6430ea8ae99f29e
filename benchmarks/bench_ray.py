"""The cost of Ray on one machine: extract-faces and the embedding step, local pool vs --backend ray.

    python benchmarks/bench_ray.py [--photos ../shared/data/lfw-dev/faces] [--limit 300] [--workers 2]

Both backends run over the same photos into fresh datasets (Ray's start-up timed apart); prints
photos/s and faces/s for each and their ratio. Asserts nothing.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from crowdsort.faces.embed import embed_faces, load_embedder
    from crowdsort.extract import extract_faces
    from crowdsort.storage.images import find_images
    from crowdsort.scale.ray_backend import connect
    from crowdsort.storage.store import FaceStore

    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", default=str(here.parent / "shared" / "data" / "lfw-dev" / "faces"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp())
    try:
        src = tmp / "photos"
        src.mkdir()
        for i, p in enumerate(find_images(a.photos)[: a.limit]):
            shutil.copy(p, src / f"{i:05d}{p.suffix}")
        t = time.perf_counter()
        connect(num_cpus=a.workers)
        print(f"ray start: {time.perf_counter() - t:.1f} s")
        rows = {}
        for backend in ("local", "ray"):
            store = FaceStore(tmp / backend / "faces")
            t = time.perf_counter()
            s = extract_faces(str(src), store, workers=a.workers, progress=False, backend=backend)
            te = time.perf_counter() - t
            faces = store.load_faces()
            t = time.perf_counter()
            embed_faces(store, faces, load_embedder("dlib"), progress=False, workers=a.workers if backend == "ray" else None,
                        backend=backend)
            tb = time.perf_counter() - t
            rows[backend] = (s["images"] / te, len(faces) / tb)
        print("| backend | extract photos/s | embed faces/s |\n|---|---|---|")
        for b, (x, e) in rows.items():
            print(f"| {b} | {x:.1f} | {e:.1f} |")
        print(f"| ray / local | {rows['ray'][0] / rows['local'][0]:.2f} | {rows['ray'][1] / rows['local'][1]:.2f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
