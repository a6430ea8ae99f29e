"""The ``crowdsort`` command: each subcommand is a small class; ``main`` only wires them."""
from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .clustering.neighbors import METHODS as ANN_METHODS
from .faces.detect import ENGINES
from .models.install import ModelsCommand
from .storage.paths import in_dataset


class DefaultsFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless its text already says it."""

    def _get_help_string(self, action):
        text = action.help or ""
        if not action.option_strings or action.required or action.default is argparse.SUPPRESS or "default" in text:
            return text
        if action.default is None:
            return text + " (default: none)"
        if isinstance(action.default, bool):
            return text + (" (default: on)" if action.default else " (default: off)")
        return text + " (default: %(default)s)"


class CommandParser(argparse.ArgumentParser):
    """A subcommand's parser: -q/-v are taken after the subcommand too (``crowdsort cluster -d x -q``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)
        # SUPPRESS: not given here, the value before the subcommand stands
        self.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="no progress bars")
        self.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details")


def add_dry_run(p) -> None:
    p.add_argument("--dry-run", action="store_true", help="say what would be done, write nothing")


def dataset_inputs(dataset: str, patterns: str) -> str:
    """Input paths read inside the dataset; one line when one is read from the current folder instead."""
    from .storage.paths import inputs_in_dataset

    notes: list[str] = []
    resolved = inputs_in_dataset(dataset, patterns, notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    return resolved


def add_backend_options(p, gpus: bool = False) -> None:
    p.add_argument("--backend", default="local", choices=["local", "ray"],
                   help="local: this machine's processes (default); ray: actors of a Ray cluster "
                        "(pip install 'crowdsort[ray]'), the same dataset either way")
    p.add_argument("--ray-address", default=None,
                   help="the Ray cluster (default: $RAY_ADDRESS, else a local one started for the run)")
    if gpus:
        p.add_argument("--ray-gpus", type=float, default=None,
                       help="with --backend ray: GPUs each embedding actor asks for (default: the cluster's "
                            "GPUs shared among --workers actors, at most 1 each; 0 where it has none)")


def corpus_inputs(dataset: str, corpus: str, base: str | None) -> tuple[list[str], tuple | None]:
    """The videos of a corpus description and their given shots; a row whose video or shots file
    is missing is named in one line and left out."""
    from .video.corpus import read_corpus

    path = in_dataset(dataset, corpus)
    rows = read_corpus(path, in_dataset(dataset, base))
    videos, shots = [], []
    for r in rows:
        missing = [f for f in (r.video, r.shots) if f is not None and not f.exists()]
        if missing:
            print(f"skipped: {path} row {r.line}: {missing[0]} does not exist"
                  f"{'' if base else ' (relative paths are read beside the CSV; --corpus-base sets another folder)'}",
                  file=sys.stderr)
            continue
        videos.append(str(r.video))
        if r.shots is not None:
            shots.append((str(r.video.resolve()), str(r.shots)))
    if not videos:
        raise ValueError(f"no video of {path} can be read (see above)")
    return videos, tuple(shots) or None


def report_skipped(skipped, verbose: bool) -> None:
    """What a scan passed over (links, folders named like images, unsupported types): counted,
    and one line each with -v."""
    if not skipped:
        return
    if verbose:
        for path, reason in skipped:
            print(f"not an image: {path}: {reason}", file=sys.stderr)
    else:
        from collections import Counter

        kinds = ", ".join(f"{n} {r}" for r, n in Counter(r for _, r in skipped).most_common())
        print(f"passed over {len(skipped)} entries ({kinds}); -v lists them", file=sys.stderr)


class ExtractFaces:
    name = "extract-faces"
    help = "detect, align and crop faces from photos and videos into a dataset"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(ExtractFaces.name, help=ExtractFaces.help, description=ExtractFaces.help + (
            ". Re-running skips unchanged files, processes new or changed ones and marks deleted ones gone. "
            "Videos: frames sampled (--fps, --every), shot cuts found in the same decode, faces linked into "
            "tracks within each shot."))
        p.add_argument("-d", "--dataset", required=True, help="dataset folder (created if missing)")
        p.add_argument("--from", dest="source", default=None,
                       help="comma-separated globs of images, videos (mp4 mkv avi mov webm flv wmv m4v) or "
                            "folders (scanned recursively), read inside the dataset, e.g. 'images/*' (absolute "
                            "paths as given)")
        p.add_argument("--corpus", default=None,
                       help="videos: skelshop's corpus description CSV (columns video[,group,group_typ,...]; a "
                            "row's group, psd or ffprobe, gives that video's shots), read inside the dataset; "
                            "with or instead of --from")
        p.add_argument("--corpus-base", default=None,
                       help="folder the corpus' relative paths are read under (default: the CSV's folder)")
        p.add_argument("--to", default="faces", help="extraction run name inside the dataset")
        rate = p.add_mutually_exclusive_group()
        rate.add_argument("--fps", type=float, default=5.0,
                          help="videos: frames sampled a second for faces (every frame is still decoded for the "
                               "shot cuts)")
        rate.add_argument("--every", type=int, default=None,
                          help="videos: sample every N-th frame instead of --fps (default: use --fps)")
        p.add_argument("--shots", default=None,
                       help="videos: given shots instead of detected cuts: a PySceneDetect scene list or a list of "
                            "cut frames (one video), or a folder of <stem>-Scenes.csv, read inside the dataset "
                            "(default: detect the cuts)")
        p.add_argument("--engine", default="blazeface", choices=list(ENGINES),
                       help="detector: MediaPipe's BlazeFace, run without MediaPipe (default; 'mediapipe' is the "
                            "same), or dlib HOG")
        p.add_argument("--tiles", type=int, default=None,
                       help="also detect in N×N overlapping tiles, for small faces in large pictures (default: "
                            "video frames by width, 3 at 1920 px, 2 at 1280, 1 up to 960; photos 1)")
        p.add_argument("--min-score", type=float, default=None,
                       help="detection threshold (default: BlazeFace's own, 0.6 full-range and 0.5 short-range; "
                            "0.0 HOG margin for dlib)")
        p.add_argument("--max-faces", type=int, default=None,
                       help="keep the N most prominent faces per image (size and centrality); default all")
        p.add_argument("--min-size", type=int, default=0, help="drop faces whose box is smaller (pixels)")
        p.add_argument("--skip-partial", action="store_true",
                       help="drop faces whose box (with --crop ffhq: whose crop) leaves the image")
        p.add_argument("--crop", default="aligned", choices=["aligned", "ffhq"],
                       help="aligned: the 256 px identity crop only; ffhq: also dtst's square dataset crop "
                            "(about 4x the eye distance, at the photo's resolution) in RUN/ffhq/")
        p.add_argument("--max-size", type=int, default=None,
                       help="ffhq: largest crop side in pixels (smaller faces keep their own size; default: no cap)")
        p.add_argument("--padding", action=argparse.BooleanOptionalAction, default=True,
                       help="ffhq: where the crop leaves the photo, mirror and blur it (else black)")
        add_dry_run(p)
        p.add_argument("--workers", type=int, default=1,
                       help="parallel processes, or Ray actors with --backend ray (each loads the detector once)")
        add_backend_options(p)
        p.add_argument("--prune", action="store_true",
                       help="mark images that --from no longer matches as gone (default: a run over another "
                            "folder adds to the dataset; only deleted files are dropped)")
        p.set_defaults(command=ExtractFaces)

    @staticmethod
    def run(args) -> int:
        from .storage.export import check_extraction_folder
        from .extract import ExtractParams, extract_faces
        from .storage.store import FaceStore

        check_extraction_folder(Path(args.dataset) / args.to, "faces")
        if args.source is None and args.corpus is None:
            raise ValueError("give the photos and videos with --from, or a corpus description with --corpus")
        inputs = [p for p in dataset_inputs(args.dataset, args.source).split(",")] if args.source else []
        shots = in_dataset(args.dataset, args.shots)
        if args.corpus is not None:
            if args.shots is not None:
                raise ValueError("--shots and --corpus both give shots; a corpus row's group column gives "
                                 "its video's shots")
            videos, shots = corpus_inputs(args.dataset, args.corpus, args.corpus_base)
            inputs += videos
        params = ExtractParams(args.engine, args.min_score, args.max_faces, args.min_size, args.skip_partial,
                               args.crop, args.max_size, args.padding, fps=args.fps, every=args.every,
                               shots=shots, tiles=args.tiles)
        store = FaceStore(Path(args.dataset) / args.to)
        s = extract_faces(inputs, store, params, workers=args.workers,
                          progress=not args.quiet, prune=args.prune, dry_run=args.dry_run,
                          backend=args.backend, ray_address=args.ray_address)
        report_skipped(s["skipped"], args.verbose)
        files = f"{s['images'] - s['videos']} images" + (f" and {s['videos']} videos" if s["videos"] else "")
        if args.dry_run:
            print(f"dry run: {files}: {s['to_process']} to process, {s['unchanged']} unchanged, "
                  f"{s['gone']} would be marked gone → {store.root} (nothing written)")
            return 0
        for err in s["errors"]:
            print(f"skipped: {err}", file=sys.stderr)
        print(f"{files}: {s['processed']} processed, {s['unchanged']} unchanged, "
              f"{s['failed']} unreadable, {s['gone']} gone; {s['faces']} new faces, "
              f"{s['faces_total']} in {store.root} ({s['no_face']} files without a face)")
        return 0


class Cluster:
    name = "cluster"
    help = "cluster extracted faces by identity, or whole images by visual similarity, into numbered folders"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Cluster.name, help=Cluster.help, description=Cluster.help + (
            ". Writes DIR/000 (largest) …, DIR/noise, assignments.csv and clusters.json."))
        p.add_argument("-d", "--dataset", required=True, help="dataset folder")
        p.add_argument("--from", dest="source", default="faces",
                       help="faces: the extraction run; images (--model efficientnet|clip): comma-separated globs "
                            "of images or folders read inside the dataset, e.g. 'images/*'")
        p.add_argument("--to", default="cluster", help="output folder name inside the dataset")
        p.add_argument("--model", default=None,
                       choices=["mobilefacenet", "dlib", "dlib-native", "arcface", "efficientnet", "clip"],
                       help="mobilefacenet/dlib/arcface: faces by identity (default: mobilefacenet, installed on first "
                            "use, else dlib with a warning; dlib-native: dlib runs its own network, same vectors); "
                            "efficientnet (offline) / clip: whole images")
        p.add_argument("--weights", default=None,
                       help="arcface: pack name (buffalo_l…), folder or .onnx; clip: pretrained tag "
                            "(default laion2b_s34b_b79k), .bin/.safetensors file or local-dir:PATH; "
                            "efficientnet: a .pth file (default: the installed package's)")
        p.add_argument("--arch", default=None, help="clip: open_clip model name (default ViT-B-32)")
        p.add_argument("--batch-size", type=int, default=32, help="images per model call (efficientnet, clip)")
        p.add_argument("--device", default=None, help="torch device for image models (default: cuda if available)")
        p.add_argument("--workers", type=int, default=None,
                       help="face embedding processes (default: one per core for dlib-native; dlib and ArcFace "
                            "use all cores in one), or Ray actors with --backend ray (faces and images; default 1)")
        add_backend_options(p, gpus=True)
        p.add_argument("--algorithm", default=None,
                       choices=["snn-whispers", "hdbscan", "rnn-dbscan", "dbscan", "optics", "agglomerative",
                                "chinese-whispers"],
                       help="clustering over the kNN graph (default: snn-whispers for dlib faces, the best "
                            "measured on lfw-dev and celeba-dev; hdbscan for other models)")
        p.add_argument("--min-cluster-size", type=int, default=None,
                       help="hdbscan: smallest cluster (default 2); snn-whispers (default 2), agglomerative, "
                            "chinese-whispers: smaller → noise")
        p.add_argument("--min-samples", type=int, default=None, help="hdbscan (default 1), dbscan/optics (default 2)")
        p.add_argument("--knn", type=int, default=None,
                       help="rnn-dbscan's K (default 5); the graph keeps at least 15 neighbours per face")
        p.add_argument("--eps", type=float, default=None,
                       help="cosine distance: dbscan/optics eps (0.06), agglomerative (0.07), "
                            "chinese-whispers and snn-whispers thresholds (mobilefacenet 0.40 and 0.38, dlib 0.06); "
                            "dbscan/optics/agglomerative defaults are dlib distances")
        p.add_argument("--ann", default="auto", choices=list(ANN_METHODS),
                       help="kNN search (auto: exact up to 50k faces, faiss IVF up to 200k, pynndescent above; "
                            "exact: numpy; faiss: exact up to 50k, IVF above; faiss-ivf; faiss-hnsw; "
                            "the faiss ones need crowdsort[faiss], without it auto is exact then pynndescent)")
        p.add_argument("--per-track", type=int, default=5,
                       help="videos: faces are clustered by track, its vector the mean of its K best faces' "
                            "(largest, most frontal, surest, spread over the track); 0: all its faces")
        p.add_argument("--top", type=int, default=None, help="keep the N largest clusters; the rest go to noise/")
        p.add_argument("--num-protos", type=int, default=3, help="prototypes per cluster (marked in assignments.csv)")
        p.add_argument("--proto-out", default=None,
                       help="also copy each cluster's prototypes to DIR/<cluster>/ (inside the dataset; default: none)")
        p.add_argument("--model-out", default=None,
                       help="save vectors, labels and graph (.npz, inside the dataset) to assign new faces to "
                            "these clusters later (default: none)")
        p.add_argument("--clean", action="store_true", help="replace an existing cluster run in --to")
        p.add_argument("--link", default="copy", choices=["copy", "hardlink", "symlink"],
                       help="how crops are placed in the cluster folders")
        add_dry_run(p)
        p.set_defaults(command=Cluster)

    @staticmethod
    def run(args) -> int:
        from .faces.embed import load_embedder
        from .pipeline import cluster_faces, cluster_images, cluster_params, default_algorithm, extraction_store
        # what the dashboard reads (kNN graph, map), made once the run is written: its first page reads them
        from .review.opening import prepare_ahead, prepare_face_review, prepare_image_review

        images = args.model in ("efficientnet", "clip")
        args.algorithm = args.algorithm or default_algorithm(args.model, "images" if images else "faces")
        params = cluster_params(args.algorithm, args.min_cluster_size, args.min_samples, args.knn, args.eps)
        proto_out, model_out = in_dataset(args.dataset, args.proto_out), in_dataset(args.dataset, args.model_out)
        if model_out:
            Cluster.check_model_out(Path(model_out), Path(args.dataset) / args.to)
        if images:
            if args.model_out:
                raise ValueError("--model-out is for face clusterings")
            s = cluster_images(args.dataset, dataset_inputs(args.dataset, args.source), args.to, args.model,
                               args.weights, args.arch, args.algorithm, params, args.ann, args.top, args.num_protos,
                               proto_out, args.link, args.clean, args.batch_size, args.device,
                               progress=not args.quiet, dry_run=args.dry_run, workers=args.workers,
                               backend=args.backend, ray_address=args.ray_address, ray_gpus=args.ray_gpus)
            if args.dry_run:
                print(f"dry run: {s['images']} images ({args.model}) → {Path(args.dataset) / args.to}: {s['output']} "
                      "(nothing written)")
                return 0
            report_skipped(s.get("skipped", []), args.verbose)
            for e in s["errors"]:
                print(f"skipped: {e}", file=sys.stderr)
            Cluster.note_replaced(args, s)
            prepare_ahead(lambda: prepare_image_review(args.dataset, args.to))
            print(f"{s['n_items']} images → {s['n_clusters']} clusters, {s['n_noise']} noise "
                  f"({s['model']}, {s['algorithm']}) in {Path(args.dataset) / args.to}")
            return 0
        s = cluster_faces(
            args.dataset, args.source, args.to, args.model, args.weights, args.algorithm, params, args.ann,
            args.top, args.num_protos, proto_out, model_out, args.link, args.clean,
            progress=not args.quiet, workers=args.workers, dry_run=args.dry_run, per_track=args.per_track,
            backend=args.backend, ray_address=args.ray_address, ray_gpus=args.ray_gpus,
        )
        if args.dry_run:
            print(f"dry run: {s['faces']} faces, {s['to_embed']} to embed ({s['model']}) → "
                  f"{Path(args.dataset) / args.to}: {s['output']} (nothing written)")
            return 0
        Cluster.note_replaced(args, s)
        prepare_ahead(lambda: prepare_face_review(extraction_store(args.dataset, args.source),
                                                  load_embedder(args.model, args.weights)))
        print(f"{s['n_items']} faces → {s['n_clusters']} clusters, {s['n_noise']} noise "
              f"({s['model']}, {s['algorithm']}) in {Path(args.dataset) / args.to}")
        return 0

    @staticmethod
    def note_replaced(args, summary: dict) -> None:
        """Said once the new run is in place, not before: a run that fails replaces nothing."""
        if summary.get("replaced") and not args.clean:
            print(f"note: replaced the cluster run in {Path(args.dataset) / args.to} (one crowdsort wrote)",
                  file=sys.stderr)

    @staticmethod
    def check_model_out(model_out: Path, run: Path) -> None:
        """Before any work: --model-out replaces only a model crowdsort saved, and is never put
        inside the run being written (a file there would stop the next run replacing it)."""
        from .storage.export import OutputExistsError, check_output_file, is_cluster_model

        if Path(os.path.abspath(model_out)).is_relative_to(os.path.abspath(run)):
            raise OutputExistsError(f"{model_out} is inside the cluster run {run}, among its own files; choose another "
                                    "--model-out outside it")
        check_output_file(model_out, is_cluster_model, "--model-out")


class ExtractFrames:
    name = "extract-frames"
    help = "write the key frames of videos as images into the dataset, each traced to its video and time"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(ExtractFrames.name, help=ExtractFrames.help, description=ExtractFrames.help + (
            ". Key frames (I-frames) only, at most one every --keyframes seconds, named <video stem>_<NNNN>.jpg; "
            "frames.parquet and videos.parquet beside them. Re-running skips videos already done."))
        p.add_argument("-d", "--dataset", required=True, help="dataset folder (created if missing)")
        p.add_argument("--from", dest="source", required=True,
                       help="comma-separated globs of videos or folders (mp4 mkv avi mov webm flv wmv m4v), read "
                            "inside the dataset, e.g. videos")
        p.add_argument("--to", default="images/frames", help="folder for the frames, inside the dataset")
        p.add_argument("--keyframes", type=float, default=10.0,
                       help="at most one key frame every K seconds; 0 keeps every key frame")
        p.add_argument("--format", default="jpg", choices=["jpg", "png"], help="image format of the frames")
        p.add_argument("--workers", type=int, default=1, help="videos decoded at once (one process each)")
        add_dry_run(p)
        p.set_defaults(command=ExtractFrames)

    @staticmethod
    def run(args) -> int:
        from .storage.export import check_extraction_folder
        from .video.frames import extract_frames

        sources = dataset_inputs(args.dataset, args.source)
        check_extraction_folder(Path(args.dataset) / args.to, "frames", leftover=ExtractFrames.frame_of(sources))
        s = extract_frames(sources, args.dataset, to=args.to,
                           keyframes=args.keyframes, fmt=args.format, workers=args.workers, dry_run=args.dry_run,
                           progress=not args.quiet)
        report_skipped(s["skipped"], args.verbose)
        for err in s["errors"]:
            print(f"skipped: {err}", file=sys.stderr)
        if args.dry_run:
            print(f"dry run: {s['videos']} videos: {len(s['to_process'])} to process, {len(s['to_skip'])} to skip; "
                  f"{s['frames']} key frames would be written (nothing written)")
        else:
            print(f"{s['videos']} videos: {s['processed']} processed, {s['unchanged']} unchanged, {s['failed']} "
                  f"unreadable, {s['gone']} gone; {s['frames']} new frames, {s['frames_total']} in {s['root']}")
        return 0


    @staticmethod
    def frame_of(sources: str):
        """Whether a file name is a frame of these videos, or a temporary file: what a first run
        killed in its first video leaves before it writes any table (``<stem>_0003.jpg``)."""
        import re

        from .video.frames import find_videos, frame_stem

        try:
            stems = {frame_stem(str(p)).casefold() for p in find_videos(sources, skipped=[])}
        except (FileNotFoundError, ValueError):  # extract_frames says what is wrong with --from
            stems = set()
        frame = re.compile(r"(.+?)(-[0-9a-f]{8})?_\d{4,}\.(jpg|png)")

        def ours(name: str) -> bool:
            m = frame.fullmatch(name)
            return name.startswith(".tmp-") or (m is not None and m.group(1).casefold() in stems)
        return ours


class Example:
    name = "example"
    help = "build an example photo folder from sample photos of scikit-image, matplotlib and scikit-learn"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Example.name, help=Example.help, description=Example.help + (
            " (real portraits from scikit-image and matplotlib, varied and composed into photos; neither "
            "package is needed: their photos are read from an installed copy, the model cache, or one "
            "pinned wheel of each fetched once by pip download; see crowdsort models list)."))
        p.add_argument("dest", help="folder to create, e.g. scratch/crowd/images")
        p.set_defaults(command=Example)

    @staticmethod
    def run(args) -> int:
        from .example import build_example

        info = build_example(args.dest)
        print(f"wrote {info['images']} images ({info['people']} people, {info['bad']} deliberately bad files) "
              f"to {args.dest}")
        return 0


def add_face_model_options(p) -> None:
    p.add_argument("--model", default=None, choices=["mobilefacenet", "dlib", "dlib-native", "arcface"],
                   help="identity embedding model (default: mobilefacenet, installed on first use, else dlib with a "
                        "warning; dlib-native: dlib runs its network itself, same vectors)")
    p.add_argument("--weights", default=None, help="arcface: pack name, folder or .onnx file")


def _add_refs_options(p, what: str) -> None:
    p.add_argument("-d", "--dataset", required=True, help="dataset folder")
    p.add_argument("--refs", required=True,
                   help="reference library: an HDF5 from 'refs embed', or a folder REFDIR/<name>/*.jpg (read inside "
                        "the dataset, or from the current folder when it is not there)")
    p.add_argument("--threshold", type=float, default=None,
                   help=f"cosine distance above which {what} is unknown (default: calibrated for the library's "
                        "size so that ~5%% of strangers are named; mobilefacenet at most 0.55: 0.51 for 150 "
                        "references; dlib at most 0.07: 0.065 for 150, 0.053 for 1,000; arcface 0.60)")
    p.add_argument("--margin", type=float, default=None,
                   help="required gap between the best and second-best person (default mobilefacenet 0.05, "
                        "dlib 0.01, arcface 0.05)")


class Refs:
    name = "refs"
    help = "build and embed reference libraries (a folder per person)"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Refs.name, help=Refs.help, description=Refs.help + ".")
        rsub = p.add_subparsers(title="refs commands", metavar="ACTION", dest="action", required=True)
        e = rsub.add_parser("embed", help="detect, align and embed REFDIR/<name>/* into an HDF5 file")
        e.add_argument("-d", "--dataset", default=None,
                       help="dataset folder: REFDIR and OUT are read inside it (default: the current folder)")
        e.add_argument("refdir", help="folder with one sub-folder per person (folder name = label)")
        e.add_argument("out", help="HDF5 file to write, e.g. refs.h5")
        add_face_model_options(e)
        e.add_argument("--engine", default="blazeface", choices=list(ENGINES), help="face detector")
        b = rsub.add_parser("build", help="fetch each person's Wikidata image (P18) into REFDIR/<Qid>/")
        b.add_argument("-d", "--dataset", default=None,
                       help="dataset folder: PEOPLE and REFDIR are read inside it (default: the current folder)")
        b.add_argument("people", help="text file; lines starting with a Wikidata id (Q76 Barack Obama) are used")
        b.add_argument("refdir", help="reference folder to fill (existing people are kept)")
        p.set_defaults(command=Refs)

    @staticmethod
    def run(args) -> int:
        if args.dataset:
            for name in ("refdir", "out", "people"):
                if getattr(args, name, None):
                    setattr(args, name, in_dataset(args.dataset, getattr(args, name)))
        if args.action == "build":
            from .naming.wikidata import build_references

            s = build_references(args.people, args.refdir)
            for q in s["no_image"]:
                print(f"no image on Wikidata: {q}", file=sys.stderr)
            for f in s["failed"]:
                print(f"failed: {f}", file=sys.stderr)
            print(f"{s['fetched']} fetched, {s['present']} already present, {len(s['no_image'])} without image, "
                  f"{len(s['failed'])} failed → {args.refdir}")
            return 1 if s["failed"] and not s["fetched"] and not s["present"] else 0
        from .storage.export import check_output_file
        from .naming.identify import embed_references, is_reference_file, save_references

        check_output_file(args.out, is_reference_file, "OUT")
        refs = embed_references(args.refdir, args.model, args.weights, args.engine, progress=not args.quiet)
        for m in refs.missing:
            print(f"no face: {m}", file=sys.stderr)
        if not len(refs.labels):
            raise ValueError(f"{args.refdir}: no face found in any reference image")
        check_output_file(args.out, is_reference_file, "OUT")  # again: it may have appeared meanwhile
        save_references(refs, args.out)
        print(f"{len(refs.people)} people, {len(refs.labels)} reference faces ({refs.model}), "
              f"{len(refs.missing)} images without a face → {args.out}")
        return 0


class Identify:
    name = "identify"
    help = "name each face from a reference library (or unknown)"
    # the columns each CSV starts with: what tells a file it wrote before (export.csv_header)
    columns = ("face_id", "source_image", "face_index", "x0", "y0", "x1", "y1", "crop_path", "label", "best",
               "distance", "margin", "known")
    shot_columns = ("video", "shot", "shot_start_frame", "shot_end_frame", "shot_start_s", "shot_end_s", "track")
    timeline_columns = ("video", "label", "start_s", "end_s", "shots")

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Identify.name, help=Identify.help, description=Identify.help + (
            ". Per face: best person, distance (to the nearest of their references), margin to the "
            "second-best person; 'unknown' beyond the threshold or margin."))
        _add_refs_options(p, "a face")
        p.add_argument("--from", dest="source", default="faces", help="extraction run (default: faces)")
        add_face_model_options(p)
        p.add_argument("--one-per-image", action="store_true",
                       help="two faces in one photo are never the same person (Hungarian matching per photo)")
        p.add_argument("--cluster-run", default=None,
                       help="pool evidence over the clusters of this run (e.g. cluster): better recall (default: "
                            "none; with --per-shot: cluster, where it exists)")
        p.add_argument("--per-shot", action="store_true",
                       help="videos: one row per (video, shot, track), each track named over its best faces, a "
                            "person at most once a shot; also writes the timeline (--timeline)")
        p.add_argument("--per-track", type=int, default=5,
                       help="--per-shot: faces of each track used as evidence (its best; 0: all)")
        p.add_argument("--timeline", default=None,
                       help="--per-shot: who is on screen when, per video (default: TO's name with -timeline)")
        p.add_argument("--to", default=None,
                       help="CSV to write, inside the dataset (default: identifications.csv; shots.csv with "
                            "--per-shot)")
        p.set_defaults(command=Identify)

    @staticmethod
    def run(args) -> int:
        from .storage.export import check_output_file, csv_header, write_csv
        from .pipeline import identify_dataset

        if args.one_per_image and args.cluster_run:
            raise ValueError("--one-per-image and --cluster-run cannot be combined")
        if args.per_shot:
            return Identify.per_shot(args)
        to = Path(in_dataset(args.dataset, args.to or "identifications.csv"))
        check_output_file(to, csv_header(Identify.columns))
        df = identify_dataset(args.dataset, dataset_inputs(args.dataset, args.refs), args.source, args.threshold, args.margin, args.one_per_image,
                              args.cluster_run, args.model, args.weights, progress=not args.quiet)
        write_csv(to, df, Identify.columns)
        print(f"{len(df)} faces: {int(df['known'].sum())} identified as {df.loc[df['known'], 'label'].nunique()} "
              f"people, {int((~df['known']).sum())} unknown → {to}")
        return 0

    @staticmethod
    def per_shot(args) -> int:
        from .storage.export import check_output_file, csv_header, write_csv
        from .pipeline import identify_shots

        if args.one_per_image:
            raise ValueError("--per-shot names tracks one-to-one within each shot: leave out --one-per-image")
        to = Path(in_dataset(args.dataset, args.to or "shots.csv"))
        line = Path(in_dataset(args.dataset, args.timeline)) if args.timeline else to.with_name(f"{to.stem}-timeline.csv")
        check_output_file(to, csv_header(Identify.shot_columns))
        check_output_file(line, csv_header(Identify.timeline_columns), "--timeline")
        shots, timeline = identify_shots(args.dataset, dataset_inputs(args.dataset, args.refs), args.source,
                                         args.threshold, args.margin, args.per_track, args.model, args.weights,
                                         args.cluster_run or "cluster", progress=not args.quiet)
        write_csv(to, shots, Identify.shot_columns)
        write_csv(line, timeline, Identify.timeline_columns, "--timeline")
        known = shots[shots["known"]]
        print(f"{len(shots)} tracks in {shots[['video', 'shot']].drop_duplicates().shape[0]} shots of "
              f"{shots['video'].nunique()} videos: {len(known)} named as {known['label'].nunique()} people → {to}, "
              f"{line}")
        return 0


class Protos:
    name = "protos"
    help = "write each cluster's prototype crops to a folder for a person to look at"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Protos.name, help=Protos.help, description=Protos.help + ".")
        psub = p.add_subparsers(title="protos commands", metavar="ACTION", dest="action", required=True)
        w = psub.add_parser("write", help="copy prototypes to DIR/<cluster>/<rank>-<crop>.jpg with prototypes.csv")
        w.add_argument("-d", "--dataset", required=True, help="dataset folder")
        w.add_argument("--cluster-run", default="cluster", help="cluster run inside the dataset (default: cluster)")
        w.add_argument("--to", required=True, help="folder to write, inside the dataset")
        w.add_argument("--clean", action="store_true", help="replace a prototype folder written before")
        p.set_defaults(command=Protos)

    @staticmethod
    def run(args) -> int:
        from .storage.export import write_prototypes
        from .pipeline import load_cluster_run, run_files

        items, info = load_cluster_run(args.dataset, args.cluster_run)
        write_prototypes(in_dataset(args.dataset, args.to), items.assign(file=items["crop_path"]), clean=args.clean,
                         files=run_files(args.dataset, info))  # assignments.csv may have been edited
        n = int((items["prototype"] & (items["cluster"] >= 0)).sum())
        print(f"{n} prototypes of {items.loc[items['cluster'] >= 0, 'cluster'].nunique()} clusters → {args.to}")
        return 0


class LabelClusters:
    name = "label-clusters"
    help = "name clusters from a reference library (writes a label,cluster CSV)"
    columns = ("label", "cluster", "size", "best", "distance", "margin", "known")  # see Identify.columns

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(LabelClusters.name, help=LabelClusters.help, description=LabelClusters.help + (
            ". A cluster's distance to a person is the median over its members (or prototypes)."))
        _add_refs_options(p, "a cluster")
        p.add_argument("--cluster-run", default="cluster", help="cluster run inside the dataset (default: cluster)")
        p.add_argument("--weights", default=None, help="arcface: pack name, folder or .onnx file")
        p.add_argument("--prototypes-only", action="store_true", help="use only each cluster's prototypes")
        p.add_argument("--one-to-one", action="store_true", help="each person names at most one cluster")
        p.add_argument("--to", default=None, help="CSV to write, inside the dataset (default: <cluster run>.identifications.csv)")
        p.set_defaults(command=LabelClusters)

    @staticmethod
    def run(args) -> int:
        from .storage.export import check_output_file, csv_header, write_csv
        from .pipeline import label_clusters

        to = Path(in_dataset(args.dataset, args.to or f"{args.cluster_run}.identifications.csv"))
        check_output_file(to, csv_header(LabelClusters.columns))
        df = label_clusters(args.dataset, dataset_inputs(args.dataset, args.refs), args.cluster_run, args.threshold, args.margin, args.one_to_one,
                            args.prototypes_only, args.weights, progress=not args.quiet)
        write_csv(to, df, LabelClusters.columns)
        print(f"{len(df)} clusters: {int(df['known'].sum())} named, {int((~df['known']).sum())} unknown → {to}")
        return 0


class ApplyLabels:
    name = "apply-labels"
    help = "apply a label,cluster CSV to a cluster run: one row per face with its name"
    columns = ("face_id", "source_image", "face_index", "crop_path", "cluster")  # see Identify.columns

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(ApplyLabels.name, help=ApplyLabels.help, description=ApplyLabels.help + ".")
        p.add_argument("-d", "--dataset", required=True, help="dataset folder")
        p.add_argument("--labels", required=True,
                       help="CSV with columns label,cluster (hand-written or from label-clusters), read inside the dataset")
        p.add_argument("--cluster-run", default="cluster", help="cluster run inside the dataset (default: cluster)")
        p.add_argument("--to", required=True, help="CSV to write, inside the dataset")
        p.add_argument("--keep-unlabeled", action="store_true",
                       help="keep faces of unnamed clusters (label 'cluster NNN' or 'noise')")
        p.add_argument("--export", default=None, help="also copy crops into DIR/<name>/, inside the dataset (default: none)")
        p.add_argument("--clean", action="store_true", help="replace an --export folder written before")
        p.add_argument("--timeline", default=None,
                       help="videos: also write who is on screen when (video,label,start_s,end_s,shots) from the "
                            "named tracks of a clustering by track, inside the dataset")
        p.set_defaults(command=ApplyLabels)

    @staticmethod
    def run(args) -> int:
        from .storage.export import check_output_file, csv_header, write_csv
        from .pipeline import apply_labels

        labels, to = dataset_inputs(args.dataset, args.labels), Path(in_dataset(args.dataset, args.to))
        export = in_dataset(args.dataset, args.export)
        if to.resolve() == Path(labels).resolve():
            raise ValueError(f"--to {args.to} is the --labels file: it would be overwritten; write to another file")
        check_output_file(to, csv_header(ApplyLabels.columns))
        where = Path(in_dataset(args.dataset, args.timeline)) if args.timeline else None
        if where:
            check_output_file(where, csv_header(Identify.timeline_columns), "--timeline")
        df = apply_labels(args.dataset, labels, args.cluster_run, args.keep_unlabeled, export, args.clean)
        write_csv(to, df, ApplyLabels.columns)
        print(f"{len(df)} faces, {int(df['labelled'].sum())} named ({df.loc[df['labelled'], 'label'].nunique()} names) "
              f"→ {to}{' and ' + export if export else ''}")
        if where:
            from .pipeline import labelled_timeline

            tl = labelled_timeline(df)
            write_csv(where, tl, Identify.timeline_columns, "--timeline")
            print(f"{len(tl)} stretches on screen of {tl['label'].nunique()} people in {tl['video'].nunique()} "
                  f"videos → {where}")
        return 0


class Dashboard:
    name = "dashboard"
    help = "open the dashboard over a dataset (bound to 127.0.0.1)"
    token_env = "CROWDSORT_DASHBOARD_TOKEN"  # analysis/review/serve.py admits other machines with this token only

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Dashboard.name, help=Dashboard.help, description=Dashboard.help + (
            ": the same as panel serve dashboard/app.py --args --dataset DATASET."))
        p.add_argument("-d", "--dataset", dest="dataset_opt", default=None, help="dataset folder with an extraction run")
        p.add_argument("dataset", nargs="?", default=None, help="the dataset folder, as -d (the older spelling)")
        p.add_argument("--from", "--faces", dest="faces", default="faces", help="extraction run inside the dataset")
        add_face_model_options(p)
        p.add_argument("--refs", default=None,
                       help="reference library (HDF5 or folder, read inside the dataset) for name suggestions")
        p.add_argument("--cluster-run", "--run", dest="run", default=None,
                       help="review the images of this image cluster run (crowdsort cluster --model "
                            "efficientnet|clip) instead of the faces")
        p.add_argument("--port", type=int, default=5006)
        p.add_argument("--address", default="127.0.0.1",
                       help="interface to listen on (default: this machine only; any other, e.g. 0.0.0.0, "
                            "admits only browsers given the printed URL with its token)")
        p.add_argument("--show", action="store_true", help="open a browser tab")
        p.set_defaults(command=Dashboard)

    @staticmethod
    def run(args) -> int:
        import subprocess
        import time

        args.dataset = args.dataset_opt or args.dataset
        if not args.dataset:
            raise ValueError("which dataset? pass -d DATASET")
        if args.refs:
            args.refs = dataset_inputs(args.dataset, args.refs)
        app = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
        if not app.exists():
            raise FileNotFoundError(f"{app} not found: the dashboard runs from a crowdsort checkout (pip install -e .)")
        if args.run:
            from .pipeline import load_image_run

            load_image_run(args.dataset, args.run)  # fails here, in one line, rather than in the server log
        elif not (Path(args.dataset) / args.faces).exists():
            raise FileNotFoundError(f"{Path(args.dataset) / args.faces}: no extraction run; run crowdsort extract-faces first")
        cmd, env, url = Dashboard.server_command(args, app)
        if Dashboard.token_env in env:
            print(f"warning: --address {args.address} serves the dashboard (photos and names) to the network, "
                  "unencrypted (http); only browsers opening the URL below, with its token, get in", file=sys.stderr)
        host = Dashboard.probe_host(args.address)
        if Dashboard.answers(host, args.port):  # our server could not listen there: the URL would be another's
            raise ValueError(f"port {args.port} of {args.address} is in use (a server answers there); pass another --port")
        print(f"dashboard: opening {args.dataset} …", file=sys.stderr, flush=True)
        with subprocess.Popen(cmd, env=env) as server:
            try:
                while server.poll() is None:  # the URL once the server answers, its dataset loaded
                    if Dashboard.answers(host, args.port):
                        print(f"dashboard: {url} (Ctrl-C stops it)", flush=True)
                        break
                    time.sleep(0.1)
                return server.wait()
            except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the server too; a signal to this process alone not
                server.terminate()
                try:
                    server.wait(10)
                except subprocess.TimeoutExpired:
                    server.kill()
                raise

    @staticmethod
    def probe_host(address: str) -> str:
        """Where this machine reaches a server listening on ``address``."""
        return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(address, address)

    @staticmethod
    def answers(host: str, port: int) -> bool:
        """Whether a server accepts connections on ``host:port`` (the dashboard's listens once its
        dataset is loaded: analysis/review/serve.py's preload)."""
        import socket

        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    @staticmethod
    def server_command(args, app: Path) -> tuple[list[str], dict[str, str], str]:
        """``panel serve`` argv, its environment and the URL to open. Served beyond this machine
        the app admits only a random token, passed in the environment: ``ps`` shows every user
        the command line."""
        import secrets

        hosts = Dashboard.host_names(args.address)
        # panel serve with crowdsort's gate in front of every route (analysis/review/serve.py)
        cmd = [sys.executable, "-m", "crowdsort.review.serve", str(app), "--address", args.address, "--port", str(args.port)]
        for host in hosts:
            cmd += ["--allow-websocket-origin", f"{host}:{args.port}"]
        cmd += ["--show"] if args.show else []
        # Bokeh's start-up and per-session INFO lines are not the user's business (-v shows them)
        cmd += ["--log-level", "info" if getattr(args, "verbose", False) else "warning"]
        cmd += ["--args", "--dataset", args.dataset, "--faces", args.faces]
        cmd += ["--model", args.model] if args.model else []
        cmd += ["--weights", args.weights] if args.weights else []
        cmd += ["--refs", args.refs] if args.refs else []
        cmd += ["--run", args.run] if args.run else []
        env = {k: v for k, v in os.environ.items() if k != Dashboard.token_env}
        env["CROWDSORT_DASHBOARD_PRELOAD"] = "1"  # analysis/review/serve.py: the dataset loaded before it listens
        url = f"http://{hosts[0]}:{args.port}/app"
        if not Dashboard.is_local(args.address):
            env[Dashboard.token_env] = secrets.token_urlsafe(32)
            url += f"?token={env[Dashboard.token_env]}"
        return cmd, env, url

    @staticmethod
    def is_local(address: str) -> bool:
        import ipaddress

        try:
            return address == "localhost" or ipaddress.ip_address(address).is_loopback
        except ValueError:  # a host name: whatever it resolves to, assume the network
            return False

    @staticmethod
    def host_names(address: str) -> list[str]:
        """The names browsers may reach the server by (each is let open its websocket), the one
        to print first: for a wildcard address, this machine's addresses and names."""
        import socket

        if address not in ("0.0.0.0", "::", ""):
            names = [address, "localhost"]
        else:
            ips = Dashboard.machine_addresses()
            lan = [ip for ip in ips if not Dashboard.is_local(ip)]
            # the wildcard itself last: --show opens it
            names = [*lan, socket.gethostname(), socket.getfqdn(), *ips, "localhost", "127.0.0.1", address]
        return list(dict.fromkeys(f"[{n}]" if ":" in n else n for n in names))

    @staticmethod
    def machine_addresses() -> list[str]:
        """This machine's IP addresses, found without the network: its default route's and its name's."""
        import socket

        ips = set()
        try:  # connecting a UDP socket sends nothing
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect(("203.0.113.1", 9))
                ips.add(s.getsockname()[0])
        except OSError:  # no route: offline
            pass
        try:
            ips |= {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None, proto=socket.IPPROTO_TCP)}
        except OSError:  # the name does not resolve (Debian maps it to 127.0.1.1 at best)
            pass
        return sorted(ips, key=lambda ip: (":" in ip, ip))

COMMANDS = [ExtractFaces, ExtractFrames, Cluster, Refs, Identify, Protos, LabelClusters, ApplyLabels, Dashboard, Example,
            ModelsCommand]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crowdsort", description="Turn a folder of photos into people and things.")
    parser.add_argument("--version", action="version", version=f"crowdsort {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=CommandParser)
    for cmd in COMMANDS:
        cmd.register_subcommand(sub)
    return parser


# A disk that fills, a read-only mount, a folder not ours: what was written before stays valid
# (every write is atomic), so one line naming the place and the fix is all the user needs.
WRITE_FAILURES = {errno.ENOSPC: ("no space left on the device holding", "free some space, or give a dataset on "
                                 "another disk, and run the command again: what was done is kept"),
                  errno.EDQUOT: ("disk quota exceeded on", "free some space within your quota and run it again"),
                  errno.EROFS: ("read-only file system at", "copy the dataset to a writable place, or write the "
                                "output elsewhere (--to)"),
                  errno.EACCES: ("no permission to write", "write the output elsewhere (--to) or fix the "
                                 "folder's permissions"),
                  errno.EPERM: ("not permitted to write", "write the output elsewhere (--to) or fix the "
                                "folder's permissions")}


def write_failure(e: OSError, dataset: str | None) -> str:
    """One line: what failed, where (the file where the error names one, else the dataset), the fix."""
    what, fix = WRITE_FAILURES[e.errno]
    if e.filename:
        where = os.fsdecode(e.filename)
        return f"{what} {Path(where).parent} ({where}): {fix}"
    return f"{what} {dataset or 'the output'}: {fix}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from .progress import show_progress

    show_progress(quiet=getattr(args, "quiet", False))
    from .storage.locks import DatasetBusyError
    from .scale.workers import sigterm_as_interrupt

    sigterm_as_interrupt()
    try:
        return args.command.run(args)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError, ConnectionError, DatasetBusyError) as e:
        print(f"crowdsort {args.command.name}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in WRITE_FAILURES:
            raise
        print(f"crowdsort {args.command.name}: error: {write_failure(e, getattr(args, 'dataset', None))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"crowdsort {args.command.name}: interrupted; what was done is saved, run it again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
