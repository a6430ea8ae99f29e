"""``panel serve`` with one gate in front of every route, and the pages built off the server's
event loop: what ``crowdsort dashboard`` runs.

    python -m crowdsort.review.serve dashboard/app.py --address 0.0.0.0 --port 5006 --args --dataset D

The same arguments as ``panel serve``. Bokeh's auth hooks (``--auth-module``) guard the app
page and its websocket only: Panel's ``/components/<module>/…`` route (which imports the module
named in the URL), the static files and the favicon answer anyone. So the gate is the server's
own router (Bokeh's documented ``Serve.customize_server`` hook hands us the server): a request
from another machine without the token gets a 403 whatever it asks for, websockets included.

Who is admitted (:func:`admitted`): a client on this machine, or anyone with the token that
``crowdsort dashboard --address`` printed (``CROWDSORT_DASHBOARD_TOKEN`` in the environment). The
token comes in the URL (``?token=``) once; the answer sets it in a cookie, ``HttpOnly`` and
``SameSite=Strict``, which the page's own requests (scripts, pictures, its websocket) then carry.
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import sys

TOKEN_ENV = "CROWDSORT_DASHBOARD_TOKEN"
COOKIE = "crowdsort-token"
DENIED = "access denied: open the URL with its token"
COMPONENTS = "/components/"  # Panel's route: /components/<module>/<class>/<attribute>/<file>


def is_loopback(ip: str | None) -> bool:
    try:
        addr = ipaddress.ip_address(ip or "")
    except ValueError:  # no address (a Unix socket) or a name: not known to be this machine
        return False
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def admitted(remote_ip: str | None, given: str | None, expected: str | None, cookies=()) -> bool:
    """Whether a client may see the dataset: one on this machine, or anyone with the token that
    `crowdsort dashboard --address` printed. A wrong token in the URL is refused on this machine
    too: a mistyped or stale URL says so rather than working by accident. ``cookies``: the token
    cookies the browser sent; a right one admits, a stale one (another server's) is ignored."""
    if expected and given is not None:
        return same(given, expected)
    if expected and any(same(c, expected) for c in cookies):
        return True
    return is_loopback(remote_ip)


def given_token(arguments) -> str | None:
    """The ``token`` of a query (bytes from Tornado, text when Bokeh restores a session's):
    None without one, "" for two (of two tokens neither is trusted)."""
    values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arguments.get("token") or []]
    return values[0] if len(values) == 1 else ("" if values else None)


def token_cookies(cookies) -> list[str]:
    """The values of the token cookies among ``cookies`` (``http.cookies.Morsel`` or text)."""
    return [getattr(v, "value", v) for k, v in (cookies or {}).items() if k.startswith(COOKIE)]


def cookie_name(port) -> str:
    """One per port: two dashboards on one machine share its cookies (cookies ignore the port)."""
    return f"{COOKIE}-{port}"


def install_gate(app, port, expected: str | None = None) -> None:
    """Put the gate in front of every route of ``app`` (a Tornado application: Bokeh's), those
    added later included: it wraps the application's router itself."""
    from http.cookies import SimpleCookie

    from tornado.web import ErrorHandler, OutputTransform, RequestHandler

    expected = os.environ.get(TOKEN_ENV) if expected is None else expected
    name = cookie_name(port)
    prefix = getattr(app, "prefix", "") or ""

    class Refused(RequestHandler):
        def prepare(self):
            self.set_status(403)
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.finish(f'<!doctype html><title>access denied</title><p class="cs-denied">{DENIED}</p>')

    class SetTokenCookie(OutputTransform):
        """The answer to a request with the right token in its URL hands the token on in a cookie."""

        def __init__(self, request):
            super().__init__(request)
            given = given_token(request.query_arguments)
            self.set = bool(expected and given and same(given, expected))

        def transform_first_chunk(self, status_code, headers, chunk, finishing):
            if self.set:
                c = SimpleCookie()
                c[name] = expected
                c[name].update({"path": "/", "httponly": True, "samesite": "Strict"})
                headers.add("Set-Cookie", c.output(header="").strip())
            return status_code, headers, chunk

    find_handler = app.find_handler

    def gated_find_handler(request, **kwargs):
        cookies = token_cookies({k: v for k, v in request.cookies.items() if k == name})
        if not admitted(request.remote_ip, given_token(request.query_arguments), expected, cookies):
            return app.get_handler_delegate(request, Refused)
        path = request.path[len(prefix):] if prefix and request.path.startswith(prefix) else request.path
        if path.startswith(COMPONENTS) and path[len(COMPONENTS):].split("/", 1)[0] not in sys.modules:
            # Panel imports the module the URL names: only those the running app already has
            return app.get_handler_delegate(request, ErrorHandler, {"status_code": 404})
        return find_handler(request, **kwargs)

    app.find_handler = gated_find_handler
    app.add_transform(SetTokenCookie)
    app.crowdsort_gate = True


def build_off_the_loop(app, pool) -> None:
    """Make ``app`` (a Bokeh/Panel Application) build each session's document in ``pool``, not on
    the server's event loop: Bokeh builds it inside the page's request, and a dashboard page takes
    0.5–1 s to build, during which the server answered nothing else (30 page loads at once made
    every request, static files included, wait 15–30 s). The loop awaits the build and answers
    other requests meanwhile. A document is built by one thread and touched by no other until
    it is served; afterwards it belongs to the loop's thread, as Panel expects of its documents."""
    import asyncio
    import contextvars
    import threading

    from panel.io.state import state

    create, initialize = app.on_session_created, app.initialize_document
    built: set[int] = set()

    async def on_session_created(session_context):
        await create(session_context)
        doc = session_context._document
        loop_thread = threading.get_ident()
        ctx = contextvars.copy_context()
        await asyncio.get_running_loop().run_in_executor(pool, ctx.run, without_collections, initialize, doc)
        state._thread_id_[doc] = loop_thread  # Panel's own: its updates are applied, not deferred, on the loop
        built.add(id(doc))

    def initialize_document(doc):
        if id(doc) in built:  # Bokeh calls it after the hooks: done already
            built.discard(id(doc))
            return
        initialize(doc)  # the build failed in the pool (Bokeh logged it): once more, as Bokeh would

    app.on_session_created = on_session_created
    app.initialize_document = initialize_document


def without_collections(build, doc) -> None:
    """``build(doc)`` with Python's cycle collector paused: a page makes some 10,000 objects,
    and the full collections they set off walked everything the process holds, in the middle
    of the page (a page took 0.6–0.75 s without them, 0.7–1.5 s with them, at 1k faces). The
    collector runs again after it."""
    import gc

    was_on = gc.isenabled()
    gc.disable()
    try:
        build(doc)
    finally:
        if was_on:
            gc.enable()


PRELOAD_ENV = "CROWDSORT_DASHBOARD_PRELOAD"  # set by crowdsort dashboard: load the dataset before listening


def preload(files, app_args) -> None:
    """Before the server listens: each app script's ``preload(parse_args(app_args))``, where it
    has one (dashboard/app.py opens its dataset; a missing map is then computed in a thread, with progress lines),
    so the first page only reads what is loaded. The script is imported under a name of its own:
    Bokeh runs it as the page's code, which its ``__name__`` test keeps apart."""
    import importlib.util

    from ..progress import log, show_progress

    if not log.handlers:  # a bare line in the terminal, as the command line's
        show_progress()
    for i, path in enumerate(files):
        spec = importlib.util.spec_from_file_location(f"crowdsort_preload_{i}", path)
        if spec is None or spec.loader is None:
            continue
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if callable(getattr(module, "preload", None)) and callable(getattr(module, "parse_args", None)):
            module.preload(module.parse_args(list(app_args or [])))
    import gc

    # what is loaded now (modules, the dataset, the caches) stays for the server's life: the
    # collector no longer walks it at each full collection (one came in the middle of a page)
    gc.collect()
    gc.freeze()


def main(argv: list[str] | None = None) -> int:
    import argparse
    from concurrent.futures import ThreadPoolExecutor

    from panel.command.serve import Serve

    # one builder: the builds hold Python's lock, so more threads would not build faster on any
    # machine; the point is that the event loop goes on answering meanwhile
    pool = ThreadPoolExecutor(1, thread_name_prefix="crowdsort-session")

    class GatedServe(Serve):
        def customize_applications(self, args, applications):
            applications = super().customize_applications(args, applications)
            for app in applications.values():
                build_off_the_loop(app, pool)
            if os.environ.get(PRELOAD_ENV):  # before the port is bound: the URL is printed when it answers
                preload(args.files, args.args)
            return applications

        def customize_server(self, server):
            install_gate(server._tornado, server.port)
            return super().customize_server(server)

    parser = argparse.ArgumentParser(prog="python -m crowdsort.review.serve",
                                     description="panel serve, every route behind crowdsort's token gate")
    command = GatedServe(parser=parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return command.invoke(args) or 0


if __name__ == "__main__":
    sys.exit(main())
