"""The dashboard's screenshots, made by a browser over lfw-dev (1,035 photos; references for 150 of
its people) as ``crowdsort dashboard --refs`` shows it: the people, a person opened, the review and
the map, each checked before it is taken. The docs' images are these:

    CROWDSORT_SCREENSHOTS=docs/images python -m pytest -q tests/test_screenshots.py

Without CROWDSORT_SCREENSHOTS they go to the test's own tmp_path (the checks run all the same)."""
from __future__ import annotations

import io
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_dashboard import STATUS, Server, _browser_or_skip, chromium_browser, until  # noqa: F401 (a fixture)

VIEWPORT = {"width": 1400, "height": 900}
SUGGESTED_CARDS = 8  # the people shown: the first page with this many suggested names (lfw-dev's
# largest clusters are its unenrolled people: an enrolled one gave a photo to the references)
NAMED_FIRST = 3  # suggestions accepted before the review: its noise faces sit beside named people
MAX_BYTES = 400_000


def shots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("CROWDSORT_SCREENSHOTS") or tmp_path / "shots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(page, folder: Path, name: str) -> Path:
    """The viewport, in 256 colours (median cut keeps the pale greys of buttons; a full-colour
    PNG of a screen of photos is half a megabyte)."""
    from PIL import Image

    page.wait_for_timeout(600)  # a smooth scroll into view ends
    png = page.screenshot(animations="disabled")
    out = folder / name
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    assert 0 < out.stat().st_size < MAX_BYTES, f"{out}: {out.stat().st_size} bytes"
    return out


def loaded(page, images, count: int, timeout_ms: int = 30000) -> list[int]:
    """The natural widths of the pictures ``images`` finds, once ``count`` of them are loaded
    (0: not loaded, or broken); what there is after ``timeout_ms``."""
    widths = []
    for _ in range(timeout_ms // 250):
        widths = images.evaluate_all("els => els.map(e => e.complete ? e.naturalWidth : 0)")
        if len(widths) >= count and min(widths) > 0:
            break
        page.wait_for_timeout(250)
    return widths


def drawn_pixels(png: bytes) -> int:
    """Pixels of a picture other than its commonest colour (its background): what was drawn on it."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3).astype(np.int64)
    colour = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    return int((colour != np.bincount(colour).argmax()).sum())


@pytest.fixture
def lfw_review(lfw_store, tmp_path, need_shared):
    """``(dataset, refs, session, dashboard)``: lfw-dev in a dataset named for it, its references
    embedded once (the server reads the file), the review's vectors, graph and map made and
    cached in the dataset as ``crowdsort cluster`` makes them, and the page's first clustering."""
    from crowdsort.naming.identify import embed_references, save_references
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    dataset = tmp_path / "lfw-dev"
    shutil.copytree(lfw_store.root, dataset / "faces")
    refs = tmp_path / "refs.h5"
    save_references(embed_references(need_shared("lfw-dev/references"), progress=False), refs)
    session = open_review(dataset, refs=str(refs), progress=False)
    return dataset, refs, session, Dashboard(session)


def test_screenshots_of_the_dashboard_over_lfw_dev(chromium_browser, lfw_review, tmp_path):
    sync_api = _browser_or_skip()
    from crowdsort.review.app import PEOPLE_PAGE

    dataset, refs, session, dash = lfw_review
    folder = shots_dir(tmp_path)
    order = dash.people_order()["cluster"].tolist()
    pages = [order[i:i + PEOPLE_PAGE] for i in range(0, len(order), PEOPLE_PAGE)]
    suggested = {c: dash.suggested_name(c) for c in order}
    shown = next(i for i, p in enumerate(pages) if sum(bool(suggested[c]) for c in p) >= SUGGESTED_CARDS)
    assert len(pages[shown]) == PEOPLE_PAGE  # a full page of them

    with Server(dataset, "--refs", str(refs)) as server:
        page = chromium_browser.new_page(viewport=VIEWPORT)
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{server.url}/app")
        page.get_by_text(STATUS).first.wait_for(timeout=60000)

        # the people: the page opens on them; on a full page of cards every face is loaded
        cards = page.locator(".cs-card")
        sync_api.expect(cards).to_have_count(PEOPLE_PAGE, timeout=60000)
        for _ in range(shown):
            page.locator(".cs-people-next button").first.click()
        counted = rf"page {shown + 1} of {len(pages)} · {shown * PEOPLE_PAGE + 1}–{(shown + 1) * PEOPLE_PAGE} of "
        page.get_by_text(re.compile(counted + rf"{len(order)} clusters")).first.wait_for(timeout=30000)
        sync_api.expect(cards).to_have_count(PEOPLE_PAGE)
        sync_api.expect(cards.first.locator(".cs-card-open button")).to_have_text(
            re.compile(rf"cluster {pages[shown][0]:03d} · \d+ faces"))
        widths = loaded(page, page.locator(".cs-card img"), 2 * PEOPLE_PAGE)  # lfw-dev's clusters: 2 faces or more
        assert len(widths) >= 2 * PEOPLE_PAGE and min(widths) > 0, widths
        accept = page.locator(".cs-card-accept button")
        sync_api.expect(accept).to_have_count(sum(bool(suggested[c]) for c in pages[shown]))
        shoot(page, folder, "people.png")

        # a person the references know, opened from their card: the detail shows that cluster's faces
        c = next(c for c in pages[shown] if suggested[c])
        card = cards.filter(has=page.locator(".cs-card-open button", has_text=f"cluster {c:03d} "))
        card.locator(".cs-card-open button").click()
        rows = session.members(c)
        page.get_by_text(re.compile(rf"Cluster {c:03d} \({len(rows)} faces\)")).first.wait_for(timeout=30000)
        gallery = page.locator(".cs-members .cs-gallery img")  # not the faces offered beneath
        widths = loaded(page, gallery, len(rows))
        assert len(widths) == len(rows) and min(widths) > 0, widths
        files = [Path(session.table["crop_path"].iloc[r]).name for r in rows]
        assert gallery.evaluate_all("els => els.map(e => e.title)") == files
        sync_api.expect(page.locator(".cs-sugg-best button")).to_contain_text(suggested[c], timeout=30000)
        shoot(page, folder, "person.png")

        # the review: a few suggestions accepted on the cards, then the Review tab offers the
        # next unnamed cluster, and the noise faces each beside the named person nearest them
        page.evaluate("window.scrollTo(0, 0)")
        for _ in range(NAMED_FIRST):
            name = accept.first.inner_text().removeprefix("Accept: ")
            count = accept.count()
            accept.first.click()  # an accepted card loses its button: the next one is first
            sync_api.expect(accept).to_have_count(count - 1, timeout=30000)
            saved = dataset / "annotations.jsonl"  # the name is saved, not only shown
            assert until(lambda: saved.exists() and f'"{name}"' in saved.read_text()), name
        page.get_by_text("Review", exact=True).first.click()
        page.locator(".cs-queue-keys").first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-queue-open button").first).to_contain_text("Open cluster", timeout=30000)
        item = page.locator(".cs-queue-item").first
        item.wait_for(timeout=30000)
        item.get_by_text(re.compile(r"^(probably|nearest:) .+ \(\d\.\d{3}\)")).first.wait_for(timeout=5000)
        widths = loaded(page, item.locator("img"), 2)  # the noise face and the named person's
        assert len(widths) == 2 and min(widths) > 0, widths
        sync_api.expect(item.locator(".cs-queue-add button")).to_contain_text("Add to ")
        shoot(page, folder, "review.png")

        # the map: the UMAP plot drawn, a canvas with more than its background on it
        page.get_by_text("Map", exact=True).first.click()
        canvas = page.locator(".cs-views canvas").first
        canvas.wait_for(timeout=60000)
        page.wait_for_timeout(1000)  # Bokeh draws after the canvas is made
        box = canvas.bounding_box()
        assert box["width"] > 400 and box["height"] > 400, box
        assert drawn_pixels(canvas.screenshot()) > 5000
        shoot(page, folder, "map.png")
        assert not errors, errors
        page.close()
