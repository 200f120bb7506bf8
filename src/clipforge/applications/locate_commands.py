"""`clipforge locate`: where prompts are in images, over `applications.localization`. Building the
parser imports neither torch nor the model code; the command imports them when it runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.atomic import write_atomically
from ..core.locations import DEFAULT_MODEL_DIR
from ..evaluation.commands import positive_int

if TYPE_CHECKING:
    from .localization import Localization

METHOD_CHOICES = ("dense", "crops")  # evaluation.maps.METHODS, named here so that --help needs no torch


def add_locate_commands(commands: argparse._SubParsersAction) -> None:
    locate = commands.add_parser("locate", help="open-vocabulary localization: where each prompt is in each image "
                                                "(similarity map peak, boxes, overlays)")
    locate.add_argument("images", nargs="+", help="image files; a broken or huge one is reported and skipped")
    locate.add_argument("--prompt", action="append", required=True,
                        help='what to find, e.g. "a red heart"; repeatable')
    locate.add_argument("--boxes", action="store_true", help="up to 3 boxes per prompt around the map's high "
                                                             "regions, each scored by how far its peak stands above "
                                                             "the map's median")
    locate.add_argument("--model", default=DEFAULT_MODEL_DIR, help="published name, weights file or model folder")
    locate.add_argument("--method", choices=METHOD_CHOICES, default="dense",
                        help="dense: the image tower's own locations, one forward pass (MaskCLIP); crops: "
                             "sliding windows embedded whole, the slower baseline")
    locate.add_argument("--size", type=positive_int,
                        help="pixels of the image's short side as the tower sees it (default: the model's input "
                             "size, or 14 of the tower's strides if more)")
    locate.add_argument("--json", action="store_true",
                        help='one JSON line per image and prompt: {"image", "prompt", "size": [w, h], "peak": [x, y], '
                             '"boxes": [[x0, y0, x1, y1, score], ...]}, in the image\'s pixels')
    locate.add_argument("-o", "--output", type=Path,
                        help="write the overlays to this PNG: a row per image (the readable ones), a column per "
                             "prompt (default: none, no overlays)")
    locate.add_argument("--device", default="cpu", help="torch device, such as cpu or cuda:0")
    locate.set_defaults(run=locate_command)


def locate_command(args: argparse.Namespace) -> None:
    from ..checkpoints import load_model
    from ..images import ImageLoadError
    from ..data import DEFAULT_MAX_PIXELS
    from ..images import load_image
    from .localization import Locator, checked_prompts, overlay_sheet

    prompts = checked_prompts(args.prompt)  # bad prompts fail before the model loads
    if args.output is not None and args.output.suffix.lower() != ".png":
        raise ValueError(f"--output writes a PNG: name it something.png, not {args.output.name!r}")
    if args.model == DEFAULT_MODEL_DIR and not Path(DEFAULT_MODEL_DIR).exists():
        raise FileNotFoundError(f"no model at {DEFAULT_MODEL_DIR}: train one with `clipforge train`, or pass --model")
    locator = Locator(load_model(args.model, device=args.device), args.method, args.size)
    text = locator.text_features(prompts)
    unreadable, opened, results = [], [], []
    for path in args.images:
        try:
            image = load_image(path, max_pixels=DEFAULT_MAX_PIXELS)
        except ImageLoadError as error:
            unreadable.append(path)
            print(f"clipforge locate: skipped: {error}", file=sys.stderr)
            continue
        found = locator.locate(image, prompts, path, args.boxes, text)
        opened.append(image)
        results.append(found)
        for localization in found:
            if args.json:
                print(json.dumps(localization.to_json()))
            else:
                print_localization(localization)
    if args.output is not None and results:
        sheet = overlay_sheet(opened, results)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(args.output, lambda partial: sheet.save(partial, format="PNG"))
        print(f"overlays: {args.output}", file=sys.stderr if args.json else sys.stdout)
    if unreadable:
        raise ValueError(f"{len(unreadable)} of {len(args.images)} images could not be read: {', '.join(unreadable)}")


def print_localization(localization: Localization) -> None:
    """The human-readable lines of one image and prompt: the peak, its cosine, and the boxes."""
    width, height = localization.size
    x, y = localization.peak
    print(f"{localization.image} ({width}x{height})  {localization.prompt!r}: peak ({x}, {y}), "
          f"cosine {localization.peak_similarity:.3f}")
    for box in localization.boxes:
        print(f"  box ({box.x0:.0f}, {box.y0:.0f}, {box.x1:.0f}, {box.y1:.0f})  score {box.score:.3f}")
