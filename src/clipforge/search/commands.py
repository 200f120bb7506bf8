"""`clipforge index build|update`, `clipforge search` and `clipforge dedup`: thin shells over
`clipforge.search`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from clipforge.images.transform import load_image
from clipforge.search.builder import DEFAULT_ANN_THRESHOLD, DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, build_index, update_index
from clipforge.search.dedup import DEFAULT_THRESHOLD, find_duplicates
from clipforge.search.query import Searcher
from clipforge.search.store import ImageIndex, default_index_path


def index_build_command(args: argparse.Namespace) -> None:
    report = build_index(args.folders, args.index, args.model, **_build_options(args))
    _print_report(report, args.json)


def index_update_command(args: argparse.Namespace) -> None:
    report = update_index(args.index, args.model, **_build_options(args))
    _print_report(report, args.json)


def search_command(args: argparse.Namespace) -> None:
    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH")
    with ImageIndex.open(args.index) as index:
        searcher = Searcher.for_index(index, args.device)
        if args.image is not None:
            hits = searcher.by_image(load_image(args.image), args.k, args.folder)
        else:
            hits = searcher.by_text(args.query, args.k, args.folder)
    if args.json:
        print(json.dumps([{"path": str(hit.path), "score": hit.score} for hit in hits], indent=2))
    for hit in hits if not args.json else []:
        print(f"{hit.score:.4f}  {hit.path}")


def dedup_command(args: argparse.Namespace) -> None:
    with ImageIndex.open(args.index) as index:
        groups = find_duplicates(index, args.threshold, args.folder)
    if args.json:
        print(json.dumps([{"paths": [str(path) for path in group.paths], "similarity": group.similarity}
                          for group in groups], indent=2))
        return
    for group in groups:
        print(f"{len(group.paths)} images, similarity >= {group.similarity:.4f}")
        print("\n".join(f"  {path}" for path in group.paths))
    print(f"{len(groups)} groups of near-duplicates at similarity >= {args.threshold}")


def _build_options(args: argparse.Namespace) -> dict:
    return {"batch_size": args.batch_size, "workers": args.workers, "progress": not args.no_progress,
            "ann_threshold": args.ann_threshold, "device": args.device}


def _print_report(report, as_json: bool) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=Path, default=default_index_path(),
                        help="the index folder (default: $CLIPFORGE_INDEX or the cache's 'index')")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="data-loader processes")
    parser.add_argument("--ann-threshold", type=int, default=DEFAULT_ANN_THRESHOLD,
                        help="build a FAISS index from this many images on")
    parser.add_argument("--device", help="default: this rank's GPU if there is one, else the CPU")
    parser.add_argument("--no-progress", action="store_true")


def add_search_commands(commands: argparse._SubParsersAction) -> None:
    """Add `index`, `search` and `dedup` to the `clipforge` subcommands."""
    index = commands.add_parser("index", help="build and update an image search index").add_subparsers(
        dest="index_command", required=True)
    build = index.add_parser("build", help="embed every image under the folders (resumes; splits across "
                                           "ranks under torchrun)")
    build.add_argument("folders", nargs="+", type=Path)
    build.add_argument("--model", required=True, help="published name, weights file or model folder")
    _add_build_arguments(build)
    build.set_defaults(run=index_build_command)
    update = index.add_parser("update", help="embed new and changed images, drop deleted ones")
    update.add_argument("--model", help="default: the model the index was built with")
    _add_build_arguments(update)
    update.set_defaults(run=index_update_command)

    search = commands.add_parser("search", help="search an index by text or by example image")
    search.add_argument("query", nargs="?", help="what to look for, in words")
    search.add_argument("--image", type=Path, help="look for images like this one instead")
    search.add_argument("-k", type=int, default=20, help="number of results")
    search.add_argument("--folder", type=Path, help="only images under this folder")
    search.add_argument("--device", default="cpu")
    _add_common_arguments(search)
    search.set_defaults(run=search_command)

    dedup = commands.add_parser("dedup", help="list groups of near-duplicate images in an index")
    dedup.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine similarity")
    dedup.add_argument("--folder", type=Path, help="only images under this folder")
    _add_common_arguments(dedup)
    dedup.set_defaults(run=dedup_command)
