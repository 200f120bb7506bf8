"""The `clipforge export` subcommand over `clipforge.checkpoints.onnx_export.export_onnx`. It lives here
rather than in `checkpoints`, whose package import loads torch: building the parser must not."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_export_command(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a model for another runtime (ONNX)")
    export.add_argument("model", help="published name, ARCH:TAG, hf-hub:ORG/NAME, weights file or model folder")
    export.add_argument("--onnx", type=Path, required=True, metavar="OUT",
                        help="folder to write image_encoder.onnx, text_encoder.onnx and clipforge_onnx.json "
                             "(preprocessing, tokenizer, logit scale) into; must not exist yet, or be empty")
    export.set_defaults(run=export_command, writes=lambda args: args.onnx)


def export_command(args: argparse.Namespace) -> None:
    from clipforge.checkpoints.loading import load
    from clipforge.checkpoints.onnx_export import check_onnx_destination, export_onnx, require_onnx_export

    require_onnx_export()  # both checks come before the time a large model takes to load
    check_onnx_destination(args.onnx)
    model, preprocess = load(args.model)
    folder = export_onnx(model, preprocess, args.onnx)
    print(json.dumps({"saved": str(args.onnx), "files": sorted(path.name for path in folder.iterdir())}, indent=2))
