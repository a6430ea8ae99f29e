"""A dataset without its map (clustered through the Python API): the dashboard opens at once on
the people, the map is computed in a thread, its progress shown in the Map tab, and the map
appears when it is done (issue 30)."""
from __future__ import annotations

import shutil
import sys
import threading

import numpy as np
import pytest

from test_dashboard import ROOT

sys.path.insert(0, str(ROOT))
pn = pytest.importorskip("panel")

from test_dashboard_app import session  # noqa: E402,F401  (the fixture: 30 faces, 5 people)


def waiting_session(session):  # noqa: F811
    """``session`` with its map taken away and computed by a job that waits for ``release``."""
    from crowdsort.review.project import MapInBackground

    layout, release, step = session.layout, threading.Event(), threading.Event()
    session.layout = None

    def compute(on_epoch):
        on_epoch(0.5)
        step.set()
        release.wait(30)
        session.layout = layout
        return layout
    session.map_job = MapInBackground(compute, len(session.ids))
    return session, release, step


def test_the_people_show_before_the_map_exists_and_the_map_comes_when_done(session):  # noqa: F811
    from crowdsort.review.app import ReviewApp

    s, release, step = waiting_session(session)
    app = ReviewApp("ds", session=s)
    page = app.template()  # the page is made while the map is not
    dash = app.dashboard
    assert not dash.map_ready and s.layout is None
    cards = dash.people()[1]
    assert len(cards.objects) >= 2 and all("<img" in c.objects[0].object for c in cards.objects)
    s.map_job.start()
    assert step.wait(10)
    waiting = dash.map_view()  # the Map tab opened meanwhile: what it is doing, how far
    note = waiting.objects[0].object
    assert "Computing the map of 30 items" in note and "50%" in note, note
    assert waiting.objects[1].value == 50
    release.set()
    assert s.map_job.done.wait(10) and s.map_job.layout is not None
    assert dash.map_ready
    shown = dash.map_view()
    assert isinstance(shown, pn.pane.HoloViews) and shown.name == "map"
    assert "ready" in s.map_job.words()
    assert page is not None


def test_a_map_that_fails_says_why_in_its_tab(session):  # noqa: F811
    from crowdsort.review.app import Dashboard
    from crowdsort.review.project import MapInBackground

    session.layout = None

    def compute(on_epoch):
        raise MemoryError("no room for the map")
    session.map_job = MapInBackground(compute, len(session.ids))
    dash = Dashboard(session)
    view = dash.map_view()
    session.map_job.start().wait(10)
    assert "could not be made: no room for the map" in view.objects[0].object
    assert not dash.map_ready and not view.objects[1].visible
    assert len(dash.people()[1].objects) >= 2  # the rest of the page works without it


def test_open_review_leaves_a_missing_map_to_a_thread_that_stores_it(faces_store, tmp_path):
    import shutil

    from crowdsort.review.opening import open_review
    from crowdsort.review.project import layout_path

    dataset = tmp_path / "ds"
    shutil.copytree(faces_store.root, dataset / "faces", ignore=shutil.ignore_patterns("projections"))
    session = open_review(dataset, progress=False, map_later=True)
    job = session.map_job
    assert job is not None
    seen = []
    job.listen(lambda j: seen.append(j.fraction))
    layout = job.wait(300)
    assert job.error is None and layout is not None and layout.shape == (len(session.ids), 2)
    assert session.layout is layout and seen and seen[-1] == pytest.approx(1.0)  # UMAP's epochs, told as they went
    from crowdsort.storage.store import FaceStore

    stored = layout_path(FaceStore(dataset / "faces"), session.model, list(session.ids))
    assert np.array_equal(np.load(stored), layout)
    again = open_review(dataset, progress=False, map_later=True)  # the next opening reads it
    assert again.map_job is None and np.array_equal(again.layout, layout)


def test_the_browser_shows_the_people_first_and_the_map_when_it_is_made(faces_store, tmp_path):
    """Served over a dataset without a map: the cards (≥ 10 face pictures) without a click, the
    Map tab saying how far the map is while it is made, then the map."""
    from test_dashboard import CHROMIUM, Server, _browser_or_skip, dataset_copy, faces_in_view, open_page, status_clusters, until

    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    shutil.rmtree(dataset / "faces" / "projections", ignore_errors=True)  # the shared store's, made by another test
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        with Server(dataset) as server:
            page = open_page(browser, server)
            page.locator(".cs-card img").first.wait_for(timeout=30000)
            assert until(lambda: faces_in_view(page) >= 10), faces_in_view(page)
            made_before = bool(list((dataset / "faces").glob("projections/*.npy")))
            page.get_by_text("Map", exact=True).first.click()
            if not made_before:  # the usual case: a fresh server compiles UMAP's code for seconds
                shown = page.locator(".cs-map-progress, .bk-Canvas").first
                shown.wait_for(timeout=30000)
            page.locator(".bk-Canvas").first.wait_for(timeout=240000)  # the map, once made, without a reload
            assert list((dataset / "faces").glob("projections/*.npy"))
            assert status_clusters(page) > 0  # the page still answers
            page.close()
        browser.close()


def test_a_held_map_starts_when_its_tab_is_opened(session):  # noqa: F811
    """Held for the first page's seconds, the map starts at once when someone opens its tab."""
    from crowdsort.review.app import Dashboard
    from crowdsort.review.project import MapInBackground

    layout, session.layout = session.layout, None

    def compute(on_epoch):
        session.layout = layout
        return layout
    session.map_job = MapInBackground(compute, len(session.ids), hold_s=120).start()
    dash = Dashboard(session)
    assert session.map_job.wait(0.5) is None  # held
    dash.map_view()  # the Map tab opened
    assert session.map_job.wait(10) is layout and dash.map_ready
