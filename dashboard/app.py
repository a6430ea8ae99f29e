"""Serves the review app (:class:`crowdsort.review.app.ReviewApp`) to browsers.

    panel serve dashboard/app.py --address 127.0.0.1 --args --dataset D [--faces faces] [--refs refs.h5]
    panel serve dashboard/app.py --address 127.0.0.1 --args --dataset D --run RUN   (an image cluster run)
    crowdsort dashboard D                      (the same, bound to 127.0.0.1)

What is here is the serving only: who may see the dataset, one session per server process.
Served to the network, run it as ``crowdsort dashboard --address`` does (``python -m
crowdsort.review.serve``, the same arguments as ``panel serve``): that puts the token gate in front of
every route, Panel's and Bokeh's own included; a plain ``panel serve`` guards the page only.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import panel as pn

from crowdsort.review.app import ReviewApp, page_title, text_html
from crowdsort.cli import Dashboard as DashboardCommand, add_face_model_options
from crowdsort.review.serve import DENIED, admitted, given_token, token_cookies


def parse_args(argv) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="dashboard/app.py")
    ap.add_argument("--dataset", required=True, help="dataset folder (with an extraction run)")
    ap.add_argument("--faces", default="faces", help="extraction run inside the dataset (default: faces)")
    add_face_model_options(ap)
    ap.add_argument("--refs", default=None, help="reference library (HDF5 or folder) for name suggestions")
    ap.add_argument("--run", default=None, help="review the images of this image cluster run instead of faces")
    return ap.parse_args(argv)


def request_admitted(request, expected: str | None) -> bool:
    """The gate's rule (analysis/review/serve.py, in front of every route when served by `crowdsort
    dashboard`) once more for the session itself: also under a plain ``panel serve``."""
    if request is None:  # not served to anyone (a script building the page)
        return True
    return admitted(getattr(request, "remote_ip", None), given_token(request.arguments), expected,
                    token_cookies(getattr(request, "cookies", None)))


def current_request():
    ctx = pn.state.curdoc.session_context if pn.state.curdoc else None
    return ctx.request if ctx else None


def create_app(args: argparse.Namespace):
    """This browser session's page: the dashboard, or why not (a refused client learns nothing
    of the dataset, and nothing is loaded for it)."""
    if not request_admitted(current_request(), os.environ.get(DashboardCommand.token_env)):
        return text_html(DENIED, "p", css_classes=["cs-denied"])
    try:
        return ReviewApp(args.dataset, args.faces, args.model, args.weights, args.refs, args.run).template()
    except (OSError, ValueError) as e:  # a damaged or missing file of the dataset: say which, not a blank page
        print(f"dashboard: {e}", file=sys.stderr)
        return pn.Column(text_html("The dashboard could not open this dataset:", "h3"),
                         text_html(e, "p", css_classes=["cs-error"]))


def preload(args: argparse.Namespace) -> None:
    """Open the dataset as the first page will (the same key of the process's cache): ``crowdsort
    dashboard``'s server calls it before it listens, so it prints its URL with the data loaded
    (analysis/review/serve.py). A dataset that cannot be opened is left to the page, which says why."""
    from crowdsort.review.app import open_session

    try:
        session = open_session(args.dataset, args.faces, args.model, args.weights, args.refs, args.run)
    except (OSError, ValueError) as e:
        print(f"dashboard: {e}", file=sys.stderr)
        return
    # one page made and dropped: what every page's first build imports and caches is done now
    from bokeh.document import Document

    ReviewApp(args.dataset, session=session).template().server_doc(Document())


def serve(args: argparse.Namespace) -> None:
    page = create_app(args)
    page.servable()
    if isinstance(page, pn.template.BaseTemplate):  # the tab's <title> is escaped by Panel: unescaped name
        pn.state.curdoc.title = page_title(Path(args.dataset))


if __name__.startswith("bokeh") or __name__ == "__main__":
    serve(parse_args(sys.argv[1:]))
