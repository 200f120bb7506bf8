"""`clipforge index build|update`, `clipforge search` and `clipforge dedup`: thin shells over
`clipforge.search`. Building the parser imports nothing heavy: torch and FAISS load when a command runs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def index_build_command(args: argparse.Namespace) -> None:
    from clipforge.search import build_index

    report = build_index(args.folders, _index_path(args), args.model, **_build_options(args))
    _print_report(report, args.json)


def index_update_command(args: argparse.Namespace) -> None:
    from clipforge.search import update_index

    report = update_index(_index_path(args), args.model, **_build_options(args))
    _print_report(report, args.json)


def search_command(args: argparse.Namespace) -> None:
    from clipforge.images import load_image
    from clipforge.search import ImageIndex, Searcher

    if (args.query is None) == (args.image is None):
        raise ValueError("give either a text query or --image PATH")
    with ImageIndex.open(_index_path(args)) as index:
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
    from clipforge.search import ImageIndex, find_duplicates
    from clipforge.search.dedup import DEFAULT_THRESHOLD

    threshold = DEFAULT_THRESHOLD if args.threshold is None else args.threshold
    with ImageIndex.open(_index_path(args)) as index:
        groups = find_duplicates(index, threshold, args.folder)
    if args.json:
        print(json.dumps([{"paths": [str(path) for path in group.paths], "similarity": group.similarity}
                          for group in groups], indent=2))
        return
    for group in groups:
        print(f"{len(group.paths)} images, similarity >= {group.similarity:.4f}")
        print("\n".join(f"  {path}" for path in group.paths))
    print(f"{len(groups)} groups of near-duplicates at similarity >= {threshold}")


def _index_path(args: argparse.Namespace) -> Path:
    from clipforge.search import default_index_path

    return args.index if args.index is not None else default_index_path()


def _build_options(args: argparse.Namespace) -> dict:
    """The options given on the command line; the others keep `build_index`'s defaults."""
    given = {"batch_size": args.batch_size, "workers": args.workers, "ann_threshold": args.ann_threshold}
    return {**{name: value for name, value in given.items() if value is not None},
            "progress": not args.no_progress, "device": args.device}


def _print_report(report, as_json: bool) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=Path,
                        help="the index folder (default: $CLIPFORGE_INDEX or the cache's 'index')")
    parser.add_argument("--json", action="store_true", help="print JSON")


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--workers", type=int, help="data-loader processes")
    parser.add_argument("--ann-threshold", type=int,
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
    dedup.add_argument("--threshold", type=float, help="cosine similarity")
    dedup.add_argument("--folder", type=Path, help="only images under this folder")
    _add_common_arguments(dedup)
    dedup.set_defaults(run=dedup_command)
