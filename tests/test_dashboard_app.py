"""The dashboard's state without a browser: one Dashboard per tab over a shared ReviewSession,
driven by setting its params and pressing its buttons (clicks += 1)."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from test_dashboard import ROOT

sys.path.insert(0, str(ROOT))
pn = pytest.importorskip("panel")

from crowdsort.clustering.neighbors import knn_graph  # noqa: E402
from crowdsort.review.session import Annotations, ReviewSession  # noqa: E402


@pytest.fixture
def session(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 32))
    X = np.repeat(centres, 6, 0) + rng.normal(0, 0.08, (30, 32))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    crops = []
    for i in range(len(X)):
        crops.append(str(tmp_path / f"c{i:02d}.jpg"))
        Image.new("RGB", (32, 32), tuple(int(v) for v in rng.integers(0, 255, 3))).save(crops[-1])
    import pandas as pd

    ids = np.array([f"f{i:02d}" for i in range(len(X))], dtype=object)
    layout = np.repeat(centres[:, :2] * 5, 6, 0) + rng.normal(0, 0.1, (30, 2))
    s = ReviewSession(ids, X, knn_graph(X, 20), layout.astype(np.float32), Annotations.load(tmp_path / "a.jsonl"),
                      table=pd.DataFrame({"item_id": ids, "crop_path": crops}))
    s.truth = np.repeat(np.arange(5), 6)
    return s


def dashboard(session):
    from crowdsort.review.app import Dashboard

    return Dashboard(session, algorithm="hdbscan", min_cluster_size=2, min_samples=1)


def test_only_the_chosen_algorithms_sliders_show_and_dbscan_says_min_samples_2(session):
    from crowdsort.review.app import controls

    d = dashboard(session)
    panel = controls(d)
    shown = lambda: {n for n, w in panel._widgets.items() if n != "algorithm" and w.visible and n != "_title"}  # noqa: E731
    assert shown() == {"min_cluster_size", "min_samples"}
    d.algorithm = "rnn-dbscan"
    assert shown() == {"n_neighbors"}
    d.algorithm = "dbscan"
    assert shown() == {"eps", "min_samples"}
    assert d.min_samples == 2 and panel._widgets["min_samples"].value == 2 and panel._widgets["min_samples"].start == 2
    assert "min_samples=2" in d.status().object


def test_undo_is_per_tab_and_says_what_it_undoes(session):
    a, b = dashboard(session), dashboard(session)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    a._name(ca, "Ada")
    b._name(cb, "Bea")
    assert a.history[-1][1] == f"name cluster {ca:03d} 'Ada'"
    undo = next(o for o in a.merge_widget().objects if "cs-undo" in o.css_classes)
    a.changed()
    assert undo.name == f"Undo: name cluster {ca:03d} 'Ada'"
    assert a.undo() == f"name cluster {ca:03d} 'Ada'"  # a's own, though b's came later
    assert session.names() == {cb: "Bea"} and a.undo() is None  # nothing of b's for a to undo
    assert b.undo() == f"name cluster {cb:03d} 'Bea'" and session.names() == {}


def test_a_correction_the_disk_refuses_is_shown_and_not_made(session, monkeypatch):
    """A full disk: each failed save is said under the status (the log, the reason, the fix),
    nothing changes and the undo stays; the next save clears the message."""
    import errno
    import html
    import os

    d = dashboard(session)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    d._name(ca, "Ada")
    choice, keep, btn, msg, _ = d.merge_widget().objects
    assert not d.save_message().visible

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fsync", full)
    d.detail()
    d.selected = cb
    d._detail.name_in.value_input = "Bea"
    d._detail.name_btn.clicks += 1
    shown = d.save_message()
    text = html.unescape(shown.object)
    assert shown.visible and "cs-save-error" in shown.css_classes
    assert f"{session.ann.path}: the correction was not saved (No space left on device)" in text
    assert session.names() == {ca: "Ada"} and d.history[-1][1] == f"name cluster {ca:03d} 'Ada'"
    choice.value = [ca, cb]
    btn.clicks += 1  # a merge is refused the same way
    assert session.summary()["clusters"] == 5 and d.save_message().visible
    assert d.undo() is None and session.names() == {ca: "Ada"}  # nor can Ada's name be taken back now
    assert d.history[-1][1] == f"name cluster {ca:03d} 'Ada'" and d.save_message().visible
    monkeypatch.undo()
    d._detail.name_btn.clicks += 1
    assert session.names() == {ca: "Ada", cb: "Bea"} and not d.save_message().visible


def test_merging_two_named_clusters_asks_which_name_to_keep(session):
    d = dashboard(session)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    d._name(ca, "Ada")
    d._name(cb, "Bea")
    choice, keep, btn, msg, _ = d.merge_widget().objects
    choice.value = [ca, cb]
    btn.clicks += 1
    assert keep.visible and keep.options == ["Ada", "Bea"] and "choose the name" in msg.object
    assert session.summary()["clusters"] == 5  # nothing merged yet
    keep.value = "Bea"
    btn.clicks += 1
    assert session.summary()["clusters"] == 4 and set(session.names().values()) == {"Bea"}
    assert choice.value == [] and not keep.visible  # the chips go once merged


def test_a_merge_from_a_suggestion_asks_which_name_to_keep_when_both_are_named(session):
    d = dashboard(session)
    ca = int(session.labels[session.truth == 0][0])
    cb = int(session.nearest_clusters(ca)["cluster"].iloc[0])
    d._name(ca, "Ada")
    d._name(cb, "Bea")
    d.detail()
    d.selected = ca
    near = d._detail.near
    button = lambda css: next(o for o in near.objects if css in getattr(o, "css_classes", []))  # noqa: E731
    assert "Bea" in button("cs-merge-near").name
    button("cs-merge-near").clicks += 1
    assert session.summary()["clusters"] == 5 and "named differently" in near.objects[0].object
    assert [o.name for o in near.objects if "cs-merge-keep-name" in o.css_classes] == ["Keep Ada", "Keep Bea"]
    button("cs-merge-cancel").clicks += 1  # back to the suggestions, nothing merged
    assert session.summary()["clusters"] == 5 and "Bea" in button("cs-merge-near").name
    button("cs-merge-near").clicks += 1
    next(o for o in near.objects if getattr(o, "name", "") == "Keep Bea").clicks += 1
    assert session.summary()["clusters"] == 4 and session.names() == {d.selected: "Bea"}
    assert d.history[-1][1] == f"merge cluster {ca:03d}, cluster {cb:03d}"


def test_people_view_sorts_and_puts_unnamed_first_or_last(session):
    d = dashboard(session)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (3, 4))
    d._name(ca, "Zed")
    d._name(cb, "Ada")
    d.param.update(people_sort="name", unnamed="last")
    assert d.people_order()["name"].tolist()[:2] == ["Ada", "Zed"]
    d.unnamed = "first"
    assert d.people_order()["name"].tolist()[-2:] == ["Ada", "Zed"]
    cards = d.people().objects[1].objects
    assert len(cards) == 5
    cards[-1].objects[1].clicks += 1  # the card's button opens the detail
    assert d.selected == ca
    assert [o.name for o in cards[-1].objects if "cs-card-open" in o.css_classes] == ["cluster %03d · 6 faces" % ca]


def test_the_map_outlines_the_open_cluster_and_names_clusters_at_their_centre(session):
    d = dashboard(session)
    c = int(session.labels[session.truth == 2][0])
    d._name(c, "Cy")
    assert d.map_view().object is not None
    labels = d.name_labels(d.points_frame())
    assert labels.data["name"].tolist() == ["Cy"]
    x, y = labels.data[["x", "y"]].iloc[0]
    assert np.hypot(*(np.median(session.layout[session.labels == c], 0) - [x, y])) < 1e-6
    assert len(d.highlight(c).data) == (session.labels == c).sum() and len(d.highlight(-1).data) == 0


def test_chosen_faces_move_to_a_person(session):
    """The gallery's selection (positions) and the Move button put faces with a named person."""
    d = dashboard(session)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    d._name(ca, "Ada")
    detail = d.detail()
    d.selected = cb  # the detail shown first, then filled for the cluster opened
    body = detail.objects[1]
    gallery = next(o for o in body.objects if type(o).__name__ == "FaceGallery")
    actions = body.objects[body.objects.index(gallery) + 1]
    name_box = next(o for o in actions.objects if "cs-move-name" in o.css_classes)
    move = next(o for o in actions.objects if "cs-move" in o.css_classes)
    assert name_box.options == ["Ada"] and body.visible and not detail.objects[0].visible
    gallery.selected = [0, 1]
    name_box.value_input = "Ada"
    move.clicks += 1
    assert (session.labels == ca).sum() == 8 and (session.labels == cb).sum() == 4
    assert d.history[-1][1] == f"move to 'Ada' 2 faces of cluster {cb:03d}"


def test_the_list_marks_the_cluster_opened_from_the_map_or_a_card(session):
    d = dashboard(session)
    table = d.cluster_table()
    c = int(session.labels[session.truth == 3][0])
    d.selected = c
    assert table.value["cluster"].iloc[table.selection[0]] == f"{c:03d}"  # spelled as on the whole page


def test_review_app_is_a_component_a_notebook_shows(session, tmp_path):
    """`ReviewApp` renders as one Bokeh model (what a JupyterLab cell displays), with the map, the
    cluster list and the sidebar; `open` shows a cluster in its detail; two apps over one session
    keep their own undo."""
    from bokeh.document import Document

    from crowdsort.review.app import ReviewApp

    app = ReviewApp(tmp_path, session=session)
    root = pn.panel(app).get_root(Document())
    kinds = {type(m).__name__ for m in root.references()}
    assert {"Tabs", "DataTabulator", "Button", "Slider"} <= kinds, kinds
    c = int(session.clusters()["cluster"].iloc[0])
    app.open(c)
    detail = app.dashboard.detail()
    assert app.dashboard.selected == c and f"Cluster {c:03d}" in detail.objects[1].objects[0].object
    other = ReviewApp(tmp_path, session=session)
    session.name(c, "Ada")
    app.dashboard.did("name Ada")
    assert other.dashboard.undo() is None and app.dashboard.undo() == "name Ada"
    assert session.names().get(c, "") == ""


def test_a_lasso_or_a_box_on_the_map_chooses_faces_and_makes_a_person_of_them(session):
    """The shape drawn on the map (in map coordinates, as Bokeh sends it) chooses the faces inside
    it; "New person" puts exactly those in a cluster of their own, undoable, and the choice goes."""
    from crowdsort.review.map_select import in_box, in_polygon

    d = dashboard(session)
    xy = session.layout
    cx, cy = np.median(xy, 0)
    triangle = np.array([[cx, cy], [xy[:, 0].max() + 1, cy], [cx, xy[:, 1].max() + 1]])
    inside = in_polygon(xy, triangle)
    # the same points by a plain half-plane test: the triangle spans the quadrant above-right of the centre
    quadrant = (xy[:, 0] > cx) & (xy[:, 1] > cy)
    assert inside.sum() >= 3 and not (inside & ~quadrant).any()
    d._on_lasso(geometry=triangle)
    assert d.map_chosen == np.flatnonzero(inside).tolist()
    view = d.map_selection()
    assert f"{inside.sum()} faces chosen on the map" in view.objects[0].object
    new = next(o for o in view.objects[2].objects if "cs-map-new-person" in o.css_classes)
    new.clicks += 1
    target = int(session.labels[inside][0])
    assert (session.labels == target).sum() == inside.sum() and (session.labels[inside] == target).all()
    assert d.history[-1][1] == f"new person from {inside.sum()} faces chosen on the map" and d.map_chosen == []
    assert d.undo() and (session.labels[inside] != target).any()

    d._on_box(bounds=(cx, cy, xy[:, 0].max() + 1, xy[:, 1].max() + 1))
    assert d.map_chosen == np.flatnonzero(in_box(xy, (cx, cy, 1e9, 1e9))).tolist() == np.flatnonzero(quadrant).tolist()
    assert "Draw a lasso" in dashboard(session).map_selection().object  # nothing chosen in a new tab


def test_opening_another_cluster_refills_the_same_widgets_and_redraws_nothing_else(session):
    """Opening a cluster changes the detail's contents, not its widgets (a click in flight lands
    on a button that still exists), and leaves the map and the list as they were (no version bump)."""
    d = dashboard(session)
    detail = d.detail()
    widgets = list(detail.objects[1].objects)
    ca, cb = (int(session.labels[session.truth == g][0]) for g in (0, 1))
    d.selected = ca
    thumbs_a, version = list(d._detail.gallery.thumbs), d.version
    table = d.cluster_table()
    d.selected = cb
    assert d.detail() is detail and list(detail.objects[1].objects) == widgets
    assert f"Cluster {cb:03d}" in d._detail.title.object and d._detail.gallery.thumbs != thumbs_a
    assert d.version == version and table.value["cluster"].iloc[table.selection[0]] == f"{cb:03d}"


def test_the_app_in_a_notebook_sends_no_link_to_an_outside_server(session, tmp_path, monkeypatch):
    """Inside JupyterLab every update goes over the kernel's comm: after the first render, opening
    a cluster, a new version and a new pane text send Panel's stylesheets as text, never as
    links to cdn.holoviz.org (Panel alone sent one such message of 19 here)."""
    import json

    import panel.io.notebook as nb

    from crowdsort.review.app import ReviewApp

    app = ReviewApp(tmp_path, session=session)
    first = json.dumps(pn.panel(app)._repr_mimebundle_(), default=str)
    assert "cdn.holoviz.org" not in first
    comm = list(pn.state._views.values())[-1][3]
    sent = []
    monkeypatch.setattr(nb, "send", lambda comm, msg: sent.append(json.dumps(msg.content, default=str)))
    monkeypatch.setattr(comm, "_comm", object())  # as if the page had opened it
    app.dashboard.detail()[1].objects[0].object = "<h3>x</h3>"
    app.open(int(session.clusters()["cluster"].iloc[0]))
    app.dashboard.version += 1
    assert len(sent) > 5 and any("stylesheets" in m for m in sent)
    assert not [m for m in sent if "cdn.holoviz.org" in m]


def test_the_rasterised_map_is_one_image_at_a_fixed_size_redrawn_on_zoom_not_on_resize(session, monkeypatch):
    """Above RASTER_MIN faces the map is an image: one at MAP_RASTER, float32 (a cluster number
    per pixel), never re-rendered to follow the plot's size (a second image per page load), but
    re-aggregated over the zoomed range."""
    import holoviews as hv
    from bokeh.models import GlyphRenderer, Image as ImageGlyph
    from holoviews.plotting.util import get_nested_streams

    import crowdsort.review.app as app

    monkeypatch.setattr(app, "RASTER_MIN", 10)
    pane = dashboard(session).map_view()
    root = pane.get_root()
    image = next(r for r in root.select({"type": GlyphRenderer}) if isinstance(r.glyph, ImageGlyph)).data_source
    first = image.data["image"][0]
    assert first.dtype == np.float32 and first.shape == app.MAP_RASTER[::-1]
    shown = set(np.unique(first[np.isfinite(first)]).astype(int))
    assert shown <= set(session.labels) and len(shown) >= 3  # the clusters' numbers, not colours
    streams = get_nested_streams(pane.object)
    assert not any(isinstance(s, hv.streams.PlotSize) for s in streams)
    xy = session.layout
    cx, cy = np.median(xy, 0)
    zoom = next(s for s in streams if isinstance(s, hv.streams.RangeXY))
    zoom.event(x_range=(cx, xy[:, 0].max()), y_range=(cy, xy[:, 1].max()))
    zoomed = image.data["image"][0]
    assert zoomed.shape == first.shape and image.data["x"][0] == pytest.approx(cx)
    assert set(np.unique(zoomed[np.isfinite(zoomed)]).astype(int)) == set(session.labels[(xy[:, 0] >= cx) & (xy[:, 1] >= cy)]) - {-2}


def test_a_card_named_in_place_keeps_its_place_and_a_suggestion_is_one_click(session, monkeypatch):
    """The people view: unnamed first, largest first; a name typed on a card (Enter) names it and
    the card stays where it was (no jump); with references, the card offers the suggested name."""
    d = dashboard(session)
    cards = d.people().objects[1].objects
    order = [c.objects[1].name for c in cards]
    box = next(o for o in cards[0].objects[2].objects if "cs-card-name" in o.css_classes)
    save = next(o for o in cards[0].objects[2].objects if "cs-card-save" in o.css_classes)
    assert save.disabled  # nothing typed: nothing to save
    box.value_input = "Ada"
    assert not save.disabled
    box.param.trigger("enter_pressed")
    assert "Ada" in session.names().values()
    after = d.people().objects[1].objects
    assert [c.objects[1].name for c in after] == order  # the named card did not move to the end
    assert after[0] is not cards[0] and all(a is b for a, b in zip(after[1:], cards[1:]))  # only it redrawn
    assert next(o for o in after[0].objects[2].objects if "cs-card-name" in o.css_classes).value == "Ada"

    import pandas as pd
    monkeypatch.setattr(session, "suggestions", lambda c, n=3: pd.DataFrame(
        {"label": ["Bea", "Cy"], "distance": [0.2, 0.3], "suggested": [True, False]}))
    d = dashboard(session)  # a page opened with references
    cards = d.people().objects[1].objects
    accept = [o for c in cards for o in c.objects if "cs-card-accept" in o.css_classes]
    assert len(accept) == 4 and accept[0].name == "Accept: Bea"  # the unnamed ones only
    accept[0].clicks += 1
    assert sorted(session.names().values()) == ["Ada", "Bea"]


def test_people_come_a_page_at_a_time(session, monkeypatch):
    import crowdsort.review.app as app

    monkeypatch.setattr(app, "PEOPLE_PAGE", 2)
    d = dashboard(session)
    view = d.people()
    assert len(view.objects[1].objects) == 2
    nav = view.objects[0].objects
    prev, nxt = (next(o for o in nav if css in o.css_classes) for css in ("cs-people-prev", "cs-people-next"))
    assert prev.disabled and not nxt.disabled and "page 1 of 3 · 1–2 of 5 clusters" in nav[-1].object
    nxt.clicks += 1
    assert d.people_page == 2
    d.people_page = 3
    view = d.people()
    assert len(view.objects[1].objects) == 1 and next(o for o in view.objects[0].objects
                                                      if "cs-people-next" in o.css_classes).disabled


def test_buttons_are_disabled_while_they_cannot_act_and_counts_are_plural(session):
    from crowdsort.review.app import plural

    assert (plural(1, "faces"), plural(2, "faces"), plural(0, "clusters"), plural(1, "clusters")) == (
        "1 face", "2 faces", "0 clusters", "1 cluster")
    d = dashboard(session)
    choice, keep, btn, msg, undo = d.merge_widget().objects
    assert btn.disabled and undo.disabled
    choice.value = [int(session.clusters()["cluster"].iloc[0])]
    assert btn.disabled
    choice.value = session.clusters()["cluster"].iloc[:2].astype(int).tolist()
    assert not btn.disabled and btn.name == "Merge 2 clusters"
    detail = d.detail()
    d.selected = int(session.clusters()["cluster"].iloc[0])
    reject, notface, to, move, new = d._detail.actions
    assert reject.disabled and notface.disabled and move.disabled and new.disabled and d._detail.name_btn.disabled
    d._detail.gallery.selected = [0, 1]
    assert not reject.disabled and not new.disabled and move.disabled  # no name typed
    to.value_input = "Ada"
    assert not move.disabled
    reject.clicks += 1
    assert d.history[-1][1] == f"reject 2 faces of cluster {d.selected:03d}"
    assert "Draw a lasso on the map to choose faces there" in d.map_selection().object
    assert "to the right of the map" in d.map_selection().object
    assert detail is d.detail()


def test_the_review_is_driven_by_keys(session, monkeypatch):
    """n opens the next cluster of the queue, x rejects the faces chosen in it, u undoes, a
    accepts the suggestion: the suggested name for the open cluster, else the first noise face
    goes to the person beside it."""
    import pandas as pd

    from crowdsort.review.app import KeyboardReview

    assert {"n", "a", "x", "u"} <= set(KeyboardReview._scripts["render"].split("new Set(")[1].split(")")[0][1:-1]
                                       .replace('"', "").split(", "))
    d = dashboard(session)
    d.detail()
    first, second = session.clusters()["cluster"].iloc[:2].astype(int)
    d.on_key("n")
    assert d.selected == first and d.key_message == f"n: opened cluster {first:03d}"
    d.on_key("n")
    assert d.selected == second
    d.on_key("x")
    assert "choose faces" in d.key_message and not d.history
    size = (session.labels == second).sum()
    d._detail.gallery.selected = [0, 1]
    d.on_key("x")
    assert (session.labels == second).sum() == size - 2 and d.history[-1][1] == f"reject 2 faces of cluster {second:03d}"
    d.on_key("u")
    assert (session.labels == second).sum() == size and not d.history and d.key_message.startswith("u: undid reject")
    d.on_key("a")  # nobody named, no references: nothing to accept
    assert "no suggestion" in d.key_message and not d.history
    monkeypatch.setattr(session, "suggestions", lambda c, n=3: pd.DataFrame(
        {"label": ["Bea"], "distance": [0.2], "suggested": [True]}))
    d.on_key("a")
    assert session.names() == {second: "Bea"} and d.history[-1][1] == f"name cluster {second:03d} 'Bea'"
    face = session.ids[session.members(first)[0]]  # as if it were a noise face beside Bea
    monkeypatch.setattr(session, "noise_to_review", lambda: pd.DataFrame(
        {"row": [0], "item_id": [face], "cluster": [second], "name": ["Bea"], "distance": [0.3], "likely": [False]}))
    d.on_key("a")  # too far to be Bea: not added by a key
    assert "probably someone else" in d.key_message and d.history[-1][1] == f"name cluster {second:03d} 'Bea'"
    monkeypatch.setattr(session, "noise_to_review", lambda: pd.DataFrame(
        {"row": [0], "item_id": [face], "cluster": [second], "name": ["Bea"], "distance": [0.3], "likely": [True]}))
    d.on_key("a")  # the open cluster is named: the first noise face goes to the person beside it
    assert d.history[-1][1] == "move to 'Bea' 1 face from noise"


def test_a_thousand_people_come_a_page_at_a_time(session, monkeypatch):
    """1,000 clusters: the people view draws one page of cards, not 1,000 (its time is measured
    by benchmarks/bench_thousand_people.py, not asserted here)."""
    import crowdsort.review.app as app

    d = dashboard(session)
    monkeypatch.setattr(app, "card_thumb", lambda s, row: "data:,")
    rng = np.random.default_rng(1)
    n = 2000
    X = rng.normal(size=(n, 32)).astype(np.float32)
    session.X, session.ids = X / np.linalg.norm(X, axis=1, keepdims=True), np.array([f"g{i}" for i in range(n)], object)
    session.labels = np.repeat(np.arange(1000), 2)
    session.table = session.table.iloc[np.zeros(n, int)].reset_index(drop=True)
    d.changed()
    view = d.people()
    assert len(view.objects[1].objects) == app.PEOPLE_PAGE and "page 1 of 42" in view.objects[0].objects[-1].object


def test_faces_that_may_be_this_person_are_chosen_and_added_with_one_button(session):
    """The open cluster shows the noise faces nearest it within the threshold, none chosen; the
    button counts the chosen ones (disabled at none) and adds them (undoable); the one left out
    is offered still."""
    d = dashboard(session)
    strays = np.flatnonzero(session.truth == 1)[:3]
    session.raw_labels[strays] = -1  # as a clustering that left three of person 1's faces in noise
    session._apply()
    d.changed()
    cb = int(session.labels[np.flatnonzero(session.truth == 1)[3]])
    d.detail()
    d.selected = cb
    likely = d._detail.likely
    assert likely.panel.visible and sorted(likely.rows) == sorted(strays)
    assert "3 in noise within the model's threshold" in likely.title.object
    assert likely.gallery.selected == [] and likely.gallery.toggle and likely.add.disabled
    likely.gallery.selected = [0, 2]  # a click on each
    assert likely.add.label == f"Add 2 to cluster {cb:03d}"
    left_out = likely.rows[1]
    likely.add.clicks += 1
    assert (session.labels[strays] == cb).sum() == 2 and session.labels[left_out] == -1
    assert d.history[-1][1] == f"add 2 faces to cluster {cb:03d}" and d.selected == cb
    assert likely.rows.tolist() == [left_out] and likely.add.disabled  # offered still, not chosen
    assert likely.add.label == f"Add the chosen to cluster {cb:03d}"
    d.undo()
    assert (session.labels[strays] == -1).all()


def test_the_queue_adds_rows_ticked_on_several_pages_with_one_button_and_one_undo(session, monkeypatch):
    """Noise rows are ticked page by page (the ticks stay while the pages turn); one button adds
    each to the person beside it, one correction, one undo; the button is disabled at no tick."""
    import crowdsort.review.app as app

    monkeypatch.setattr(app, "QUEUE_NOISE", 2)
    d = dashboard(session)
    strays = np.concatenate([np.flatnonzero(session.truth == g)[:2] for g in (1, 2)])
    session.raw_labels[strays] = -1
    session._apply()
    homes = {g: int(session.labels[np.flatnonzero(session.truth == g)[-1]]) for g in (1, 2)}
    d._name(homes[1], "Bea")
    d._name(homes[2], "Cy")
    bar = d.queue_ticks_bar().objects[0]
    assert bar.disabled and "tick rows first" in bar.label

    def page_rows():
        return [o for o in d.review_queue().objects if isinstance(o, pn.FlexBox)]
    first = page_rows()
    assert len(first) == 2 and d.queue_page == 1
    first[0].objects[0].value = True  # the tick
    d.queue_page = 2
    second = page_rows()
    assert {r.objects[0].value for r in second} == {False}  # another page's rows
    second[0].objects[0].value = True
    assert len(d.queue_ticked) == 2
    d.queue_page = 1
    assert page_rows()[0].objects[0].value  # still ticked on coming back
    bar = d.queue_ticks_bar().objects[0]
    assert bar.label == "Add the 2 ticked to the people beside them" and not bar.disabled
    queue = session.noise_to_review()
    ticked = dict(d.queue_ticked)
    bar.clicks += 1
    for item, name in ticked.items():
        assert session.names()[session.cluster_of(item)] == name
    assert d.queue_ticked == {} and len(session.noise_to_review()) == len(queue) - 2
    assert d.history[-1][1].startswith("add 2 faces from noise to ")
    assert d.undo().startswith("add 2 faces from noise")
    assert all(session.labels[session.ids == item][0] == -1 for item in ticked)


def test_a_face_chosen_on_the_map_offers_the_faces_like_it_and_one_move_names_them_all(session):
    """A noise face boxed on the map: "Faces like these" shows the rest of its person in noise,
    none chosen; those clicked go with it when it is moved to a typed name (one correction)."""
    d = dashboard(session)
    dee = np.flatnonzero(session.truth == 3)[:3]
    session.raw_labels[np.flatnonzero(session.truth == 3)] = -1  # the whole person in noise
    session._apply()
    d.changed()
    d.map_chosen = [int(dee[0])]
    view = d.map_selection()
    like = next(o for o in view.objects if "cs-like" in o.css_classes)
    assert len(like.thumbs) == 5 and like.selected == [] and like.toggle  # the person's other 5 faces
    like.selected = [0, 1]
    count = view.objects[0]
    assert count.object.endswith("and 2 like them")
    to, move = (next(o for o in view.objects[2].objects if f"cs-map-{k}" in o.css_classes) for k in ("move-name", "move"))
    to.value_input = "Dee"
    move.clicks += 1
    c = session.cluster_of(session.ids[dee[0]])
    assert session.names()[c] == "Dee" and (session.labels == c).sum() == 3
    assert d.history[-1][1] == "move to 'Dee' 3 faces chosen on the map"
