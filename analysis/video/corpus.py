"""skelshop's corpus description CSV as an input list for extract-faces.

skelshop describes a corpus of videos in one CSV, one row per video::

    video,group,group_typ,faces,segsout,untracked_skels,tracked_skels,bestcands
    news/2020-01-01.mp4,shots/2020-01-01-Scenes.csv,psd,...

Only ``video`` is needed here; a row's ``group`` (its shots), when given, replaces detected cuts
for that video: ``psd`` is a PySceneDetect scene list, ``ffprobe`` a list of cut frames (one a
line, the first frame of each new shot, from 0), and without ``group_typ`` the kind is read
from the suffix as skelshop does (``.csv`` psd, ``.txt`` ffprobe). Its other columns name
skelshop's own outputs and are ignored. Relative paths are read under ``base`` (skelshop's
``--corpus-base``), else beside the CSV.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

GROUP_TYPES = ("psd", "ffprobe")


class CorpusError(ValueError):
    """A corpus file that cannot be used (one line naming the file and the fix)."""


@dataclass(frozen=True)
class CorpusRow:
    line: int
    video: Path
    shots: Path | None


def _cells(path: Path, line: int, row: dict, columns: int) -> dict[str, str]:
    """A row's cells by column. Values past the header's columns (DictReader files them under
    None) are dropped when empty, as a trailing comma makes them; others are refused, since the
    row's values may not be under the columns they were meant for."""
    extra = [v.strip() for v in row.pop(None, None) or [] if v.strip()]
    if extra:
        many = len(extra) > 1
        raise CorpusError(f"{path}: row {line} has {len(extra)} value{'s' * many} past the header's {columns} "
                          f"columns ({', '.join(map(repr, extra))[:80]}): remove {'them' if many else 'it'} or "
                          f"name {'their columns' if many else 'its column'} in the header")
    return {(k or "").strip(): (v or "").strip() for k, v in row.items()}


def read_corpus(path: str | os.PathLike, base: str | os.PathLike | None = None) -> list[CorpusRow]:
    """The rows of a corpus description, paths resolved (nothing is checked on disk)."""
    path = Path(path)
    root = Path(base) if base is not None else path.parent
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [c.strip() for c in reader.fieldnames or []]
            # the file's own line numbers: DictReader passes blank lines over
            rows = [(reader.line_num, _cells(path, reader.line_num, r, len(fields))) for r in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise CorpusError(f"{path}: cannot read the corpus file ({getattr(e, 'strerror', None) or e})") from None
    if "video" not in fields:
        raise CorpusError(f"{path}: a corpus description needs a 'video' column (found: {', '.join(fields) or 'none'}); "
                          "see skelshop's docs/identification.md")

    def resolve(p: str) -> Path:
        q = Path(os.path.expanduser(p))
        return q if q.is_absolute() else root / q

    out = []
    for line, r in rows:
        if not r.get("video"):
            if any(r.values()):
                raise CorpusError(f"{path}: row {line} has no video")
            continue
        shots = None
        if r.get("group"):
            shots = resolve(r["group"])
            kind = r.get("group_typ") or {".csv": "psd", ".txt": "ffprobe"}.get(shots.suffix.lower())
            if kind not in GROUP_TYPES:
                raise CorpusError(f"{path}: row {line}: shots of kind {kind or shots.suffix!r} cannot be read "
                                  f"(group_typ {' or '.join(GROUP_TYPES)}); leave 'group' empty to detect the cuts")
        out.append(CorpusRow(line, resolve(r["video"]), shots))
    return out
