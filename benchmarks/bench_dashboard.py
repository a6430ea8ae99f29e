"""Dashboard responsiveness at scale: server-side time from a parameter change to the new
map (re-cluster on the cached graph + building the plot models) and from opening a cluster to
its detail, and in Chromium the page load and a click on the list to the detail drawn, over
synthetic identity-like points (with real crop files: the detail decodes them).

    python benchmarks/bench_dashboard.py [--n 100000] [--layout umap|pca]

Targets: ≤ 1 s per change, ≤ 0.5 s click → detail, ≤ 3 s page load (warm). ``--layout umap`` also times the one-off
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

    from crowdsort.clustering.neighbors import knn_graph
    from crowdsort.review.project import pca_init, umap_layout
    from crowdsort.review.session import Annotations, ReviewSession
    from crowdsort.review.app import Dashboard

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
    crop = tmp / "crop.jpg"  # one picture for every face: the detail's cost is decoding and sending it
    from PIL import Image

    Image.new("RGB", (160, 160), (180, 140, 120)).save(crop)
    # each face its own photo: faces of one photo are different people, and would never cluster
    table = pd.DataFrame({"face_id": ids, "source_image": [f"{tmp}/photo-{i}.jpg" for i in ids], "face_index": 0,
                          "crop_path": str(crop)})
    session = ReviewSession(ids, X, g, layout, Annotations.load(tmp / "annotations.json"), table)
    dash = Dashboard(session, algorithm="hdbscan")  # the min_cluster_size changes below are its
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
    times = []
    dash.detail().get_root()  # shown once; each opening refills its widgets
    for c in session.clusters()["cluster"].iloc[:6]:
        t = time.perf_counter()
        dash.selected = int(c)
        times.append(time.perf_counter() - t)
    print(f"open a cluster → detail (server): first {1000 * times[0]:.0f} ms, then median "
          f"{1000 * np.median(times[1:]):.0f} ms")
    page_load(session, tmp)
    shutil.rmtree(tmp, ignore_errors=True)


def page_load(session, dataset: Path) -> None:
    import panel as pn

    from crowdsort.review.app import ReviewApp

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
    server = pn.serve({"app": lambda: ReviewApp(dataset, session=session, algorithm="hdbscan").template()}, port=port, address="127.0.0.1", show=False,
                      threaded=True, websocket_origin=[f"127.0.0.1:{port}"])
    time.sleep(2)
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu",
                                                                  "--disable-background-networking"])
            # cold: a new browser profile, nothing cached (a first visit, 5 MB of scripts); warm:
            # the same tab loaded again, its scripts in the browser's cache (a user's reload)
            page = b.new_page(viewport={"width": 1400, "height": 1000})
            for attempt in ("cold", "warm", "warm", "warm"):
                time.sleep(2)  # the last click's answer drawn and the page idle, as before a person's reload
                t = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/app")
                page.get_by_text("clusters, noise").first.wait_for(timeout=120000)
                page.locator("canvas").first.wait_for(timeout=120000)
                page.locator(".cs-clusters .tabulator-row").first.wait_for(timeout=120000)
                print(f"page load ({attempt}): {time.perf_counter() - t:.2f} s")
                clicks = []
                for row in range(1, 4):
                    t = time.perf_counter()
                    page.locator(".cs-clusters .tabulator-row").nth(row).click()
                    c = int(page.locator(".cs-clusters .tabulator-row").nth(row).inner_text().split()[0])
                    page.get_by_text(f"Cluster {c:03d} (").first.wait_for(timeout=60000)
                    page.locator(".cs-gallery img").first.wait_for(timeout=60000)
                    clicks.append(time.perf_counter() - t)
                print(f"  click on the list → detail drawn: {', '.join(f'{1000 * x:.0f}' for x in clicks)} ms")
            b.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
