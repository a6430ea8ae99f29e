"""Bad inputs: what becomes of each kind of awkward file, and the peak memory of decoding it.

    python benchmarks/probe_bad_inputs.py [--faces DIR] [--limits]

Generates the corpus of ``benchmarks/bad_inputs.py`` in a temporary folder, scans it once with
``find_images`` (what the scan reports), then decodes each file in a fresh subprocess and
prints ``kind | outcome | peak RSS MB | as expected``. Outcome: ``decoded WxH (/scale)``,
``reported: reason`` (an ImageError, or the scan's report), ``ignored``, or ``FATAL`` (the
process died or raised something else). Peak RSS is that subprocess's own peak (``VmHWM``;
``ru_maxrss`` where there is no /proc: on Linux it carries the parent's peak over exec), imports
included (the first line gives the imports alone).

``--limits`` also decodes, per format, the worst image the limits of ``analysis/storage/images.py``
let through (``MAX_DECODE_PIXELS`` and ``DECODE_MEMORY_BUDGET`` for the formats decoded at full
size, ``MAX_JPEG_COEFFICIENT_BYTES`` for a progressive JPEG) and one just past them: the
measurements behind those limits (about 2 minutes, 1 GB of temporary files).
Prints figures; asserts nothing.

Issue 32's cases follow the decoded files in the same table (``CLI: ...`` rows, from
``benchmarks/probe_cli_cases.py``): the real CLI run in subprocesses on a small dataset built
from the example (a moved or copied dataset, output files that would replace a user's file,
commands from another folder, a damaged video, a read-only dataset, wrong-typed annotation
lines, a non-UTF-8 reference folder, hand-edited assignments.csv, CSV cells that look like
formulas, a 0-byte --shots file, misshapen config files, a stale Ray cluster file, the
dashboard's routes from another machine). Their outcome is the exit code, the first line of
stderr, whether a traceback appeared and whether data was lost; the verdict column reads ``ok``
or ``DEFECT`` for every row (``--no-cli`` leaves them out, ``--cli-only`` prints only them; they
take about a minute).
"""
from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bad_inputs import Case, make_corpus, repeated_png  # noqa: E402

CHILD = r"""
import json, resource, sys
sys.path[:0] = sys.argv[2:4]
from crowdsort.storage.images import ImageError
from bad_inputs import decode_path
out = {}
if sys.argv[1]:
    try:
        rgb, scale = decode_path(sys.argv[1])
        out = {"outcome": "decoded", "shape": list(rgb.shape), "dtype": str(rgb.dtype), "scale": scale}
    except ImageError as e:
        out = {"outcome": "reported", "reason": str(e)}
# Linux carries ru_maxrss over exec from the parent's memory (a big parent inflates it);
# VmHWM, the peak of this process's own address space, does not.
try:
    peak_kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
except (OSError, StopIteration):
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["rss_mb"] = peak_kb / 1024
print(json.dumps(out))
"""


def decode_in_subprocess(path: Path | str) -> dict:
    """Decode ``path`` in a fresh interpreter; ``{"outcome": "FATAL", ...}`` if it dies."""
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(ROOT), str(ROOT / "benchmarks")],
                       capture_output=True, text=True, errors="backslashreplace", timeout=600)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return {"outcome": "FATAL", "reason": last, "rss_mb": float("nan"), "s": time.perf_counter() - t}
    return json.loads(r.stdout.strip().splitlines()[-1]) | {"s": time.perf_counter() - t}


def describe(res: dict, path: Path) -> str:
    if res["outcome"] == "decoded":
        h, w = res["shape"][:2]
        scale = f" (/{res['scale']:.2f})" if abs(res["scale"] - 1) > 1e-6 else ""
        return f"decoded {w}x{h}{scale}"
    reason = res.get("reason", "")
    reason = reason.removeprefix(f"{path}: ")
    return f"{'FATAL' if res['outcome'] == 'FATAL' else 'reported'}: {reason}"


def as_expected(case: Case, res: dict) -> bool:
    if res["outcome"] != case.outcome:
        return False
    if case.outcome in ("reported", "skipped"):
        return re.search(case.reason, res.get("reason", "")) is not None
    if case.outcome == "decoded" and case.size is not None:
        (h, w, c), scale = res["shape"], res["scale"]
        tol = max(2, scale)
        return res["dtype"] == "uint8" and c == 3 and abs(w * scale - case.size[0]) <= tol \
            and abs(h * scale - case.size[1]) <= tol
    return True


def probe_corpus(folder: Path, faces: list[Path]) -> list[tuple[str, str, float, bool]]:
    from crowdsort.storage.images import find_images

    t = time.perf_counter()
    cases = make_corpus(folder, faces)
    print(f"corpus: {len(cases)} kinds written in {time.perf_counter() - t:.1f} s")
    skipped: list = []
    t = time.perf_counter()
    found = set(find_images(str(folder / "scan"), skipped))
    print(f"find_images: {len(found)} images, {len(skipped)} reported, in {time.perf_counter() - t:.2f} s")
    reports = dict(skipped)
    base = decode_in_subprocess("")
    print(f"baseline (python + numpy + PIL imports, nothing decoded): {base['rss_mb']:.0f} MB\n")
    rows = []
    for case in cases:
        if case.outcome in ("skipped", "ignored"):
            reason = reports.get(case.shown)
            res = {"outcome": "skipped" if reason else "ignored", "reason": reason or "", "rss_mb": float("nan")}
            text = f"reported by the scan: {reason}" if reason else "ignored (not an image name)"
        else:
            if (case.found or case.path.resolve()) not in found:
                res = {"outcome": "FATAL", "reason": "not found by find_images", "rss_mb": float("nan")}
            else:
                res = decode_in_subprocess(case.path)
            text = describe(res, case.path)
        rows.append((case.kind, text, res["rss_mb"], as_expected(case, res)))
    bad = [r for r in rows if not r[3]]
    worst = max((r for r in rows if r[2] == r[2]), key=lambda r: r[2])
    print(f"{len(rows)} kinds, {len(rows) - len(bad)} as expected; "
          f"{sum('FATAL' in r[1] for r in rows)} FATAL; highest peak RSS {worst[2]:.0f} MB ({worst[0]})")
    return rows


def print_table(rows, header) -> None:
    cells = [header] + [(k, o if k.startswith("CLI: ") else o[:110], "-" if rss != rss else f"{rss:.0f}",
                         "ok" if ok else "DEFECT") for k, o, rss, ok in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for j, r in enumerate(cells):
        print(" | ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if j == 0:
            print("-+-".join("-" * w for w in widths))


def _limit_files(folder: Path) -> list[tuple[str, Path, str]]:
    """``(label, file, expected outcome)`` for files at the decode limits, the worst layout of
    each format, and two just past them."""
    import numpy as np
    from bad_inputs import exif_bytes, write_tiff
    from crowdsort.storage.images import (
        _DECODE_BYTES_PER_PIXEL,
        DECODE_MEMORY_BUDGET,
        MAX_DECODE_PIXELS,
        MAX_JPEG_COEFFICIENT_BYTES,
        MAX_PIXELS,
    )
    from PIL import Image, features

    side = math.isqrt(MAX_DECODE_PIXELS)
    out = []

    def add(label, name, w, h, expect="decoded", im=None, data=None, **kw):
        path = folder / name
        if data is not None:
            path.write_bytes(data)
        elif im is not None:
            im.save(path, **kw)
        out.append((f"{label} {w}x{h}", path, expect))

    add("PNG RGB", "rgb.png", side, side, data=repeated_png(side, side, 2, 8, bytes(i % 256 for i in range(3 * side))))
    add("PNG RGBA 16-bit", "rgba16.png", side, side, data=repeated_png(side, side, 6, 16, b"\x80\x00" * 4 * side))
    add("PNG grey 16-bit", "grey16.png", side, side, data=repeated_png(side, side, 0, 16, b"\x80\x00" * side))
    add("PNG palette + alpha", "palette.png", side, side, im=Image.new("P", (side, side), 3), transparency=0)
    # Just under MAX_PIXELS, so decoded at full size, then rotated and composited.
    full = math.isqrt(MAX_PIXELS)
    add("PNG RGBA 16-bit, EXIF 6, not reduced", "rgba16-exif6.png", full, full,
        data=repeated_png(full, full, 6, 16, b"\x80\x00" * 4 * full, exif=exif_bytes(6)))
    rgb = Image.new("RGB", (side, side), (120, 130, 140))
    add("BMP 24-bit", "rgb.bmp", side, side, im=rgb)
    if features.check("avif"):
        add("AVIF", "rgb.avif", side, side, im=rgb, quality=50, speed=10)
    webp = math.isqrt(DECODE_MEMORY_BUDGET // _DECODE_BYTES_PER_PIXEL["WEBP"]) - 8
    add("WebP, the most the budget allows", "big.webp", webp, webp, im=rgb.resize((webp, webp)), quality=80, method=0)
    add("WebP, EXIF 6, not reduced", "exif6.webp", full, full, im=rgb.resize((full, full)), quality=80, method=0,
        exif=exif_bytes(6))
    del rgb
    add("TIFF float, 1 strip", "float.tif", side, side, im=Image.fromarray(np.ones((side, side), np.float32)),
        compression="tiff_adobe_deflate", strip_size=2**31 - 1)
    for samples, bits in ((1, 16), (3, 8), (4, 16)):
        write_tiff(folder / f"deflate-{samples}x{bits}.tif", side, side, samples, bits, deflate=True)
        add(f"TIFF {samples}x{bits}-bit deflated, 1 strip", f"deflate-{samples}x{bits}.tif", side, side)
    raw = math.isqrt(int(DECODE_MEMORY_BUDGET / (4 + _DECODE_BYTES_PER_PIXEL["TIFF"]))) - 8
    write_tiff(folder / "raw-4x8.tif", raw, raw, 4, 8)
    add("TIFF RGBA 8-bit uncompressed, the most the budget allows", "raw-4x8.tif", raw, raw)
    write_tiff(folder / "raw-4x16.tif", side, side, 4, 16)
    add("TIFF RGBA 16-bit uncompressed (0.5 GB file)", "raw-4x16.tif", side, side, "reported")
    # A 4:4:4 progressive JPEG just under the coefficient limit (6 bytes a pixel).
    n = int(MAX_JPEG_COEFFICIENT_BYTES / 6 * 0.98)
    w = math.isqrt(n)
    add("progressive JPEG 4:4:4", "progressive.jpg", w, n // w, im=Image.new("RGB", (w, n // w), (120, 130, 140)),
        progressive=True, subsampling=0, quality=90)
    return out


def probe_limits(folder: Path) -> None:
    folder.mkdir()
    t = time.perf_counter()
    files = _limit_files(folder)
    print(f"\nlimit files written in {time.perf_counter() - t:.0f} s")
    rows = []
    for label, path, expect in files:
        res = decode_in_subprocess(path)
        path.unlink()
        rows.append((label, describe(res, path), res["rss_mb"], res["outcome"] == expect))
    print_table(rows, ("at the limits", "outcome", "peak RSS MB", "verdict"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=ROOT.parent / "shared" / "data" / "faces" / "biden",
                    help="folder whose first two photos join the corpus as good photos (skipped if absent)")
    ap.add_argument("--limits", action="store_true", help="also decode images at the memory limits")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--no-cli", action="store_true", help="leave out issue 32's CLI cases")
    which.add_argument("--cli-only", action="store_true", help="only issue 32's CLI cases")
    args = ap.parse_args(argv)
    faces = sorted(args.faces.glob("*.jpg"))[:2] if args.faces.is_dir() else []
    with tempfile.TemporaryDirectory(prefix="bad-inputs-") as tmp:
        rows = [] if args.cli_only else probe_corpus(Path(tmp) / "corpus", faces)
        if not args.no_cli:
            from probe_cli_cases import cli_rows

            t = time.perf_counter()
            cli = cli_rows(Path(tmp) / "cli")
            print(f"issue 32's CLI cases: {len(cli)} run in {time.perf_counter() - t:.0f} s, "
                  f"{sum(not r[3] for r in cli)} DEFECT")
            rows += cli
        print()
        print_table(rows, ("kind / case", "outcome / what happened", "peak RSS MB", "verdict"))
        if not args.no_cli:
            print("(CLI rows: T is the probe's temporary folder; exit, first line of stderr, traceback, data lost)")
        if args.limits:
            probe_limits(Path(tmp) / "limits")


if __name__ == "__main__":
    main()
