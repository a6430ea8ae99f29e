"""The ``crowdsort`` command: each subcommand is a small class; ``main`` only wires them."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__


class ExtractFaces:
    name = "extract-faces"
    help = "detect, align and crop faces from image folders into a dataset"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(ExtractFaces.name, help=ExtractFaces.help, description=ExtractFaces.help + (
            ". Re-running skips unchanged images, processes new or changed ones and marks deleted ones gone."))
        p.add_argument("-d", "--dataset", required=True, help="dataset folder (created if missing)")
        p.add_argument("--from", dest="source", required=True,
                       help="comma-separated globs of images or folders (scanned recursively), e.g. 'images/*'")
        p.add_argument("--to", default="faces", help="extraction run name inside the dataset (default: faces)")
        p.add_argument("--engine", default="mediapipe", choices=["mediapipe", "dlib"],
                       help="detector: mediapipe BlazeFace (default) or dlib HOG")
        p.add_argument("--min-score", type=float, default=None,
                       help="detection threshold (default 0.5 for mediapipe, 0.0 HOG margin for dlib)")
        p.add_argument("--max-faces", type=int, default=None,
                       help="keep the N most prominent faces per image (size and centrality); default all")
        p.add_argument("--min-size", type=int, default=0, help="drop faces whose box is smaller (pixels)")
        p.add_argument("--skip-partial", action="store_true", help="drop faces whose box leaves the image")
        p.add_argument("--workers", type=int, default=1, help="parallel processes (each loads the detector once)")
        p.set_defaults(command=ExtractFaces)

    @staticmethod
    def run(args) -> int:
        from .extract import ExtractParams, extract_faces
        from .store import FaceStore

        params = ExtractParams(args.engine, args.min_score, args.max_faces, args.min_size, args.skip_partial)
        store = FaceStore(Path(args.dataset) / args.to)
        s = extract_faces(args.source, store, params, workers=args.workers, progress=not args.quiet)
        for err in s["errors"]:
            print(f"skipped: {err}", file=sys.stderr)
        print(f"{s['images']} images: {s['processed']} processed, {s['unchanged']} unchanged, "
              f"{s['failed']} unreadable, {s['gone']} gone; {s['faces']} new faces, "
              f"{s['faces_total']} in {store.root} ({s['no_face']} images without a face)")
        return 0


class Cluster:
    name = "cluster"
    help = "embed extracted faces and cluster them by identity into numbered folders"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Cluster.name, help=Cluster.help, description=Cluster.help + (
            ". Writes DIR/000 (largest) …, DIR/noise, assignments.csv and clusters.json."))
        p.add_argument("-d", "--dataset", required=True, help="dataset folder")
        p.add_argument("--from", dest="source", default="faces", help="extraction run to cluster (default: faces)")
        p.add_argument("--to", default="cluster", help="output folder name inside the dataset (default: cluster)")
        p.add_argument("--model", default="dlib", choices=["dlib", "arcface"], help="identity embedding model")
        p.add_argument("--weights", default=None,
                       help="arcface: pack name (buffalo_l…), pack folder or .onnx file (default buffalo_l)")
        p.add_argument("--algorithm", default="hdbscan",
                       choices=["hdbscan", "rnn-dbscan", "dbscan", "optics", "agglomerative", "chinese-whispers"],
                       help="clustering over the kNN graph (default hdbscan: the best measured on lfw-dev)")
        p.add_argument("--min-cluster-size", type=int, default=None,
                       help="hdbscan: smallest cluster (default 2); agglomerative/chinese-whispers: smaller → noise")
        p.add_argument("--min-samples", type=int, default=None, help="hdbscan (default 1), dbscan/optics (default 2)")
        p.add_argument("--knn", type=int, default=None,
                       help="rnn-dbscan's K (default 5); the graph keeps at least 15 neighbours per face")
        p.add_argument("--eps", type=float, default=None,
                       help="cosine distance: dbscan/optics eps (0.06), agglomerative (0.07) and "
                            "chinese-whispers (0.06) thresholds; defaults are tuned for dlib vectors")
        p.add_argument("--ann", default="auto", choices=["auto", "exact", "pynndescent"],
                       help="kNN search: exact up to 50k faces, pynndescent above (auto)")
        p.add_argument("--top", type=int, default=None, help="keep the N largest clusters; the rest go to noise/")
        p.add_argument("--num-protos", type=int, default=3, help="prototypes per cluster (marked in assignments.csv)")
        p.add_argument("--proto-out", default=None, help="also copy each cluster's prototypes to DIR/<cluster>/")
        p.add_argument("--model-out", default=None,
                       help="save vectors, labels and graph (.npz) to assign new faces to these clusters later")
        p.add_argument("--clean", action="store_true", help="replace an existing cluster run in --to")
        p.add_argument("--link", default="copy", choices=["copy", "hardlink", "symlink"],
                       help="how crops are placed in the cluster folders")
        p.set_defaults(command=Cluster)

    @staticmethod
    def run(args) -> int:
        from .pipeline import cluster_faces, cluster_params

        params = cluster_params(args.algorithm, args.min_cluster_size, args.min_samples, args.knn, args.eps)
        s = cluster_faces(
            args.dataset, args.source, args.to, args.model, args.weights, args.algorithm, params, args.ann,
            args.top, args.num_protos, args.proto_out, args.model_out, args.link, args.clean,
            progress=not args.quiet,
        )
        print(f"{s['n_items']} faces → {s['n_clusters']} clusters, {s['n_noise']} noise "
              f"({s['model']}, {s['algorithm']}) in {Path(args.dataset) / args.to}")
        return 0


class Example:
    name = "example"
    help = "build an example photo folder from images shipped in installed packages"

    @staticmethod
    def register_subcommand(sub):
        p = sub.add_parser(Example.name, help=Example.help, description=Example.help + (
            " (real portraits from scikit-image and matplotlib, varied and composed into photos; "
            "no network needed)."))
        p.add_argument("dest", help="folder to create, e.g. scratch/crowd/images")
        p.set_defaults(command=Example)

    @staticmethod
    def run(args) -> int:
        from .example import build_example

        info = build_example(args.dest)
        print(f"wrote {info['images']} images ({info['people']} people, {info['bad']} deliberately bad files) "
              f"to {args.dest}")
        return 0


COMMANDS = [ExtractFaces, Cluster, Example]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crowdsort", description="Turn a folder of photos into people and things.")
    parser.add_argument("--version", action="version", version=f"crowdsort {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for cmd in COMMANDS:
        cmd.register_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "command"):
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    os.environ.setdefault("GLOG_minloglevel", "2")  # keep mediapipe's C++ logging quiet
    try:
        return args.command.run(args)
    except (FileNotFoundError, FileExistsError, ValueError, ImportError) as e:
        print(f"crowdsort {args.command.name}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
