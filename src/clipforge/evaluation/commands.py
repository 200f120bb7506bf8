"""The `clipforge classify` and `clipforge eval` subcommands: argument parsing and printing over
`ZeroShotClassifier` and `runner.run_evaluation`. Building the parser needs only names and defaults: torch
loads when a command runs, and `eval`'s scikit-learn and matplotlib (the eval extra) with its runner."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.locations import DEFAULT_MODEL_DIR
from .datasets import SHAPES, TASKS, task_table
from .templates import DEFAULT_TEMPLATE_SET, load_classnames, load_templates, parse_labels, template_set_names

DEFAULT_MODEL = DEFAULT_MODEL_DIR
IMAGES_PER_BATCH = 64
RUNTIMES = ("torch", "onnx")  # as `checkpoints.onnx_runtime.RUNTIMES`, which loads torch
PRECISIONS = ("auto", "fp32", "bf16", "int8")  # as `models.inference.PRECISIONS`, which loads torch


def positive_int(text: str) -> int:
    return _int_from(text, 1)


def non_negative_int(text: str) -> int:
    return _int_from(text, 0)


def _int_from(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
    return value


def add_runtime_argument(parser: argparse.ArgumentParser) -> None:
    """`--runtime`, read by `checkpoints.onnx_runtime.load_for_inference` with the command's --model and --device."""
    parser.add_argument("--runtime", choices=RUNTIMES, default="torch",
                        help="onnx: --model is a folder that `clipforge export --onnx` wrote, run on the CPU "
                             "under ONNX Runtime (the onnx extra)")


def add_precision_argument(parser: argparse.ArgumentParser, default: str | None, shown_default: str) -> None:
    """`--precision`, applied by `models.inference.for_inference` to the command's model."""
    parser.add_argument("--precision", choices=PRECISIONS, default=default,
                        help="what the model computes in: int8 (CPU) and bf16 keep cosine >= 0.99 to fp32's features; "
                             "auto takes the fastest of them on this machine (docs/performance.md) "
                             f"(default: {shown_default})")


def add_evaluation_commands(commands: argparse._SubParsersAction) -> None:
    sets = ", ".join(template_set_names())
    classify = commands.add_parser("classify", help="zero-shot: the most probable labels of images")
    classify.add_argument("images", nargs="+", help="image files")
    labels = classify.add_mutually_exclusive_group(required=True)
    labels.add_argument("--labels", help='two or more comma-separated class names, e.g. "cat,dog,car" '
                                         "(this or --labels-file is required)")
    labels.add_argument("--labels-file",
                        help='class names: text with one a line, or JSON (a list, or {"classes": [...]})')
    classify.add_argument("--templates", default=DEFAULT_TEMPLATE_SET,
                          help=f"a template set ({sets}) or a file of templates with one '{{}}' each "
                               "(text, one a line, or JSON)")
    classify.add_argument("--model", default=DEFAULT_MODEL, help="published name, weights file or model folder")
    classify.add_argument("--top", type=positive_int, default=5, help="classes shown per image")
    classify.add_argument("--json", action="store_true", help="one JSON object per image")
    classify.add_argument("--device", default="cpu", help="torch device, such as cpu or cuda:0")
    add_runtime_argument(classify)
    add_precision_argument(classify, "fp32", "fp32; the class embeddings are fp32 whatever it is")
    classify.add_argument("--no-cache", action="store_true", help="embed the classes again instead of reading "
                                                                  "them from the class-embedding cache")
    classify.set_defaults(run=classify_command)

    evaluate = commands.add_parser("eval", help="zero-shot, retrieval and linear-probe figures, the bias probe "
                                                "and the shapes probes, for one or more models; writes results.json "
                                                "and report.md")
    evaluate.add_argument("--model", action="append", required=True,
                          help="published name, weights file or model folder; repeat to compare models side by side")
    evaluate.add_argument("--dataset", action="append", required=True,
                          help=f"a prepared evaluation set ({', '.join(task_table())}), {SHAPES} (the probes), or "
                               "a table, image folder or shards path; repeatable")
    evaluate.add_argument("--task", action="append", choices=TASKS,
                          help="repeatable (default: every task each dataset has, except localization, which "
                               "runs only when named; shapes always runs its probes; bias is openmoji-variants' "
                               "task)")
    evaluate.add_argument("--output", type=Path, default=Path("runs/eval"),
                          help="folder for results.json, report.md and figures; a rerun into it keeps the figures "
                               "that are still current")
    evaluate.add_argument("--templates", help=f"zero-shot templates for every dataset: a set ({sets}) or a file "
                                              "(default: each dataset's own set)")
    evaluate.add_argument("--label-key", help="the metadata field (table column, shard JSON key) holding your "
                                              "data's class labels, for zero-shot and the linear probe (default: "
                                              "none: your own data gets retrieval only)")
    evaluate.add_argument("--limit", type=positive_int, help="read only the first N entries of each dataset "
                                                             "(default: all)")
    evaluate.add_argument("--probe-count", type=positive_int, default=200, help="counting and spatial probes each")
    evaluate.add_argument("--seed", type=int, default=0,
                          help="seed of the shapes probes and of the linear probe's split")
    evaluate.add_argument("--data-dir", type=Path,
                          help="prepared data (default: $CLIPFORGE_DATA or ~/.cache/clipforge/data)")
    evaluate.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass")
    evaluate.add_argument("--device", default="cpu", help="torch device, such as cpu or cuda:0")
    evaluate.set_defaults(run=eval_command, writes=lambda args: args.output,
                          resumable=lambda folder: (folder / "results.json").is_file())


def classify_command(args: argparse.Namespace) -> None:
    import torch

    from ..checkpoints.onnx_runtime import load_for_inference
    from ..images import ImageLoadError, load_image
    from ..models.inference import for_inference
    from .cache import ClassEmbeddingCache
    from .features import encode_images
    from .zeroshot import ZeroShotClassifier

    classnames = labels_from_text(args.labels) if args.labels is not None else load_classnames(args.labels_file)
    if len(set(classnames)) < 2:
        raise ValueError(f"zero-shot classification picks one of several labels, and {len(set(classnames))} was "
                         'given: name two or more, e.g. --labels "cat,dog" (one label alone would always get 100%)')
    templates = load_templates(args.templates)
    if args.model == DEFAULT_MODEL and not Path(DEFAULT_MODEL).exists():
        raise FileNotFoundError(f"no model at {DEFAULT_MODEL}: train one with `clipforge train`, or pass --model")
    model, preprocess = load_for_inference(args.model, args.runtime, args.device)
    image_model = for_inference(model, args.precision, towers=("visual",))  # classes: fp32, cached by weights
    # the cache knows a model by its text tower's weights, which an ONNX graph does not show
    cache = None if args.no_cache or args.runtime == "onnx" else ClassEmbeddingCache()
    classifier = ZeroShotClassifier(model, classnames, templates, cache=cache)
    unreadable = []
    for start in range(0, len(args.images), IMAGES_PER_BATCH):
        paths, pixels = [], []
        for path in args.images[start:start + IMAGES_PER_BATCH]:
            try:
                pixels.append(preprocess(load_image(path)))
                paths.append(path)
            except ImageLoadError as error:
                unreadable.append(path)
                print(f"clipforge classify: skipped: {error}", file=sys.stderr)
        if not paths:
            continue
        for path, top in zip(paths, classifier.top_classes(encode_images(image_model, torch.stack(pixels)), args.top)):
            if args.json:
                print(json.dumps({"image": path, "top": [{"label": label, "probability": probability}
                                                         for label, probability in top]}))
            else:
                print(path)
                width = max(len(label) for label, _ in top)
                for label, probability in top:
                    print(f"  {label:<{width}}  {100 * probability:6.2f}%")
    if unreadable:
        raise ValueError(f"{len(unreadable)} of {len(args.images)} images could not be read: {', '.join(unreadable)}")


def labels_from_text(text: str) -> list[str]:
    """`--labels "cat, dog,car"` -> ["cat", "dog", "car"]; an empty label (",," or a comma at an end) is
    a slip, not a label to drop."""
    if any(not label.strip() for label in text.split(",")):
        raise ValueError(f"--labels {text!r} has an empty label (two commas in a row, or a comma at an end): "
                         'write the class names between commas, e.g. --labels "cat,dog,car"')
    return parse_labels(text)


def eval_command(args: argparse.Namespace) -> None:
    from .datasets import resolve_dataset
    from .runner import run_evaluation  # the eval extra (scikit-learn, matplotlib) loads here
    from .suite import EvalOptions, format_headline, headline_metrics

    if args.templates:
        load_templates(args.templates)  # a bad file fails now, not after the first model has run
    datasets = [resolve_dataset(spec, args.label_key, args.templates, args.data_dir) for spec in args.dataset]
    options = EvalOptions(tasks=args.task, limit=args.limit, probe_count=args.probe_count, seed=args.seed)
    report = run_evaluation(args.model, datasets, args.output, options, device=args.device, batch_size=args.batch_size)
    results = json.loads((report.parent / "results.json").read_text())
    for model, per_dataset in results["results"].items():
        print(model)
        for dataset, figures in per_dataset.items():
            print(format_headline(headline_metrics(dataset, figures)))
    print(f"results: {report.parent / 'results.json'}")
    print(f"report:  {report}")
