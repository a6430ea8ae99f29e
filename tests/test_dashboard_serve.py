"""How the dashboard is served under concurrent sessions (issue 32, 13): the dataset loaded once
and shared by every session, each session's page built off the server's event loop so that
other requests (static files, other pages) are answered meanwhile."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from test_dashboard import ROOT, free_port

sys.path.insert(0, str(ROOT))

# an app whose build takes a while, holding Python's lock (as building Bokeh models does)
SLOW_APP = '''
import os, time
from pathlib import Path
import panel as pn

marks = Path(os.environ["MARKS"])
(marks / "building").touch()
while not (marks / "go").exists():  # busy, not sleeping: the build holds the interpreter
    sum(range(1000))
(marks / "built").touch()
pn.pane.Markdown("built").servable()
'''


def test_two_sessions_share_the_loaded_dataset(faces_store, tmp_path, monkeypatch):
    """The vectors, graph and map of a dataset are loaded once per server process: a second
    session (another tab, another user) gets the same object, not a copy."""
    import crowdsort.review.app as app
    from test_dashboard import dataset_copy

    dataset = dataset_copy(faces_store, tmp_path)
    loads = []
    real = app.open_review
    monkeypatch.setattr(app, "open_review", lambda *a, **k: loads.append(a) or real(*a, **k))
    first, second = app.ReviewApp(dataset), app.ReviewApp(str(dataset) + "/")
    assert first.session is second.session and len(loads) == 1
    assert first.dashboard is not second.dashboard  # each its own selection and undo


def test_sessions_opened_at_once_load_the_dataset_once(tmp_path, monkeypatch):
    import crowdsort.review.app as app

    loads = []

    def slow_open(*a, **k):
        loads.append(a)
        time.sleep(0.3)
        return object()

    monkeypatch.setattr(app, "open_review", slow_open)
    got = []
    threads = [threading.Thread(target=lambda: got.append(app.open_session(tmp_path))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1 and len({id(g) for g in got}) == 1


def test_a_static_file_is_answered_while_a_page_is_being_built(tmp_path):
    """The server answers the favicon while a session's page is still being built (Bokeh builds
    it inside the page's request, on the one thread that answers every request)."""
    script = tmp_path / "slow_app.py"
    script.write_text(SLOW_APP)
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "crowdsort.review.serve", str(script), "--address", "127.0.0.1",
                             "--port", str(port), "--allow-websocket-origin", f"127.0.0.1:{port}"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "MARKS": str(tmp_path)})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:  # up: the favicon needs no session
            try:
                urllib.request.urlopen(base + "/favicon.ico", timeout=30).read()
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "server.log").read_text()
                time.sleep(0.3)
        page = {}
        loader = threading.Thread(target=lambda: page.update(
            body=urllib.request.urlopen(base + "/slow_app", timeout=300).read()))
        loader.start()
        while not (tmp_path / "building").exists():
            assert loader.is_alive() and time.time() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.05)
        with urllib.request.urlopen(base + "/favicon.ico", timeout=120) as r:
            assert r.status == 200
        assert not (tmp_path / "built").exists() and loader.is_alive()  # answered during the build
        (tmp_path / "go").touch()
        loader.join(300)
        assert page["body"].startswith(b"<!DOCTYPE html>")
    finally:
        (tmp_path / "go").touch()
        proc.terminate()
        proc.wait(30)
        log.close()


def test_the_dashboard_command_serves_through_the_gated_server(tmp_path):
    from crowdsort.cli import Dashboard, build_parser

    args = build_parser().parse_args(["dashboard", str(tmp_path)])
    cmd = Dashboard.server_command(args, Path("app.py"))[0]
    assert cmd[1:3] == ["-m", "crowdsort.review.serve"]


def test_the_dashboard_command_prints_its_url_once_the_page_is_ready(faces_store, tmp_path):
    """``crowdsort dashboard`` loads the dataset in the server before it listens, and prints the URL
    once the server answers: the first page is not left to compute the map (issue 30: 30-42 s of a
    blank page). Over a dataset never clustered the map is computed in the background, saying so:
    neither the URL nor the page waits for it, and it is stored when done."""
    import re
    import shutil

    from test_dashboard import dataset_copy

    dataset = dataset_copy(faces_store, tmp_path)
    shutil.rmtree(dataset / "faces" / "projections", ignore_errors=True)  # as a dataset never clustered
    port = free_port()
    err = open(tmp_path / "stderr.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "crowdsort.cli", "dashboard", "-d", str(dataset), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=err, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline()
        assert re.match(rf"dashboard: http://127\.0\.0\.1:{port}/app ", line), line
        t = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/app", timeout=120) as r:
            assert r.status == 200 and b"<!DOCTYPE html>" in r.read()[:200]
        assert time.perf_counter() - t < 15  # ~1 s; generous for a busy machine, far below the map's 30 s
        deadline = time.monotonic() + 300  # the map, made meanwhile, is stored when done
        while not list((dataset / "faces" / "projections").glob("*.npy")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list((dataset / "faces" / "projections").glob("*.npy"))
        assert "computing the dashboard's map of" in (tmp_path / "stderr.txt").read_text()  # said in the terminal
    finally:
        proc.terminate()
        proc.wait(30)
        err.close()


def test_the_dashboard_command_refuses_a_port_another_server_answers_on(faces_store, tmp_path, capsys):
    """Its URL is printed once a server answers on the port: another's must not pass for it."""
    import socket

    from crowdsort.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "-d", str(faces_store.root.parent), "--port", str(port)]) == 1
    err = capsys.readouterr()
    assert f"port {port} of 127.0.0.1 is in use" in err.err and "http://" not in err.out


@pytest.fixture(autouse=True)
def _fresh_cache():
    """Each test's datasets loaded anew (the cache is the process's)."""
    import panel as pn

    yield
    for k in [k for k in pn.state.cache if isinstance(k, tuple) and k[:1] == ("crowdsort-review",)]:
        del pn.state.cache[k]
