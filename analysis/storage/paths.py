"""Where a path on the command line is read from: inside the dataset (``-d``), as dtst reads it.

dtst changes into the dataset folder before it resolves ``--from`` and ``--to``, so its
documented ``-d scratch/crowd --from images/*`` means ``scratch/crowd/images/*``. A relative
input that matches nothing there but does match from the current folder (crowdsort's spelling
before it followed dtst) is still read, with a note saying so.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path


def in_dataset(dataset: str | os.PathLike, path: str | os.PathLike | None) -> str | None:
    """An output path: relative ones go inside the dataset, absolute (or ``~``) ones as given."""
    if path is None:
        return None
    p = Path(os.path.expanduser(str(path)))
    return str(p if p.is_absolute() else Path(dataset) / p)


def inputs_in_dataset(dataset: str | os.PathLike, patterns: str, notes: list[str] | None = None) -> str:
    """Comma-separated input patterns resolved inside the dataset (see the module's docstring);
    a pattern read from the current folder instead is named in ``notes``."""
    out = []
    for pattern in (p.strip() for p in patterns.split(",")):
        if not pattern:
            continue
        expanded = os.path.expanduser(pattern)
        if os.path.isabs(expanded):
            out.append(expanded)
            continue
        inside = str(Path(dataset) / expanded)
        if not _matches(inside) and _matches(expanded):
            if notes is not None:
                notes.append(f"{pattern!r} matches nothing inside {dataset}; reading it from the current folder "
                             f"({os.path.abspath(expanded)})")
            out.append(expanded)
        else:
            out.append(inside)
    return ",".join(out)


def _matches(pattern: str) -> bool:
    return bool(glob.glob(pattern, recursive=True)) or os.path.lexists(pattern)


# -- files a run records ------------------------------------------------------------------------------
def dataset_relative(dataset: str | os.PathLike, path: str | os.PathLike) -> str:
    """How a run records a file: relative to the dataset when inside it (so the run reads the
    same from any folder, and moves with the dataset), else absolute (never relative to the
    folder the command ran in, which the next command need not share)."""
    full = os.path.abspath(os.path.expanduser(str(path)))
    rel = os.path.relpath(full, os.path.abspath(dataset))
    return full if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel


def source_record(dataset: str | os.PathLike, path: str | os.PathLike) -> str:
    """How an extraction run records a photo or video it read (``image_path``, and the key its face
    ids are made of): relative to the dataset when the file lies inside it, so a dataset moved,
    copied to another machine or mounted elsewhere keeps its records and its face ids. A file
    outside the dataset (``--from`` naming another folder) is recorded absolute: it is not moved
    with the dataset, and its absolute path is what finds it again. The dataset is compared as
    given and with its links followed (the scanner resolves the files it finds)."""
    full = os.path.abspath(os.path.expanduser(str(path)))
    for root in dict.fromkeys((os.path.realpath(dataset), os.path.abspath(dataset))):
        rel = os.path.relpath(full, root)
        if rel != os.curdir and rel != os.pardir and not rel.startswith(os.pardir + os.sep):
            return rel
    return full


def source_file(dataset: str | os.PathLike, recorded: str) -> str:
    """The file an extraction run's record names, as this process opens it (inverse of
    :func:`source_record`): a relative record lies inside the dataset, with its links followed
    (as the scanner finds it), an absolute one where it says."""
    if not isinstance(recorded, str) or not recorded or os.path.isabs(recorded):
        return recorded
    return os.path.join(os.path.realpath(dataset), recorded)


def recorded_paths(dataset: str | os.PathLike, paths) -> list:
    """Files a run recorded (:func:`dataset_relative`), as absolute paths this process can open.

    Runs of older versions recorded them relative to the folder they ran in, or absolute (a
    dataset since moved): each is looked for as given when absolute, inside the dataset, then
    by its shorter tails inside the dataset (``ds/faces/crops/a.jpg`` run from the dataset's
    parent is ``faces/crops/a.jpg``), then from the current folder. A file found nowhere reads
    as inside the dataset. Found once, a folder stands for every file recorded in it."""
    where: dict[str, str] = {}  # recorded folder → the folder its files are in
    out = []
    for p in paths:
        if not isinstance(p, str) or not p:
            out.append(p)
            continue
        head, name = os.path.split(p)
        if head not in where:
            found = _locate(dataset, p)
            if found is None:
                out.append(os.path.abspath(os.path.join(dataset, p)))
                continue
            where[head] = os.path.dirname(found)
        out.append(os.path.join(where[head], name))
    return out


def _locate(dataset: str | os.PathLike, recorded: str) -> str | None:
    p = Path(recorded)
    parts = p.parts[1:] if p.is_absolute() else p.parts
    candidates = [p] if p.is_absolute() else []
    candidates += [Path(dataset, *parts[i:]) for i in range(len(parts))]
    candidates += [] if p.is_absolute() else [p]
    return next((os.path.abspath(c) for c in candidates if c.exists()), None)


class DatasetFiles:
    """The files crowdsort may show or copy for a dataset: those that resolve, links followed,
    inside its folder (or inside ``runs``, the extraction runs its cluster runs were made from,
    which a copied dataset's tables still name), and the source photos and videos its runs list.
    A link planted in a run's crops/ or a path edited in one of its tables must not bring a file
    from elsewhere (a private photo, /etc/passwd) into a page served to the network or an export.
    ``contents``: path → content hash of the picture clustered there (an image run's item ids):
    such a file is allowed while its bytes are still those."""

    def __init__(self, dataset: str | os.PathLike, sources=(), runs=(), contents: dict | None = None):
        self.root = Path(os.path.realpath(dataset))
        self.roots = [self.root, *(Path(os.path.realpath(r)) for r in runs)]
        self.sources = frozenset(os.path.abspath(p) for p in sources if isinstance(p, str) and p)
        self.contents = {os.path.abspath(p): h for p, h in (contents or {}).items() if isinstance(p, str) and p}
        self._same: dict[str, bool] = {}

    def allows(self, path) -> bool:
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            return False
        real = Path(os.path.realpath(path))
        return (any(real.is_relative_to(r) for r in self.roots) or os.path.abspath(path) in self.sources
                or self._clustered(path))

    def _clustered(self, path) -> bool:
        """Whether ``path`` holds the bytes clustered there (hashed once per path): the image
        index lists only the latest image clustering's pictures, an earlier run's are still its."""
        want = self.contents.get(os.path.abspath(path))
        if want is None:
            return False
        if path not in self._same:
            from .images import content_hash

            try:
                self._same[path] = content_hash(Path(path).read_bytes()) == want
            except OSError:
                self._same[path] = False
        return self._same[path]

    def why_not(self, path) -> str:
        """What is wrong with a refused ``path``, for a one-line message."""
        real = os.path.realpath(path) if isinstance(path, (str, os.PathLike)) and str(path) else path
        where = f" (it leads to {real})" if str(real) != str(path) else ""
        return f"{path} lies outside the dataset {self.root}{where} and is not one of its listed photos"

    def check(self, paths) -> None:
        """ValueError naming the first of ``paths`` that may not be copied, and the fix."""
        for p in paths:
            if not self.allows(p):
                raise ValueError(f"{self.why_not(p)}: refusing to copy it; if it is a link put in the dataset, "
                                 "delete the link and re-run crowdsort extract-faces (it writes the crop again), if a "
                                 "table was edited to name it, re-run crowdsort cluster")
