"""Finding the files a command reads: globs, files and folders (scanned recursively), with
everything passed over reported, never dropped in silence. One walk serves photos and videos;
each kind of file is a :class:`Media` (its extensions, and the types recognised but not read)."""
from __future__ import annotations

import errno
import glob
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Media:
    noun: str  # "image", "video"
    extensions: frozenset[str]
    unsupported: dict[str, str] = field(default_factory=dict)  # extension → why it is not read, and the fix
    article: str = "an"
    plural: str = ""  # default: noun + "s"

    @property
    def nouns(self) -> str:
        return self.plural or f"{self.noun}s"

    @property
    def looked_for(self) -> str:
        return ", ".join(sorted(self.extensions))


def stat_entry(path: Path) -> tuple[os.stat_result | None, str]:
    """``(stat, "")`` following links, or ``(None, reason)`` for a broken link or unreadable entry."""
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            st = path.stat()
    except FileNotFoundError:
        return None, "dangling symbolic link (its target does not exist)"
    except OSError as e:
        if e.errno == errno.ELOOP:
            return None, "symbolic link loop"
        return None, f"cannot read ({e.strerror or e})"
    return st, ""


def valid_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8, carried as surrogates by os.fsdecode
        return False
    return True


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 as ``\\udcxx`` escapes, safe to print and store."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _take_file(media: "Media", path: Path, st: os.stat_result, found: set[Path], report, explicit: bool) -> int:
    """Add ``path`` if it is a supported file; report it if it looks like an unusable one."""
    suffix = path.suffix.lower()
    if suffix in media.extensions:
        if not stat.S_ISREG(st.st_mode):
            report(str(path), "not a regular file (a pipe, socket or device)")
        elif not valid_name(path):
            report(str(path), "file name is not valid UTF-8 (rename the file)")
        else:
            found.add(path.resolve())
            return 1
    elif suffix in media.unsupported:
        report(str(path), media.unsupported[suffix])
    elif explicit:
        report(str(path), f"not {media.article} {media.noun} file name (looked for {media.looked_for})")
    return 0


def _scan_folder(media: "Media", top: Path, top_stat: os.stat_result, found: set[Path], report) -> int:
    """Add every file of ``media`` under ``top``, following links to folders once each; return the count."""
    n = 0
    seen = {(top_stat.st_dev, top_stat.st_ino)}
    stack = [top]
    named_like = []
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            report(str(folder), f"cannot read folder ({e.strerror or e})")
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            is_link = entry.is_symlink()
            st, why = stat_entry(path)
            if st is None:
                report(str(path), why)
            elif stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    subfolders.append(path)
                    if path.suffix.lower() in media.extensions | media.unsupported.keys():
                        named_like.append(path)
                elif is_link:
                    target, here = path.resolve(), folder.resolve()
                    if here == target or target in here.parents:
                        report(str(path), f"symbolic link loop (leads back to {target})")
                    # else: a second link to a folder already scanned; its files are in.
            else:
                n += _take_file(media, path, st, found, report, explicit=False)
        stack.extend(reversed(subfolders))
    for path in named_like:
        inside = path.resolve()
        if not any(inside in p.parents for p in found):
            report(str(path), f"a folder named like {media.article} {media.noun} (no {media.noun}s in it)")
    return n


def find_files(patterns: str | list[str], media: "Media", skipped: list | None = None) -> list[Path]:
    """Resolve comma-separated globs to the files of ``media``, scanning matched folders recursively.

    Returns the sorted, resolved paths (extensions matched case-insensitively; links to folders
    followed once, loops cut). What the search passes over is appended to ``skipped`` as
    ``(path_or_pattern, reason)`` pairs: a pattern that matches nothing or only folders without
    such files, dangling links, link loops, unsupported types, folders named like such a file,
    names that are not UTF-8. Without ``skipped`` each is logged as a warning. Files with other
    extensions inside folders (notes, sidecars) are ignored silently. Raises
    ``FileNotFoundError`` naming the patterns only when no file at all is found.
    """
    if isinstance(patterns, str):
        patterns = [p.strip() for p in patterns.split(",") if p.strip()]

    def report(where: str, reason: str) -> None:
        where = printable(where)
        if skipped is None:
            log.warning("skipped %s: %s", where, reason)
        else:
            skipped.append((where, reason))

    found: set[Path] = set()
    problems = []
    for pattern in patterns:
        expanded = os.path.expanduser(pattern)
        # A literal path is taken as it is: "photo[1].jpg" must not be read as a glob.
        matches = [expanded] if os.path.lexists(expanded) else sorted(glob.glob(expanded, recursive=True))
        if not matches:
            report(pattern, "matches nothing")
            problems.append(f"no file or folder matches {pattern!r}")
            continue
        mine: list[tuple[str, str]] = []

        def report_here(where: str, reason: str) -> None:
            mine.append((printable(where), reason))
            report(where, reason)

        n = 0
        for m in matches:
            path = Path(m)
            st, why = stat_entry(path)
            if st is None:
                report_here(str(path), why)
            elif stat.S_ISDIR(st.st_mode):
                n += _scan_folder(media, path, st, found, report_here)
            else:
                n += _take_file(media, path, st, found, report_here, explicit=not glob.has_magic(expanded))
        if n == 0:
            why = f"no {media.nouns} under {pattern!r} (looked for {media.looked_for})"
            if mine:
                why += "; skipped " + ", ".join(f"{Path(w).name}: {r}" for w, r in mine[:3])
                why += f" and {len(mine) - 3} more" if len(mine) > 3 else ""
            if not any(w in (pattern, expanded, str(Path(expanded))) for w, _ in mine):  # a named file says why
                report(pattern, f"no {media.nouns} in it (looked for {media.looked_for})")
            problems.append(why)
    if not found:
        raise FileNotFoundError(f"no {media.noun}s found: " + "; ".join(problems))
    return sorted(found)
