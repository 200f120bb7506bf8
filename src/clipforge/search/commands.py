"""`clipforge index build|update`, `clipforge search` and `clipforge dedup`: thin shells over
`clipforge.search`. Building the parser imports nothing heavy: torch and FAISS load when a command runs."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clipforge.evaluation.commands import add_precision_argument, add_runtime_argument, non_negative_int, positive_int

if TYPE_CHECKING:
    from clipforge.search import ImageIndex


def index_build_command(args: argparse.Namespace) -> None:
    from clipforge.data.samples import IMAGE_EXTENSIONS
    from clipforge.search import build_index

    report = build_index(args.folders, _index_path(args), args.model, **_build_options(args))
    if not report.indexed and int(os.environ.get("RANK", "0")) == 0:  # rank 0's report covers every rank
        skipped = f" ({report.skipped} unreadable file{'s' * (report.skipped != 1)} skipped)" * bool(report.skipped)
        raise ValueError(f"found no images to index under {', '.join(map(str, args.folders))}{skipped}: name "
                         f"folders that hold images ({', '.join(IMAGE_EXTENSIONS)}); subfolders are searched too")
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
    if args.query is not None and not args.query.strip():
        raise ValueError('the query is empty: say what to look for, e.g. clipforge search "a red bicycle", or '
                         "look for images like one with --image PATH")
    query_image = None if args.image is None else load_image(args.image)  # a bad file fails before the model loads
    with ImageIndex.open(_index_path(args)) as index:
        check_candidates(index, args.folder)
        searcher = Searcher.for_index(index, args.device, args.runtime, args.model, args.precision)
        if query_image is not None:
            hits = searcher.by_image(query_image, args.k, args.folder)
        else:
            hits = searcher.by_text(args.query, args.k, args.folder)
    if args.json:
        print(json.dumps([{"path": str(hit.path), "score": hit.score} for hit in hits], indent=2))
    for hit in hits if not args.json else []:
        print(f"{hit.score:.4f}  {hit.path}")


def dedup_command(args: argparse.Namespace) -> None:
    from clipforge.search import ImageIndex, find_duplicates

    threshold = args.threshold
    with ImageIndex.open(_index_path(args)) as index:
        check_candidates(index, args.folder)
        groups = find_duplicates(index, threshold, args.folder)
    if args.json:
        print(json.dumps([{"paths": [str(path) for path in group.paths], "similarity": group.similarity}
                          for group in groups], indent=2))
        return
    for group in groups:
        print(f"{len(group.paths)} images, similarity >= {group.similarity:.4f}")
        print("\n".join(f"  {path}" for path in group.paths))
    print(f"{len(groups)} groups of near-duplicates at similarity >= {threshold}")


def check_candidates(index: ImageIndex, folder: Path | None) -> None:
    """Refuse a query with nothing to search: an empty index, or a --folder that holds no indexed image."""
    if len(index) == 0:
        raise ValueError(f"the index at {index.folder} holds no images: add some with `clipforge index build FOLDER`")
    if folder is None:
        return
    with index.reading() as snapshot:
        if len(snapshot.candidate_rows(folder)):
            return
    why = "it does not exist" if not folder.expanduser().exists() else "it holds no indexed image"
    raise ValueError(f"--folder {folder}: {why}; the index at {index.folder} covers "
                     f"{', '.join(map(str, index.roots)) or 'no folder'}")


def _index_path(args: argparse.Namespace) -> Path:
    from clipforge.search import default_index_path

    return args.index if args.index is not None else default_index_path()


def _holds_images(index_path: Path) -> bool:
    """Whether a failed build left images that a rerun keeps (builds commit batch by batch)."""
    from clipforge.search import ImageIndex

    with ImageIndex.open(index_path) as index:
        return len(index) > 0


def _build_options(args: argparse.Namespace) -> dict:
    """The options given on the command line; the others keep `build_index`'s defaults."""
    given = {"batch_size": args.batch_size, "workers": args.workers, "ann_threshold": args.ann_threshold}
    return {**{name: value for name, value in given.items() if value is not None},
            "progress": not args.no_progress, "device": args.device, "runtime": args.runtime,
            "precision": args.precision}


def _print_report(report, as_json: bool) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports for all
        return
    print(json.dumps(report.as_dict(), indent=2) if as_json else report.summary())


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", type=Path,
                        help="the index folder (default: $CLIPFORGE_INDEX or the cache's 'index')")
    parser.add_argument("--json", action="store_true", help="print JSON")


# Shown in --help: the defaults of `build_index` and `find_duplicates` (tests/test_cli_help.py checks they agree).
SHOWN_DEFAULTS = {"batch_size": 64, "workers": 2, "ann_threshold": 50_000, "threshold": 0.95}


def _add_build_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int,
                        help=f"images per forward pass (default: {SHOWN_DEFAULTS['batch_size']})")
    parser.add_argument("--workers", type=non_negative_int,
                        help=f"data-loader processes; 0 reads in this process (default: {SHOWN_DEFAULTS['workers']})")
    parser.add_argument("--ann-threshold", type=positive_int,
                        help="build and use a FAISS index from this many images on "
                             f"(default: {SHOWN_DEFAULTS['ann_threshold']})")
    parser.add_argument("--device", help="torch device (default: this rank's GPU if there is one, else the CPU; "
                                         "the CPU under --runtime onnx)")
    add_runtime_argument(parser)
    add_precision_argument(parser, None, "the precision the index was built at, recorded in it; fp32 for a new "
                                         "index")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_search_commands(commands: argparse._SubParsersAction) -> None:
    """Add `index`, `search` and `dedup` to the `clipforge` subcommands."""
    index = commands.add_parser("index", help="build and update an image search index").add_subparsers(
        dest="index_command", required=True)
    build = index.add_parser("build", help="embed every image under the folders (resumes; splits across "
                                           "ranks under torchrun)")
    build.add_argument("folders", nargs="+", type=Path, help="folders of images, searched recursively")
    build.add_argument("--model", required=True, help="published name, weights file or model folder")
    _add_build_arguments(build)
    build.set_defaults(run=index_build_command, writes=_index_path, resumable=_holds_images)
    update = index.add_parser("update", help="embed new and changed images, drop deleted ones")
    update.add_argument("--model", help="the index's model, should it have moved (default: the model the index "
                                        "was built with, where it was)")
    _add_build_arguments(update)
    update.set_defaults(run=index_update_command)

    search = commands.add_parser("search", help="search an index by text or by example image")
    search.add_argument("query", nargs="?", help="what to look for, in words (or give --image)")
    search.add_argument("--image", type=Path,
                        help="look for images like this one (default: none: search by the text query)")
    search.add_argument("-k", type=positive_int, default=20, help="number of results")
    search.add_argument("--folder", type=Path, help="only images under this folder (default: the whole index)")
    search.add_argument("--model", help="the model that embeds the query; it must have the weights the index was "
                                        "built with (default: the index's model, where it was)")
    search.add_argument("--device", default="cpu", help="torch device for the model")
    add_runtime_argument(search)
    add_precision_argument(search, None, "the precision the index was built at")
    _add_common_arguments(search)
    search.set_defaults(run=search_command)

    dedup = commands.add_parser("dedup", help="list groups of near-duplicate images in an index")
    dedup.add_argument("--threshold", type=float, default=SHOWN_DEFAULTS["threshold"],
                       help="cosine similarity from which two images count as near-duplicates, in [-1, 1]")
    dedup.add_argument("--folder", type=Path, help="only images under this folder (default: the whole index)")
    _add_common_arguments(dedup)
    dedup.set_defaults(run=dedup_command)
