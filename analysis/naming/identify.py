"""Put names on faces: reference libraries, direct identification, naming clusters.

A reference library is a folder per person (``refs/<label>/*.jpg``; the folder name is the
label, a Wikidata id such as ``Q76`` by convention) embedded once into an HDF5 file. The core
functions work on arrays: a distance from each face to each *person* (the nearest of their
reference vectors), then a decision per face or pooled over a cluster.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..storage.store import FaceStore, atomic_write_bytes, remove_stale_folders

log = logging.getLogger(__name__)

REFS_FORMAT_VERSION = 1
UNKNOWN = "unknown"

# Fixed cosine-distance thresholds: the default for models without impostor quantiles
# (ArcFace), and for dlib the ceiling of the open-set calibration below. dlib's own "0.6 Euclidean"
# on its raw descriptors is ≈ 0.18 cosine (descriptor norms are ≈ 1); over hundreds of
# identities that accepts most strangers (0.43 flagged unknown, see the note on issue 4), so the
# threshold is far tighter and a margin to the second-best person is required as well.
# MobileFaceNet's ceiling 0.55 plays dlib's 0.07: calibrated thresholds for libraries of a few
# references (0.70 for 2) would name most strangers in video.
THRESHOLDS = {"dlib": 0.07, "arcface": 0.60, "mobilefacenet": 0.55}
MARGINS = {"dlib": 0.01, "arcface": 0.05, "mobilefacenet": 0.05}
# Open-set calibration (issue 13). A stranger is compared with every reference vector, so the
# chance that one of them falls under a fixed threshold grows with the library. The threshold
# for n reference vectors is the distance d with P(an impostor pair < d) = 1 - (1 - FA)^(1/n),
# so that P(the nearest of n is < d) = FA for independent pairs (for real strangers, whose
# distances are correlated, the true rate is lower: the rule errs towards "unknown").
# Quantiles (P, d) of the cosine distance between dlib vectors of two different people, over
# all 534,345 different-person pairs of lfw-dev/faces (1,035 faces, 594 people); the deepest
# kept, 1e-5, still rests on 5 pairs. celeba-dev (1.9 M pairs, not used to choose) gives the
# same figures within 0.003 (benchmarks/eval_identify.py prints both).
# MobileFaceNet's, measured the same way (lfw-dev; celeba-dev's within 0.012 at every P).
IMPOSTOR_QUANTILES = {"dlib": ((1e-1, 0.1213), (3e-2, 0.1035), (1e-2, 0.0913), (3e-3, 0.0805), (1e-3, 0.0721),
                               (3e-4, 0.0637), (1e-4, 0.0573), (3e-5, 0.0500), (1e-5, 0.0471)),
                      "mobilefacenet": ((1e-1, 0.8028), (3e-2, 0.7153), (1e-2, 0.6515), (3e-3, 0.5940),
                                        (1e-3, 0.5496), (3e-4, 0.5058), (1e-4, 0.4759), (3e-5, 0.4417),
                                        (1e-5, 0.4250))}
# Target share of strangers named as someone: issue 13 asks >= 0.95 of unenrolled faces unknown.
FALSE_ACCEPT = 0.05
# Vector size of each model kind whose size is fixed (ArcFace packs differ).
MODEL_DIMS = {"dlib": 128, "mobilefacenet": 192}
# How much further than the threshold a face may be from the person its cluster is named after
# (and a video track's cluster evidence may be, identify_shots). MobileFaceNet's: none. On lfw-dev
# photos 0.02 was best (pooled top-1 .980 / .984 / .987 at 0 / .01 / .02, unknown .956
# throughout; celeba-dev .919 / .920 / .920), but on benchmarks/reel.py seed 3 it named an
# unenrolled person's track cluster at a median 0.569 against 0.55 (naming precision .80; 1.00
# on every seed at 0).
POOL_SLACKS = {"dlib": 0.01, "mobilefacenet": 0.0, "arcface": 0.01}


def pool_slack(model: str | None) -> float:
    return POOL_SLACKS[model_kind(model)]


def model_kind(model: str | None) -> str:
    """``arcface``, ``mobilefacenet`` or ``dlib`` for an embedder name such as ``arcface-buffalo_l``
    (None: the default model)."""
    from ..faces.embed import DEFAULT_FACE_MODEL

    model = model or DEFAULT_FACE_MODEL
    return "arcface" if model.startswith("arcface") else "mobilefacenet" if model.startswith("mobilefacenet") else "dlib"


def open_set_threshold(n_references: int, model: str | None = None, false_accept: float = FALSE_ACCEPT) -> float:
    """Distance under which a face is named, for a library of ``n_references`` vectors, so that
    about ``false_accept`` of strangers have some reference that close (see IMPOSTOR_QUANTILES).

    Between the tabulated quantiles d is interpolated linearly in log P; beyond the deepest one
    (over ~5,000 references at 5%) it is extrapolated along the last segment (at P = 3e-6 that
    gives 0.0439 where celeba-dev's 1.9 M pairs measure 0.0454: it errs towards unknown). A
    library of one (P = FA) falls inside the table. Models without quantiles get their fixed
    THRESHOLDS."""
    table = IMPOSTOR_QUANTILES.get(model_kind(model))
    if table is None:
        return THRESHOLDS[model_kind(model)]
    if not 0 < false_accept < 1:
        raise ValueError(f"false_accept must be between 0 and 1, got {false_accept}")
    # log1p/expm1: 1 - (1 - FA)^(1/n) without cancellation for large n
    p = -np.expm1(np.log1p(-false_accept) / max(int(n_references), 1))
    lp = np.log10([q for q, _ in table])
    d = np.array([v for _, v in table])
    x = np.log10(p)
    if x < lp[-1]:
        return float(d[-1] + (x - lp[-1]) * (d[-2] - d[-1]) / (lp[-2] - lp[-1]))
    return float(np.interp(x, lp[::-1], d[::-1]))


# Whether the calibrated threshold may exceed the fixed one (small libraries: 0.073 at 45
# references, 0.10 at 2). Off: the news-photo impostor table does not describe video faces and
# profiles; on hamilton_short with its 2 references (tests/test_video.py) 0.10 names Lin-Manuel
# Miranda in two shots he is not in (0.107, 0.111 with the pooling slack) and the fixed 0.07
# does not. So the calibration only ever tightens the fixed threshold. On, celeba-dev (45
# references) would gain top-1 .825 -> .850 at unknown .975 -> .964 (benchmarks/eval_identify.py).
LOOSEN_SMALL_LIBRARIES = False


def default_threshold(model: str, n_references: int | None = None) -> float:
    """The threshold used when none is given: calibrated for ``n_references`` vectors (see
    :func:`open_set_threshold`) and no looser than the model's fixed one (see
    LOOSEN_SMALL_LIBRARIES), or the fixed one when the library size is not known."""
    fixed = THRESHOLDS[model_kind(model)]
    if n_references is None:
        return fixed
    t = open_set_threshold(n_references, model)
    return t if LOOSEN_SMALL_LIBRARIES else min(t, fixed)


def default_margin(model: str) -> float:
    return MARGINS[model_kind(model)]


def threshold_for(refs: "References") -> float:
    """The default threshold for this library (its model and number of reference vectors):
    what identification, cluster naming and name suggestions call "unknown" beyond."""
    return default_threshold(refs.model, len(refs.vectors))


def _settings(refs: "References", threshold: float | None, margin: float | None) -> tuple[float, float]:
    return (threshold_for(refs) if threshold is None else threshold,
            default_margin(refs.model) if margin is None else margin)


# -- the library ---------------------------------------------------------------------------------
@dataclass
class References:
    """Reference vectors (L2-normalised) with the person label of each row."""

    model: str
    labels: np.ndarray  # (n,) str, one per vector
    vectors: np.ndarray  # (n, d) float32
    sources: list[str] = field(default_factory=list)  # file of each vector
    missing: list[str] = field(default_factory=list)  # reference files without a usable face

    @property
    def people(self) -> np.ndarray:
        return np.unique(self.labels)

    def check_model(self, model: str) -> None:
        if model != self.model:
            raise ValueError(f"references were embedded with {self.model!r}, faces with {model!r}: "
                             f"re-run crowdsort refs embed with --model matching the faces")


def reference_files(refdir: str | os.PathLike) -> list[tuple[str, Path]]:
    """``(label, file)`` for every image under ``refdir/<label>/`` (any image type), in its
    sub-folders too. Hidden files and folders are passed over; so is a name that is not UTF-8,
    with one line naming it (see :func:`_utf8`)."""
    refdir = Path(refdir)
    if not refdir.is_dir():
        raise FileNotFoundError(f"{refdir}: no such reference folder (expected {refdir}/<name>/<image>.jpg)")
    if not _utf8(refdir.resolve()):
        raise ValueError(f"{_shown(refdir.resolve())}: the reference folder's path is not UTF-8; rename it (or the "
                         "folders above it) in UTF-8")
    out = []
    for d in sorted(refdir.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and _utf8_or_skipped(d, "a person's"):
            out += [(d.name, f) for f in _images_under(d)]
    if not out:
        raise ValueError(f"{refdir}: no images in <name>/ sub-folders (expected {refdir}/<name>/<image>.jpg)")
    return out


def _images_under(folder: Path) -> list[Path]:
    """Image files anywhere under a person's folder: photos sorted into sub-folders (by year,
    by event) are theirs too. Hidden entries (a viewer's .thumbnails, macOS ._ files) are not."""
    from ..storage.images import IMAGE_EXTENSIONS

    out = []
    for root, dirs, files in os.walk(folder):  # symlinked folders are not followed: no loops
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and _utf8_or_skipped(Path(root, d), "a"))
        out += [Path(root, f) for f in sorted(files) if not f.startswith(".")
                and Path(f).suffix.lower() in IMAGE_EXTENSIONS and _utf8_or_skipped(Path(root, f), "an image's", "file")]
    return out


def _utf8(path: Path) -> bool:
    """Whether a name can be kept: labels and paths are written as UTF-8 (HDF5, Parquet, CSV),
    and a name made in another encoding (an old Latin-1 disk) reads back with surrogates that
    none of them takes."""
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _utf8_or_skipped(path: Path, whose: str, what: str = "folder") -> bool:
    # Skipped rather than given a stand-in label: a person's folder name is their label, and any
    # replacement would be a name nobody gave (two folders could even get the same one).
    if _utf8(path):
        return True
    log.warning("%s: skipped, %s %s name is not UTF-8; rename it in UTF-8 to use it", _shown(path), whose, what)
    return False


def _shown(path: Path) -> str:
    """A path as it can be printed: bytes that are not UTF-8 as ``\\xe9``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


SCRATCH_PREFIX = "crowdsort-refs-"


@contextlib.contextmanager
def scratch_folder():
    """A throw-away folder in the system temp folder for the reference crops, named with this
    process's pid: kill -9 skips every cleanup, so each run first removes the folders of runs
    that are gone (a live one's, another run's at work, is left alone)."""
    parent = Path(tempfile.gettempdir())
    remove_stale_folders(parent, SCRATCH_PREFIX)
    tmp = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embed_references(refdir: str | os.PathLike, model: str | None = None, weights: str | None = None,
                     engine: str = "blazeface", progress: bool = True) -> References:
    """Detect, align and embed every reference image; the most prominent face of each.

    Goes through the same extraction code as the photos (EXIF, CMYK, bad files…), in a
    throw-away store. Images with several faces use the most prominent and are logged;
    images with none (or unreadable) are listed in ``missing``.
    """
    from ..faces.embed import embed_faces, load_embedder
    from ..extract import ExtractParams, extract_faces

    import glob

    files = [(label, f.resolve()) for label, f in reference_files(refdir)]
    label_of = {str(f): label for label, f in files}
    embedder = load_embedder(model, weights)
    with scratch_folder() as tmp:
        store = FaceStore(tmp / "faces")  # its own dataset folder: its own lock
        extract_faces([glob.escape(str(f)) for _, f in files], store, ExtractParams(engine=engine), progress=progress)
        faces = store.load_faces()
        for path, n in faces.groupby("image_path").size().items():
            if n > 1:
                log.warning("%s: %d faces, using the most prominent", path, n)
        faces = faces[faces["face_index"] == 0].sort_values("image_path").reset_index(drop=True)
        X = embed_faces(store, faces, embedder, progress=progress) if len(faces) else np.zeros((0, 1), np.float32)
    found = set(faces["image_path"])
    missing = [str(f) for _, f in files if str(f) not in found]
    for m in missing:
        log.warning("%s: no face found, not used as a reference", m)
    return References(embedder.name, faces["image_path"].map(label_of).to_numpy(dtype=object), X,
                      faces["image_path"].tolist(), missing)


def save_references(refs: References, path: str | os.PathLike) -> None:
    """HDF5: one dataset per label (vectors × d) with its source files; model and version on the root."""
    import io

    import h5py

    buf = io.BytesIO()
    with h5py.File(buf, "w") as h:
        h.attrs.update({"model": refs.model, "format_version": REFS_FORMAT_VERSION,
                        "missing": json.dumps(refs.missing)})
        for label in refs.people:
            rows = refs.labels == label
            ds = h.create_dataset(_h5_key(label), data=refs.vectors[rows].astype(np.float32))
            ds.attrs["label"] = label
            ds.attrs["sources"] = json.dumps([s for s, r in zip(refs.sources, rows) if r])
    atomic_write_bytes(Path(path), buf.getvalue())


def is_reference_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a library :func:`save_references` wrote (and may replace): HDF5 with
    its model and format version on the root."""
    try:
        import h5py

        with h5py.File(path, "r") as h:
            return {"model", "format_version"} <= set(h.attrs)
    except (ImportError, OSError):  # not HDF5, unreadable
        return False


def _h5_key(label: str) -> str:
    # HDF5 names cannot hold "/" and "." means the current group; the label itself is an attribute.
    return label.replace("/", "%2F") if label not in (".", "..") else f"%{label}"


def load_references(path: str | os.PathLike, model: str | None = None, weights: str | None = None,
                    progress: bool = True) -> References:
    """References from an HDF5 file written by :func:`save_references`, or a folder (embedded now)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        return embed_references(path, model, weights, progress=progress)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no reference file or folder; build one with crowdsort refs embed REFDIR {path}")
    try:
        with h5py.File(path, "r") as h:
            version = int(h.attrs.get("format_version", -1))
            if version != REFS_FORMAT_VERSION:
                raise ValueError(f"reference format {version}, this crowdsort reads {REFS_FORMAT_VERSION}")
            model_name = str(h.attrs["model"]) if "model" in h.attrs else _bad("no model attribute")
            labels, vectors, sources = [], [], []
            for key in h:
                ds = h[key]
                if not isinstance(ds, h5py.Dataset) or ds.ndim != 2:
                    _bad(f"{key!r} is not a vectors × d dataset")
                v = np.asarray(ds, dtype=np.float32)
                if "label" not in ds.attrs:
                    _bad(f"{key!r} has no label attribute")
                label = ds.attrs["label"]
                label = label.decode() if isinstance(label, bytes) else str(label)
                src = json.loads(ds.attrs.get("sources", "[]"))
                if not isinstance(src, list) or len(src) != len(v):
                    _bad(f"{key!r}: sources do not list one file per vector")
                if not (np.isfinite(v).all() and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-3)):
                    _bad(f"{label!r}: vectors that are not finite or not of unit length")
                labels += [label] * len(v)
                vectors.append(v)
                sources += [str(x) for x in src]
            missing = json.loads(h.attrs.get("missing", "[]"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a usable reference file ({e}); re-run crowdsort refs embed REFDIR {path}") from None
    dims = {v.shape[1] for v in vectors}
    expected = MODEL_DIMS.get(model_kind(model_name))
    if len(dims) > 1 or (expected and dims and dims != {expected}):
        raise ValueError(f"{path}: {'/'.join(map(str, sorted(dims)))}-D vectors for model {model_name!r}"
                         f"{f' (which gives {expected}-D)' if expected else ''}; re-run crowdsort refs embed REFDIR {path}")
    X = np.vstack(vectors) if vectors else np.zeros((0, 1), np.float32)
    return References(model_name, np.array(labels, dtype=object), X, sources, missing)


def _bad(why: str):
    raise ValueError(why)


# -- distances and decisions ---------------------------------------------------------------------
def person_distances(X: np.ndarray, refs: References) -> tuple[np.ndarray, np.ndarray]:
    """``(people, D)``: D[i, j] = cosine distance from face i to person j's nearest reference."""
    people, inverse = np.unique(refs.labels, return_inverse=True)
    D = np.full((len(X), len(people)), np.inf, dtype=np.float32)
    if len(X) and len(refs.vectors):
        d = 1.0 - np.asarray(X, np.float32) @ refs.vectors.T
        np.minimum.at(D.T, inverse, d.T)
    return people, D


def _best_two(D: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if D.shape[1] == 0:
        n = len(D)
        return np.full(n, -1), np.full(n, np.inf), np.full(n, np.inf)
    order = np.argsort(D, axis=1)[:, :2]
    d1 = np.take_along_axis(D, order[:, :1], 1)[:, 0]
    d2 = np.take_along_axis(D, order[:, 1:2], 1)[:, 0] if D.shape[1] > 1 else np.full(len(D), np.inf)
    return order[:, 0], d1, d2


def decide(people: np.ndarray, D: np.ndarray, threshold: float, margin: float) -> pd.DataFrame:
    """Best person per row of ``D``; ``unknown`` when too far, or too close to a second person."""
    best, d1, d2 = _best_two(D)
    best = np.where(np.isfinite(d1), best, -1)  # every person ruled out (one-to-one matching): no best
    with np.errstate(invalid="ignore"):
        gap = np.where(np.isfinite(d2), d2 - d1, np.inf)
    known = (best >= 0) & (d1 <= threshold) & (gap >= margin)
    name = np.where(best >= 0, people[np.maximum(best, 0)] if len(people) else "", "")
    return pd.DataFrame({
        "label": np.where(known, name, UNKNOWN),
        "best": name,
        "distance": np.round(d1.astype(np.float64), 4),
        "margin": np.round(np.minimum(gap, 9.0).astype(np.float64), 4),
        "known": known,
    })


def one_per_image(D: np.ndarray, groups: np.ndarray, threshold: float) -> np.ndarray:
    """Distances with each photo's faces matched one-to-one to people (Hungarian, per photo).

    Two faces in one photo are never the same person: within a group, each person keeps only
    the face the optimal assignment gave them; other faces' distances to that person become inf.
    """
    from scipy.optimize import linear_sum_assignment

    D = D.copy()
    for _, rows in pd.Series(np.arange(len(D))).groupby(np.asarray(groups)):
        rows = rows.to_numpy()
        if len(rows) < 2 or D.shape[1] == 0:
            continue
        sub = D[rows]
        cost = np.where(sub <= threshold, sub, threshold + 1.0)  # beyond threshold: no gain from matching
        r, c = linear_sum_assignment(cost)
        claim = sub[r, c] <= threshold  # only a match within the threshold claims a person
        r, c = r[claim], c[claim]
        taken = np.zeros_like(sub, dtype=bool)
        taken[:, c] = True
        taken[r, c] = False
        sub[taken] = np.inf
        D[rows] = sub
    return D


def identify_faces(X: np.ndarray, refs: References, threshold: float | None = None, margin: float | None = None,
                   groups: np.ndarray | None = None) -> pd.DataFrame:
    """Per face: ``label`` (a person or ``unknown``), ``best``, ``distance``, ``margin``, ``known``.

    ``groups``: the source photo of each face, to match faces and people one-to-one per photo.
    """
    threshold, margin = _settings(refs, threshold, margin)
    people, D = person_distances(X, refs)
    if groups is not None:
        D = one_per_image(D, groups, threshold)
    return decide(people, D, threshold, margin)


def _name_clusters(people: np.ndarray, D: np.ndarray, cluster: np.ndarray, threshold: float, margin: float,
                   one_to_one: bool = False) -> pd.DataFrame:
    cluster = np.asarray(cluster)
    ids = np.unique(cluster[cluster >= 0])
    pooled = np.vstack([np.median(D[cluster == c], axis=0) for c in ids]) if len(ids) else D[:0]
    if one_to_one:
        pooled = one_per_image(pooled, np.zeros(len(pooled)), threshold)
    out = decide(people, pooled, threshold, margin)
    out.insert(0, "cluster", ids)
    out.insert(1, "size", [int((cluster == c).sum()) for c in ids])
    return out


def identify_clusters(X: np.ndarray, cluster: np.ndarray, refs: References, threshold: float | None = None,
                      margin: float | None = None, one_to_one: bool = False) -> pd.DataFrame:
    """A name per cluster from the evidence of all the rows given for it (prototypes or members).

    A cluster's distance to a person is the median over its rows of each row's distance to
    that person: one odd photo neither makes nor breaks a match, and a cluster of a stranger
    who resembles an enrolled person in one shot stays unknown. ``one_to_one``: each person
    names at most one cluster (Hungarian matching over clusters).
    """
    threshold, margin = _settings(refs, threshold, margin)
    people, D = person_distances(X, refs)
    return _name_clusters(people, D, cluster, threshold, margin, one_to_one)


def pooled_identify(X: np.ndarray, cluster: np.ndarray, refs: References, threshold: float | None = None,
                    margin: float | None = None) -> pd.DataFrame:
    """Per face, decided on its cluster's pooled evidence (noise faces on their own).

    A cluster's name goes to a member only if the member itself is within ``threshold +
    pool_slack`` of that person: a stranger merged into a known person's cluster stays unknown.
    """
    threshold, margin = _settings(refs, threshold, margin)
    cluster = np.asarray(cluster)
    people, D = person_distances(X, refs)
    out = decide(people, D, threshold, margin)
    if not (cluster >= 0).any():
        return out
    named = _name_clusters(people, D, cluster, threshold, margin).set_index("cluster")["label"]
    name = pd.Series(cluster).map(named)  # NaN for noise
    rows = np.flatnonzero((name.notna() & (name != UNKNOWN)).to_numpy())
    name = name.to_numpy()[rows].astype(object)
    d = D[rows, np.searchsorted(people, name)]  # people are sorted (np.unique)
    ok = d <= threshold + pool_slack(refs.model)
    out.loc[rows, "label"] = np.where(ok, name, UNKNOWN)
    out.loc[rows, "best"] = name
    out.loc[rows, "distance"] = np.round(d.astype(np.float64), 4)
    out.loc[rows, "known"] = ok
    return out
