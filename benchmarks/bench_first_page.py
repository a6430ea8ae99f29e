"""How long a new dataset's first page takes: ``crowdsort dashboard`` started over a dataset
just made as README.md's first command makes it (``crowdsort example``, ``extract-faces``,
``cluster``), and over lfw-dev (1,035 photos: extract-faces, cluster). For each it notes when
the command prints its URL, then opens the URL in headless Chromium (playwright,
/usr/bin/chromium) and times, from the URL's print, the page's HTML and the page shown: the
cluster list's status line ("N clusters, noise") or a face picture. Without playwright, an
HTTP GET of the page only. Prints a table; asserts nothing (issue 30: within 3 s).
With ``--api`` each dataset is clustered through the Python API instead (``cluster_faces``,
which makes no map): the page then opens while the map is computed, and the table also says
when the map was shown in the Map tab (clicked once the page is shown).

    python benchmarks/bench_first_page.py [--datasets example lfw-dev] [--work DIR] [--api]

The crowdsort it measures is the one the environment imports (this file adds no path): run it
with ``PYTHONPATH`` at another checkout's package to measure that one. Each dataset is extracted
once into ``--work`` (kept, reused by the next run); each run then copies it without the
dashboard's caches (graphs/, projections/) and without the cluster run, and runs ``cluster``
with the crowdsort measured, so what that version makes ahead (or not) is what is measured.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
if not SHARED.exists():
    SHARED = Path("/work/shared/data")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOWN = re.compile(r"\d+ (clusters|people)")


def crowdsort(*argv: str, quiet: bool = True) -> None:
    cmd = [sys.executable, "-m", "crowdsort.cli", *(["-q"] if quiet else []), *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")


def cluster_by_api(ds: Path) -> None:
    """``cluster_faces`` as a script would call it: no map made ahead."""
    code = f"from crowdsort import cluster_faces; cluster_faces({str(ds)!r}, source='faces', to='cluster')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"cluster_faces failed:\n{done.stderr[-3000:]}")


def extracted(name: str, work: Path) -> Path:
    """The dataset ``name`` extracted (once: kept in ``work``)."""
    ds = work / f"base-{name}"
    if (work / f"base-{name}.done").exists():
        return ds
    shutil.rmtree(ds, ignore_errors=True)
    if name == "example":
        crowdsort("example", str(work / "example-images"))
        crowdsort("extract-faces", "-d", str(ds), "--from", f"{work / 'example-images'}/*", "--to", "faces")
    elif name == "lfw-dev":
        crowdsort("extract-faces", "-d", str(ds), "--from", str(SHARED / "lfw-dev" / "faces"), "--to", "faces",
                  "--workers", "2")
    else:
        raise ValueError(name)
    (work / f"base-{name}.done").touch()
    return ds


def fresh_copy(base: Path, work: Path) -> Path:
    """The extracted dataset without what clustering or the dashboard make (run anew here)."""
    ds = Path(tempfile.mkdtemp(prefix=f"{base.name.removeprefix('base-')}-", dir=work))
    shutil.rmtree(ds)
    shutil.copytree(base, ds, symlinks=True,
                    ignore=lambda d, names: [n for n in names if n in ("graphs", "projections", "cluster",
                                                                        "annotations.jsonl", ".crowdsort.lock")])
    return ds


def n_faces(ds: Path) -> int:
    import pandas as pd

    return len(pd.read_parquet(next((ds / "faces").glob("faces*.parquet"))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_dashboard(ds: Path, port: int):
    """``(process, seconds to the URL's print, url)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "crowdsort.cli", "dashboard", "-d", str(ds), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    for line in proc.stdout:
        m = re.search(r"dashboard: (http\S+)", line)
        if m:
            t_url = time.perf_counter() - t0
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep its pipe drained
            return proc, t_url, m.group(1)
    raise RuntimeError(f"crowdsort dashboard ended (rc {proc.wait()}) without a URL")


def http_page(url: str, timeout: float = 300) -> float:
    """Seconds until an HTTP GET of the page answers (retried while the server does not answer)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                r.read()
            return time.perf_counter() - t0
        except urllib.error.HTTPError:
            return time.perf_counter() - t0
        except OSError:
            time.sleep(0.05)
    return float("nan")


def browser_page(browser, url: str, timeout: float = 300, map_too: bool = False) -> tuple[float, float, float]:
    """``(seconds to the page's HTML, seconds to the page shown, seconds to the map shown)``
    from now (the map: with ``map_too``, its tab clicked once the page shows; else nan); the
    page reloaded while the server refuses connections (as a user would)."""
    page = browser.new_page()
    t0 = time.perf_counter()
    try:
        while True:
            try:
                page.goto(url, wait_until="commit", timeout=timeout * 1000)
                break
            except Exception as e:  # connection refused: the server is not listening yet
                if "ERR_CONNECTION" not in str(e) or time.perf_counter() - t0 > timeout:
                    raise
                time.sleep(0.05)
        t_html = time.perf_counter() - t0
        t_shown = t_map = float("nan")
        while time.perf_counter() - t0 < timeout:
            if page.get_by_text(SHOWN).count() or page.locator(".cs-gallery img, img[src*='crop']").count():
                t_shown = time.perf_counter() - t0
                break
            time.sleep(0.05)
        if map_too and t_shown == t_shown:
            page.get_by_text("Map", exact=True).first.click()
            page.locator(".bk-Canvas").first.wait_for(timeout=timeout * 1000)
            t_map = time.perf_counter() - t0
        return t_html, t_shown, t_map
    finally:
        page.close()


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["example", "lfw-dev"])
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crowdsort-bench-first-page"))
    ap.add_argument("--http-only", action="store_true", help="no browser: an HTTP GET of the page only")
    ap.add_argument("--api", action="store_true", help="cluster with the Python API (no map made ahead)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import crowdsort as package

    print(f"crowdsort from {Path(package.__file__).parent}", flush=True)
    pw = browser = None
    if not args.http_only and CHROMIUM:
        try:
            from playwright.sync_api import sync_playwright

            pw = sync_playwright().start()
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        except ImportError:
            pass
    rows = []
    for name in args.datasets:
        ds = fresh_copy(extracted(name, work), work)
        t = time.perf_counter()
        if args.api:
            cluster_by_api(ds)
        else:
            crowdsort("cluster", "-d", str(ds), "--from", "faces", "--to", "cluster", "--clean")
        t_cluster = time.perf_counter() - t
        proc, t_url, url = start_dashboard(ds, free_port())
        try:
            if browser is not None:
                t_html, t_shown, t_map = browser_page(browser, url, map_too=args.api)
            else:
                t_html, t_shown, t_map = http_page(url), float("nan"), float("nan")
        finally:
            stop(proc)
        rows.append((name + (" (API)" if args.api else ""), n_faces(ds), t_cluster, t_url, t_html, t_shown, t_map))
        print(f"  {name}: done", flush=True)
        shutil.rmtree(ds, ignore_errors=True)
    if browser is not None:
        browser.close()
        pw.stop()
    print(f"\n{'dataset':<16} {'faces':>6} {'cluster s':>10} {'start→URL s':>12} {'URL→HTML s':>11} "
          f"{'URL→page shown s':>17}" + (f" {'URL→map shown s':>16}" if args.api else ""))
    for name, n, tc, tu, th, ts, tm in rows:
        print(f"{name:<16} {n:>6} {tc:>10.1f} {tu:>12.1f} {th:>11.2f} {ts:>17.2f}" + (f" {tm:>16.2f}" if args.api else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
