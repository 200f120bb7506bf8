"""`clipforge` command line: thin subcommands over the library. Building the parser imports neither
torch nor any extra, so `--help` is quick; each command imports what it needs when it runs.

A command that writes a file or folder names it with `set_defaults(writes=<args -> path>)`: when the
command fails, what it created there is removed, unless `set_defaults(resumable=<path -> bool>)`
says that a rerun continues from it. Every option's help ends with its default (`HelpFormatter`)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import clipforge
from clipforge.app.commands import add_serve_command
from clipforge.applications.commands import add_generation_commands
from clipforge.applications.locate_commands import add_locate_commands
from clipforge.core.atomic import removed_on_failure, write_folder_atomically
from clipforge.core.errors import ClipforgeError
from clipforge.evaluation.commands import add_evaluation_commands, positive_int
from clipforge.evaluation.export_commands import add_export_command
from clipforge.search.commands import add_search_commands
from clipforge.training.config import add_arguments as add_training_arguments

SHARD_SOURCES = ("a table (.csv, .tsv, .jsonl), a folder of images with .txt captions, or .tar shards (a file, "
                 "a brace pattern or a folder)")


class HelpFormatter(argparse.HelpFormatter):
    """Ends an option's help with its default, unless the help words the default itself or there is
    none to show: None (the help says what happens instead) or a flag's False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        takes_default = action.option_strings or action.nargs in ("?", "*")
        if hidden or not takes_default or "default" in text:
            return text
        return f"{text} (default: {'empty' if action.default == '' else '%(default)s'})"


class Parser(argparse.ArgumentParser):
    """The `clipforge` parser; subcommands' parsers are of this class too, so their help shows defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def list_models_command(args: argparse.Namespace) -> None:
    from clipforge.checkpoints.loading import describe_pretrained

    print("configs:    " + ", ".join(clipforge.list_models()))
    print("pretrained: " + describe_pretrained())
    print("open_clip:  " + ", ".join(name for name in clipforge.list_pretrained(tags=True) if ":" in name))


def convert_command(args: argparse.Namespace) -> None:
    """A failure leaves the destination as it was (`write_folder_atomically`)."""
    destination = Path(args.destination).resolve()
    if destination.exists() and not (destination.is_dir() and not any(destination.iterdir())):
        raise FileExistsError(f"{destination} already exists: convert writes a new folder, so name one that "
                              "does not exist (or an empty one)")
    model = clipforge.load_model(args.source, config=args.config, activation=args.activation)
    export = clipforge.export_huggingface if args.to == "hf" else clipforge.save_model
    write_folder_atomically(destination, lambda staging: export(model, staging))
    print(json.dumps({"saved": args.destination, "format": args.to, "config": model.config.to_dict()}, indent=2))


def tokenize_command(args: argparse.Namespace) -> None:
    if args.model is None:
        tokenizer, context_length = clipforge.Tokenizer.openai(), args.context_length or 77
    else:
        model = clipforge.load_model(args.model)
        tokenizer, context_length = model.tokenizer, args.context_length or model.context_length
    try:
        tokens = tokenizer(args.texts, context_length=context_length, truncate=args.truncate)
    except ValueError as error:  # the library names its arguments; say the command's flags instead
        message = re.sub(r"\btruncate=True\b", "--truncate", str(error))
        raise ValueError(re.sub(r"\bcontext_length=?(\d*)", _context_length_flag, message)) from None
    for text, row in zip(args.texts, tokens.tolist()):
        while row and row[-1] == 0:  # padding: both tokenizers pad with id 0 after a text's last id
            row.pop()
        print(json.dumps({"text": text, "ids": row}))


def _context_length_flag(match: re.Match) -> str:
    return "--context-length" + (f" {match.group(1)}" if match.group(1) else "")


def data_prepare_command(args: argparse.Namespace) -> None:
    from clipforge.data.prepare import PrepareError, default_data_dir, prepare
    from clipforge.data.prepare.manifest import MANIFEST_NAME, load, summary

    data_dir = args.data_dir or default_data_dir()
    try:
        print(summary(prepare(data_dir, sources=args.sets, force=args.force, progress=not args.no_progress,
                              workers=args.workers)))
    except PrepareError:
        print(summary(load(data_dir)))  # what did get built, above the error
        raise
    print(f"every count, licence and checksum: {data_dir / MANIFEST_NAME}")


def data_shards_command(args: argparse.Namespace) -> None:
    from clipforge.data import write_shards

    if not any(character in args.source for character in "{*?[") and not Path(args.source).exists():
        raise FileNotFoundError(f"{args.source} does not exist: give {SHARD_SOURCES}")
    report = write_shards(args.source, args.out, shard_size=args.shard_size, max_side=args.max_side)
    if not report.written and report.skips.total:
        raise ValueError(f"every sample of {args.source} was unusable, so nothing was written; "
                         f"{report.skips.summary()}")
    if not report.written:
        raise ValueError(f"{args.source} holds no samples: give {SHARD_SOURCES}")
    print(report.summary())


def data_shapes_command(args: argparse.Namespace) -> None:
    from clipforge.data.shapes import write_shapes_shards

    shards = write_shapes_shards(args.out, args.count, seed=args.seed, split=args.split,
                                 shard_size=args.shard_size, image_size=args.image_size)
    print(f"wrote {args.count} {args.split} samples in {len(shards)} shards to {args.out}")


def train_command(args: argparse.Namespace) -> None:
    from clipforge.training.checkpointing import latest_checkpoint
    from clipforge.training.config import config_from_arguments
    from clipforge.training.trainer import train

    config = config_from_arguments(args)
    with removed_on_failure(Path(config.output_dir), lambda run: latest_checkpoint(run / "checkpoints") is not None):
        result = train(config, resume=args.resume)
    from clipforge.evaluation.suite import format_headline

    print(f"{'loss':55s} {result.metrics.get('loss', float('nan')):8.2f}")
    print(format_headline(result.metrics))
    print(f"metrics: {result.model_dir.parent / 'metrics.jsonl'}")
    print(f"model:  {result.model_dir}")
    print(f"report: {result.report}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="clipforge", description="A complete, fast, hackable CLIP.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {clipforge.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    models = commands.add_parser("models", help="list model configs and published weights")
    models.set_defaults(run=list_models_command)

    convert = commands.add_parser("convert", help="convert a checkpoint to a native or Hugging Face folder")
    convert.add_argument("source", help="published name, weights file, or native / Hugging Face folder")
    convert.add_argument("destination", help="output folder; must not exist yet, or be empty")
    convert.add_argument("--to", choices=["native", "hf"], default="native",
                         help="native: a clipforge folder (any model); hf: a Hugging Face CLIPModel folder "
                              "(ViT image and transformer text towers only)")
    convert.add_argument("--config", help="model config name or JSON (default: read from the weights)")
    convert.add_argument("--activation", choices=["quick_gelu", "gelu"],
                         help="needed for bare weight files: quick_gelu for OpenAI-trained weights (default: "
                              "implied by OpenAI's archives, published names and model folders)")
    convert.set_defaults(run=convert_command, writes=lambda args: Path(args.destination))

    tokenize = commands.add_parser("tokenize", help="print the token ids of texts")
    tokenize.add_argument("texts", nargs="+", help="one or more texts; quote each one")
    tokenize.add_argument("--model", help="published name, weights file or model folder whose tokenizer to use "
                                          "(default: OpenAI's BPE)")
    tokenize.add_argument("--context-length", type=positive_int,
                          help="ids per row, start and end included (default: the model's, or 77)")
    tokenize.add_argument("--truncate", action="store_true",
                          help="cut texts longer than --context-length instead of refusing them")
    tokenize.set_defaults(run=tokenize_command)

    data = commands.add_parser("data", help="prepare, convert and generate image-text data").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    prepare = data.add_parser("prepare", help="fetch the built-in corpus with npm/apt and write it as shards")
    prepare.add_argument("--data-dir", type=Path, help="default: $CLIPFORGE_DATA or ~/.cache/clipforge/data")
    prepare.add_argument("--sets", nargs="+", help="names from docs/data.md, e.g. twemoji ph openmoji (default: all)")
    prepare.add_argument("--force", action="store_true", help="rebuild sets that are already done")
    prepare.add_argument("--workers", type=positive_int, help="rendering processes (default: one per CPU)")
    prepare.add_argument("--no-progress", action="store_true", help="no progress bars")
    prepare.set_defaults(run=data_prepare_command)
    shards = data.add_parser("shards", help="convert a table, image folder or shards to WebDataset shards")
    shards.add_argument("source", help=SHARD_SOURCES)
    shards.add_argument("out", type=Path, help="folder for the shards")
    shards.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    shards.add_argument("--max-side", type=positive_int,
                        help="shrink images so their longer side is at most this (default: keep their size)")
    shards.set_defaults(run=data_shards_command, writes=lambda args: args.out)
    shapes = data.add_parser("shapes", help="generate the synthetic shapes data as shards")
    shapes.add_argument("out", type=Path, help="folder for the shards")
    shapes.add_argument("--count", type=positive_int, default=10000, help="scenes to draw")
    shapes.add_argument("--seed", type=int, default=0, help="the same seed draws the same images and captions")
    shapes.add_argument("--split", choices=["train", "heldout"], default="train",
                        help="train, or heldout: colour-shape pairs that train never shows")
    shapes.add_argument("--shard-size", type=positive_int, default=1000, help="samples per shard")
    shapes.add_argument("--image-size", type=positive_int, default=64, help="side of the square images, in pixels")
    shapes.set_defaults(run=data_shapes_command, writes=lambda args: args.out)

    train = commands.add_parser("train", help="train a CLIP model (defaults: the built-in corpus, ~10 minutes on 2 cores)")
    groups = add_training_arguments(train)
    groups["checkpoints"].add_argument("--resume", help="continue from a checkpoint file, or 'latest' in "
                                                        "--output-dir (default: start afresh)")
    train.set_defaults(run=train_command)
    add_evaluation_commands(commands)
    add_export_command(commands)
    add_serve_command(commands)
    add_search_commands(commands)
    add_generation_commands(commands)
    add_locate_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; a mistake the user can correct prints `clipforge COMMAND: message` and returns 1."""
    args = build_parser().parse_args(argv)
    command = " ".join(getattr(args, key) for key in ("command", "data_command", "index_command")
                       if getattr(args, key, None))
    writes = getattr(args, "writes", None)
    try:
        if writes is None:
            args.run(args)
        else:
            with removed_on_failure(Path(writes(args)), getattr(args, "resumable", None)):
                args.run(args)
    except (ClipforgeError, OSError, ValueError) as error:  # MissingExtraError too
        print(f"clipforge {command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"clipforge {command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
