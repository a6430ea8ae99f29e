"""Writes mediapipe_faces.json: what MediaPipe 0.10.21's own BlazeFace graph finds on every third
photo of ../shared/data/faces, for tests/test_blazeface.py to hold our detector against without
mediapipe installed (it pins numpy < 2). Run where mediapipe is installed:

    pip install 'crowdsort[mediapipe]' && python tests/data/make_mediapipe_reference.py
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(faces_dir: Path = ROOT.parent / "shared" / "data" / "faces") -> None:
    from crowdsort.faces.detect import load_detector

    theirs = load_detector("mediapipe-solution").prepare()
    out = {}
    for path in sorted(faces_dir.rglob("*.jpg"))[::3]:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))
        out[path.relative_to(faces_dir).as_posix()] = [
            {"box": np.round(f.box, 2).tolist(), "keypoints": np.round(f.keypoints, 2).tolist(),
             "score": round(float(f.score), 4)}
            for f in sorted(theirs.detect(rgb), key=lambda f: f.box[0])]
    dest = Path(__file__).with_name("mediapipe_faces.json")
    dest.write_text(json.dumps(out, indent=0) + "\n")
    print(f"{sum(map(len, out.values()))} faces in {len(out)} photos -> {dest}")


if __name__ == "__main__":
    main()
