"""An example photo folder built from images that installed packages ship (no network).

Two real people (Eileen Collins, scikit-image's ``astronaut``; Grace Hopper, matplotlib's
sample photo) appear in varied shots — scale, crop, mirror, tilt, light, placed on real
scenes — alone and together, beside photos with no face and a few broken files. It is small
and easy (every shot of a person comes from one portrait); it shows the pipeline end to end.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def _sources() -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    try:
        from skimage import data as skdata
    except ImportError:
        raise ImportError("the example needs scikit-image: pip install 'crowdsort[example]'") from None
    from matplotlib import cbook
    from sklearn.datasets import load_sample_image

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = Image.open(f).convert("RGB")
    people = {
        "eileen_collins": Image.fromarray(skdata.astronaut()).crop((80, 0, 400, 330)),
        "grace_hopper": hopper.crop((60, 20, 460, 460)),
    }
    scenes = {
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "coffee": Image.fromarray(skdata.coffee()),
        "chelsea": Image.fromarray(skdata.chelsea()),
        "rocket": Image.fromarray(skdata.rocket()),
    }
    return people, scenes


def _shot(face: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = face.size
    dx, dy = rng.integers(0, w // 10), rng.integers(0, h // 10)
    im = face.crop((dx, dy, w - rng.integers(0, w // 10), h - rng.integers(0, h // 12)))
    if rng.random() < 0.5:
        im = im.transpose(Image.FLIP_LEFT_RIGHT)
    im = im.rotate(float(rng.uniform(-12, 12)), resample=Image.BILINEAR, expand=False, fillcolor=(128, 128, 128))
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.7, 1.25)))
    im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.6, 1.3)))
    side = int(rng.uniform(160, 300))
    return im.resize((side, int(side * im.size[1] / im.size[0])), Image.LANCZOS)


def _place(scene: Image.Image, shots: list[Image.Image], rng: np.random.Generator) -> Image.Image:
    canvas = scene.copy().resize((800, 560))
    slots = np.linspace(0, 800, len(shots) + 1).astype(int)
    for s, x0, x1 in zip(shots, slots[:-1], slots[1:]):
        x = int(rng.integers(x0, max(x0 + 1, x1 - s.size[0])))
        y = int(rng.integers(0, max(1, 560 - s.size[1])))
        canvas.paste(s, (x, y))
    return canvas


def _jpeg(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, **kw)
    return buf.getvalue()


def build_example(dest: str | Path, shots_per_person: int = 6, seed: int = 0) -> dict:
    """Write the example photos under ``dest``; returns counts. Deterministic for a seed."""
    dest = Path(dest)
    people, scenes = _sources()
    rng = np.random.default_rng(seed)
    names = list(scenes)
    n = 0
    for person, face in people.items():
        d = dest / person
        d.mkdir(parents=True, exist_ok=True)
        for i in range(shots_per_person):
            scene = scenes[names[(i + n) % len(names)]]
            photo = _shot(face, rng) if i % 2 else _place(scene, [_shot(face, rng)], rng)
            (d / f"{person}_{i + 1:02d}.jpg").write_bytes(_jpeg(photo))
        # The same file name in two folders must give two faces, not one.
        n += shots_per_person
    # Awkward encodings a real folder holds: EXIF-rotated, CMYK, 16-bit grey PNG.
    extra = dest / "awkward"
    extra.mkdir(exist_ok=True)
    hopper, collins = people["grace_hopper"], people["eileen_collins"]
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways; viewers rotate it upright
    (extra / "rotated.jpg").write_bytes(_jpeg(_shot(hopper, rng).transpose(Image.ROTATE_90), exif=exif.tobytes()))
    (extra / "cmyk.jpg").write_bytes(_jpeg(_shot(collins, rng).convert("CMYK")))
    grey16 = (np.asarray(_shot(hopper, rng).convert("L"), dtype=np.uint16) * 257)
    Image.fromarray(grey16).save(extra / "grey16.png")
    n += 3
    group = dest / "group"
    group.mkdir(exist_ok=True)
    for i in range(3):
        photo = _place(scenes[names[i]], [_shot(collins, rng), _shot(hopper, rng)], rng)
        (group / f"together_{i + 1:02d}.jpg").write_bytes(_jpeg(photo))
        n += 1
    other = dest / "no_faces"
    other.mkdir(exist_ok=True)
    for name, scene in scenes.items():
        (other / f"{name}.jpg").write_bytes(_jpeg(scene))
        n += 1
    broken = dest / "broken"
    broken.mkdir(exist_ok=True)
    good = _jpeg(_shot(collins, rng))
    (broken / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (broken / "notes.jpg").write_text("this is a text file with an image extension\n")
    (broken / "empty.png").write_bytes(b"")
    return {"images": n + 3, "people": len(people), "bad": 3}
