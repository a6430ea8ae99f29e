"""The dashboard at about 1,000 people, in the browser (issue 30): each action's time from the
click (or the URL's print) to what it shows, in headless Chromium (playwright, /usr/bin/chromium).

Datasets (built once into ``--work``, kept and reused):

- ``real``: the three dev photo sets extracted into one dataset (``crowdsort extract-faces --from
  lfw-dev/faces,celeba-dev/faces,faces``: 1,035 + 1,979 + 107 photos of 594 + 292 + 25 people,
  many of them distractors with one photo) and clustered with ``crowdsort cluster``'s defaults.
- ``synthetic``: ``real`` copied K times (K: enough copies for ``--target`` clusters at ``real``'s
  count); each copy's faces have new ids, their own crop files (hard links to ``real``'s crops)
  and ``real``'s MobileFaceNet vectors turned by the copy's own random rotation (an orthogonal
  matrix: every distance inside a copy is kept, and a copy's faces are about as far from another
  copy's as random directions are), so the copies' people never merge and each copy clusters as
  ``real`` does. Then ``crowdsort cluster``'s defaults over the whole (vectors cached: not
  embedded again). Real faces, real cluster structure, K times the people.
- ``lfw-dev``: ``real``'s faces of the lfw-dev photos only (its crops and vectors), clustered
  the same way: the size the first-page benchmark measures, for comparison.

At this commit's defaults they came to 3,224 faces in 397 clusters (``real``), 9,672 in 1,190
(``synthetic``, 3 copies) and 1,095 in 205 (``lfw-dev``), as the dashboard's status line counts.

Each run starts ``crowdsort dashboard`` anew (names given by the previous run removed) and
times, in one page: the URL's print → the first People page shown (every card's faces loaded);
Next; the page box set to the last page; a card's Open → its detail (title and gallery loaded);
a name typed in a card + Enter → saved (the Undo button says so) with the card in its place;
the cluster list's size header clicked → its rows sorted; the Review tab → its first view (the
next cluster's faces and the noise rows); the Map tab → the plot drawn (pixels on its canvas).
Then the server's RSS (the server process and its children). Prints the medians of ``--runs``
runs and the machine's load; asserts nothing.

    python benchmarks/bench_thousand_people.py [--datasets real synthetic lfw-dev] [--runs 3] [--work DIR]
"""
from __future__ import annotations

import argparse
import io
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_first_page import CHROMIUM, SHARED, crowdsort, free_port, start_dashboard, stop  # noqa: E402
from crowdsort.review.app import CARD_FACES, GALLERY_MAX, PEOPLE_PAGE  # noqa: E402  (what the page shows)

SOURCES = ["lfw-dev/faces", "celeba-dev/faces", "faces"]
MODEL = "mobilefacenet"
STATUS = re.compile(r"(\d+)\s+clusters,\s+noise")
ACTIONS = ["first page", "next page", "last page", "open cluster", "name card", "list sort", "review tab", "map tab"]


# -- datasets --------------------------------------------------------------------------------------
def clustered(ds: Path) -> None:
    crowdsort("cluster", "-d", str(ds))  # the defaults: --from faces --to cluster, the default model


def real(work: Path, sources: list[str]) -> Path:
    ds = work / "real"
    if (work / "real.done").exists():
        return ds
    shutil.rmtree(ds, ignore_errors=True)
    t = time.perf_counter()
    crowdsort("extract-faces", "-d", str(ds), "--from", ",".join(str(SHARED / s) for s in sources),
              "--workers", "2")
    print(f"  real: extracted in {time.perf_counter() - t:.0f} s", flush=True)
    t = time.perf_counter()
    clustered(ds)
    print(f"  real: clustered in {time.perf_counter() - t:.0f} s", flush=True)
    (work / "real.done").touch()
    return ds


def vectors(ds: Path) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """``(faces, images, X)``: the extraction's tables and the faces' cached vectors, row by row."""
    from crowdsort.storage.store import FaceStore

    store = FaceStore(ds / "faces")
    faces = pd.read_parquet(ds / "faces" / "faces.parquet")
    images = pd.read_parquet(ds / "faces" / "images.parquet")
    X, found = store.vectors(MODEL, faces["face_id"])
    if not found.all():
        raise RuntimeError(f"{ds}: {int((~found).sum())} faces have no cached {MODEL} vector; run crowdsort cluster")
    return faces, images, X


def write_dataset(ds: Path, src: Path, faces: pd.DataFrame, images: pd.DataFrame, X: np.ndarray) -> None:
    """A dataset of these faces, their crops hard-linked from ``src``'s (at the faces' crop paths)."""
    from crowdsort.storage.store import FaceStore, write_table

    shutil.rmtree(ds, ignore_errors=True)
    run = ds / "faces"
    (run / "crops").mkdir(parents=True)
    shutil.copy(src / "faces" / "extract.json", run / "extract.json")
    for new, old in zip(faces["crop_path"], faces.pop("source_crop")):
        (run / new).parent.mkdir(parents=True, exist_ok=True)
        os.link(src / "faces" / old, run / new)
    write_table(faces.reset_index(drop=True), run / "faces.parquet")
    write_table(images.reset_index(drop=True), run / "images.parquet")
    store = FaceStore(run)
    store.save_embeddings(MODEL, faces["face_id"].to_numpy(), X)
    store.compact_embeddings(MODEL)


def synthetic(work: Path, base: Path, target: int) -> Path:
    ds = work / "synthetic"
    if (work / "synthetic.done").exists():
        return ds
    faces, images, X = vectors(base)
    k = max(2, math.ceil(target / clusters_made(base)))
    rng = np.random.default_rng(1000)
    parts, vecs = [], []
    for i in range(k):
        f = faces.copy()
        f["source_crop"] = f["crop_path"]
        if i:  # copy 0 is real itself
            f["face_id"] = f["face_id"] + f"c{i}"
            f["crop_path"] = [f"crops/copy{i}/{Path(p).name}" for p in f["crop_path"]]
        q, r = np.linalg.qr(rng.standard_normal((X.shape[1], X.shape[1])))
        q = q * np.sign(np.diag(r))  # a uniformly random rotation (Haar)
        parts.append(f)
        vecs.append(X if i == 0 else (X @ q).astype(np.float32))
    faces = pd.concat(parts, ignore_index=True)
    Xk = np.vstack(vecs)
    Xk /= np.linalg.norm(Xk, axis=1, keepdims=True)  # unit length to the float32 rounding the cache checks
    write_dataset(ds, base, faces, images, Xk)
    t = time.perf_counter()
    clustered(ds)
    print(f"  synthetic: {k} copies, clustered in {time.perf_counter() - t:.0f} s", flush=True)
    (work / "synthetic.done").touch()
    return ds


def lfw_subset(work: Path, base: Path) -> Path:
    ds = work / "lfw-dev"
    if (work / "lfw-dev.done").exists():
        return ds
    faces, images, X = vectors(base)
    root = str(SHARED / "lfw-dev" / "faces") + "/"
    keep = faces["image_path"].str.startswith(root).to_numpy()
    f = faces[keep].copy()
    f["source_crop"] = f["crop_path"]
    write_dataset(ds, base, f, images[images["image_path"].str.startswith(root)], X[keep])
    clustered(ds)
    (work / "lfw-dev.done").touch()
    return ds


def clusters_made(ds: Path) -> int:
    """Clusters the dashboard's first clustering makes (what its status line says)."""
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    return int(Dashboard(open_review(ds, progress=False)).s.summary()["clusters"])


def described(ds: Path) -> str:
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    dash = Dashboard(open_review(ds, progress=False))
    m = dash.s.summary()
    return (f"{m['items']} faces, {m['clusters']} clusters ({dash.algorithm}), noise {m['noise']}")


# -- the page ----------------------------------------------------------------------------------------
def until(cond, timeout: float = 120, step: float = 0.02):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        got = cond()
        if got:
            return got
        time.sleep(step)
    raise TimeoutError(f"not within {timeout} s: {getattr(cond, '__name__', cond)}")


def cards_loaded(page, first_text: str | None = None) -> bool:
    """The page of cards drawn: every card's faces loaded (min(size, 4) each), and its first card
    not ``first_text`` (the page before)."""
    return page.evaluate("""([before, perCard]) => {
      const all = (root, sel, out = []) => {  // through Bokeh's shadow roots (the root's own too)
        if (root.shadowRoot) all(root.shadowRoot, sel, out);
        for (const el of root.querySelectorAll('*')) {
          if (el.matches(sel)) out.push(el);
          if (el.shadowRoot) all(el.shadowRoot, sel, out);
        }
        return out;
      };
      const cards = all(document, '.cs-card');
      if (!cards.length) return false;
      const open = (card) => all(card, 'button').find((b) => /· \\d+ /.test(b.textContent));  // its Open
      const first = open(cards[0]);
      if (!first || first.textContent === before) return false;
      for (const card of cards) {
        const label = open(card);
        const m = label && label.textContent.match(/· (\\d+) /);
        if (!m) return false;
        const imgs = all(card, 'img');
        if (imgs.length < Math.min(+m[1], perCard)) return false;
        if (!imgs.every((i) => i.complete && i.naturalWidth > 0)) return false;
      }
      return true;
    }""", [first_text, CARD_FACES])


def first_card(page) -> str:
    return page.locator(".cs-card-open button").first.inner_text()


def images_loaded(page, selector: str, count: int) -> bool:
    widths = page.locator(selector).evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
    return len(widths) >= count and min(widths, default=0) > 0


def canvas_drawn(page) -> bool:
    from PIL import Image

    canvas = page.locator(".cs-views canvas").first
    if not canvas.count():
        return False
    rgb = np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB")).reshape(-1, 3).astype(np.int64)
    colour = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return int((colour != np.bincount(colour).argmax()).sum()) > 5000


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def one_run(browser, ds: Path) -> dict:
    (ds / "annotations.jsonl").unlink(missing_ok=True)  # the previous run's name
    proc, t_start, url = start_dashboard(ds, free_port())
    t_url = time.perf_counter()
    out = {"start→URL": t_start}
    try:
        import psutil

        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(url, wait_until="commit", timeout=300_000)
        until(lambda: cards_loaded(page))
        out["first page"] = time.perf_counter() - t_url
        n = int(STATUS.search(page.get_by_text(STATUS).first.inner_text()).group(1))
        pages = -(-n // PEOPLE_PAGE)
        count = page.locator(".cs-people-count span").first

        before = first_card(page)
        out["next page"] = timed(lambda: (page.locator(".cs-people-next button").first.click(),
                                          until(lambda: "page 2 of" in count.inner_text()
                                                and cards_loaded(page, before))))
        before = first_card(page)

        def last():
            box = page.locator(".cs-people-page input").first
            box.fill(str(pages))
            box.press("Enter")
            until(lambda: f"page {pages} of" in count.inner_text() and cards_loaded(page, before))
        out["last page"] = timed(last) if pages > 2 else float("nan")  # page 2 is the last: shown already

        label = first_card(page)
        c, size = (int(v) for v in re.match(r"cluster (\d+) · (\d+)", label).groups())
        title = re.compile(rf"Cluster {c:03d} \(\d+ faces\)")

        def open_card():
            page.locator(".cs-card-open button").first.click()
            until(lambda: page.get_by_text(title).count() and images_loaded(page, ".cs-gallery img",
                                                                             min(size, GALLERY_MAX)))
        out["open cluster"] = timed(open_card)

        named = f"{c:03d}"  # the card just opened (the last page may hold only it)
        undo = page.locator(".cs-undo button").first

        def name_card():
            box = page.locator(".cs-card-name input").first
            box.fill("Bench Person")
            box.press("Enter")
            until(lambda: undo.inner_text() == f"Undo: name cluster {named} 'Bench Person'"
                  and first_card(page) == label
                  and page.locator(".cs-card-name input").first.input_value() == "Bench Person")
        out["name card"] = timed(name_card)

        def sort_list():
            cells = page.locator('.cs-clusters .tabulator-row .tabulator-cell[tabulator-field="size"]')
            top = cells.first.inner_text()
            page.locator('.cs-clusters .tabulator-col[tabulator-field="size"]').first.click()
            until(lambda: cells.first.inner_text() != top)
            sizes = [int(s) for s in cells.all_inner_texts()[:20]]
            if sizes != sorted(sizes):
                raise RuntimeError(f"the list's sizes after the sort: {sizes}")
        out["list sort"] = timed(sort_list)

        def review():
            page.get_by_text("Review", exact=True).first.click()
            until(lambda: page.locator(".cs-queue-open button").count()
                  and page.locator(".cs-queue-noise-count").count()
                  and images_loaded(page, ".cs-queue img", 1))
        out["review tab"] = timed(review)

        def map_tab():
            page.get_by_text("Map", exact=True).first.click()
            until(lambda: canvas_drawn(page), step=0.0)
        out["map tab"] = timed(map_tab)

        server = psutil.Process(proc.pid)
        out["rss MiB"] = sum(p.memory_info().rss for p in [server, *server.children(recursive=True)]) / 2**20
        out["clusters"] = n
        page.close()
    finally:
        stop(proc)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["real", "synthetic", "lfw-dev"],
                    choices=["real", "synthetic", "lfw-dev"])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--target", type=int, default=1000, help="clusters the synthetic dataset reaches at least")
    ap.add_argument("--sources", nargs="+", default=SOURCES, help="folders of the shared data extracted as 'real'")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "crowdsort-bench-thousand"))
    args = ap.parse_args()
    if not CHROMIUM:
        print("no chromium: nothing measured")
        return 0
    from playwright.sync_api import sync_playwright

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = real(work, args.sources)
    built = {"real": base}
    if "synthetic" in args.datasets:
        built["synthetic"] = synthetic(work, base, args.target)
    if "lfw-dev" in args.datasets:
        built["lfw-dev"] = lfw_subset(work, base)
    for name in args.datasets:
        print(f"{name}: {described(built[name])}", flush=True)
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
    results = {}
    try:
        for name in args.datasets:
            runs = []
            for i in range(args.runs):
                runs.append(one_run(browser, built[name]))
                print(f"  {name} run {i + 1}: " + ", ".join(f"{k} {v:.2f}" if k in ACTIONS else f"{k} {v:.1f}"
                                                            for k, v in runs[-1].items()),
                      f"(load {os.getloadavg()[0]:.2f})", flush=True)
            results[name] = runs
    finally:
        browser.close()
        pw.stop()
    print(f"\nmedians of {args.runs} runs, seconds (RSS: MiB); load average now "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    cols = ["clusters", "start→URL", *ACTIONS, "rss MiB"]
    digits = {"clusters": 0, "rss MiB": 0, "start→URL": 1}
    print(f"{'dataset':<10} " + " ".join(f"{c:>12}" for c in cols))
    for name, runs in results.items():
        medians = {c: statistics.median(r[c] for r in runs) for c in cols}
        print(f"{name:<10} " + " ".join(f"{medians[c]:>12.{digits.get(c, 2)}f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
