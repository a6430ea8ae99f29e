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
