"""`clipforge serve`: the web page and its JSON API on one model and, optionally, an image index.
Needs the app extra; FastAPI, uvicorn and torch load when the command runs, not when the parser is built."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from clipforge.core.extras import require
from clipforge.core.locations import DEFAULT_MODEL_DIR
from clipforge.evaluation.commands import add_precision_argument, add_runtime_argument

if TYPE_CHECKING:
    from clipforge.search import ImageIndex

DEFAULT_MODEL = Path(DEFAULT_MODEL_DIR)


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve the web page: similarity matrix, zero-shot playground, search")
    serve.add_argument("--model", help="a model folder, weights file or published name (default: the index's "
                                       f"model, else {DEFAULT_MODEL})")
    serve.add_argument("--index", type=Path, help="an image index to search (`clipforge index build`) "
                                                  "(default: none, and no search)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind; 127.0.0.1 serves this machine only")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--device", default="cpu", help="torch device for the model")
    add_runtime_argument(serve)
    add_precision_argument(serve, None, "the precision the --index was built at, else fp32")
    serve.add_argument("--max-upload-mb", type=float, default=16.0, help="largest image upload in MiB")
    serve.add_argument("--max-megapixels", type=float, default=25.0, help="largest image upload in megapixels")
    serve.set_defaults(run=serve_command)


def model_source(model: str | None, index: ImageIndex | None, default: Path = DEFAULT_MODEL) -> str:
    """The model to serve: the one named, else the index's own, else the main job's."""
    if model is not None:
        return model
    if index is not None:
        return index.model_source
    if default.is_dir():
        return str(default)
    raise FileNotFoundError(f"no model to serve: {default} does not exist. Train it with `clipforge train`, or "
                            "pass --model with a model folder, a weights file or a published name such as "
                            "ViT-B/32 (downloaded when online)")


def serve_command(args: argparse.Namespace) -> None:
    uvicorn = require("uvicorn", "app", "the web app")
    for module in ("fastapi", "faiss"):  # the server's own imports: its API, and search over --index
        require(module, "app", "the web app")

    from clipforge.checkpoints.onnx_runtime import load_for_inference
    from clipforge.models.inference import for_inference
    from clipforge.search.fingerprint import precision_of

    from .server import create_app
    from .uploads import UploadLimits

    index = None
    if args.index is not None:
        from clipforge.search import ImageIndex

        index = ImageIndex.open(args.index)
    source = model_source(args.model, index)
    model, preprocess = load_for_inference(source, args.runtime, args.device)
    # an index's queries run at its own precision; an ONNX export runs as exported
    model = for_inference(model, args.precision or (precision_of(index.model_id) if index is not None
                                                    and args.runtime == "torch" else "fp32"))
    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6))
    app = create_app(model, preprocess, index, model_name=source, limits=limits)
    print(f"serving {source} at http://{args.host}:{args.port}/ (API schema: /openapi.json)")
    uvicorn.run(app, host=args.host, port=args.port)
