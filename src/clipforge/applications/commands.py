"""`clipforge score`, `clipforge rerank` and `clipforge generate`: argument parsing and printing over
`applications.scores`, `.rerank` and `.generate`. Building the parser imports nothing heavy: torch
loads when a command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.locations import DEFAULT_MODEL_DIR
from ..evaluation.commands import non_negative_int, positive_int

DEFAULT_MODEL = DEFAULT_MODEL_DIR


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"published name, weights file or model folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--device", default="cpu", help="where the model runs")


def add_generation_commands(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser("score", help="CLIPScore (Hessel's and torchmetrics' conventions) and RefCLIPScore "
                                              "of images against prompts")
    score.add_argument("images", nargs="+", help="image files")
    score.add_argument("--prompt", action="append", required=True, help="a caption to score; repeatable")
    score.add_argument("--references", help="reference captions for RefCLIPScore: text (one a line, for every "
                                            "image) or JSON (a list for every image, or an object image -> list) "
                                            "(default: none, and no RefCLIPScore)")
    score.add_argument("--prefix", default="", help='put before every prompt and reference, e.g. "A photo depicts" '
                                                    "as Hessel et al. did for photos (default: none)")
    score.add_argument("--json", action="store_true", help="one JSON object per image")
    score.add_argument("--batch-size", type=positive_int, default=64, help="images encoded at a time")
    _add_model_arguments(score)
    score.set_defaults(run=score_command)

    rerank = commands.add_parser("rerank", help="rank candidate images for a prompt, best first (as DALL-E did)")
    rerank.add_argument("candidates", nargs="+", help="image files and folders (searched recursively)")
    rerank.add_argument("--prompt", required=True, help="the text the candidates are ranked for")
    rerank.add_argument("-k", type=positive_int, help="show the best k (default: all)")
    rerank.add_argument("--prefix", default="", help="put before the prompt (default: none)")
    rerank.add_argument("--json", action="store_true", help="one JSON object: the ranking and the skipped files")
    rerank.add_argument("--batch-size", type=positive_int, default=64, help="images encoded at a time")
    rerank.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_arguments(rerank)
    rerank.set_defaults(run=rerank_command)

    generate = commands.add_parser("generate", help="generate an image on the CPU under CLIP guidance")
    generate.add_argument("prompts", nargs="+", metavar="PROMPT",
                          help='"text" or "text:weight"; several are mixed by weight, negative ones push away')
    generate.add_argument("-o", "--output", required=True, type=Path, help="the image file to write (.png)")
    generate.add_argument("--parameterization", choices=["shapes", "pixels"], default="shapes",
                          help="shapes: 24 soft ellipses on white; pixels: a 16x16 grid upsampled")
    generate.add_argument("--size", type=positive_int, default=64, help="side of the image in pixels")
    generate.add_argument("--steps", type=non_negative_int, default=60, help="optimiser steps")
    generate.add_argument("--lr", type=float, help="Adam's learning rate (default: the parameterisation's)")
    generate.add_argument("--cutouts", type=non_negative_int, default=32,
                          help="random crops scored per step; 0 scores the whole image")
    generate.add_argument("--loss", choices=["spherical", "cosine"], default="spherical",
                          help="distance between image and prompt features")
    generate.add_argument("--seed", type=int, default=0, help="the same seed draws the same start and cutouts")
    generate.add_argument("--frames", type=non_negative_int, default=0,
                          help="also write a strip of the start and N evenly spaced intermediate images")
    generate.add_argument("--frames-output", type=Path,
                          help="where the strip goes (default: OUTPUT with -frames before the suffix)")
    generate.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_model_arguments(generate)
    generate.set_defaults(run=generate_command, writes=lambda args: args.output)


def _load(args: argparse.Namespace):
    from ..checkpoints import load

    if args.model == DEFAULT_MODEL and not Path(DEFAULT_MODEL).exists():
        raise FileNotFoundError(f"no model at {DEFAULT_MODEL}: train one with `clipforge train`, or pass --model")
    return load(args.model, args.device)


def score_command(args: argparse.Namespace) -> None:
    from .scores import check_prompts, load_references, score_images

    prompts = check_prompts(args.prompt)
    references = load_references(args.references) if args.references else None
    model, preprocess = _load(args)
    table = score_images(model, preprocess, args.images, prompts, references, prefix=args.prefix,
                         batch_size=args.batch_size)
    for path, reason in table.skipped:
        print(f"clipforge score: skipped: {reason}", file=sys.stderr)
    for row in table.rows():
        if args.json:
            print(json.dumps(row))
            continue
        print(row["image"])
        width = max(len(entry["prompt"]) for entry in row["scores"])
        for entry in row["scores"]:
            ref = f"  RefCLIP-S {entry['ref_clip_score']:.4f}" if "ref_clip_score" in entry else ""
            print(f"  {entry['prompt']:<{width}}  cos {entry['cosine']:+.4f}  CLIP-S {entry['clip_score_hessel']:.4f}"
                  f"  CLIPScore(100) {entry['clip_score_torchmetrics']:6.2f}{ref}")
    if table.skipped:
        raise ValueError(f"{len(table.skipped)} of {len(args.images)} images could not be read: "
                         + ", ".join(path for path, _ in table.skipped))


def rerank_command(args: argparse.Namespace) -> None:
    from .rerank import rerank_files

    model, preprocess = _load(args)
    result = rerank_files(model, preprocess, args.prompt, args.candidates, k=args.k, batch_size=args.batch_size,
                          progress=not args.no_progress, prefix=args.prefix)
    if args.json:
        print(json.dumps({"prompt": result.prompt, "candidates": result.candidates,
                          "ranked": [{"rank": rank, "path": hit.path, "cosine": hit.cosine,
                                      "clip_score": hit.clip_score} for rank, hit in enumerate(result.ranked, 1)],
                          "skipped": [{"path": path, "reason": reason} for path, reason in result.skipped]}, indent=2))
    else:
        for rank, hit in enumerate(result.ranked, 1):
            print(f"{rank:4d}  CLIP-S {hit.clip_score:.4f}  cos {hit.cosine:+.4f}  {hit.path}")
        print(f"ranked {result.candidates} candidates for {result.prompt!r}"
              + (f"; skipped {len(result.skipped)} unreadable files" if result.skipped else ""))
    for _, reason in result.skipped:
        print(f"clipforge rerank: skipped: {reason}", file=sys.stderr)


def generate_command(args: argparse.Namespace) -> None:
    from .generate import contact_sheet, generate
    from .guidance import Guidance, as_weighted_prompts

    prompts = as_weighted_prompts(args.prompts)  # bad prompts fail before the model loads
    if args.output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
        raise ValueError(f"{args.output}: give an image file name ending in .png, .jpg, .webp or .bmp")
    model, _ = _load(args)
    result = generate(model, prompts, size=args.size, steps=args.steps, parameterization=args.parameterization,
                      lr=args.lr, cutout_count=args.cutouts, loss=args.loss, seed=args.seed, frames=args.frames,
                      progress=not args.no_progress)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet([[result.image]], gap=0).save(args.output)
    summary = {"output": str(args.output)}
    if args.frames:
        strip = args.frames_output or args.output.with_name(f"{args.output.stem}-frames{args.output.suffix}")
        contact_sheet([result.frames]).save(strip)
        summary["frames"] = str(strip)
    cosine = Guidance(model, prompts, cutouts=None).cosine(result.image.unsqueeze(0).to(model.logit_scale.device))[0]
    summary["loss"] = {"start": result.losses[0] if result.losses else None,
                       "end": result.losses[-1] if result.losses else None}
    summary["guide_cosine"] = {prompt.text: float(value) for prompt, value in zip(prompts, cosine)}
    print(json.dumps(summary, indent=2))
