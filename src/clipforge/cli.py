"""`clipforge` command line: thin subcommands over the library. Building the parser imports neither
torch nor any extra, so `--help` is quick; each command imports what it needs when it runs."""

from __future__ import annotations

import argparse
import json
import sys

from pathlib import Path

import clipforge
from clipforge.app.commands import add_serve_command
from clipforge.core.errors import ClipforgeError
from clipforge.evaluation.commands import add_evaluation_commands
from clipforge.search.commands import add_search_commands
from clipforge.training.config import add_arguments as add_training_arguments


def list_models_command(args: argparse.Namespace) -> None:
    print("configs:    " + ", ".join(clipforge.list_models()))
    print("pretrained: " + ", ".join(clipforge.list_pretrained()))


def convert_command(args: argparse.Namespace) -> None:
    model = clipforge.load_model(args.source, config=args.config, activation=args.activation)
    if args.to == "hf":
        clipforge.export_huggingface(model, args.destination)
    else:
        clipforge.save_model(model, args.destination)
    print(json.dumps({"saved": str(args.destination), "format": args.to, "config": model.config.to_dict()}, indent=2))


def tokenize_command(args: argparse.Namespace) -> None:
    if args.model is None:
        tokenizer, context_length = clipforge.Tokenizer.openai(), args.context_length or 77
    else:
        model = clipforge.load_model(args.model)
        tokenizer, context_length = model.tokenizer, args.context_length or model.context_length
    tokens = tokenizer(args.texts, context_length=context_length, truncate=args.truncate)
    for text, row in zip(args.texts, tokens.tolist()):
        while row and row[-1] == 0:  # padding: both tokenizers pad with id 0 after a text's last id
            row.pop()
        print(json.dumps({"text": text, "ids": row}))


def data_prepare_command(args: argparse.Namespace) -> None:
    from clipforge.data.prepare import prepare

    manifest = prepare(args.data_dir, sources=args.sets, force=args.force, progress=not args.no_progress,
                       workers=args.workers)
    print(json.dumps(manifest, indent=2))


def data_shards_command(args: argparse.Namespace) -> None:
    from clipforge.data import write_shards

    report = write_shards(args.source, args.out, shard_size=args.shard_size, max_side=args.max_side)
    print(report.summary())


def data_shapes_command(args: argparse.Namespace) -> None:
    from clipforge.data.shapes import write_shapes_shards

    shards = write_shapes_shards(args.out, args.count, seed=args.seed, split=args.split,
                                 shard_size=args.shard_size, image_size=args.image_size)
    print(f"wrote {args.count} {args.split} samples in {len(shards)} shards to {args.out}")


def train_command(args: argparse.Namespace) -> None:
    from clipforge.training.config import config_from_arguments
    from clipforge.training.trainer import train

    result = train(config_from_arguments(args), resume=args.resume)
    from clipforge.evaluation.suite import format_headline

    print(f"{'loss':55s} {result.metrics.get('loss', float('nan')):8.2f}")
    print(format_headline(result.metrics))
    print(f"metrics: {result.model_dir.parent / 'metrics.jsonl'}")
    print(f"model:  {result.model_dir}")
    print(f"report: {result.report}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clipforge", description="A complete, fast, hackable CLIP.")
    commands = parser.add_subparsers(dest="command", required=True)

    models = commands.add_parser("models", help="list model configs and published weights")
    models.set_defaults(run=list_models_command)

    convert = commands.add_parser("convert", help="convert a checkpoint to a native or Hugging Face folder")
    convert.add_argument("source", help="published name, weights file, or native / Hugging Face folder")
    convert.add_argument("destination", help="output folder")
    convert.add_argument("--to", choices=["native", "hf"], default="native")
    convert.add_argument("--config", help="model config name or JSON (default: read from the weights)")
    convert.add_argument("--activation", choices=["quick_gelu", "gelu"],
                         help="needed for bare weight files: quick_gelu for OpenAI-trained weights")
    convert.set_defaults(run=convert_command)

    tokenize = commands.add_parser("tokenize", help="print the token ids of texts")
    tokenize.add_argument("texts", nargs="+")
    tokenize.add_argument("--model", help="published name, weights file or model folder whose tokenizer to use "
                                          "(default: OpenAI's BPE)")
    tokenize.add_argument("--context-length", type=int,
                          help="ids per row, start and end included (default: the model's, or 77)")
    tokenize.add_argument("--truncate", action="store_true")
    tokenize.set_defaults(run=tokenize_command)

    data = commands.add_parser("data", help="prepare, convert and generate image-text data").add_subparsers(
        dest="data_command", required=True)
    prepare = data.add_parser("prepare", help="fetch the built-in corpus with npm/apt and write it as shards")
    prepare.add_argument("--data-dir", type=Path, help="default: $CLIPFORGE_DATA or ~/.cache/clipforge/data")
    prepare.add_argument("--sets", nargs="+", help="twemoji noto tabler mdi openmoji fashion-mnist (default: all)")
    prepare.add_argument("--force", action="store_true", help="rebuild sets that are already done")
    prepare.add_argument("--workers", type=int, help="rendering processes (default: one per CPU)")
    prepare.add_argument("--no-progress", action="store_true")
    prepare.set_defaults(run=data_prepare_command)
    shards = data.add_parser("shards", help="convert a table, image folder or shards to WebDataset shards")
    shards.add_argument("source", help=".csv/.tsv/.jsonl, a folder of images with .txt captions, or .tar shards")
    shards.add_argument("out", type=Path)
    shards.add_argument("--shard-size", type=int, default=1000)
    shards.add_argument("--max-side", type=int, help="shrink images so their longer side is at most this")
    shards.set_defaults(run=data_shards_command)
    shapes = data.add_parser("shapes", help="generate the synthetic shapes data as shards")
    shapes.add_argument("out", type=Path)
    shapes.add_argument("--count", type=int, default=10000)
    shapes.add_argument("--seed", type=int, default=0)
    shapes.add_argument("--split", choices=["train", "heldout"], default="train")
    shapes.add_argument("--shard-size", type=int, default=1000)
    shapes.add_argument("--image-size", type=int, default=64)
    shapes.set_defaults(run=data_shapes_command)

    train = commands.add_parser("train", help="train a CLIP model (defaults: the built-in corpus, ~10 minutes on 2 cores)")
    add_training_arguments(train)
    train.add_argument("--resume", help="a checkpoint path, or 'latest' in --output-dir")
    train.set_defaults(run=train_command)
    add_evaluation_commands(commands)
    add_serve_command(commands)
    add_search_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (ClipforgeError, FileNotFoundError, FileExistsError, ValueError) as error:  # MissingExtraError too
        command = " ".join(getattr(args, key) for key in ("command", "data_command", "index_command")
                           if getattr(args, key, None))
        print(f"clipforge {command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
