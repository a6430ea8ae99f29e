"""Page loads under concurrent sessions: the dashboard served as ``crowdsort dashboard`` serves it,
N clients at once each loading the page (an HTTP GET of /app: the session is made and the page
rendered for it), while another client keeps fetching a small static file. Prints, for
N = 1, 10, 30, the page's and the static file's p50/p95 latency and the server's memory.

    python benchmarks/bench_dashboard_load.py --dataset DATASET [--n 1 10 30] [--server crowdsort panel]

--server crowdsort: as ``crowdsort dashboard`` serves it (python -m crowdsort.review.serve: pages built off
the event loop); panel: the same app under a plain ``panel serve`` (each page built on the loop).

DATASET: a dataset folder with an extraction run (copied to a temporary folder first: opening it
writes its caches). Without --dataset, ../shared/data/lfw-dev/faces is extracted into one (slow).
Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STATIC = "/favicon.ico"  # served from the server's files: any wait is the event loop's


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> tuple[float, float]:
    """The server's resident memory now and at its peak (MB)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def get(url: str) -> float:
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        r.read()
    return time.perf_counter() - t


def pct(xs, q) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def round_of(base: str, n: int) -> dict:
    static, stop = [], threading.Event()

    def poll_static():
        while not stop.is_set():
            static.append(get(base + STATIC))
            time.sleep(0.05)

    poller = threading.Thread(target=poll_static)
    poller.start()
    with ThreadPoolExecutor(n) as pool:
        pages = list(pool.map(lambda _: get(base + "/app"), range(n)))
    stop.set()
    poller.join()
    return {"pages": pages, "static": static}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--n", type=int, nargs="+", default=[1, 10, 30])
    ap.add_argument("--server", nargs="+", default=["crowdsort", "panel"], choices=["crowdsort", "panel"])
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    dataset = tmp / "ds"
    if args.dataset:
        shutil.copytree(args.dataset, dataset)
    else:
        subprocess.check_call([sys.executable, "-m", "crowdsort.cli", "-q", "extract-faces", "-d", str(dataset),
                               "--from", str(ROOT.parent / "shared" / "data" / "lfw-dev" / "faces")])
    try:
        for server in args.server:
            run_server(server, dataset, tmp, args.n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run_server(server: str, dataset: Path, tmp: Path, ns) -> None:
    from crowdsort.cli import Dashboard, build_parser

    port = free_port()
    cli = build_parser().parse_args(["dashboard", str(dataset), "--port", str(port)])
    cmd, env, url = Dashboard.server_command(cli, ROOT / "dashboard" / "app.py")
    if server == "panel":
        cmd[1:3] = ["-m", "panel", "serve"]
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        t = time.perf_counter()
        while True:
            try:
                get(base + "/app")
                break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t > 600:
                    raise RuntimeError((tmp / "server.log").read_text()[-3000:])
                time.sleep(0.5)
        print(f"{server}: {subprocess.list2cmdline(cmd[1:4])} …: first page (loads the dataset) after "
              f"{time.perf_counter() - t:.1f} s")
        print(f"{'N':>3} {'page p50':>9} {'page p95':>9} {'static p50':>11} {'static p95':>11} "
              f"{'RSS MB':>7} {'peak MB':>8}")
        for n in ns:
            r = round_of(base, n)
            now, peak = rss_mb(proc.pid)
            print(f"{n:>3} {pct(r['pages'], .5):>8.2f}s {pct(r['pages'], .95):>8.2f}s "
                  f"{pct(r['static'], .5):>10.3f}s {pct(r['static'], .95):>10.3f}s {now:>7.0f} {peak:>8.0f}"
                  f"   ({len(r['static'])} static fetches, mean page {statistics.mean(r['pages']):.2f} s)", flush=True)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


if __name__ == "__main__":
    main()
