"""Connecting to Ray (issue 32): a dead address fails in seconds naming it, a leftover cluster
file is not followed, and a refusal says what Ray's token authentication needs."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crowdsort.cli import main

ray = pytest.importorskip("ray")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_address_that_does_not_answer_fails_in_seconds_naming_it(tmp_path, capsys):
    from PIL import Image

    (tmp_path / "in").mkdir()
    Image.new("RGB", (64, 48), (120, 90, 60)).save(tmp_path / "in" / "a.jpg")
    port = _closed_port()
    t = time.monotonic()
    code = main(["-q", "extract-faces", "-d", str(tmp_path / "ds"), "--from", str(tmp_path / "in"),
                 "--backend", "ray", "--ray-address", f"127.0.0.1:{port}"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and time.monotonic() - t < 30
    assert len(err.splitlines()) == 1 and f"127.0.0.1:{port}" in err and "does not answer" in err


def test_a_leftover_cluster_file_is_not_followed():
    """Ray's own ``ray.init()`` attaches to the cluster a stale ``ray_current_cluster`` names and
    retries for ever when it is dead; a run without an address starts its own local cluster."""
    import shutil
    import tempfile

    ray_tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay under 107 bytes
    (ray_tmp / "ray").mkdir(parents=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{_closed_port()}")
    code = textwrap.dedent("""
        from crowdsort.scale.ray_backend import connect
        ray = connect(None, num_cpus=1)
        print("started", ray.get_runtime_context().gcs_address)
        ray.shutdown()
    """)
    env = {**os.environ, "RAY_TMPDIR": str(ray_tmp), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("RAY_ADDRESS", None)
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "started" in out.stdout


def test_a_refusal_names_ray_token_settings(monkeypatch):
    """A cluster that answers but will not let us in: one line naming the address and Ray's
    token settings (RAY_AUTH_MODE, RAY_AUTH_TOKEN…)."""
    from crowdsort.scale import ray_backend

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        address = f"127.0.0.1:{srv.getsockname()[1]}"

        def refuse(*a, **k):
            raise ConnectionError("Failed to connect to GCS at address " + address)

        monkeypatch.setattr(ray, "is_initialized", lambda: False)
        monkeypatch.setattr(ray, "init", refuse)
        monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
        with pytest.raises(ray_backend.RayConnectError) as e:
            ray_backend.connect(address)
        msg = str(e.value)
        assert "\n" not in msg and address in msg and "RAY_AUTH_MODE=token" in msg and "RAY_AUTH_TOKEN" in msg
        monkeypatch.setenv("RAY_AUTH_MODE", "token")
        with pytest.raises(ray_backend.RayConnectError) as e:
            ray_backend.connect(address)
        assert "must be the cluster's" in str(e.value)
