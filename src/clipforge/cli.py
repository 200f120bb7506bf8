"""`clipforge` command line: thin subcommands over the library."""

from __future__ import annotations

import argparse
import json
import sys

import clipforge
from clipforge.checkpoints import CheckpointError, DownloadError


def list_models_command(args: argparse.Namespace) -> None:
    print("configs:    " + ", ".join(clipforge.list_models()))
    print("pretrained: " + ", ".join(clipforge.list_pretrained()))


def convert_command(args: argparse.Namespace) -> None:
    model = clipforge.load_model(args.source, config=args.config, activation=args.activation)
    tokenizer = clipforge.get_tokenizer(args.source) if args.tokenizer else None
    if args.to == "hf":
        clipforge.export_huggingface(model, args.destination, tokenizer=tokenizer)
    else:
        clipforge.save_model(model, args.destination, tokenizer=tokenizer)
    print(json.dumps({"saved": str(args.destination), "format": args.to, "config": model.config.to_dict()}, indent=2))


def tokenize_command(args: argparse.Namespace) -> None:
    tokens = clipforge.get_tokenizer(args.model)(args.texts, context_length=args.context_length, truncate=args.truncate)
    for text, row in zip(args.texts, tokens.tolist()):
        print(json.dumps({"text": text, "ids": row[: row.index(max(row)) + 1]}))


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
    convert.add_argument("--tokenizer", action="store_true",
                         help="also write the tokenizer's vocab.json + merges.txt")
    convert.set_defaults(run=convert_command)

    tokenize = commands.add_parser("tokenize", help="print the token ids of texts")
    tokenize.add_argument("texts", nargs="+")
    tokenize.add_argument("--model", help="a model folder with its own vocabulary (default: OpenAI's BPE)")
    tokenize.add_argument("--context-length", type=int, default=77)
    tokenize.add_argument("--truncate", action="store_true")
    tokenize.set_defaults(run=tokenize_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (CheckpointError, DownloadError, FileNotFoundError, ValueError) as error:
        print(f"clipforge {args.command}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
