"""The dashboard in a real browser: Debian's Chromium driven by Playwright, against the app
served by `panel serve` on a free local port over a dataset built from ../shared/data/faces."""
from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = ROOT / "test-artifacts"


def _browser_or_skip():
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is missing: .ci/run installs Debian's chromium for the browser tests")
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``panel serve dashboard/app.py`` on a free port; ``cmd`` and ``env`` replace the command
    (``{port}`` in it is filled in) and add to the environment."""

    def __init__(self, dataset: Path, *args: str, cmd: list[str] | None = None, env: dict | None = None,
                 host: str = "127.0.0.1"):
        self.dataset, self.args, self.port, self.proc = dataset, list(args), free_port(), None
        self.host, self.env = host, env or {}
        self.cmd = cmd or [
            # as crowdsort dashboard serves it: the token gate, each page built off the event loop
            sys.executable, "-m", "crowdsort.review.serve", str(ROOT / "dashboard" / "app.py"), "--address", "127.0.0.1",
            "--port", "{port}", "--allow-websocket-origin", "127.0.0.1:{port}",
            "--args", "--dataset", str(self.dataset), *self.args]

    def start(self):
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        self.log = open(self.dataset / f"server-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT,
                                     env={**os.environ, **self.env})
        deadline = time.time() + 300
        while time.time() < deadline:
            try:  # each try renders a page: a short timeout on a busy machine would pile them up
                urllib.request.urlopen(f"{self.url}/app", timeout=120)
                return self
            except urllib.error.HTTPError:  # it answers (refusing a client it does not admit)
                return self
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.5)
        self.proc.terminate()
        raise RuntimeError(f"dashboard did not start: {Path(self.log.name).read_text()[-2000:]}")

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


@pytest.fixture(scope="module")
def chromium_browser():
    sync_api = _browser_or_skip()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync"])
        yield b
        b.close()


STATUS = re.compile(r"(\d+) clusters, noise")


def status_clusters(page) -> int:
    """The cluster count shown in the sidebar (-1 while the status is being redrawn)."""
    try:
        m = STATUS.search(page.get_by_text(STATUS).first.inner_text(timeout=5000))
    except Exception:
        return -1
    return int(m.group(1)) if m else -1


def until(condition, timeout: float = 30) -> bool:
    """Polls ``condition`` until it holds or ``timeout`` seconds pass; its last answer (the
    status and the detail are redrawn by the server, some time after the click)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)
    return condition()


def clusters_after(page, setting: str, timeout: float = 60) -> int:
    """The cluster count once the status reports `setting`: each key press re-clusters, and a click
    made between two re-clusterings would be undone by the next one."""
    status = page.get_by_text(re.compile(re.escape(setting) + r"\b.*clusters, noise")).first
    status.wait_for(timeout=timeout * 1000)
    return int(STATUS.search(status.inner_text()).group(1))


def open_first_cluster(page, items: str = "faces"):
    """Click the first row of the cluster list: its detail (title, maybe with a name) shows."""
    open_cluster(page, 0, rf"Cluster 000( — .+)? \(\d+ {items}\)")


def dataset_copy(store, tmp_path) -> Path:
    """A dataset of its own over a copy of ``store`` (its annotations not shared with other tests)."""
    dataset = tmp_path / "ds"
    shutil.copytree(store.root, dataset / "faces")
    return dataset


def new_page(chromium_browser):
    """A page that keeps, from its first request, the URLs it asked for and the messages of the
    dialogs it opened (dismissed: a script running where only text belongs)."""
    page = chromium_browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page.requests, page.dialogs, page.errors = [], [], []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("console", lambda m: page.errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    return page


def open_page(chromium_browser, server, query: str = ""):
    page = new_page(chromium_browser)
    page.goto(f"{server.url}/app{query}")
    page.get_by_text(STATUS).first.wait_for(timeout=60000)
    page.locator(".cs-clusters .tabulator-row").first.wait_for(timeout=60000)
    return page


def test_dashboard_in_a_browser(chromium_browser, faces_store, tmp_path):
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        # the map is drawn, in its tab
        page.get_by_text("Map", exact=True).first.click()
        page.locator(".bk-Canvas, canvas").first.wait_for(timeout=30000)
        n0 = status_clusters(page)
        assert n0 >= 15

        # moving a parameter re-clusters and changes the count
        handle = page.locator(".noUi-handle").first  # Min cluster size
        handle.focus()
        for _ in range(3):
            handle.press("ArrowRight")
        n1 = clusters_after(page, "min_cluster_size=5")
        assert n1 != n0 and n1 < n0  # larger clusters → fewer clusters

        # clicking a cluster shows its prototypes
        open_first_cluster(page)
        assert page.locator(".cs-gallery img").count() >= 3

        # naming it (a wrong name undone first) puts the name in the downloaded CSV
        page.get_by_placeholder("name this person").fill("Wrong Name")
        page.locator(".cs-name-save button").first.click()
        page.locator(".cs-clusters >> text=Wrong Name").first.wait_for(timeout=30000)
        page.locator(".cs-undo button").first.click()  # undo takes the name back
        page.locator(".cs-clusters >> text=Wrong Name").first.wait_for(state="detached", timeout=30000)
        sync_api.expect(page.get_by_placeholder("name this person")).to_have_value("", timeout=30000)  # redrawn
        page.get_by_placeholder("name this person").fill("Test Person")
        page.locator(".cs-name-save button").first.click()
        page.locator(".cs-clusters >> text=Test Person").first.wait_for(timeout=30000)
        with page.expect_download() as dl:
            page.locator(".cs-download").first.click()
        csv = pd.read_csv(dl.value.path())
        assert (csv["label"] == "Test Person").sum() == n_named(csv)
        assert n_named(csv) >= 3 and {"face_id", "source_image", "cluster", "label"} <= set(csv.columns)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.close()

    # after a restart the name is still there
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        page.locator(".cs-clusters >> text=Test Person").first.wait_for(timeout=30000)
        page.close()


def n_named(csv: pd.DataFrame) -> int:
    return int(csv["labelled"].sum())


@pytest.fixture(scope="module")
def image_run(tmp_path_factory, need_shared):
    """../shared/data/images (12 photos in 8 categories) clustered by EfficientNet-Lite0."""
    pytest.importorskip("torch")
    from crowdsort.pipeline import cluster_images

    ds = tmp_path_factory.mktemp("images-ds")
    cluster_images(ds, str(need_shared("images")), to="cluster", model="efficientnet",
                   params={"min_cluster_size": 2, "min_samples": 1}, progress=False)
    return ds


def test_image_run_review_keeps_names_in_the_image_store(image_run):
    from crowdsort.review.opening import open_image_review
    from crowdsort.pipeline import load_cluster_run

    items, _ = load_cluster_run(image_run, "cluster")
    s = open_image_review(image_run, "cluster")
    assert s.kind == "images" and list(s.ids) == items["item_id"].tolist() and len(s.ids) == 12
    s.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    assert s.summary()["clusters"] >= 2
    members = s.ids[s.members(0)]
    s.name(0, "first group")
    table = s.labelled_table()
    assert set(table.loc[table["label"] == "first group", "item_id"]) == set(members)
    # whatever the file's format (annotations.json, .jsonl): in the image store, not the dataset's
    assert list((image_run / "images").glob("annotations.json*")) and not list(image_run.glob("annotations.json*"))

    again = open_image_review(image_run, "cluster")
    again.recluster("hdbscan", {"min_cluster_size": 2, "min_samples": 1})
    assert "first group" in again.names().values()


def test_a_face_run_or_a_missing_run_is_refused_in_one_line(faces_store, tmp_path, capsys):
    from crowdsort.cli import main
    from crowdsort.pipeline import cluster_faces

    ds = tmp_path / "ds"
    shutil.copytree(faces_store.root, ds / "faces")
    cluster_faces(ds, progress=False)
    assert main(["dashboard", str(ds), "--run", "cluster"]) == 1
    err = capsys.readouterr().err.strip()
    assert "a face cluster run" in err and len(err.splitlines()) == 1
    assert main(["dashboard", str(ds), "--run", "nope"]) == 1
    assert "no cluster run here" in capsys.readouterr().err


def test_image_run_in_a_browser(chromium_browser, image_run):
    with Server(image_run, "--run", "cluster") as server:
        page = open_page(chromium_browser, server)
        page.get_by_text("to see its images").first.wait_for(timeout=30000)
        open_first_cluster(page, "images")
        assert page.locator(".cs-gallery img").count() >= 2
        page.get_by_placeholder("name this group").first.wait_for(timeout=10000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-images.png"), full_page=True)
        page.close()


def open_cluster(page, row: int, title: str):
    """One click on a row of the cluster list opens the detail titled ``title`` (a regex): a
    click is never lost, not even the first one on a page just loaded."""
    page.locator(".cs-clusters .tabulator-row").nth(row).click()
    page.get_by_text(re.compile(title)).first.wait_for(timeout=30000)
    page.locator(".cs-gallery img").first.wait_for(timeout=30000)


def detail_size(page, c: int) -> int:
    text = page.get_by_text(re.compile(rf"Cluster {c:03d}( — .+)? \(\d+ faces\)")).first.inner_text()
    return int(re.search(r"\((\d+) faces\)", text).group(1))


def test_faces_chosen_by_click_move_to_a_person_and_the_people_view_opens_them(chromium_browser, faces_store, tmp_path):
    """Click, ctrl-click two faces of cluster 1, move them to the person named in cluster 0 (the
    name box completes it); the undo button says what it will undo; the person's card in the
    people view shows the new size and opens the detail."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        open_first_cluster(page)
        size0 = detail_size(page, 0)
        page.get_by_placeholder("name this person").fill("Ada")
        page.locator(".cs-name-save button").first.click()
        page.locator(".cs-clusters >> text=Ada").first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: name cluster 000 'Ada'", timeout=30000)

        open_cluster(page, 1, r"Cluster 001 \(\d+ faces\)")
        size1 = detail_size(page, 1)
        faces = page.locator(".cs-face")
        faces.nth(0).click()
        faces.nth(2).click(modifiers=["Control"])
        sync_api.expect(page.locator(".cs-face.cs-chosen")).to_have_count(2, timeout=10000)
        sync_api.expect(page.locator(".cs-chosen-count")).to_contain_text("2 chosen", timeout=10000)
        box = page.locator(".cs-move-name input").first
        box.fill("Ad")
        page.get_by_text("Ada", exact=True).last.wait_for(timeout=10000)  # the completion offered
        box.fill("Ada")
        page.locator(".cs-move button").first.click()
        page.get_by_text(re.compile(rf"Cluster 001 \({size1 - 2} faces\)")).first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-undo button")).to_have_text(
            "Undo: move to 'Ada' 2 faces of cluster 001", timeout=30000)

        page.get_by_text("People", exact=True).first.click()
        card = page.locator(".cs-card-open button").filter(has_text=f"cluster 000 · {size0 + 2} faces")
        card.first.wait_for(timeout=30000)
        assert page.locator(".cs-card").count() >= 10 and page.locator(".cs-card img").count() >= 20
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-people.png"), full_page=True)
        card.first.click()
        page.get_by_text(re.compile(rf"Cluster 000 — Ada \({size0 + 2} faces\)")).first.wait_for(timeout=30000)

        other = open_page(chromium_browser, server)  # another tab: this tab's corrections are not its to undo
        other.locator(".cs-clusters >> text=Ada").first.wait_for(timeout=30000)
        sync_api.expect(other.locator(".cs-undo button")).to_have_text("Nothing to undo", timeout=30000)
        sync_api.expect(other.locator(".cs-undo button")).to_be_disabled()
        other.close()
        page.close()


def test_suggestions_say_unknown_for_a_person_not_in_the_references(chromium_browser, faces_store, tmp_path, need_shared):
    """With ../shared/data/references (15 of the example's 27 people): a cluster of an enrolled
    person gets their name as the suggestion; one of a stranger gets "unknown" first, the nearest
    names greyed after it."""
    sync_api = _browser_or_skip()
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    refs = str(need_shared("references"))
    dataset = dataset_copy(faces_store, tmp_path)
    session = open_review(dataset, refs=refs, progress=False)
    Dashboard(session)  # the page's clustering
    rows = session.clusters()["cluster"].tolist()
    verdict = {c: session.suggestions(c)["label"].iloc[0] for c in rows}
    known = next(c for c in rows if verdict[c] != "unknown")
    stranger = next(c for c in rows if verdict[c] == "unknown")

    with Server(dataset, "--refs", refs) as server:
        page = open_page(chromium_browser, server)
        open_cluster(page, rows.index(known), rf"Cluster {known:03d} \(\d+ faces\)")
        sync_api.expect(page.locator(".cs-sugg-best button").first).to_contain_text(verdict[known], timeout=30000)
        open_cluster(page, rows.index(stranger), rf"Cluster {stranger:03d} \(\d+ faces\)")
        page.locator(".cs-sugg-unknown").get_by_text("unknown").first.wait_for(timeout=30000)
        assert page.locator(".cs-sugg-best").count() == 0 and page.locator(".cs-sugg-other").count() == 3
        page.close()


def test_unknown_for_an_unenrolled_persons_cluster_on_lfw_dev(chromium_browser, lfw_store, tmp_path, need_shared):
    """lfw-dev with its references, people told apart by their folders: the largest cluster all of
    one person who is not enrolled says "unknown" first, the nearest names greyed after it (an
    enrolled person's name is tested on faces/ above)."""
    _browser_or_skip()
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    refs = need_shared("lfw-dev/references")
    enrolled = {p.name for p in refs.iterdir() if p.is_dir()}
    dataset = dataset_copy(lfw_store, tmp_path)
    session = open_review(dataset, refs=str(refs), progress=False)
    Dashboard(session)  # the page's clustering
    person = session.table["source_image"].map(lambda p: Path(p).parent.name).to_numpy()
    rows = session.clusters()["cluster"].tolist()

    stranger = next(c for c in rows if len(who := set(person[session.labels == c])) == 1 and not who & enrolled)
    assert rows.index(stranger) < 20  # drawn without scrolling the list

    with Server(dataset, "--refs", str(refs)) as server:
        page = open_page(chromium_browser, server)
        open_cluster(page, rows.index(stranger), rf"Cluster {stranger:03d} \(\d+ faces\)")
        page.locator(".cs-sugg-unknown").get_by_text("unknown").first.wait_for(timeout=30000)
        assert page.locator(".cs-sugg-best").count() == 0 and page.locator(".cs-sugg-other").count() == 3
        page.close()


def test_faces_that_may_be_this_person_are_added_with_one_button_on_lfw_dev(chromium_browser, lfw_store, tmp_path, need_shared):
    """lfw-dev as the page first clusters it: the first cluster in the list with noise faces near it
    shows them under "Faces that may be this person", none chosen; a click chooses one (the button
    counts it), another click on it unchooses it, and one button adds the chosen (undoable)."""
    sync_api = _browser_or_skip()
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    dataset = dataset_copy(lfw_store, tmp_path)
    session = open_review(dataset, progress=False)
    Dashboard(session)  # the page's clustering
    rows = session.clusters()["cluster"].tolist()
    c = next(c for c in rows if len(session.likely_members(c)))
    assert rows.index(c) < 20  # drawn without scrolling the list
    n, size = min(len(session.likely_members(c)), 24), int((session.labels == c).sum())

    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        open_cluster(page, rows.index(c), rf"Cluster {c:03d} \({size} faces\)")
        page.get_by_text("Faces that may be this person").first.wait_for(timeout=30000)
        offered, add = page.locator(".cs-likely .cs-face"), page.locator(".cs-likely-add button")
        sync_api.expect(offered).to_have_count(n, timeout=30000)
        sync_api.expect(page.locator(".cs-likely .cs-face.cs-chosen")).to_have_count(0)
        sync_api.expect(add).to_be_disabled()
        offered.first.click()  # chosen
        sync_api.expect(page.locator(".cs-likely .cs-face.cs-chosen")).to_have_count(1, timeout=10000)
        sync_api.expect(add).to_have_text(f"Add 1 to cluster {c:03d}", timeout=10000)
        offered.first.click()  # unchosen: a plain click toggles here
        sync_api.expect(add).to_be_disabled(timeout=10000)
        offered.first.click()
        sync_api.expect(add).to_be_enabled(timeout=10000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-likely.png"), full_page=True)
        add.click()
        page.get_by_text(re.compile(rf"Cluster {c:03d} \({size + 1} faces\)")).first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-undo button")).to_have_text(f"Undo: add 1 face to cluster {c:03d}", timeout=30000)
        page.close()


def test_merge_from_a_suggestion_then_a_split_keeps_the_name(chromium_browser, faces_store, tmp_path):
    """The open cluster lists the clusters most like it, each with its best face; one click on
    the first merges it in: one cluster fewer, the open one larger, and undo says so. Named and
    split again, one half keeps the name."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        before = status_clusters(page)
        open_first_cluster(page)
        size0 = detail_size(page, 0)
        near = page.locator(".cs-near .cs-merge-near button")
        near.first.wait_for(timeout=30000)
        assert page.locator(".cs-near img").count() == near.count() >= 1
        label = near.first.inner_text()
        other = int(label.split()[2])  # Merge cluster 003 — name (distance)
        near.first.click()
        sync_api.expect(page.locator(".cs-undo button")).to_have_text(f"Undo: merge cluster 000, cluster {other:03d}",
                                                                       timeout=30000)
        assert until(lambda: status_clusters(page) == before - 1 and detail_size(page, 0) > size0)

        page.get_by_placeholder("name this person").fill("Ada")
        page.locator(".cs-name-save button").first.click()
        named = page.locator(".cs-clusters .tabulator-row").filter(has_text="Ada")
        named.first.wait_for(timeout=30000)
        page.locator(".cs-split button").first.click()
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: split cluster 000", timeout=30000)
        assert until(lambda: status_clusters(page) == before)
        sync_api.expect(named).to_have_count(1, timeout=30000)
        page.close()


def test_a_lasso_on_the_map_makes_a_new_person(chromium_browser, faces_store, tmp_path):
    """Drawing a lasso over the left part of the map (the lasso is the map's drag tool) chooses the
    faces inside it; one of the noise faces "like these" clicked joins them; "New person" puts
    them in one new cluster, which opens, and undo says so."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        page.get_by_text("Map", exact=True).first.click()
        help_text = page.get_by_text("Draw a lasso on the map").first
        help_text.wait_for(timeout=30000)
        assert "toolbar to the right of the map" in help_text.inner_text()  # where the tools are
        page.locator(".bk-Canvas").first.wait_for(timeout=30000)
        box = page.locator(".bk-Canvas").first.bounding_box()
        x, y, w, h = box["x"], box["y"], box["width"], box["height"]
        corners = [(x + 0.08 * w, y + 0.12 * h), (x + 0.55 * w, y + 0.12 * h), (x + 0.55 * w, y + 0.92 * h),
                   (x + 0.08 * w, y + 0.92 * h), (x + 0.08 * w, y + 0.13 * h)]
        page.mouse.move(*corners[0])
        page.mouse.down()
        for c in corners[1:]:
            page.mouse.move(*c, steps=8)
        page.mouse.up()
        count = page.get_by_text(re.compile(r"\d+ faces chosen on the map")).first
        count.wait_for(timeout=30000)
        n = int(count.inner_text().split()[0])
        total = int(re.search(r"noise \d+ of (\d+)", page.get_by_text(STATUS).first.inner_text()).group(1))
        assert 0 < n < total
        like = page.locator(".cs-like .cs-face")  # "Faces like these": noise faces near the chosen, none chosen
        assert like.count() >= 1 and page.locator(".cs-like .cs-face.cs-chosen").count() == 0
        assert page.locator(".cs-map-chosen img").count() - like.count() == min(n, 24)
        like.first.click()
        sync_api.expect(count).to_have_text(re.compile(r"and 1 like them$"), timeout=30000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-lasso.png"), full_page=True)
        page.locator(".cs-map-new-person button").first.click()
        sync_api.expect(page.locator(".cs-undo button")).to_have_text(
            f"Undo: new person from {n + 1} faces chosen on the map", timeout=30000)
        page.get_by_text(re.compile(rf"Cluster \d+ \({n + 1} faces\)")).first.wait_for(timeout=30000)
        page.get_by_text("Draw a lasso on the map").first.wait_for(timeout=30000)  # the choice is spent
        page.close()


def test_the_review_queue_walks_unnamed_clusters_then_places_noise(chromium_browser, faces_store, tmp_path):
    """After naming cluster 0, the Review tab opens the unnamed clusters one after another in the
    detail, then offers the noise faces beside the named person nearest them: one click adds one
    to that person (undoable), and the noise shrinks by one."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        open_first_cluster(page)
        page.get_by_placeholder("name this person").fill("Ada")
        page.locator(".cs-name-save button").first.click()
        page.locator(".cs-clusters >> text=Ada").first.wait_for(timeout=30000)
        page.get_by_text("Review", exact=True).first.click()
        nxt = page.locator(".cs-queue-open button").first
        sync_api.expect(nxt).to_contain_text("Open cluster 001", timeout=30000)
        nxt.click()
        page.get_by_text(re.compile(r"Cluster 001 \(\d+ faces\)")).first.wait_for(timeout=30000)
        sync_api.expect(nxt).to_contain_text("Open cluster 002", timeout=30000)  # the next one, largest first

        noise = page.get_by_text(re.compile(r"\d+ noise faces beside the named person nearest them \(\d+ close")).first
        noise.wait_for(timeout=30000)
        before = int(noise.inner_text().split()[0])
        add = page.locator(".cs-queue-add button").first
        sync_api.expect(add).to_have_text("Add to Ada")
        add.click()
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: move to 'Ada' 1 face from noise",
                                                                       timeout=30000)
        page.get_by_text(re.compile(rf"^{before - 1} noise faces? beside")).first.wait_for(timeout=30000)

        # ticks on two pages, kept while the pages turn, added with one button
        add_ticked, ticks = page.locator(".cs-queue-add-ticked button"), page.locator(".cs-queue-tick input")
        sync_api.expect(add_ticked).to_be_disabled()
        ticks.nth(0).check()
        ticks.nth(1).check()
        sync_api.expect(add_ticked).to_have_text("Add the 2 ticked to the people beside them", timeout=30000)
        page.locator(".cs-queue-next button").first.click()
        sync_api.expect(page.locator(".cs-queue-page")).to_contain_text("page 2 of", timeout=30000)
        sync_api.expect(ticks.nth(0)).not_to_be_checked(timeout=30000)
        ticks.nth(0).check()
        sync_api.expect(add_ticked).to_have_text("Add the 3 ticked to the people beside them", timeout=30000)
        page.locator(".cs-queue-prev button").first.click()
        sync_api.expect(ticks.nth(1)).to_be_checked(timeout=30000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-review.png"), full_page=True)
        add_ticked.click()
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: add 3 faces from noise to 1 person",
                                                                       timeout=30000)
        page.get_by_text(re.compile(rf"^{before - 4} noise faces? beside")).first.wait_for(timeout=30000)
        sync_api.expect(add_ticked).to_be_disabled()
        page.close()


def test_a_click_made_while_the_server_redraws_is_not_lost(chromium_browser, faces_store, tmp_path):
    """Opening cluster 1 and pressing Split at once (before the detail is redrawn): the badge
    says the server is working, and the Split is made on the cluster just opened, not lost with
    the button the redraw replaced (nor made on the cluster shown before)."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        open_first_cluster(page)
        before = status_clusters(page)
        page.locator(".cs-clusters .tabulator-row").nth(1).click()
        sync_api.expect(page.locator(".cs-busy")).to_be_visible()  # at once, before the server answers
        page.locator(".cs-split button").first.click()  # still cluster 0's button on the screen
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: split cluster 001", timeout=30000)
        assert until(lambda: status_clusters(page) == before + 1)
        sync_api.expect(page.locator(".cs-busy")).to_be_hidden(timeout=30000)
        page.close()


def faces_in_view(page, viewport_height: int = 1000) -> int:
    """Face pictures of the people cards drawn inside the window, without scrolling."""
    return page.evaluate("""(h) => {
      const all = (root, inside, out = []) => {  // through Bokeh's shadow roots: a card's pictures are in its panes'
        for (const el of root.querySelectorAll('*')) {
          const inCard = inside || !!el.closest('.cs-card');
          if (el.tagName === 'IMG' && inCard) out.push(el);
          if (el.shadowRoot) all(el.shadowRoot, inCard, out);
        }
        return out;
      };
      return all(document, false).filter((img) => {
        const r = img.getBoundingClientRect();
        return img.complete && img.naturalWidth > 0 && r.width > 0 && r.top >= 0 && r.bottom <= h;
      }).length;
    }""", viewport_height)


def test_the_page_opens_on_the_people_and_a_card_named_in_place_stays(chromium_browser, faces_store, tmp_path):
    """The first view, without a click: the people as cards with their faces (at least 10 face
    pictures in the window), largest first, the map not even made; a name typed on the first
    card (Enter) names that cluster everywhere, and the card stays where it was."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        page.locator(".cs-card img").first.wait_for(timeout=30000)
        assert until(lambda: faces_in_view(page) >= 10), faces_in_view(page)
        assert page.locator(".bk-Canvas").count() == 0  # the map waits for its tab
        assert not [e for e in page.errors if "rendering Bokeh items" in e], page.errors  # every part drawn
        opens = page.locator(".cs-card-open button")
        sizes = [int(re.search(r"· (\d+) faces?", opens.nth(i).inner_text()).group(1)) for i in range(3)]
        assert sizes == sorted(sizes, reverse=True)
        first = opens.first.inner_text()
        assert first.startswith("cluster 000 · ")  # spelled as the list's 000 and the exports' "cluster 000"
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-first-view.png"))
        save = page.locator(".cs-card-save button").first
        sync_api.expect(save).to_be_disabled()  # nothing typed: nothing to save
        where = page.locator(".cs-card-open button").first.bounding_box()
        box = page.locator(".cs-card-name input").first
        box.fill("Ada")
        box.press("Enter")
        page.locator(".cs-clusters >> text=Ada").first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-undo button")).to_have_text("Undo: name cluster 000 'Ada'", timeout=30000)
        sync_api.expect(page.locator(".cs-card-open button").first).to_have_text(first)  # no jump
        sync_api.expect(page.locator(".cs-card-name input").first).to_have_value("Ada", timeout=30000)
        page.wait_for_timeout(1000)
        assert page.locator(".cs-card-open button").first.bounding_box()["y"] == where["y"]  # nor the page scrolled
        page.locator(".cs-card-open button").nth(1).click()  # Open: the detail comes into view
        title = page.locator(".cs-detail-title").first
        sync_api.expect(title).to_contain_text("Cluster 001", timeout=30000)
        assert until(lambda: 0 <= title.bounding_box()["y"] < 1000, 10)
        page.close()


def test_every_default_pressed_untouched_does_what_it_says(chromium_browser, faces_store, tmp_path):
    """Each button pressed with its fields as the page shows them: the downloads download, Export
    writes the export folder, the people's filters and pages show people, the review's Open opens;
    Merge, Save and the gallery's actions are disabled until there is something to act on."""
    sync_api = _browser_or_skip()
    dataset = dataset_copy(faces_store, tmp_path)
    with Server(dataset) as server:
        page = open_page(chromium_browser, server)
        n = status_clusters(page)
        total = int(re.search(r"noise \d+ of (\d+)", page.get_by_text(STATUS).first.inner_text()).group(1))
        sync_api.expect(page.locator(".cs-merge button")).to_be_disabled()  # nothing chosen to merge

        with page.expect_download() as dl:
            page.locator(".cs-download").first.click()
        csv = pd.read_csv(dl.value.path())
        assert len(csv) == total and (csv.loc[csv["cluster"] == 0, "label"] == "cluster 000").all()
        with page.expect_download() as dl:
            page.get_by_text("Download label,cluster CSV").first.click()
        assert list(pd.read_csv(dl.value.path()).columns) == ["label", "cluster"]  # nobody named yet: no rows

        page.locator(".cs-export button").first.click()
        sync_api.expect(page.locator(".cs-export-msg").first).to_have_text(f"wrote {dataset / 'export'}",
                                                                          timeout=60000)
        assert (dataset / "export" / "labels.csv").exists() and (dataset / "export" / "cluster 000").is_dir()

        count = page.locator(".cs-people-count").first
        sync_api.expect(count).to_contain_text(f"page 1 of {-(-n // 24)}")
        assert page.locator(".cs-card").count() == min(n, 24)
        sync_api.expect(page.locator(".cs-people-prev button")).to_be_disabled()
        if n > 24:
            page.locator(".cs-people-next button").first.click()
            sync_api.expect(count).to_contain_text("page 2 of", timeout=30000)
            sync_api.expect(page.locator(".cs-card")).to_have_count(min(n - 24, 24), timeout=30000)
            page.locator(".cs-people-prev button").first.click()
            sync_api.expect(count).to_contain_text("page 1 of", timeout=30000)

        page.get_by_text("Review", exact=True).first.click()
        nxt = page.locator(".cs-queue-open button").first
        sync_api.expect(nxt).to_contain_text("Open cluster 000", timeout=30000)
        nxt.click()
        page.get_by_text(re.compile(r"Cluster 000 \(\d+ faces\)")).first.wait_for(timeout=30000)
        page.locator(".cs-gallery img").first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-name-save button")).to_be_disabled()  # nothing typed
        for css in ("reject", "notface", "move", "new-person"):  # nothing chosen
            sync_api.expect(page.locator(f".cs-{css} button").first).to_be_disabled()
        page.locator(".cs-face").first.click()
        sync_api.expect(page.locator(".cs-reject button").first).to_be_enabled(timeout=30000)
        sync_api.expect(page.locator(".cs-move button").first).to_be_disabled()  # no name typed
        page.close()


def test_the_review_is_driven_by_the_keyboard(chromium_browser, faces_store, tmp_path, need_shared):
    """The keys shown on the page: n opens the next cluster, x rejects the face chosen in it, u
    undoes (typed in a box, the letters are text, not commands), a accepts the reference
    library's name for the open cluster, the name each card offers with an Accept button."""
    sync_api = _browser_or_skip()
    from crowdsort.review.app import Dashboard
    from crowdsort.review.opening import open_review

    refs = str(need_shared("references"))
    dataset = dataset_copy(faces_store, tmp_path)
    session = open_review(dataset, refs=refs, progress=False)
    Dashboard(session)  # the page's clustering
    rows = session.clusters()["cluster"].tolist()
    verdict = {c: session.suggestions(c)["label"].iloc[0] for c in rows}
    known = next(c for c in rows if verdict[c] != "unknown")

    with Server(dataset, "--refs", refs) as server:
        page = open_page(chromium_browser, server)
        page.locator(".cs-card-accept button").filter(has_text=f"Accept: {verdict[known]}").first.wait_for(timeout=30000)
        keys = page.locator(".cs-keys").first
        sync_api.expect(keys).to_contain_text("n open the next cluster to review")
        page.get_by_text("Review", exact=True).first.click()
        page.locator(".cs-queue-keys").first.wait_for(timeout=30000)
        page.keyboard.press("n")
        page.get_by_text(re.compile(r"Cluster 000 \(\d+ faces\)")).first.wait_for(timeout=30000)
        page.locator(".cs-gallery img").first.wait_for(timeout=30000)
        page.keyboard.press("n")
        page.get_by_text(re.compile(r"Cluster 001 \(\d+ faces\)")).first.wait_for(timeout=30000)
        size = detail_size(page, 1)
        page.locator(".cs-face").nth(1).click()
        sync_api.expect(page.locator(".cs-face.cs-chosen")).to_have_count(1, timeout=10000)
        page.keyboard.press("x")
        undo = page.locator(".cs-undo button")
        sync_api.expect(undo).to_have_text("Undo: reject 1 face of cluster 001", timeout=30000)
        assert until(lambda: detail_size(page, 1) == size - 1)
        page.keyboard.press("u")
        sync_api.expect(undo).to_have_text("Nothing to undo", timeout=30000)
        assert until(lambda: detail_size(page, 1) == size)

        box = page.get_by_placeholder("name this person")
        box.click()
        page.keyboard.type("nax")  # letters in a box: text, not commands
        sync_api.expect(box).to_have_value("nax")
        page.wait_for_timeout(1500)
        sync_api.expect(undo).to_have_text("Nothing to undo")
        page.get_by_text(re.compile(r"Cluster 001 \(\d+ faces\)")).first.wait_for()

        open_cluster(page, rows.index(known), rf"Cluster {known:03d} \(\d+ faces\)")
        keys.click()  # out of any box
        page.keyboard.press("a")
        sync_api.expect(undo).to_have_text(f"Undo: name cluster {known:03d} '{verdict[known]}'", timeout=30000)
        page.get_by_text(re.compile(rf"Cluster {known:03d} — {re.escape(verdict[known])} \(")).first.wait_for(timeout=30000)
        sync_api.expect(page.locator(".cs-key-message").first).to_contain_text(f"a: named cluster {known:03d}")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-keys.png"), full_page=True)
        page.close()
