"""The review app inside a real JupyterLab (offline, Debian's Chromium): it draws in the cell's
output, a click on the list opens a cluster through the kernel, and the page asks nothing of any
server but the local one."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from test_dashboard import chromium_browser, free_port, new_page, open_cluster  # noqa: F401  (a fixture)

pytest.importorskip("jupyterlab", reason="JupyterLab is in crowdsort[notebooks] and [dev]")


@pytest.fixture
def lab(tmp_path, faces_store):
    cells = ["from crowdsort.review.app import ReviewApp\n"
             f"app = ReviewApp({str(faces_store.root.parent)!r})\napp"]
    nb = {"cells": [{"cell_type": "code", "metadata": {}, "source": c, "outputs": [], "execution_count": None}
                    for c in cells],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "review.ipynb").write_text(json.dumps(nb))
    port = free_port()
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}",
                             "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=", "--ServerApp.password=",
                             f"--ServerApp.root_dir={tmp_path}", "--allow-root"],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=10)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                os.killpg(proc.pid, signal.SIGTERM)
                raise RuntimeError(f"JupyterLab did not start: {(tmp_path / 'lab.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)
    log.close()


def test_the_app_inside_jupyterlab_works_and_asks_no_outside_server(chromium_browser, lab):
    page = new_page(chromium_browser)
    page.goto(f"{lab}/lab/tree/review.ipynb")
    page.locator(".jp-Notebook").wait_for(timeout=120000)
    page.locator(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus").first.wait_for(timeout=60000)
    time.sleep(3)  # the kernel starting
    page.get_by_text("Run", exact=True).first.click()
    page.get_by_text("Run All Cells", exact=True).first.click()
    page.locator(".cs-app .tabulator-row").nth(1).wait_for(timeout=240000)
    open_cluster(page, 1, r"Cluster 001 .*\(\d+ faces\)")
    outside = sorted({u for u in page.requests if not re.match(r"(https?|wss?)://127\.0\.0\.1[:/]|data:|blob:", u)})
    assert not outside, outside
    page.close()
