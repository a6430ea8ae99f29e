"""The review app: see, tune, name and export clusters, in the browser or inside JupyterLab.

    from crowdsort.review.app import ReviewApp
    ReviewApp("my-dataset")                 # a notebook cell: the app, inline
    ReviewApp("my-dataset").template()      # the full page (dashboard/app.py serves this)

A thin param-driven layer over :class:`crowdsort.review.session.ReviewSession`: the vectors, kNN graph
and UMAP map are loaded once per process (and stored in the dataset); widgets only re-cluster
on the cached graph and redraw. :class:`Dashboard` holds one viewer's state (its own undo),
so several tabs or notebooks can share one session.
"""
from __future__ import annotations

import base64
import functools
import html
import io
import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import param

from ..storage.export import unnamed_label
from ..storage.images import thumbnail_jpeg
from .notebook_offline import keep_offline
from .opening import open_image_review, open_review
from ..pipeline import cluster_params, default_algorithm, model_cluster_params
from .session import NOT_FACE, NameConflict

# inline in a notebook: there Panel would fetch Bokeh's and its own scripts from their CDNs
# (offline, the app shows nothing; online, the page tells them who looks at it); a server serves its own
_served = pn.state.curdoc is not None and pn.state.curdoc.session_context is not None
pn.extension("tabulator", notifications=True, inline=not _served)
if not _served:
    keep_offline()
hv.extension("bokeh", inline=not _served)  # HoloViews would load Panel again from the CDN

HOVER_THUMBS_MAX = 5000  # above this the hover shows no picture (payload); above RASTER_MIN the map rasterises
RASTER_MIN = 100_000
MAP_RASTER = (640, 480)  # the rasterised map's pixels, about its size on a laptop screen
GALLERY_MAX = 48
TRACK_STRIP = 12  # faces of a track shown over its time
TABLE_PAGE = 100  # clusters per page of the list
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354", "#756bb1",
           "#636363", "#9c9ede", "#cedb9c", "#e7969c", "#de9ed6", "#6baed6", "#fd8d3c", "#74c476"]
NOISE_COLOR = "#cfcfcf"
MAP_CHOSEN_SHOWN = 24  # faces shown of a lasso's choice
LIKELY_MAX = 24  # "Faces that may be this person" shown at a time (and "Faces like these")
LIKE_FROM_MAX = 200  # "Faces like these" is offered for a map choice up to this size (a person, not a region)
CHOOSE_TOOLS = ["lasso_select", "box_select"]
ANSWERS = ["selected", "version", "map_chosen", "queue_opened", "queue_left", "queue_page", "queue_ticked",
           "people_page", "people_sort",
           "unnamed", "save_error"]  # the Dashboard params a click changes: each change answers it
MERGE_LISTED = 50  # clusters the merge box's drop-down shows at a time
MERGE_OPTIONS = 1000  # clusters the merge box offers besides the named ones (the largest)
QUEUE_NOISE = 8  # noise items offered at a time
PEOPLE_PAGE = 24  # cards per page of the people view
CARD_FACES = 4  # prototypes shown on a card
SLIDERS = {  # the parameters each algorithm reads (params_for_algorithm): only these are shown
    "hdbscan": ["min_cluster_size", "min_samples"], "dbscan": ["eps", "min_samples"],
    "rnn-dbscan": ["n_neighbors"], "snn-whispers": ["eps", "min_cluster_size"]}
WORDS = {  # what the items are called, by ReviewSession.kind
    "faces": {"items": "faces", "name": "name this person", "exclude": "Not a face", "view": "Source photo of"},
    "images": {"items": "images", "name": "name this group", "exclude": "Exclude", "view": "Larger view of"},
}

SINGULAR = {"faces": "face", "images": "image", "clusters": "cluster", "people": "person"}
KEYS = [("n", "open the next cluster to review"), ("a", "accept the suggestion"),
        ("x", "reject the chosen faces"), ("u", "undo")]  # the review's keys (KeyboardReview)


def page_of(n: int, wanted: int, size: int) -> tuple[int, int, slice]:
    """``(page, pages, rows)`` of ``n`` rows shown ``size`` a page: the ``wanted`` page (from 1)
    held to the last one (rows leave as they are placed), counted from 0, and its rows."""
    pages = max(1, -(-n // size))
    page = min(wanted, pages) - 1
    return page, pages, slice(page * size, min((page + 1) * size, n))


def plural(n: int, words: str) -> str:
    """``1 face``, ``2 faces``: ``words`` is the plural (faces, images, clusters)."""
    return f"{n} {SINGULAR.get(words, words) if n == 1 else words}"


def cluster_label(c: int, name: str = "") -> str:
    """The one spelling of a cluster on the page, as the exports name its folder and labels:
    ``cluster 007``, followed by its name where it has one (``cluster 007 — Ada``)."""
    return unnamed_label(int(c)) + (f" — {name}" if name else "")


def capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def text_html(text: str, tag: str = "div", **params) -> pn.pane.HTML:
    """Names, file names, paths and error messages come from users and disks: shown as text, never
    run as markup (Markdown panes pass HTML through)."""
    return pn.pane.HTML(f"<{tag}>{html.escape(str(text))}</{tag}>", **params)


log = logging.getLogger(__name__)
_refused: set[str] = set()  # files already said in the log: once each, not per redraw


def viewable(session, path: str) -> str:
    """``path``, or "" (shown as a grey square) for a file the session's dataset does not hold
    (:class:`paths.DatasetFiles`): a crop replaced by a link out of the dataset, or a path edited
    in a table, is never served to the page. A session made by hand (no ``files``) shows its own."""
    files = getattr(session, "files", None)
    if files is None or files.allows(path):
        return path
    if path not in _refused:
        _refused.add(path)
        log.warning("not shown: %s", files.why_not(path))
    return ""


def thumbnail_uri(path: str, size: int = 64) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(path, size)).decode()


@functools.lru_cache(maxsize=4096)
def likely_thumb(path: str) -> str:
    """A face of "Faces that may be this person": the same ones come back after each correction
    to the open cluster (decoding 24 took about 100 ms of each opening on lfw-dev)."""
    return thumbnail_uri(path, 96)


def hover_thumbs(session) -> list[str] | None:
    """Hover pictures for the map, made once per server process and shared by every tab."""
    if len(session.ids) > HOVER_THUMBS_MAX:
        return None
    key = ("crowdsort-thumbs", id(session))
    if key not in pn.state.cache:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(4) as pool:  # decoding releases the GIL
            pn.state.cache[key] = list(pool.map(lambda p: thumbnail_uri(viewable(session, p), 48),
                                                session.table["crop_path"]))
    return pn.state.cache[key]


def face_imgs(session, rows, size: int = 48) -> str:
    """``<img>`` tags of these rows' faces, side by side."""
    return "".join(f'<img src="{card_thumb(session, int(r))}" width="{size}" height="{size}" style="margin:1px">'
                   for r in rows)


def card_thumb(session, row: int) -> str:
    """A card's face, shared by every tab (a page of cards would otherwise decode 96 crops per redraw)."""
    thumbs = hover_thumbs(session)
    if thumbs is not None:
        return thumbs[row]
    key = ("crowdsort-card", id(session), row)
    if key not in pn.state.cache:
        pn.state.cache[key] = thumbnail_uri(viewable(session, session.table["crop_path"].iloc[row]), 48)
    return pn.state.cache[key]


class BusyGuard(pn.reactive.ReactiveHTML):
    """A "working…" badge from a click until the server has answered it, and no lost clicks.

    A click on a button, a list row or the map starts the badge; a click made meanwhile would
    land on a button the answer is about to replace (and vanish with it), so it is held and
    made again, at the same place on the page, once the answer is drawn (a Split pressed right
    after opening a cluster splits the cluster just opened). ``ack`` is bumped by the server
    with each change a click makes (see ANSWERS), and when it has processed the browser's
    events (for a click that changed nothing)."""

    ack = param.Integer(default=0)

    _template = ('<div id="badge" class="cs-busy" style="display:none;position:fixed;top:12px;left:50%;'
                 'z-index:10000;background:#333;color:#fff;padding:4px 12px;border-radius:12px;'
                 'font-size:13px">working…</div>')
    _scripts = {
        "render": """
          state.busy = false; state.held = [];
          state.show = (on) => {
            state.busy = on;
            badge.style.display = on ? 'block' : 'none';
            document.body.style.cursor = on ? 'progress' : '';
            clearTimeout(state.timer);
            if (on) state.timer = setTimeout(() => state.done(), 8000);  // an answer that never came
          };
          state.actionable = (path) => path.some((el) => el.tagName === 'BUTTON' || el.tagName === 'CANVAS' ||
              (el.classList && (el.classList.contains('tabulator-row') || el.classList.contains('tabulator-cell'))));
          state.deepest = (x, y) => {
            let el = document.elementFromPoint(x, y);
            while (el && el.shadowRoot) {
              const inner = el.shadowRoot.elementFromPoint(x, y);
              if (!inner || inner === el) break;
              el = inner;
            }
            return el;
          };
          state.all = (root, sel, out = []) => {  // through Bokeh's shadow roots, in page order
            for (const el of root.querySelectorAll('*')) {
              if (el.matches(sel)) out.push(el);
              if (el.shadowRoot) state.all(el.shadowRoot, sel, out);
            }
            return out;
          };
          state.target = (held) => {
            if (held.cls) {  // the same widget of the redrawn view: the nth with the same class
              const host = state.all(document, '.' + held.cls)[held.nth];
              return host ? (host.shadowRoot || host).querySelector('button') : null;
            }
            const el = state.deepest(held.x, held.y);  // a row of the list (or a button without a class): what is now there
            return el && el.closest ? el.closest('button, .tabulator-cell, .tabulator-row') : null;
          };
          state.replay = (held, waited = 0) => {
            // the clicked element itself where the answer kept it; else its successor, which may
            // be drawn a little after the answer arrives
            const target = held.origin.isConnected ? held.origin.closest('button, .tabulator-cell, .tabulator-row')
                                                   : state.target(held);
            if (!target && waited < 2500) {
              setTimeout(() => state.replay(held, waited + 50), 50);
              return;
            }
            if (target && !target.disabled) {
              target.click();
            } else {
              state.done();
            }
          };
          state.done = () => {
            state.show(false);
            const next = state.held.shift();
            if (next) { state.show(true); state.replay(next); }
          };
          document.addEventListener('click', (ev) => {
            // a person's clicks only: a widget's own (a download's second step) and the replays pass
            if (!ev.isTrusted) return;
            const path = ev.composedPath();
            if (!state.actionable(path)) return;
            if (state.busy) {
              ev.stopImmediatePropagation(); ev.preventDefault();
              if (path.some((e) => e.tagName === 'CANVAS')) return;  // a tap on a map being redrawn: its place means nothing now
              const cell = path.find((e) => e.classList && e.classList.contains('tabulator-cell'));
              const host = cell ? null : path.find((e) => e.classList && [...e.classList].some((c) => c.startsWith('cs-')));
              const cls = host ? [...host.classList].find((c) => c.startsWith('cs-')) : null;
              const held = {x: ev.clientX, y: ev.clientY, origin: cell || path[0], cls: cls,
                            nth: cls ? state.all(document, '.' + cls).indexOf(host) : -1};
              if (state.held.length < 3) state.held.push(held);
              return;
            }
            state.show(true);
          }, true);
        """,
        "ack": "setTimeout(() => state.done(), 30)",  # the answer's views drawn first
    }

    def __init__(self, **params):
        super().__init__(**params)
        # per page: pn.state.busy is the server's; an answer to another tab only ends this badge early
        watcher = pn.state.param.watch(lambda e: None if e.new else self.param.update(ack=self.ack + 1), "busy")
        doc = pn.state.curdoc
        if doc is not None and doc.session_context is not None:  # served: the page's watcher goes with it
            doc.on_session_destroyed(lambda ctx: pn.state.param.unwatch(watcher))


class FaceGallery(pn.reactive.ReactiveHTML):
    """A cluster's thumbnails, chosen by click: a click picks one (again: none), shift adds the run
    from the last click, ctrl or cmd adds or removes one. ``selected`` holds gallery positions.
    Captions and titles are set as text (file names come from disks)."""

    thumbs = param.List(doc="data: URIs")
    captions = param.List()
    titles = param.List()
    selected = param.List()
    toggle = param.Boolean(default=False, doc="a plain click adds or removes one (a choice made for the person)")

    _template = '<div id="gallery" class="cs-gallery" style="display:flex;flex-wrap:wrap"></div>'
    _scripts = {
        "render": """
          state.last = null;
          state.draw = () => {
            const chosen = new Set(data.selected);
            gallery.replaceChildren(...data.thumbs.map((src, i) => {
              const fig = document.createElement('figure');
              fig.className = 'cs-face' + (chosen.has(i) ? ' cs-chosen' : '');
              fig.style.cssText = 'margin:2px;padding:1px;cursor:pointer;border:3px solid ' +
                                  (chosen.has(i) ? '#d62728' : 'transparent');
              const img = document.createElement('img');
              img.src = src; img.width = 96; img.height = 96; img.title = data.titles[i] || '';
              const cap = document.createElement('figcaption');
              cap.textContent = data.captions[i] || ''; cap.style.fontSize = '10px';
              fig.append(img, cap);
              fig.addEventListener('click', (ev) => state.pick(i, ev));
              return fig;
            }));
          };
          state.pick = (i, ev) => {
            let sel = data.selected.slice();
            if (ev.shiftKey && state.last !== null) {
              for (let k = Math.min(state.last, i); k <= Math.max(state.last, i); k++)
                if (!sel.includes(k)) sel.push(k);
            } else if (ev.ctrlKey || ev.metaKey || data.toggle) {
              sel = sel.includes(i) ? sel.filter((k) => k !== i) : sel.concat([i]);
            } else {
              sel = (sel.length === 1 && sel[0] === i) ? [] : [i];
            }
            state.last = i;
            data.selected = sel.sort((a, b) => a - b);
          };
          state.draw();
        """,
        # refilled for another cluster, its fields may arrive one by one: each redraws
        "selected": "state.draw()",
        "thumbs": "state.draw()",
        "captions": "state.draw()",
        "titles": "state.draw()",
    }



class KeyboardReview(pn.reactive.ReactiveHTML):
    """The review's keys (:data:`KEYS`), shown as a line of text, heard anywhere on the page but
    in a text box (typing a name is not a command). ``key`` is the last one pressed; ``presses``
    counts them, so the same key twice is two changes."""

    key = param.String(default="")
    presses = param.Integer(default=0)
    reveal = param.Integer(default=0, doc="bumped to bring the open cluster's detail into view")

    _template = ('<div id="keyhelp" class="cs-keys" style="font-size:12px;color:#555">Keys: '
                 + " · ".join(f"<kbd>{k}</kbd> {html.escape(what)}" for k, what in KEYS) + "</div>")
    _scripts = {
        "render": """
          const wanted = new Set(%s);
          if (window._csKeys) document.removeEventListener('keydown', window._csKeys);  // a redrawn page: one listener
          window._csKeys = (ev) => {
            if (ev.ctrlKey || ev.metaKey || ev.altKey || !wanted.has(ev.key)) return;
            const el = ev.composedPath()[0];
            if (el && (el.isContentEditable || ['INPUT', 'TEXTAREA', 'SELECT'].includes(el.tagName))) return;
            ev.preventDefault();
            data.key = ev.key;
            data.presses = data.presses + 1;
          };
          document.addEventListener('keydown', window._csKeys);
          state.find = (root) => {  // the detail's title, through Bokeh's shadow roots
            for (const el of root.querySelectorAll('*')) {
              if (el.classList.contains('cs-detail-title')) return el;
              const inner = el.shadowRoot ? state.find(el.shadowRoot) : null;
              if (inner) return inner;
            }
            return null;
          };
        """ % json.dumps([k for k, _ in KEYS]),
        "reveal": """
          setTimeout(() => { const t = state.find(document); if (t) t.scrollIntoView({block: 'start', behavior: 'smooth'}); }, 100);
        """,
    }


def saves(method):
    """A :class:`Dashboard` method that saves a correction, run by :meth:`Dashboard.saving`."""
    @functools.wraps(method)
    def run(self, *args, **kwargs):
        return self.saving(functools.partial(method, self))(*args, **kwargs)
    return run


class Dashboard(param.Parameterized):
    """State of one browser session; the views below depend on its parameters."""

    algorithm = param.Selector(default="hdbscan", objects=["snn-whispers", "hdbscan", "rnn-dbscan", "dbscan"])
    min_cluster_size = param.Integer(default=2, bounds=(2, 50), doc="HDBSCAN: smallest cluster")
    min_samples = param.Integer(default=1, bounds=(1, 20), doc="HDBSCAN / DBSCAN: density")
    n_neighbors = param.Integer(default=5, bounds=(2, 15), doc="RNN-DBSCAN: K")
    eps = param.Number(default=0.06, bounds=(0.01, 1.0), step=0.005,
                       doc="snn-whispers: threshold; DBSCAN: cosine radius")
    selected = param.Integer(default=-1, doc="cluster shown in the detail panel")
    version = param.Integer(default=0, doc="bumped after every change of labels or names")
    people_sort = param.Selector(default="size", objects=["size", "name"], label="Sort people by")
    unnamed = param.Selector(default="first", objects=["first", "last"], label="Unnamed")
    people_page = param.Integer(default=1, bounds=(1, None), label="Page")
    queue_opened = param.List(doc="clusters this tab's review queue has opened (not offered again)")
    queue_left = param.List(doc="noise items this tab chose to leave in noise")
    queue_page = param.Integer(default=1, bounds=(1, None), doc="the page of the review queue's noise rows shown")
    queue_ticked = param.Dict(default={}, doc="noise items ticked in the review queue: item id → the name beside it")
    map_chosen = param.List(doc="rows chosen on the map with the lasso or the box (cleared by every change)")
    save_error = param.String(default="", doc="why the last correction was not saved; '' once one is")
    key_message = param.String(default="", doc="what the last key of the review did, or why it did nothing")
    reveal = param.Integer(default=0, doc="bumped when a card or the review opens a cluster: the page shows its detail")
    map_ready = param.Boolean(default=True, doc="False while the session's map is computed (session.map_job)")

    def __init__(self, session, **params):
        params.setdefault("algorithm", default_algorithm(session.model, session.kind))
        # the slider starts at the model's measured cut and moves the mutual cut with it
        snn = model_cluster_params(session.model, "snn-whispers") if session.kind == "faces" else {}
        params.setdefault("eps", snn.get("threshold", 0.06))
        super().__init__(**params)
        self._snn = snn
        self.s = session
        self.words = WORDS[session.kind]
        self._colours: dict[int, int] = {}  # cluster id → palette index, kept across corrections
        self.last_recluster_s = 0.0
        self.history: list[tuple[str, str]] = []  # this tab's corrections (id, what it did): its own undo
        self._table = None  # the cluster list drawn last: its row follows the open cluster
        self._detail = None  # the detail's widgets, once shown
        self._people = None  # (what it was made for, cluster ids): the cards' order
        self._people_view = self._people_nav = None  # the people tab's view, made at its first showing
        self._cards: dict = {}  # the cards shown, by (cluster, size, name, members): kept while unchanged
        self._shown = np.array([], int)  # the rows its gallery shows
        self._map_wait = None  # the Map tab's progress while the map is computed
        self._min_samples_bounds()
        self.recluster()
        self.map_ready = session.layout is not None
        if session.map_job is not None and not self.map_ready:
            self._follow_map(session.map_job)

    def _follow_map(self, job) -> None:
        """Show how far the map is, and the map once done: ``job`` tells us from its own thread;
        a served page's widgets are then changed on its server's loop (Bokeh's way), never from there."""
        doc = pn.state.curdoc if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None else None

        def apply(job=job):
            self._show_map_progress(job)
            if job.done.is_set():
                self.map_ready = job.layout is not None

        def news(job):
            if doc is None:
                apply()
                return
            try:
                doc.add_next_tick_callback(apply)
            except Exception:  # noqa: BLE001 (the page was closed: Bokeh refuses callbacks of a dead document)
                job.forget(news)
        if doc is not None:
            doc.on_session_destroyed(lambda ctx: job.forget(news))
        job.listen(news)

    @param.depends("algorithm", watch=True)
    def _min_samples_bounds(self):
        # DBSCAN needs min_samples ≥ 2: the slider's range says so, rather than showing 1 while 2 is used
        low = 2 if self.algorithm == "dbscan" else 1
        self.param.min_samples.bounds = (low, 20)
        if self.min_samples < low:
            self.min_samples = low

    # -- actions ------------------------------------------------------------------------------
    def params_for_algorithm(self) -> dict:
        if self.algorithm == "hdbscan":
            return {"min_cluster_size": self.min_cluster_size, "min_samples": self.min_samples}
        if self.algorithm == "rnn-dbscan":
            return cluster_params("rnn-dbscan", knn=self.n_neighbors)
        if self.algorithm == "snn-whispers":  # the slider moves both cuts, keeping their measured gap
            gap = self._snn.get("mutual_threshold", 0.07) - self._snn.get("threshold", 0.06)
            return {**self._snn, "threshold": self.eps, "mutual_threshold": round(self.eps + gap, 4),
                    "min_cluster_size": self.min_cluster_size}
        return {"eps": self.eps, "min_samples": max(2, self.min_samples)}

    @param.depends("algorithm", "min_cluster_size", "min_samples", "n_neighbors", "eps", watch=True)
    def recluster(self):
        t = time.perf_counter()
        self.s.recluster(self.algorithm, self.params_for_algorithm())
        self.last_recluster_s = time.perf_counter() - t
        self.changed(-1)

    def saving(self, correction):
        """``correction`` (an action that saves one), said in ``save_error`` when the disk refuses
        the save (full, read-only, forbidden): the session is then unchanged, and without this the
        page showed nothing while the server's log got a traceback. The next save clears it."""
        @functools.wraps(correction)
        def run(*args, **kwargs):
            try:
                out = correction(*args, **kwargs)
            except OSError as err:
                self.save_error = str(err)
                return None
            self.save_error = ""
            return out
        return run

    def did(self, what: str) -> None:
        """Remember the correction just made, for this tab's undo."""
        if self.s.last_op:
            self.history.append((self.s.last_op, what))

    @saves
    def undo(self) -> str | None:
        """Take back this tab's last correction (never another tab's); what it undid, or None."""
        while self.history:
            op, what = self.history[-1]
            undone = self.s.undo(op)  # one it could not save stays in the history
            self.history.pop()
            if undone:
                self.changed()
                return what
        return None

    def changed(self, selected: int | None = None):
        """After a change of labels or names. (Opening a cluster sets ``selected`` alone: only the
        detail, the list's mark and the map's outline follow it, where a version bump would redraw
        and resend the whole map and list.)"""
        # one batched update: views depending on both are redrawn once, not twice (a second redraw
        # would replace the name box while someone types in it)
        # the map is drawn again without the lasso's marks: what stays chosen is what is shown
        self.param.update(version=self.version + 1, map_chosen=[], **({} if selected is None else {"selected": selected}))

    # -- data for the views ---------------------------------------------------------------------
    def colours(self, labels: np.ndarray) -> np.ndarray:
        """Each point's colour: its cluster's, never a neighbouring cluster's on the map."""
        from crowdsort.review.map_colors import neighbour_colours

        self._colours = neighbour_colours(labels, self.s.layout, len(PALETTE), self._colours)
        return np.array([PALETTE[self._colours[c]] if c >= 0 else NOISE_COLOR for c in labels], dtype=object)

    def points_frame(self) -> pd.DataFrame:
        lab = self.s.labels
        names = self.s.names()
        df = pd.DataFrame({"x": self.s.layout[:, 0], "y": self.s.layout[:, 1], "cluster": lab,
                           "name": [names.get(c, "") for c in lab]})
        if len(lab) < RASTER_MIN:  # the rasterised map colours by cluster value, not by these
            df["color"] = self.colours(lab)
            spelled = {c: cluster_label(c, names.get(c, "")) for c in np.unique(lab)}  # as the page spells it
            df["label"] = [spelled[c] for c in lab]
        thumbs = hover_thumbs(self.s)
        if thumbs is not None:
            df["thumb"] = thumbs
        return df[lab != NOT_FACE]

    # -- views ------------------------------------------------------------------------------------
    @param.depends("version")
    def status(self):
        m = self.s.summary()
        params = ", ".join(f"{k}={v}" for k, v in self.params_for_algorithm().items())
        return pn.pane.Markdown(
            f"{self.algorithm} ({params}): {plural(m['clusters'], 'clusters')}, noise {m['noise']} of {m['items']} "
            f"({100 * m['noise_share']:.1f}%) · re-clustered in {1000 * self.last_recluster_s:.0f} ms",
            css_classes=["cs-status"], name="status")

    @param.depends("save_error")
    def save_message(self):
        return text_html(self.save_error, css_classes=["cs-save-error"], visible=bool(self.save_error),
                         styles={"color": "#b00020"})

    def map_waiting(self) -> pn.Column:
        """The Map tab while the map is computed: what it is doing, and a bar."""
        if self._map_wait is None:
            note = pn.pane.HTML("", css_classes=["cs-map-progress"], sizing_mode="stretch_width")
            bar = pn.indicators.Progress(value=-1, max=100, active=True, width=320, css_classes=["cs-map-bar"])
            self._map_wait = SimpleNamespace(note=note, bar=bar, panel=pn.Column(note, bar, sizing_mode="stretch_width"))
        job = self.s.map_job
        if job is not None:
            self._show_map_progress(job)
        return self._map_wait.panel

    def _show_map_progress(self, job) -> None:
        w = self._map_wait
        if w is None:  # the Map tab not opened yet: nothing shows it
            return
        w.note.object = html.escape(job.words())
        failed = job.done.is_set() and job.layout is None
        # indeterminate until UMAP's optimisation starts (its first seconds compile and prepare)
        w.bar.param.update(value=int(100 * job.fraction) if job.fraction > 0 else -1,
                           active=not job.done.is_set() and job.fraction == 0, visible=not failed)

    @param.depends("version", "map_ready")
    def map_view(self):
        from bokeh.models import HoverTool

        if self.s.layout is None:  # computed in the background (session.map_job): its progress meanwhile
            if self.s.map_job is not None:
                self.s.map_job.release()  # someone waits for it now
            return self.map_waiting()
        df = self.points_frame()
        vdims = [c for c in ("cluster", "name", "color", "thumb", "label") if c in df]
        points = hv.Points(df, ["x", "y"], vdims)
        raster = len(self.s.labels) >= RASTER_MIN  # as points_frame decided (its rows less the non-faces)
        if raster:
            import datashader as ds
            from holoviews.operation.datashader import dynspread, rasterize

            # a fixed resolution, re-aggregated on zoom only: following the plot's size costs a
            # second render and a second image on every page load (1.2 s at 100k faces)
            raster = rasterize(points, aggregator=ds.max("cluster"), width=MAP_RASTER[0], height=MAP_RASTER[1],
                               streams=[hv.streams.RangeXY])
            # float32 holds every cluster number exactly and halves the image datashader sends;
            # spread by max: the default adds overlapping pixels, and 3 + 3 would draw cluster 6
            plot = dynspread(raster, how="max").apply(lambda img: img.clone(img.data.astype(np.float32))).opts(
                cmap=PALETTE, cnorm="eq_hist", responsive=True, height=560, tools=["tap", *CHOOSE_TOOLS],
                active_tools=["lasso_select", "wheel_zoom"])
        else:
            tip = ('<div>' + ('<img src="@thumb" width="48" height="48"><br>' if "thumb" in df else "")
                   + '@label</div>')
            # drawn faint, so the open cluster (outlined on top, in full colour) stands out
            plot = points.opts(color="color", alpha=0.45, size=6 if len(df) < 5000 else 3, line_color=None,
                               tools=[HoverTool(tooltips=tip), "tap", *CHOOSE_TOOLS], responsive=True, height=560,
                               active_tools=["lasso_select", "wheel_zoom"],
                               xaxis=None, yaxis=None, title=f"UMAP of the {self.words['items']}, coloured by cluster (grey: noise)")
        source = plot if raster else points
        hv.streams.Tap(source=source).add_subscriber(self._on_tap)
        # the drawn shape, not Bokeh's selected indices: the rasterised map has no points to select
        hv.streams.Lasso(source=source).add_subscriber(self._on_lasso)
        hv.streams.BoundsXY(source=source).add_subscriber(self._on_box)
        highlight = hv.DynamicMap(self.highlight, streams=dict(c=self.param.selected))
        return pn.pane.HoloViews(plot * highlight * self.name_labels(df), sizing_mode="stretch_width", name="map")

    def highlight(self, c: int = -1):
        """The open cluster drawn over the map, outlined, so it stands out from the others."""
        rows = self.s.labels == c if c >= 0 else np.zeros(len(self.s.labels), bool)
        pts = pd.DataFrame({"x": self.s.layout[rows, 0], "y": self.s.layout[rows, 1]})
        colour = PALETTE[self._colours.get(c, c % len(PALETTE))] if c >= 0 else NOISE_COLOR
        return hv.Points(pts, ["x", "y"]).opts(color=colour,
                                               size=10, line_color="black", line_width=1.5)

    def name_labels(self, df: pd.DataFrame) -> hv.Labels:
        """Named clusters' names at their centre (the median point, inside the cluster)."""
        named = df[df["name"] != ""]
        centres = named.groupby("cluster").agg(x=("x", "median"), y=("y", "median"), name=("name", "first"))
        return hv.Labels(centres, ["x", "y"], "name").opts(text_font_size="9pt", text_color="black")

    def _on_tap(self, x=None, y=None):
        if x is None:
            return
        d = np.hypot(self.s.layout[:, 0] - x, self.s.layout[:, 1] - y)
        d[self.s.labels < 0] = np.inf
        if np.isfinite(d.min()):
            self.selected = int(self.s.labels[d.argmin()])

    def _on_lasso(self, geometry=None):
        from crowdsort.review.map_select import in_polygon

        if geometry is not None:
            self.choose_on_map(in_polygon(self.s.layout, geometry))

    def _on_box(self, bounds=None):
        from crowdsort.review.map_select import in_box

        if bounds is not None:
            self.choose_on_map(in_box(self.s.layout, bounds))

    def choose_on_map(self, inside: np.ndarray) -> None:
        self.map_chosen = np.flatnonzero(inside & (self.s.labels != NOT_FACE)).tolist()

    @param.depends("map_chosen", "version")
    def map_selection(self):
        """What the lasso or the box took on the map: how many, from which clusters, a few of
        them, and what to do with them (the gallery's actions)."""
        rows = np.asarray(self.map_chosen, int)
        n_words = self.words["items"]
        if not len(rows):
            return pn.pane.HTML(f"Draw a lasso on the map to choose {n_words} there (the lasso and the box are "
                                "tools of the toolbar to the right of the map).",
                                css_classes=["cs-map-chosen"])
        clusters = np.unique(self.s.labels[rows])
        ids = [self.s.ids[r] for r in rows]
        faces = face_imgs(self.s, rows[:MAP_CHOSEN_SHOWN], 40)
        what = (f"{plural(len(rows), n_words)} chosen on the map, from {plural(int((clusters >= 0).sum()), 'clusters')}"
                f"{' and noise' if (clusters < 0).any() else ''}")
        count = pn.pane.HTML(html.escape(what), css_classes=["cs-map-chosen-count"])
        after = lambda target: self.changed(target)  # noqa: E731  (the person they went to, if any)
        like, like_rows, like_parts = self.like_gallery(ids)
        chosen = lambda: ids + [self.s.ids[like_rows[i]] for i in like.selected]  # noqa: E731
        actions = self.face_actions(chosen, lambda: "chosen on the map", after, count, "cs-map-", watch=(like, "selected"))

        def recount(_=None):
            extra = len(like.selected)
            count.object = html.escape(what + (f", and {extra} like them" if extra else ""))
        like.param.watch(recount, "selected")
        return pn.Column(count, pn.pane.HTML(f"<div>{faces}</div>"), pn.Row(*actions), *like_parts,
                         css_classes=["cs-map-chosen"], sizing_mode="stretch_width")

    def like_gallery(self, ids: list):
        """"Faces like these": the noise faces nearest the chosen ones (``ReviewSession.similar_noise``,
        within the model's threshold), none chosen: the rest of a person the clustering left in
        noise, a click each, so one Move names them all. ``(gallery, its rows, what to show)``:
        nothing to show where no face is near enough, or for images."""
        offered = self.s.kind == "faces" and len(ids) <= LIKE_FROM_MAX
        near = self.s.similar_noise(ids) if offered else pd.DataFrame({"row": [], "distance": []})
        rows = near["row"].to_numpy()[:LIKELY_MAX].astype(int)
        gallery = FaceGallery(toggle=True, sizing_mode="stretch_width", css_classes=["cs-like"], **self.offered_faces(near))
        if not len(rows):
            return gallery, rows, []
        title = (f"<b>{capital(self.words['items'])} like these</b>: {self.offered_words(near)}; "
                 "click those of the same person: the buttons above act on them too")
        return gallery, rows, [pn.pane.HTML(title, css_classes=["cs-like-title"]), gallery]

    @param.depends("version")
    def cluster_table(self):
        clusters = self.s.clusters()
        clusters["cluster"] = [f"{c:03d}" for c in clusters["cluster"]]  # as the page spells it: cluster 007
        # tens of thousands of rows would all go to the browser at each change: send pages instead
        paged = {"pagination": "remote", "page_size": TABLE_PAGE} if len(clusters) > TABLE_PAGE else {"pagination": None}
        # the name takes the width the numbers leave (it was cut at its default width beside a blank strip)
        table = pn.widgets.Tabulator(clusters, show_index=False, selectable=1, disabled=True, height=560, width=260,
                                     layout="fit_columns", widths={"cluster": 80, "size": 62},
                                     label="clusters", css_classes=["cs-clusters"], **paged)
        table.on_click(lambda e: setattr(self, "selected", int(table.value.iloc[e.row]["cluster"])))
        self._table = table
        self._select_row()
        return table

    @param.depends("selected", watch=True)
    def _select_row(self):
        # a cluster opened from the map or a card is marked in the list too
        if self._table is not None:
            rows = np.flatnonzero(self._table.value["cluster"].to_numpy() == f"{self.selected:03d}")
            self._table.selection = rows[:1].tolist()

    def detail_when_opened(self) -> pn.Column:
        """The detail's place on the page: its hint until a cluster is first opened, then
        :meth:`detail` (its widgets are neither made nor sent for a page that opens none)."""
        if self._detail is not None or self.selected >= 0:
            return self.detail()
        holder = pn.Column(pn.pane.Markdown(self._detail_hint()), sizing_mode="stretch_width")

        def first(e):
            if e.new >= 0:
                self.param.unwatch(watcher)
                holder.objects = [self.detail()]
        watcher = self.param.watch(first, "selected")
        return holder

    def _detail_hint(self) -> str:
        return f"Click a cluster in the list or on the map to see its {self.words['items']}."

    def detail(self) -> pn.Column:
        """The open cluster: title, name box, suggestions, merge candidates, gallery, what to do
        with the chosen faces, split, source photo. Its widgets are made once per tab and refilled
        for each cluster, so opening one sends only what changed (faces, names, options), and a
        click is never on a button a redraw took away."""
        if self._detail is None:
            self._detail = self._detail_widgets()
            self._fill_detail()
        return self._detail.panel

    def _detail_widgets(self) -> SimpleNamespace:
        n_words = self.words["items"]
        w = SimpleNamespace()
        w.hint = pn.pane.Markdown(self._detail_hint())
        w.title = pn.pane.HTML("", css_classes=["cs-detail-title"])
        w.name_in = pn.widgets.TextInput(placeholder=self.words["name"], width=220, label="Name")
        w.name_btn = pn.widgets.Button(label="Save name", color="primary", css_classes=["cs-name-save"])
        # value_input is what the box shows now; value waits for a blur that may come after the click
        w.name_btn.on_click(lambda e: self._name(self.selected, w.name_in.value_input or ""))
        w.name_in.param.watch(lambda e: self._name(self.selected, w.name_in.value_input or ""), "enter_pressed")
        w.current_name = ""  # the open cluster's: Save is disabled while the box holds it
        w.name_in.param.watch(lambda e: setattr(w.name_btn, "disabled", (e.new or "").strip() == w.current_name),
                              "value_input")
        w.sugg, w.near = pn.Row(css_classes=["cs-suggestions"]), pn.Row(css_classes=["cs-near"])
        w.gallery = FaceGallery(sizing_mode="stretch_width", css_classes=["cs-members"])
        hint = f"Click {n_words} to choose (shift, ctrl: several)"
        w.count = pn.pane.HTML(hint, css_classes=["cs-chosen-count"])
        w.gallery.param.watch(lambda e: setattr(w.count, "object", f"{len(e.new)} chosen" if e.new else hint), "selected")

        def after(target):
            c = self.selected
            self.changed(c if target is None or (self.s.labels == c).any() else target)
        w.actions = self.face_actions(lambda: [self.s.ids[self._shown[i]] for i in w.gallery.selected],
                                      lambda: f"of {cluster_label(self.selected)}", after, w.count,
                                      watch=(w.gallery, "selected"))
        w.split = pn.widgets.Button(label="Split in two", color="warning", css_classes=["cs-split"])
        w.split.on_click(lambda e: self._split(self.selected))
        # Bokeh's Select draws its labels as text; it gives back the position in the gallery
        w.source_sel = pn.widgets.Select(label=self.words["view"], width=300, css_classes=["cs-source"], options={"": -1})
        w.source_view = pn.Column(sizing_mode="stretch_width")

        def show_source(e):
            w.source_view.clear()
            if e.new is not None and e.new >= 0:
                w.source_view.extend(self.source_views(self._shown[e.new]))
        w.source_sel.param.watch(show_source, "value")
        # one face clicked: its source photo, where the others in the picture show who it is
        w.gallery.param.watch(lambda e: setattr(w.source_sel, "value", e.new[0] if len(e.new) == 1 else -1), "selected")
        w.body = pn.Column(w.title, pn.Row(w.name_in, w.name_btn), w.sugg, w.near, w.gallery,
                           pn.Row(w.count, *w.actions), pn.Row(w.split, w.source_sel), w.source_view,
                           self.likely_widgets(w).panel,
                           sizing_mode="stretch_width", visible=False)
        w.panel = pn.Column(w.hint, w.body, sizing_mode="stretch_width")
        return w

    @param.depends("selected", "version", watch=True)
    def _fill_detail(self):
        # one message: a page that drew the new title before the new faces would let a click
        # choose a face of the cluster shown before (and the faces' arrival then unchoose it)
        with pn.io.hold():
            self._refill_detail()

    def _refill_detail(self):
        w = self._detail
        if w is None:  # not shown yet: nothing to fill
            return
        c = self.selected
        there = c >= 0 and bool((self.s.labels == c).any())
        w.hint.visible, w.body.visible = not there, there
        if not there:
            self._shown = np.array([], int)
            return
        rows = self.s.members(c)
        name = self.s.names().get(c, "")
        title = f"{capital(cluster_label(c, name))} ({plural(len(rows), self.words['items'])})"
        w.title.object = f"<h3>{html.escape(title)}</h3>"
        w.current_name = name
        w.name_in.param.update(value=name, value_input=name)
        w.name_btn.disabled = True
        self._shown = shown = rows[:GALLERY_MAX]
        files = [Path(self.s.table["crop_path"].iloc[r]).name for r in shown]
        w.sugg.objects = self.suggestion_items(c)
        w.near.objects = self.merge_items(c)
        w.gallery.param.update(selected=[], **self.gallery_data(shown, files))
        w.actions[2].options = sorted(set(self.s.names().values()))  # the move box completes known names
        w.source_sel.param.update(options={"": -1, **{f"#{i} {f}": i for i, f in enumerate(files)}}, value=-1)
        self._fill_likely(c)

    def likely_widgets(self, w: SimpleNamespace) -> SimpleNamespace:
        """"Faces that may be this person": the noise faces nearest the open cluster within the
        model's threshold (``ReviewSession.likely_members``), nearest first, none chosen (on the
        dev sets most of them are strangers): a click chooses one, one button adds the chosen."""
        n = SimpleNamespace(rows=np.array([], int))
        n.title = pn.pane.HTML("", css_classes=["cs-likely-title"])
        n.gallery = FaceGallery(toggle=True, sizing_mode="stretch_width", css_classes=["cs-likely"])
        n.add = pn.widgets.Button(label="Add", color="primary", css_classes=["cs-likely-add"])

        def label(_=None):
            k = len(n.gallery.selected)
            n.add.param.update(label=f"Add {k or 'the chosen'} to {cluster_label(self.selected)}", disabled=not k)
        n.gallery.param.watch(label, "selected")

        @self.saving
        def add(e):
            faces = [self.s.ids[n.rows[i]] for i in n.gallery.selected if i < len(n.rows)]
            if not faces:
                return
            c = self.s.add_to(self.selected, faces)
            self.did(f"add {plural(len(faces), self.words['items'])} to {cluster_label(c)}")
            self.changed(c)
        n.add.on_click(add)
        n.panel = pn.Column(n.title, n.gallery, n.add, sizing_mode="stretch_width", visible=False)
        n.label = label
        w.likely = n
        return n

    def _fill_likely(self, c: int) -> None:
        n = self._detail.likely
        near = self.s.likely_members(c) if self.s.kind == "faces" else pd.DataFrame({"row": []})
        n.rows = rows = near["row"].to_numpy()[:LIKELY_MAX].astype(int)
        n.panel.visible = bool(len(rows))
        if not len(rows):
            n.gallery.param.update(thumbs=[], captions=[], titles=[], selected=[])
            return
        n.title.object = (f"<b>{capital(self.words['items'])} that may be this person</b>: {self.offered_words(near)}; "
                          "click those of this person, then add them")
        n.gallery.param.update(selected=[], **self.offered_faces(near))
        n.label()

    def offered_faces(self, near: pd.DataFrame) -> dict:
        """A gallery's ``thumbs, captions, titles`` for the first LIKELY_MAX of faces offered
        (``row, distance``, nearest first): "Faces that may be this person", "Faces like these"."""
        near = near.head(LIKELY_MAX)
        paths = [self.s.table["crop_path"].iloc[int(r)] for r in near["row"]]
        return {"thumbs": [likely_thumb(viewable(self.s, p)) for p in paths],
                "captions": [f"{d:.3f}" for d in near["distance"]], "titles": [Path(p).name for p in paths]}

    @staticmethod
    def offered_words(near: pd.DataFrame) -> str:
        return (f"{len(near)} in noise within the model's threshold, nearest first"
                f"{f' (the {LIKELY_MAX} nearest shown)' if len(near) > LIKELY_MAX else ''}")

    def gallery_data(self, shown: np.ndarray, files: list[str]) -> dict:
        n_faces = self.s.table["n_faces"] if "n_faces" in self.s.table else None
        captions = [f"#{i}{' proto' if i < 3 else ''}"
                    f"{f' ({n_faces.iloc[r]} faces)' if n_faces is not None and n_faces.iloc[r] > 1 else ''}"
                    for i, r in enumerate(shown)]
        thumbs = [thumbnail_uri(viewable(self.s, self.s.table["crop_path"].iloc[r]), 192) for r in shown]
        return {"thumbs": thumbs, "captions": captions, "titles": files}

    def suggestion_items(self, c: int) -> list:
        """The reference library's verdict first (a name, or "unknown"); the nearest names after it,
        greyed: one click still names the cluster after one of them."""
        sugg = self.s.suggestions(c)
        if not len(sugg):
            return []
        items = []
        for r in sugg.itertuples():
            if r.label == "unknown" and r.suggested:
                items.append(pn.pane.HTML("<b>unknown</b> (no reference close enough); nearest:",
                                          css_classes=["cs-sugg-unknown"]))
                continue
            # Bokeh draws a button's label as text: escaping it would show the entities
            b = pn.widgets.Button(label=f"{r.label} ({r.distance:.3f})", color="primary" if r.suggested else "light",
                                  css_classes=["cs-sugg-best" if r.suggested else "cs-sugg-other"],
                                  styles={} if r.suggested else {"opacity": "0.6"})
            b.on_click(lambda e, lab=r.label: self._name(c, lab))
            items.append(b)
        return [pn.pane.Markdown("Suggestions:"), *items]

    def merge_items(self, c: int) -> list:
        """The clusters most like this one, each with its best face: one click merges it in (a
        person split in several clusters). Where both are named differently, it asks which name
        to keep before merging."""
        near = self.s.nearest_clusters(c)
        if not len(near):
            return []
        items = []
        for r in near.itertuples():
            face = card_thumb(self.s, int(self.s.members(int(r.cluster))[0]))
            items.append(pn.pane.HTML(f'<img src="{face}" width="48" height="48" alt="">', margin=(0, 2)))
            # Bokeh draws a button's label as text: escaping it would show the entities
            b = pn.widgets.Button(label=f"Merge {cluster_label(r.cluster, r.name)} ({r.distance:.3f})",
                                  css_classes=["cs-merge-near"])
            b.on_click(lambda e, other=int(r.cluster): self._merge_in(c, other))
            items.append(b)
        return [pn.pane.Markdown("Most like it:"), *items]

    @saves
    def _merge_in(self, c: int, other: int, name: str | None = None):
        try:
            merged = self.s.merge([c, other], name=name)
        except NameConflict as err:  # the row asks which name stays; nothing is merged yet
            keep = []
            for n in err.names:
                b = pn.widgets.Button(label=f"Keep {n}", color="primary", css_classes=["cs-merge-keep-name"])
                b.on_click(lambda e, n=n: self._merge_in(c, other, n))
                keep.append(b)
            cancel = pn.widgets.Button(label="Cancel", css_classes=["cs-merge-cancel"])
            cancel.on_click(lambda e: setattr(self._detail.near, "objects", self.merge_items(c)))
            self._detail.near.objects = [text_html(f"Merge {cluster_label(other)}: they are named differently, keep"),
                                         *keep, cancel]
            return
        self.did(f"merge {cluster_label(c)}, {cluster_label(other)}")
        self.changed(merged)

    def face_actions(self, chosen, where, after, count: pn.pane.HTML, css: str = "cs-", watch=None) -> list:
        """Reject, not a face, move to a person (a name box completing known names), new person,
        for the items ``chosen()`` gives (``where()`` says where from, for undo); ``after(target)``
        redraws (target: the cluster they went to). The buttons are disabled while nothing is
        chosen (``watch``: the (object, param) the choice is in), Move while no name is typed."""
        n_words = self.words["items"]
        reject_btn = pn.widgets.Button(label="Reject from cluster", color="danger", css_classes=[f"{css}reject"])
        notface_btn = pn.widgets.Button(label=self.words["exclude"], color="danger", css_classes=[f"{css}notface"])
        known = sorted(set(self.s.names().values()))
        to = pn.widgets.AutocompleteInput(options=known, restrict=False, min_characters=1, case_sensitive=False,
                                          placeholder="move to person…", width=200, css_classes=[f"{css}move-name"])
        move_btn = pn.widgets.Button(label="Move", css_classes=[f"{css}move"])
        new_btn = pn.widgets.Button(label="New person", css_classes=[f"{css}new-person"])

        @self.saving
        def act(what, fn):
            faces = chosen()
            if not faces:
                count.object = f"choose {n_words} first"
                return
            target = fn(faces)
            self.did(f"{what} {plural(len(faces), n_words)} {where()}")
            after(target)
        reject_btn.on_click(lambda e: act("reject", self.s.reject))
        notface_btn.on_click(lambda e: act("mark as not a face", lambda f: self.s.reject(f, not_face=True)))
        typed = lambda: (to.value_input or "").strip()  # noqa: E731  (what the box shows, before any blur)
        move_btn.on_click(lambda e: act(f"move to '{typed()}'" if typed() else "move", lambda f: self.s.move(f, typed())))
        new_btn.on_click(lambda e: act("new person from", self.s.move))

        def enable(*_):
            none = not chosen()
            reject_btn.disabled = notface_btn.disabled = new_btn.disabled = none
            move_btn.disabled = none or not typed()
        to.param.watch(enable, ["value_input", "value"])
        if watch is not None:
            watch[0].param.watch(enable, watch[1])
        enable()
        return [reject_btn, notface_btn, to, move_btn, new_btn]

    @saves
    def _split(self, c: int):
        halves = self.s.split(c)
        self.did(f"split {cluster_label(c)}")
        self.changed(halves[0])

    @param.depends("version", "queue_opened", "queue_left", "queue_page")
    def review_queue(self):
        """A walk through what is left to decide: the unnamed clusters, largest first, opened one
        at a time in the detail; then the noise items beside the named person nearest them."""
        n_words = self.words["items"]
        todo = self.s.unnamed_clusters()
        todo = todo[~todo["cluster"].isin(self.queue_opened)]
        if len(todo):
            r = todo.iloc[0]
            faces = face_imgs(self.s, self.s.members(int(r.cluster))[:CARD_FACES])
            nxt = pn.widgets.Button(label=f"Open {cluster_label(r.cluster)} ({plural(int(r['size']), n_words)})", color="primary",
                                    css_classes=["cs-queue-open"])
            nxt.on_click(lambda e, c=int(r.cluster): self._open_from_queue(c))
            clusters = [text_html(f"{plural(len(todo), 'clusters')} unnamed to look at, largest first; next:", "b"),
                        pn.Row(pn.pane.HTML(f"<div>{faces}</div>"), nxt)]
        else:
            clusters = [text_html("Every cluster is named or has been looked at.", "b")]
        noise = self.s.noise_to_review()
        noise = noise[~noise["item_id"].isin(self.queue_left)]
        page, pages, on_page = page_of(len(noise), self.queue_page, QUEUE_NOISE)
        rows = [self.noise_row(r) for r in noise.iloc[on_page].itertuples()]
        close = f" ({int(noise['likely'].sum())} close enough to be them)" if self.s.kind == "faces" else ""
        head = (f"{len(noise)} noise {n_words if len(noise) != 1 else SINGULAR[n_words]} beside the named person "
                f"nearest them{close}, nearest first. Tick those that are the person beside them, on any page, "
                "then add them all at once:" if len(noise)
                else f"No noise {n_words} to place (none, or nobody named yet).")
        keys = text_html("Keys: " + " · ".join(f"{k}: {what}" for k, what in KEYS) + " (anywhere on the page "
                         "but in a text box).", "p", css_classes=["cs-queue-keys"], styles={"color": "#555"})
        paging = []
        if pages > 1:
            prev = pn.widgets.Button(label="◀ Previous", width=100, disabled=page == 0, css_classes=["cs-queue-prev"])
            nxt = pn.widgets.Button(label="Next ▶", width=100, disabled=page + 1 >= pages, css_classes=["cs-queue-next"])
            prev.on_click(lambda e: setattr(self, "queue_page", page))
            nxt.on_click(lambda e: setattr(self, "queue_page", page + 2))
            shown = f"{on_page.start + 1}–{on_page.stop} of {len(noise)}"
            paging = [pn.Row(prev, text_html(f"{shown} · page {page + 1} of {pages}", "span", css_classes=["cs-queue-page"]),
                             nxt, align="center")]
        return pn.Column(keys, *clusters, pn.layout.Divider(), text_html(head, "b", css_classes=["cs-queue-noise-count"]),
                         *([self.queue_ticks_bar] if len(noise) else []), *rows, *paging,
                         css_classes=["cs-queue"], sizing_mode="stretch_width")

    @param.depends("queue_ticked")
    def queue_ticks_bar(self):
        """The ticked noise rows' one button: each goes to the person shown beside it."""
        n = len(self.queue_ticked)
        add = pn.widgets.Button(label=f"Add the {n} ticked to the people beside them" if n else "Add the ticked (tick rows first)",
                                color="primary", disabled=not n, css_classes=["cs-queue-add-ticked"])
        clear = pn.widgets.Button(label="Untick all", disabled=not n, css_classes=["cs-queue-untick"])
        add.on_click(lambda e: self._add_ticked())
        clear.on_click(lambda e: setattr(self, "queue_ticked", {}))
        return pn.Row(add, clear)

    @saves
    def _add_ticked(self) -> None:
        """The ticked noise rows to the people beside them, in one correction (one undo); a row
        whose item has left noise since, or whose person has lost that name, is left out."""
        home = {n: c for c, n in self.s.names().items()}
        noise = set(self.s.ids[self.s.labels == -1])
        each: dict[int, list] = {}
        for item, name in self.queue_ticked.items():
            if item in noise and name in home:
                each.setdefault(home[name], []).append(item)
        self.queue_ticked = {}
        if not each:
            return
        self.s.add_each(each)
        k = sum(map(len, each.values()))
        self.did(f"add {plural(k, self.words['items'])} from noise to {plural(len(each), 'people')}")
        self.changed()

    def _open_from_queue(self, c: int) -> None:
        self.param.update(queue_opened=self.queue_opened + [c], selected=c, reveal=self.reveal + 1)

    def next_to_review(self) -> int | None:
        """The review queue's next cluster: the largest unnamed one this tab has not opened."""
        todo = self.s.unnamed_clusters()
        todo = todo[~todo["cluster"].isin(self.queue_opened)]
        return int(todo["cluster"].iloc[0]) if len(todo) else None

    def on_key(self, key: str) -> None:
        """A key of the review (:data:`KEYS`): n opens the next cluster of the queue; a accepts the
        suggestion (the reference library's name for the open cluster, else the first noise face
        goes to the person beside it where it is close enough to be them); x rejects the faces
        chosen in the open cluster; u undoes."""
        n_words = self.words["items"]
        msg = ""
        if key == "n":
            c = self.next_to_review()
            if c is None:
                msg = "n: every cluster is named or has been looked at"
            else:
                self._open_from_queue(c)
                msg = f"n: opened {cluster_label(c)}"
        elif key == "a":
            there = self.selected >= 0 and bool((self.s.labels == self.selected).any())
            name = self.suggested_name(self.selected) if there and not self.s.names().get(self.selected) else None
            if name:
                self._name(self.selected, name)
                msg = f"a: named {cluster_label(self.selected)} '{name}'"
            else:
                noise = self.s.noise_to_review()
                noise = noise[~noise["item_id"].isin(self.queue_left)]
                if len(noise) and noise["likely"].iloc[0]:
                    r = noise.iloc[0]
                    self._place(r.item_id, r["name"])
                    msg = f"a: {plural(1, n_words)} from noise added to {r['name']}"
                elif len(noise):  # a stranger, most likely: its greyed Add button still adds it
                    msg = (f"a: the nearest noise {SINGULAR[n_words]} is too far from {noise['name'].iloc[0]} "
                           "(probably someone else): its Add button adds it anyway")
                else:
                    msg = "a: no suggestion to accept (no name suggested, no noise beside a named person)"
        elif key == "x":
            w = self._detail
            chosen = [self.s.ids[self._shown[i]] for i in w.gallery.selected] if w is not None else []
            if not chosen or self.selected < 0:
                msg = f"x: choose {n_words} of the open cluster first (click them)"
            else:
                self._reject_chosen(chosen)
                msg = f"x: rejected {plural(len(chosen), n_words)}"
        elif key == "u":
            what = self.undo()
            msg = f"u: undid {what}" if what else "u: nothing to undo"
        self.key_message = msg

    @saves
    def _reject_chosen(self, face_ids: list) -> None:
        c = self.selected
        self.s.reject(face_ids)
        self.did(f"reject {plural(len(face_ids), self.words['items'])} of {cluster_label(c)}")
        self.changed(c if (self.s.labels == c).any() else None)

    @param.depends("key_message")
    def key_view(self):
        return text_html(self.key_message, css_classes=["cs-key-message"], styles={"font-size": "12px"})

    def noise_row(self, r):
        """One noise item, the person nearest it, and what to do: add it to them, exclude it, leave it."""
        person = card_thumb(self.s, int(self.s.members(int(r.cluster))[0]))
        # beyond the identification threshold the item is most likely a stranger: offered, greyed
        add = pn.widgets.Button(label=f"Add to {r.name}", color="primary" if r.likely else "light",
                                styles={} if r.likely else {"opacity": "0.6"}, css_classes=["cs-queue-add"])
        add.on_click(lambda e: self._place(r.item_id, r.name))
        out = pn.widgets.Button(label=self.words["exclude"], color="danger", css_classes=["cs-queue-notface"])
        out.on_click(lambda e: self._place(r.item_id, None))
        leave = pn.widgets.Button(label="Leave in noise", css_classes=["cs-queue-leave"])
        leave.on_click(lambda e: setattr(self, "queue_left", self.queue_left + [r.item_id]))
        tick = pn.widgets.Checkbox(label="", value=r.item_id in self.queue_ticked, width=16, margin=(5, 2),
                                   css_classes=["cs-queue-tick"])

        def ticked(e):
            ticks = {k: v for k, v in self.queue_ticked.items() if k != r.item_id}
            self.queue_ticked = {**ticks, r.item_id: r.name} if e.new else ticks
        tick.param.watch(ticked, "value")
        # wrapped where the tab is narrower than the row (a long name): no button under the list beside it
        return pn.FlexBox(tick, pn.pane.HTML(f'<img src="{card_thumb(self.s, int(r.row))}" width="64" height="64">'),
                          text_html(f"probably {r.name} ({r.distance:.3f})" if r.likely else
                                    f"nearest: {r.name} ({r.distance:.3f}), too far: probably someone else", "span",
                                    width=150),  # wraps: the row stays beside the list, not under it
                          pn.pane.HTML(f'<img src="{person}" width="48" height="48" alt="">'), add, out, leave,
                          css_classes=["cs-queue-item"], flex_wrap="wrap", align_items="center", sizing_mode="stretch_width")

    @saves
    def _place(self, item_id: str, name: str | None) -> None:
        n_words = self.words["items"]
        if name is None:
            self.s.reject([item_id], not_face=True)
            self.did(f"mark as not a face {plural(1, n_words)} from noise")
        else:
            self.s.move([item_id], name)
            self.did(f"move to '{name}' {plural(1, n_words)} from noise")
        self.changed()

    def people(self) -> pn.Column:
        """The people, as cards (best faces, size, the name editable in place, the suggested name
        one click away), a page at a time: largest first, unnamed first, by default. A card keeps
        its place when it is named (the order is made again when the clusters or the sort change).
        One view per tab, refilled after each change: a card whose cluster, name and members are
        as they were is kept, so a name given redraws one card, not the page's 24."""
        if self._people_view is None:
            nav = SimpleNamespace(
                prev=pn.widgets.Button(label="◀ Previous", width=100, css_classes=["cs-people-prev"]),
                next=pn.widgets.Button(label="Next ▶", width=100, css_classes=["cs-people-next"]),
                page=pn.widgets.IntInput.from_param(self.param.people_page, width=80, css_classes=["cs-people-page"]),
                count=text_html("", "span", css_classes=["cs-people-count"], width=150, margin=(14, 10, 0, 10)))
            nav.prev.on_click(lambda e: setattr(self, "people_page", max(1, self.people_page - 1)))
            nav.next.on_click(lambda e: setattr(self, "people_page", self.people_page + 1))
            self._people_nav = nav
            row = pn.Row(pn.widgets.Select.from_param(self.param.people_sort, width=120, css_classes=["cs-people-sort"]),
                         pn.widgets.Select.from_param(self.param.unnamed, width=100, css_classes=["cs-people-unnamed"]),
                         nav.prev, nav.page, nav.next, nav.count)
            self._people_view = pn.Column(row, pn.FlexBox(css_classes=["cs-people"]), sizing_mode="stretch_width")
            self.param.watch(lambda *e: self._fill_people(), ["version", "people_sort", "unnamed", "people_page"])
            self._fill_people()
        return self._people_view

    def _fill_people(self) -> None:
        rows = self.people_order()
        page, pages, on_page = page_of(len(rows), self.people_page, PEOPLE_PAGE)
        shown = rows.iloc[on_page]
        kept, self._cards = self._cards, {}
        for r in shown.itertuples():
            members = self.s.members(r.cluster)
            key = (r.cluster, r.size, r.name, hash(members.tobytes()))
            self._cards[key] = kept.get(key) or self.card(r.cluster, r.size, r.name, members)
        nav = self._people_nav
        nav.prev.disabled, nav.next.disabled = page == 0, page + 1 >= pages
        nav.page.end = pages
        first = f"{on_page.start + 1}–{on_page.stop} of " if len(rows) > len(shown) else ""
        count = f"page {page + 1} of {pages} · {first}{plural(len(rows), 'clusters')}"
        nav.count.object = f"<span>{html.escape(count)}</span>"
        cards = list(self._cards.values()) or [text_html("No clusters at these settings: lower the sizes on the left.", "p")]
        self._people_view[1].objects = cards

    def people_order(self) -> pd.DataFrame:
        """The cards' order: by size (largest first) or name, unnamed first or last; kept for
        corrections that leave the same clusters (a name given, a face moved), so no card jumps."""
        rows = self.s.clusters()
        key = (self.people_sort, self.unnamed, self.s.setting, tuple(rows["cluster"].sort_values()))
        if self._people is None or self._people[0] != key:
            rows["unnamed"] = rows["name"] == ""
            by = ["size", "cluster"] if self.people_sort == "size" else ["name", "size"]
            order = rows.sort_values(by, ascending=[self.people_sort != "size", self.people_sort == "size"], kind="stable")
            order = order.sort_values("unnamed", ascending=self.unnamed == "last", kind="stable")
            self._people = (key, order["cluster"].tolist())
        return rows.set_index("cluster").loc[self._people[1]].reset_index()

    def card(self, c: int, size: int, name: str, members: np.ndarray):
        """One person: their best faces (``members``: the cluster's rows, prototypes first), size,
        name box (Enter or Save names them) and, with references loaded, the suggested name to
        accept in one click; Open shows the cluster."""
        faces = face_imgs(self.s, members[:CARD_FACES])
        open_btn = pn.widgets.Button(label=f"{cluster_label(c)} · {plural(size, self.words['items'])}", width=200,
                                     color="light", css_classes=["cs-card-open"], margin=(0, 4))
        open_btn.on_click(lambda e: self.param.update(selected=c, reveal=self.reveal + 1))
        box = pn.widgets.TextInput(value=name, value_input=name, placeholder="a name, Enter", width=136,
                                   css_classes=["cs-card-name"], margin=(2, 4))
        save = pn.widgets.Button(label="Save", width=56, disabled=True, color="primary", css_classes=["cs-card-save"],
                                 margin=(2, 4))
        box.param.watch(lambda e: setattr(save, "disabled", (e.new or "").strip() == name), "value_input")
        box.param.watch(lambda e: self._name(c, box.value_input or ""), "enter_pressed")
        save.on_click(lambda e: self._name(c, box.value_input or ""))
        parts = [pn.pane.HTML(f"<div>{faces}</div>", width=212, height=52, margin=(4, 2)), open_btn,
                 pn.Row(box, save, margin=0)]
        suggested = self.suggested_name(c) if not name else None
        if suggested:
            accept = pn.widgets.Button(label=f"Accept: {suggested}", width=200, color="success",
                                       css_classes=["cs-card-accept"], margin=(2, 4))
            accept.on_click(lambda e: self._name(c, suggested))
            parts.append(accept)
        return pn.Column(*parts, css_classes=["cs-card"], width=216,
                         styles={"border": "1px solid #ddd", "border-radius": "4px",
                                 "background": "#fff" if name else "#fffbe6"}, margin=3)

    def suggested_name(self, c: int) -> str | None:
        """The reference library's name for cluster ``c`` where it names one (not "unknown")."""
        sugg = self.s.suggestions(c)
        best = sugg[sugg["suggested"]] if len(sugg) else sugg
        return str(best["label"].iloc[0]) if len(best) and best["label"].iloc[0] != "unknown" else None
    def source_views(self, row: int) -> list:
        """Where the item was seen: its photo or video frame with the face's box; for a track,
        also a strip of its faces over time."""
        from crowdsort.review.sources import source_jpeg

        t = self.s.table.iloc[row]
        box = t["box"] if "box" in t else None
        when = t["time_s"] if "time_s" in t and pd.notna(t["time_s"]) else None
        views = [pn.pane.JPG(source_jpeg(viewable(self.s, t["source_image"]), box, when, 960), width=480,
                             css_classes=["cs-source-view"])]
        if self.s.item_faces is not None and t.get("track", -1) >= 0:
            faces = self.s.item_faces[self.s.item_faces["item_id"] == self.s.ids[row]].sort_values("frame")
            pick = faces.iloc[np.unique(np.linspace(0, len(faces) - 1, min(len(faces), TRACK_STRIP)).round().astype(int))]
            views.insert(0, pn.FlexBox(*[
                pn.Column(pn.pane.JPG(thumbnail_jpeg(viewable(self.s, f.crop_path), 128), width=64, height=64),
                          pn.pane.Str(f"{f.time_s:.1f} s", styles={"font-size": "10px"}), margin=1)
                for f in pick.itertuples()], css_classes=["cs-track-strip"]))
        return views

    @saves
    def _name(self, c: int, name: str):
        self.s.name(c, name)
        self.did(f"name {cluster_label(c)} '{name.strip()}'" if name.strip() else f"unname {cluster_label(c)}")
        self.changed(c)

    def merge_widget(self):
        """Clusters to merge (two or more chosen), then Merge beside them: disabled until two are
        chosen. This tab's Undo below it says what it takes back."""
        # Choices.js puts its labels in the page as HTML: names escaped; the value is the cluster id
        # the drop-down lists a few at a time (typing finds the others): tens of thousands of
        # entries drawn at once took seconds of the page's load at 100k faces
        choice = pn.widgets.MultiChoice(label="Merge clusters", options={}, width=260, css_classes=["cs-merge-choice"],
                                        option_limit=MERGE_LISTED, search_option_limit=MERGE_LISTED,
                                        placeholder="choose two clusters or more")
        keep = pn.widgets.RadioBoxGroup(label="Name to keep", options=[""], visible=False, css_classes=["cs-merge-keep"])
        btn = pn.widgets.Button(label="Merge", color="primary", disabled=True, css_classes=["cs-merge"])
        msg = pn.pane.HTML("", css_classes=["cs-merge-msg"])

        def enable(_=None):
            n = len(choice.value)
            btn.disabled = n < 2
            btn.label = f"Merge {plural(n, 'clusters')}" if n >= 2 else "Merge"
        choice.param.watch(enable, "value")

        @param.depends(self.param.version, watch=True)
        def refresh(_=None):
            rows = self.s.clusters()
            kept = set(rows["cluster"])
            # named ones and the largest (every option travels to the page: 12k of them added 0.9 s
            # to its load at 100k faces); the others merge from the detail's suggestions
            offered = rows[(rows["name"] != "") | (np.arange(len(rows)) < MERGE_OPTIONS) | rows["cluster"].isin(choice.value)]
            choice.options = {html.escape(f"{cluster_label(r.cluster, r.name)} ({plural(r.size, self.words['items'])})"):
                              int(r.cluster) for r in offered.itertuples()}
            choice.value = [c for c in choice.value if c in kept]
        refresh()

        @self.saving
        def merge(e):
            if len(choice.value) < 2:
                msg.object = "choose two clusters or more"
                return
            try:
                c = self.s.merge(list(choice.value), name=keep.value if keep.visible else None)
            except NameConflict as err:  # the user says which name stays
                keep.options, keep.value, keep.visible = err.names, err.names[0], True
                msg.object = "they are named differently: choose the name to keep, then Merge"
                return
            what = f"merge {', '.join(cluster_label(c) for c in choice.value)}"
            keep.visible, msg.object, choice.value = False, "", []
            self.did(what)
            self.changed(c)
        btn.on_click(merge)
        undo = pn.widgets.Button(label="Nothing to undo", disabled=True, css_classes=["cs-undo"])

        @param.depends(self.param.version, watch=True)
        def label_undo(_=None):
            undo.label = f"Undo: {self.history[-1][1]}" if self.history else "Nothing to undo"
            undo.disabled = not self.history
        undo.on_click(lambda e: self.undo())
        return pn.Column(choice, keep, btn, msg, undo)
    def export_widgets(self, dataset: Path):
        from crowdsort.storage.export import csv_text  # names typed here open in spreadsheets: never as formulas

        download = pn.widgets.FileDownload(callback=lambda: io.StringIO(csv_text(self.s.labelled_table())),
                                           filename="labels.csv", label="Download labels CSV",
                                           color="success", css_classes=["cs-download"])
        labels_dl = pn.widgets.FileDownload(callback=lambda: io.StringIO(csv_text(self.s.labels_csv())),
                                            filename="cluster.identifications.csv", label="Download label,cluster CSV")
        # value_input too: Panel leaves it empty until something is typed, and the export reads it (what is
        # typed counts before Enter), so an untouched box exported to '' (issue 30)
        folder = pn.widgets.TextInput(label="Export folder (inside the dataset)", value="export", value_input="export",
                                      css_classes=["cs-export-folder"])
        btn = pn.widgets.Button(label="Export folders", color="primary", css_classes=["cs-export"])
        msg = pn.pane.HTML("", css_classes=["cs-export-msg"])

        def export(e):
            from crowdsort.storage.export import write_named_folders

            try:
                out = export_folder(dataset, folder.value_input)
                write_named_folders(out, self.s.labelled_table(), clean=True, files=getattr(self.s, "files", None))
                msg.object = html.escape(f"wrote {out}")
            except (OSError, ValueError) as err:
                msg.object = html.escape(f"not written: {err}")
        btn.on_click(export)
        return pn.Column(download, labels_dl, folder, btn, msg)


def export_folder(dataset: Path, typed: str) -> Path:
    """The folder an export replaces: one plain name inside the dataset, since the export
    empties it (``..``, ``/x``, ``a/b``, ``.`` or a hidden name would reach past or into the
    dataset's own files)."""
    name = typed.strip()
    if not name or name.startswith(".") or any(ch in name for ch in "/\\\0"):  # ".", ".." are hidden names too
        raise ValueError(f"{typed!r} is not a folder name: type one plain name, like export")
    out = dataset / name
    if out.is_symlink():  # would write (and clean) wherever it points
        raise ValueError(f"{out} is a link: type the name of a folder of the dataset")
    return out


def page_title(dataset: Path) -> str:
    return f"crowdsort — {Path(dataset).name}"


def open_session(dataset, faces: str = "faces", model: str | None = None, weights=None, refs=None, run: str | None = None):
    """The ReviewSession of a dataset's faces (or of an image cluster run), once per process:
    every tab, notebook cell or app over the same dataset shares it (the heavy part)."""
    key = ("crowdsort-review", str(Path(dataset).resolve()), faces, model, weights, refs, run)
    with _OPENING:  # sessions built at once (crowdsort dashboard builds them off the event loop): one load
        if key not in pn.state.cache:
            # a map not stored yet is made in a thread: the page opens meanwhile, its Map tab says how far it is
            pn.state.cache[key] = (open_image_review(dataset, run, map_later=True) if run else
                                   open_review(dataset, faces, model, weights, refs, progress=False, map_later=True))
        return pn.state.cache[key]


_OPENING = threading.Lock()


class ReviewApp(pn.viewable.Viewer):
    """The review app over one dataset: ``ReviewApp(dataset)`` in a notebook cell shows it inline;
    :meth:`template` is the full browser page. Each ReviewApp has its own :class:`Dashboard`
    state (selection, undo) over the shared session. ``session`` replaces the dataset's own
    (for a session made by hand); ``settings`` are the first clustering's (``algorithm="hdbscan",
    min_cluster_size=3``...)."""

    def __init__(self, dataset, faces: str = "faces", model: str | None = None, weights=None, refs=None,
                 run: str | None = None, session=None, **settings):
        super().__init__()
        self.dataset = Path(dataset)
        self.session = session if session is not None else open_session(dataset, faces, model, weights, refs, run)
        self.dashboard = Dashboard(self.session, **settings)

    def _parts(self):
        dash = self.dashboard
        # the list is fixed-size: the box Panel redraws it in must be too, with its size (Bokeh warns
        # "W-1005 (FIXED_SIZING_MODE)" in the server log for a fixed box without one); 260×560 and its margins
        table = pn.param.ParamMethod(dash.cluster_table, width=260 + 2 * 10, height=560 + 2 * 5)
        # the people first (their faces, without a click); the map and the review are made and
        # drawn when first opened, not on every page load (the map: 0.25 s at 100k faces)
        views = pn.Tabs(("People", dash.people()),
                        ("Map", pn.Column(pn.param.ParamMethod(dash.map_view, lazy=True), dash.map_selection,
                                          sizing_mode="stretch_width")),
                        ("Review", pn.param.ParamMethod(dash.review_queue, lazy=True)),
                        sizing_mode="stretch_width", css_classes=["cs-views"], dynamic=True)
        guard = BusyGuard()
        keys = KeyboardReview()
        keys.param.watch(lambda e: dash.on_key(keys.key), "presses")
        dash.param.watch(lambda e: keys.param.update(reveal=keys.reveal + 1), "reveal")
        sidebar = [guard, controls(dash), dash.status, dash.save_message, pn.layout.Divider(), dash.merge_widget(),
                   pn.layout.Divider(), keys, dash.key_view, pn.layout.Divider(), dash.export_widgets(self.dataset)]
        main = [pn.Row(views, table, sizing_mode="stretch_width"), dash.detail_when_opened()]
        # after the views' own watchers (made above): the answer and its ack leave together
        dash.param.watch(lambda *events: guard.param.update(ack=guard.ack + 1), ANSWERS)
        return sidebar, main

    def open(self, cluster: int) -> None:
        """Show ``cluster`` in the detail (and redraw after corrections made in code)."""
        self.dashboard.changed(cluster)

    def __panel__(self):
        sidebar, main = self._parts()
        return pn.Row(pn.Column(*sidebar, width=300), pn.Column(*main, sizing_mode="stretch_width"),
                      sizing_mode="stretch_width", css_classes=["cs-app"])

    def template(self) -> Page:
        sidebar, main = self._parts()
        return Page(
            title=html.escape(page_title(self.dataset)),  # the template puts it in the page as HTML
            sidebar=sidebar, main=main)


class Page(pn.template.VanillaTemplate):
    """The page. Vanilla, not FastListTemplate: Microsoft FAST's web components took 0.6–0.9 s
    of every page load at 1k faces (docs/benchmarks.md, The dashboard). No web font: the template links Google's,
    and a page of private photos would tell another server who looks at it (and wait for it
    offline). Its parts are added to the page in one go: Bokeh walks the whole document again
    after each of its 15 roots otherwise."""

    _resources = {"css": {}}

    def _init_doc(self, doc=None, *args, **kwargs):
        from panel.io.document import create_doc_if_none_exists

        doc = create_doc_if_none_exists(doc or pn.state.curdoc)
        with doc.models.freeze():
            return super()._init_doc(doc, *args, **kwargs)


def controls(dash: Dashboard) -> pn.Param:
    """The algorithm and its own parameters only (the others would do nothing)."""
    names = ["min_cluster_size", "min_samples", "n_neighbors", "eps"]
    panel = pn.Param(dash, parameters=["algorithm", *names],
                     widgets={n: {"type": pn.widgets.FloatSlider if n == "eps" else pn.widgets.IntSlider,
                                  "throttled": True} for n in names},
                     show_name=False, name="controls")

    def show(_=None):
        for n in names:
            panel._widgets[n].visible = n in SLIDERS[dash.algorithm]
    dash.param.watch(show, "algorithm")
    show()
    return panel

