"""What the dashboard must not do with what users and disks give it: run names or file names as
scripts, write outside the dataset, ask other servers for anything, or show itself to other
machines without the token (browser tests: Debian's Chromium driven by Playwright)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from test_dashboard import (ROOT, STATUS, Server, _browser_or_skip, chromium_browser,  # noqa: F401 (a fixture)
                            new_page, open_first_cluster, open_page)

sys.path.insert(0, str(ROOT))

NAME = "<img src=x onerror=alert(document.domain)>"  # a cluster name, and the dataset's folder name
FILE = "<img src=x0 onerror=alert(7)>.jpg"  # a photo's file name ("/" cannot be in one)
TOKEN_ENV = "CROWDSORT_DASHBOARD_TOKEN"


def settle(page, ms: int = 1500):
    """Time for an image that failed to load to run its onerror."""
    page.wait_for_timeout(ms)


def assert_nothing_ran(page, src: str = "x"):
    assert page.dialogs == [], f"a script ran: alert({page.dialogs})"
    assert page.locator(f'img[src="{src}"]').count() == 0  # Playwright's CSS reaches into shadow roots


@pytest.fixture(scope="module")
def hostile_dataset(tmp_path_factory, faces_store):
    """faces/ in a dataset folder named like a script, beside files that an export must leave."""
    parent = tmp_path_factory.mktemp("parent")
    (parent / "labels.csv").write_text("not crowdsort's\n")
    (parent / "dummy.txt").write_text("not crowdsort's either\n")
    shutil.copytree(faces_store.root, parent / NAME / "faces")
    return parent / NAME


@pytest.fixture(scope="module")
def hostile_server(hostile_dataset):
    server = Server(hostile_dataset).start()
    yield server
    server.stop()


def test_a_page_asks_nothing_of_other_servers(chromium_browser, hostile_server):
    page = open_page(chromium_browser, hostile_server)
    open_first_cluster(page)
    page.wait_for_load_state("networkidle")
    own = (hostile_server.url + "/", "data:", f"blob:{hostile_server.url}/")
    assert page.requests and [u for u in page.requests if not u.startswith(own)] == []
    page.close()


def test_names_and_the_dataset_name_are_shown_as_text(chromium_browser, hostile_server):
    sync_api = _browser_or_skip()
    title = f"crowdsort — {NAME}"
    page = open_page(chromium_browser, hostile_server)
    sync_api.expect(page.locator(".title").first).to_have_text(title)  # the template's header
    assert page.title() == title  # the tab: not escaped twice
    open_first_cluster(page)
    page.get_by_placeholder("name this person").fill(NAME)
    page.locator(".cs-name-save button").first.click()
    sync_api.expect(page.locator(".cs-detail-title").first).to_contain_text(f"— {NAME} (", timeout=30000)
    page.locator(".cs-clusters").get_by_text(NAME, exact=True).first.wait_for(timeout=30000)
    settle(page)
    assert_nothing_ran(page)
    page.close()

    # the name is stored: after a restart it reaches the page from the disk
    hostile_server.stop()
    hostile_server.start()
    page = open_page(chromium_browser, hostile_server)
    page.locator(".cs-clusters").get_by_text(NAME, exact=True).first.wait_for(timeout=30000)
    open_first_cluster(page)
    sync_api.expect(page.locator(".cs-detail-title").first).to_contain_text(f"— {NAME} (")
    settle(page)
    assert_nothing_ran(page)
    page.close()


@pytest.mark.parametrize("typed", ["..", "../x", "/tmp", ".", "", ".hidden", "a/b"])
def test_export_folder_is_one_plain_name(typed, tmp_path):
    from crowdsort.review.app import export_folder

    with pytest.raises(ValueError, match="not a folder name"):
        export_folder(tmp_path, typed)
    assert export_folder(tmp_path, " export ") == tmp_path / "export"
    (tmp_path / "elsewhere").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError, match="is a link"):
        export_folder(tmp_path, "elsewhere")


def test_an_export_outside_the_dataset_is_refused(chromium_browser, hostile_server, hostile_dataset):
    sync_api = _browser_or_skip()
    parent = hostile_dataset.parent
    before = sorted(p.name for p in parent.iterdir())
    page = open_page(chromium_browser, hostile_server)
    msg = page.locator(".cs-export-msg").first
    # first with the box as the page shows it, untouched: its "export" is what is written
    page.locator(".cs-export button").first.click()
    sync_api.expect(msg).to_have_text(f"wrote {hostile_dataset / 'export'}", timeout=60000)
    shutil.rmtree(hostile_dataset / "export")
    for typed in ["..", "../x", "/tmp", "."]:
        page.locator(".cs-export-folder input").first.fill(typed)
        page.locator(".cs-export button").first.click()
        sync_api.expect(msg).to_have_text(f"not written: {typed!r} is not a folder name: type one plain name, "
                                          "like export", timeout=30000)
    assert sorted(p.name for p in parent.iterdir()) == before
    assert (parent / "labels.csv").read_text() == "not crowdsort's\n" and (parent / "dummy.txt").exists()
    assert (hostile_dataset / "faces").is_dir()

    # a plain name is written, and the path in the message (the dataset's name) stays text
    page.locator(".cs-export-folder input").first.fill("export")
    page.locator(".cs-export button").first.click()
    sync_api.expect(msg).to_have_text(f"wrote {hostile_dataset / 'export'}", timeout=60000)
    assert (hostile_dataset / "export" / "labels.csv").exists()
    settle(page)
    assert_nothing_ran(page)
    page.close()


def test_a_damaged_annotations_file_is_shown_not_a_blank_page(chromium_browser, hostile_dataset, tmp_path):
    sync_api = _browser_or_skip()
    dataset = tmp_path / NAME
    # the module's dataset, with the vectors and map it may have stored already, but not its corrections
    shutil.copytree(hostile_dataset, dataset, ignore=shutil.ignore_patterns("annotations.jsonl*", "export", "*.log"))
    (dataset / "annotations.jsonl").write_bytes(b'{"id": "a", "names": {}}\nnot json\n')
    server = Server(dataset).start()
    try:
        page = new_page(chromium_browser)
        page.goto(f"{server.url}/app")
        page.get_by_text("could not open this dataset").wait_for(timeout=120000)
        sync_api.expect(page.locator(".cs-error").first).to_contain_text(str(dataset / "annotations.jsonl"))
        assert "Traceback" not in page.inner_text("body")
        settle(page)
        assert_nothing_ran(page)  # the path in the message holds the dataset's name
        page.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def hostile_image_run(tmp_path_factory, need_shared):
    """../shared/data/images in one folder, plus a copy of one photo (re-encoded: another
    content hash, nearly the same vector, so the two make a cluster) under a script's name."""
    pytest.importorskip("torch")
    from PIL import Image

    from crowdsort.pipeline import cluster_images

    photos = tmp_path_factory.mktemp("photos")
    for p in sorted(need_shared("images").rglob("*.jpg")):
        shutil.copy(p, photos / p.name)
    with Image.open(photos / "chelsea.jpg") as im:
        im.convert("RGB").save(photos / FILE, quality=80)
    ds = tmp_path_factory.mktemp("images-ds")
    cluster_images(ds, str(photos), to="cluster", model="efficientnet",
                   params={"min_cluster_size": 2, "min_samples": 1}, progress=False)
    return ds


def test_file_names_in_the_pickers_are_shown_as_text(chromium_browser, hostile_image_run):
    sync_api = _browser_or_skip()
    from crowdsort.review.opening import open_image_review

    s = open_image_review(hostile_image_run, "cluster")
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})  # the dashboard's defaults
    row = [Path(p).name for p in s.table["crop_path"]].index(FILE)
    c = int(s.labels[row])
    assert c >= 0, "the renamed copy should share a cluster with its original"
    label = f"#{list(s.members(c)).index(row)} {FILE}"  # as the dashboard numbers its gallery

    server = Server(hostile_image_run, "--run", "cluster").start()
    try:
        page = open_page(chromium_browser, server)
        title = page.get_by_text(re.compile(rf"Cluster {c:03d} \(\d+ images\)")).first
        for _ in range(5):  # a click on a page still wiring its events can be lost
            page.locator(".cs-clusters .tabulator-row").nth(c).click()
            try:
                title.wait_for(timeout=10000)
                break
            except Exception:
                continue
        face = page.locator(".cs-face").nth(list(s.members(c)).index(row))
        sync_api.expect(face.locator("img")).to_have_attribute("title", FILE, timeout=30000)  # its tooltip, as text
        face.click()  # one face chosen: its larger view
        page.locator(".cs-source-view img").first.wait_for(timeout=30000)
        page.locator(".cs-source select").first.select_option(label=label)
        settle(page)
        assert_nothing_ran(page, "x0")
        page.close()
    finally:
        server.stop()


# -- who may open the page -------------------------------------------------------------------------
@pytest.mark.parametrize("ip, given, expected, ok", [
    ("127.0.0.1", None, None, True),
    ("::1", None, None, True),
    ("::ffff:127.0.0.1", None, None, True),
    ("192.0.2.9", None, None, False),  # panel serve --address 0.0.0.0 without crowdsort: nobody else
    ("192.0.2.9", "t0ken", None, False),
    ("192.0.2.9", None, "t0ken", False),
    ("192.0.2.9", "wrong", "t0ken", False),
    ("192.0.2.9", "", "t0ken", False),
    ("192.0.2.9", "t0ken", "t0ken", True),
    ("127.0.0.1", "wrong", "t0ken", False),
    ("127.0.0.1", "t0ken", "t0ken", True),
    (None, None, None, False),
])
def test_who_is_admitted(ip, given, expected, ok):
    from dashboard.app import admitted

    assert admitted(ip, given, expected) is ok


def test_a_refused_session_loads_nothing(monkeypatch):
    import dashboard.app as app

    monkeypatch.setenv(TOKEN_ENV, "t0ken")
    monkeypatch.setattr(app, "ReviewApp", lambda *a, **k: pytest.fail("loaded the dataset for a refused client"))
    for request in [SimpleNamespace(arguments={"token": [b"wrong"]}, remote_ip="127.0.0.1"),
                    SimpleNamespace(arguments={}, remote_ip="192.0.2.9"),
                    SimpleNamespace(arguments={"token": [b"t0ken", b"t0ken"]}, remote_ip="192.0.2.9")]:
        monkeypatch.setattr(app, "current_request", lambda: request)
        page = app.create_app(SimpleNamespace(dataset="unused"))
        assert "access denied" in page.object and page.css_classes == ["cs-denied"]


def denied(page) -> bool:
    page.get_by_text("access denied").or_(page.get_by_text(STATUS)).first.wait_for(timeout=60000)
    if page.locator(".cs-denied").count():
        assert page.locator("img").count() == 0 and page.locator(".cs-clusters").count() == 0
        assert "crowdsort" not in page.inner_text("body")  # not even the dataset's name
        return True
    return False


def check_admission(browser, server, cases) -> None:
    """Each ``(query, refused)``: the page at ``/app<query>`` is the denial exactly when ``refused``."""
    for query, refused in cases:
        page = new_page(browser)
        page.goto(f"{server.url}/app{query}")
        assert denied(page) is refused, query
        page.close()


def test_a_configured_token_must_be_the_right_one(chromium_browser, hostile_dataset):
    server = Server(hostile_dataset, env={TOKEN_ENV: "right-t0ken"}).start()
    try:
        check_admission(chromium_browser, server, [("?token=wrong", True), ("?token=", True),
                                                   ("?token=right-t0ken", False), ("", False)])  # this machine needs no token
    finally:
        server.stop()


def test_the_cli_warns_and_hands_the_token_over_in_the_environment(tmp_path, monkeypatch, capsys):
    from crowdsort.cli import Dashboard, build_parser, main

    (tmp_path / "faces").mkdir()
    calls = []

    class Server:  # the server started: its command and environment noted; it answers at once
        def __init__(self, cmd, env=None):
            calls.append((cmd, env))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def poll(self):
            return None

        def wait(self, timeout=None):
            return 0
    monkeypatch.setattr(subprocess, "Popen", Server)
    # the URL is printed once the server answers on its port (none answers before it starts)
    monkeypatch.setattr(Dashboard, "answers", staticmethod(lambda host, port: bool(calls)))
    monkeypatch.setenv(TOKEN_ENV, "left over from somewhere")
    assert main(["dashboard", str(tmp_path), "--address", "127.0.0.1"]) == 0
    out = capsys.readouterr()
    cmd, env = calls.pop()
    assert "warning" not in out.err and TOKEN_ENV not in env and "token" not in out.out
    assert {"127.0.0.1:5006", "localhost:5006"} <= set(cmd)

    calls.clear()
    assert main(["dashboard", str(tmp_path), "--address", "0.0.0.0", "--port", "5010"]) == 0
    out = capsys.readouterr()
    cmd, env = calls.pop()
    token = env[TOKEN_ENV]
    assert len(token) >= 32 and token != "left over from somewhere"
    assert "warning" in out.err and "network" in out.err
    assert f"/app?token={token} " in out.out
    assert not any(token in c for c in cmd)  # `ps` shows the command line to every user
    host = re.search(r"http://(\S+?)/app", out.out).group(1)
    assert host in cmd and cmd[cmd.index(host) - 1] == "--allow-websocket-origin"
    again = build_parser().parse_args(["dashboard", str(tmp_path), "--address", "0.0.0.0"])
    assert Dashboard.server_command(again, Path("app.py"))[1][TOKEN_ENV] != token  # a new one at each start


def lan_address() -> str | None:
    from crowdsort.cli import Dashboard

    return next((h for h in Dashboard.host_names("0.0.0.0") if not Dashboard.is_local(h.strip("[]"))
                 and re.fullmatch(r"[\d.]+", h)), None)


def test_served_to_the_network_another_machine_needs_the_token(chromium_browser, hostile_dataset):
    """The command `crowdsort dashboard --address 0.0.0.0` runs, opened from this machine's LAN
    address (so the server sees a client that is not on loopback)."""
    from crowdsort.cli import Dashboard, build_parser

    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no address but loopback")
    server = Server(hostile_dataset, host=lan)
    args = build_parser().parse_args(["dashboard", str(hostile_dataset), "--address", "0.0.0.0",
                                      "--port", str(server.port)])
    server.cmd, env, url = Dashboard.server_command(args, ROOT / "dashboard" / "app.py")
    server.env = {TOKEN_ENV: env[TOKEN_ENV]}
    assert url.startswith(server.url)
    server.start()
    try:
        check_admission(chromium_browser, server, [("", True), ("?token=wrong", True),
                                                   (f"?token={env[TOKEN_ENV]}", False)])
    finally:
        server.stop()


def _status(url: str, headers: dict | None = None) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=120) as r:
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers)


def test_every_route_needs_the_token_from_another_machine(hostile_dataset, tmp_path):
    """Issue 32: served with --address 0.0.0.0, Panel's /components/<module>/… route imported
    the module named in the URL for anyone. Every route (page, static files, components, the
    websocket) refuses another machine without the token; and no route imports a module the
    app has not imported itself, token or not."""
    from crowdsort.cli import Dashboard, build_parser
    from crowdsort.review.serve import cookie_name

    lan = lan_address()
    if lan is None:
        pytest.skip("this machine has no address but loopback")
    probe = "crowdsort_probe_issue32"
    marker = tmp_path / "imported"
    (tmp_path / f"{probe}.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nclass C:\n    css = ['x.css']\n")
    (tmp_path / "x.css").write_text("p {}")
    server = Server(hostile_dataset, host=lan)
    args = build_parser().parse_args(["dashboard", str(hostile_dataset), "--address", "0.0.0.0",
                                      "--port", str(server.port)])
    server.cmd, env, url = Dashboard.server_command(args, ROOT / "dashboard" / "app.py")
    token = env[TOKEN_ENV]
    server.env = {TOKEN_ENV: token, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}
    server.start()
    try:
        base, local = server.url, f"http://127.0.0.1:{server.port}"
        component = f"/components/{probe}/C/css/x.css"
        ws = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Origin": base}
        routes = ["/app", "/app/", "/static/js/bokeh.min.js", "/favicon.ico", component, "/components/panel/x/y/z",
                  "/app/autoload.js", "/nowhere", "/"]
        for route in routes:
            assert _status(base + route)[0] == 403, route
            assert _status(base + route + "?token=wrong")[0] == 403, route
            assert _status(base + route, {"Cookie": f"{cookie_name(server.port)}=wrong"})[0] == 403, route
        assert _status(base + "/app/ws", ws)[0] == 403
        assert not marker.exists()

        # with the token: in the URL once, then in the cookie that answer set
        code, headers = _status(f"{base}/app?token={token}")
        assert code == 200 and "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
        cookie = {"Cookie": headers["Set-Cookie"].split(";")[0]}
        assert cookie["Cookie"] == f"{cookie_name(server.port)}={token}"
        assert _status(base + "/static/js/bokeh.min.js", cookie)[0] == 200
        assert _status(base + "/favicon.ico", cookie)[0] == 200
        assert _status(base + "/app/ws", {**ws, **cookie})[0] != 403  # past the gate: Bokeh's own handshake
        # a module the app imported is served; one it did not is not imported, token or not, here or not
        assert _status(base + component, cookie)[0] == 404
        assert _status(f"{base}{component}?token={token}")[0] == 404
        assert _status(local + component)[0] == 404
        assert not marker.exists()
        assert _status(local + "/static/js/bokeh.min.js")[0] == 200  # this machine needs no token
    finally:
        server.stop()


def test_the_gate_admits_as_the_page_does():
    from crowdsort.review.serve import admitted, given_token, token_cookies

    assert admitted("192.0.2.9", None, "t0ken", ["t0ken"])
    assert not admitted("192.0.2.9", None, "t0ken", ["stale"])
    assert not admitted("192.0.2.9", "wrong", "t0ken", ["t0ken"])  # the URL's wrong token is not overruled
    assert admitted("127.0.0.1", None, "t0ken", ["stale"])  # another server's cookie: ignored
    assert not admitted("192.0.2.9", None, None, ["t0ken"])
    assert given_token({"token": [b"a", b"a"]}) == "" and given_token({}) is None
    assert token_cookies({"crowdsort-token-5006": "x", "other": "y"}) == ["x"]


# -- what the dashboard hands out (issue 32) --------------------------------------------------------
def _small_session(tmp_path):
    """Four people of six faces each, crops written to ``tmp_path``, clustered."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from crowdsort.clustering.neighbors import knn_graph
    from crowdsort.review.session import Annotations, ReviewSession

    rng = np.random.default_rng(0)
    X = np.repeat(rng.normal(size=(4, 16)), 6, 0) + rng.normal(0, 0.05, (24, 16))
    X = (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32)
    ids = np.array([f"f{i:02d}" for i in range(24)], dtype=object)
    crops = [str(tmp_path / f"{i}.jpg") for i in ids]
    for c in crops:
        Image.new("RGB", (32, 32), (90, 120, 150)).save(c)
    s = ReviewSession(ids, X, knn_graph(X, 15), X[:, :2].copy(), Annotations.load(tmp_path / "a.jsonl"),
                      table=pd.DataFrame({"item_id": ids, "crop_path": crops}))
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    return s


def test_the_csv_downloads_hold_no_formulas(tmp_path):
    import csv
    import io

    from crowdsort.review.app import Dashboard

    evil = '=HYPERLINK("http://x","y")'
    session = _small_session(tmp_path)
    d = Dashboard(session, algorithm="hdbscan", min_cluster_size=2, min_samples=1)
    d._name(int(session.labels[0]), evil)
    downloads = d.export_widgets(tmp_path).objects[:2]
    for w in downloads:
        rows = list(csv.DictReader(io.StringIO(w.callback().getvalue())))
        labels = {r["label"] for r in rows}
        assert f"'{evil}" in labels and not [x for x in labels if x[:1] in "=+-@"], (w.filename, labels)


def test_export_with_the_folder_box_untouched_writes_export(tmp_path):
    """The box shows "export": pressing the button without typing writes there (it read the box's
    typed text, which Panel leaves empty until someone types: "'' is not a folder name")."""
    from crowdsort.review.app import Dashboard

    session = _small_session(tmp_path)
    d = Dashboard(session, algorithm="hdbscan", min_cluster_size=2, min_samples=1)
    d._name(int(session.labels[0]), "Ada")
    folder, btn, msg = d.export_widgets(tmp_path).objects[2:5]
    assert folder.value == "export"
    btn.clicks += 1
    assert msg.object.startswith("wrote "), msg.object
    assert (tmp_path / "export" / "Ada").is_dir() and any((tmp_path / "export" / "Ada").iterdir())


def _red(jpeg: bytes) -> bool:
    """Whether the picture is the red one planted outside the dataset (JPEG shifts it a little)."""
    import io

    from PIL import Image

    r, g, b = Image.open(io.BytesIO(jpeg)).convert("RGB").resize((1, 1)).getpixel((0, 0))
    return r > 200 and g < 60 and b < 60


def test_files_outside_the_dataset_are_not_shown_or_exported(faces_store, tmp_path, caplog):
    """A crop replaced by a link out of the dataset, and a source photo the dataset does not list
    (a hand-edited table), are neither shown nor copied: a grey square, a log line."""
    import base64

    from PIL import Image
    from test_dashboard import dataset_copy

    from crowdsort.review.app import Dashboard, card_thumb
    from crowdsort.review.opening import open_review

    secret = tmp_path / "private.jpg"  # outside the dataset, red
    Image.new("RGB", (64, 64), (255, 0, 0)).save(secret)
    dataset = dataset_copy(faces_store, tmp_path)
    session = open_review(dataset, progress=False)
    crop = Path(session.table["crop_path"].iloc[0])
    crop.unlink()
    crop.symlink_to(secret)
    session.table.loc[1, "source_image"] = str(secret)
    d = Dashboard(session, algorithm="hdbscan", min_cluster_size=2, min_samples=1)

    assert not _red(base64.b64decode(card_thumb(session, 0).split(",", 1)[1]))
    shown = d.gallery_data([0], ["x"])["thumbs"][0]
    assert not _red(base64.b64decode(shown.split(",", 1)[1]))
    assert not _red(d.source_views(1)[-1].object)
    assert str(crop) in caplog.text and str(secret) in caplog.text

    widgets = d.export_widgets(dataset)
    folder, btn, msg = widgets.objects[2:5]
    folder.value_input = "export"
    btn.clicks += 1
    assert msg.object.startswith("not written:") and str(crop) in msg.object
    copied = [p for p in dataset.rglob("*.jpg") if not p.is_symlink() and _red(p.read_bytes())]
    assert copied == []


def test_an_image_runs_pictures_are_shown_after_another_run_indexed_others(tmp_path):
    """images/index.parquet lists the latest image clustering's pictures only: an earlier run's
    picture is still shown when its bytes are the ones clustered (their hash is its item id),
    and a path edited to name another file is not."""
    from crowdsort.storage.images import content_hash
    from crowdsort.storage.paths import DatasetFiles

    photo, other = tmp_path / "photo.jpg", tmp_path / "other.jpg"
    photo.write_bytes(b"the clustered picture")
    other.write_bytes(b"a private picture")
    files = DatasetFiles(tmp_path / "ds", contents={str(photo): content_hash(photo.read_bytes()),
                                                   str(other): content_hash(b"what was clustered there")})
    assert files.allows(str(photo)) and not files.allows(str(other)) and not files.allows(str(tmp_path / "x.jpg"))
