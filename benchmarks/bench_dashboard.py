"""Dashboard responsiveness at scale: server-side time from a parameter change to the new
map (re-cluster on the cached graph + building the plot models), and page load time in
Chromium, over synthetic identity-like points.

    python benchmarks/bench_dashboard.py [--n 100000] [--layout umap|pca]

Targets: ≤ 1 s per change, ≤ 5 s page load (warm). ``--layout umap`` also times the one-off
UMAP map (stored in the dataset in real use); ``pca`` skips it. Page load needs chromium and
playwright; skipped without them. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    from bench_faces import identity_like

    from analysis.neighbors import knn_graph
    from analysis.project import pca_init, umap_layout
    from analysis.review import Annotations, ReviewSession
    from analysis.app import Dashboard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--layout", default="pca", choices=["umap", "pca"])
    args = ap.parse_args()
    X = identity_like(args.n, 128)
    t = time.perf_counter()
    g = knn_graph(X, 15)
    print(f"n={args.n}: kNN graph {time.perf_counter() - t:.1f} s (once, cached in the dataset)")
    t = time.perf_counter()
    layout = umap_layout(X, g) if args.layout == "umap" else pca_init(X)
    print(f"layout ({args.layout}) {time.perf_counter() - t:.1f} s (once, stored in the dataset)")
    tmp = Path(tempfile.mkdtemp())
    ids = np.array([f"{i:08x}" for i in range(args.n)], dtype=object)
    table = pd.DataFrame({"face_id": ids, "source_image": "", "face_index": 0, "crop_path": ""})
    session = ReviewSession(ids, X, g, layout, Annotations.load(tmp / "annotations.json"), table)
    dash = Dashboard(session)
    dash.map_view().get_root()  # warm: numba, datashader, bokeh
    for value in (3, 4, 2, 5):
        t = time.perf_counter()
        dash.min_cluster_size = value  # watch=True re-clusters
        t_cluster = time.perf_counter() - t
        dash.map_view().get_root()
        dash.cluster_table().get_root()
        dash.status()
        total = time.perf_counter() - t
        print(f"min_cluster_size={value}: re-cluster {t_cluster:.2f} s, new map + list {total:.2f} s "
              f"({session.summary()['clusters']} clusters)")
    page_load(session, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def page_load(session, dataset: Path) -> None:
    import panel as pn

    from analysis.app import ReviewApp

    chromium = shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        chromium = None
    if not chromium:
        print("page load: skipped (needs chromium and playwright)")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = pn.serve({"app": lambda: ReviewApp(dataset, session=session).template()}, port=port, address="127.0.0.1", show=False,
                      threaded=True, websocket_origin=[f"127.0.0.1:{port}"])
    time.sleep(2)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                  "--disable-background-networking"])
            for attempt in ("cold", "warm", "warm"):
                page = b.new_page(viewport={"width": 1400, "height": 1000})
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/app")
                page.get_by_text("clusters, noise").first.wait_for(timeout=120000)
                page.locator("canvas").first.wait_for(timeout=120000)
                page.locator(".cs-clusters .tabulator-row").first.wait_for(timeout=120000)
                print(f"page load ({attempt}): {time.perf_counter() - t:.2f} s")
                page.close()
            b.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
