"""Every training option in one dataclass: saved with each checkpoint as JSON, loadable from a JSON
file, and overridable from the command line (`--batch-size 256`, `--no-lock-image`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.locations import DEFAULT_RUN_DIR


# `clipforge train --help` shows the options in these groups, in this order.
OPTION_GROUPS = ("model", "data", "optimisation", "precision", "checkpoints", "evaluation", "logging")


def option(group: str, default: Any, help_text: str, shown: str | None = None) -> Any:
    """A field with its `--help` line and group; `shown` words a default that its value cannot say
    (None). A list default is copied for each instance."""
    metadata = {"group": group, "help": help_text, "shown": shown}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    # what to train
    model: str = option("model", "forge-cnn-ngram", "model config name (see `clipforge models`) or JSON file; "
                                                    "ignored with --pretrained")
    pretrained: str | None = option("model", None, "fine-tune from a published name, weights file or model folder",
                                    shown="none: train from scratch")
    tokenizer: str = option("model", "learn", "a new transformer text tower's BPE: learn (from the captions) or openai")
    vocab_size: int = option("model", 4096, "BPE vocabulary size with --tokenizer learn")
    # data
    train_data: list[str] = option("data", ["builtin:train", "builtin:emoji*5"],
                                   "builtin:train, builtin:emoji, builtin:icon, builtin:SET (SPEC*N counts N times) or "
                                   ".tar shards (several mix), or one table (.csv/.tsv/.jsonl) or image folder")
    eval_data: list[str] = option("evaluation", ["builtin:eval"], "sets to evaluate on, named as for --train-data; "
                                                                  "builtin:eval is every prepared evaluation set")
    caption_choice: str = option("data", "random", "random: one of a sample's captions each epoch; txt: always "
                                                   "its .txt caption")
    workers: int = option("data", 0, "data-loader processes; the image memo needs 0")
    shuffle_buffer: int = option("data", 170000, "shards: samples shuffled together; at least the data's size "
                                                "shuffles fully")
    image_memo_mib: int = option("data", 2048, "MiB of decoded training images kept between epochs (with "
                                               "--workers 0); 0 = off")
    augment_crop_scale: float = option("data", 1.0, "random crops of this fraction of the area up to all of it; "
                                                    "1 = none")
    augment_grayscale: float = option("data", 0.0, "probability of turning a training image grayscale")
    augment_shift: int = option("data", 1, "move each training image by up to this many pixels each way")
    # schedule
    steps: int = option("optimisation", 1400, "optimizer steps; the defaults are the recipe chosen by measured "
                                              "runs (docs/training.md), ~10 min on 2 cores")
    batch_size: int = option("optimisation", 512, "samples per step in each process")
    accum_freq: int = option("optimisation", 1, "micro-batches per step; features are cached so negatives span "
                                                "the full batch")
    lr: float = option("optimisation", 2e-3, "peak learning rate of AdamW")
    warmup_steps: int = option("optimisation", 25, "steps of linear warm-up before the cosine decay")
    min_lr_ratio: float = option("optimisation", 0.0, "the cosine decay ends at this fraction of --lr")
    weight_decay: float = option("optimisation", 0.1, "AdamW weight decay")
    beta1: float = option("optimisation", 0.9, "AdamW beta1")
    beta2: float = option("optimisation", 0.98, "AdamW beta2")
    eps: float = option("optimisation", 1e-6, "AdamW epsilon")
    grad_clip: float | None = option("optimisation", 1.0, "clip the gradients' global norm to this; 0 = no clipping")
    # loss and model behaviour
    loss: str = option("optimisation", "clip", "clip (softmax contrastive) or siglip (sigmoid)")
    local_loss: bool = option("optimisation", False, "each process scores only its own rows against the global "
                                                     "batch: the same loss with less memory")
    precision: str = option("precision", "auto", "bf16 (autocast), fp32, or auto: bf16 only where the hardware "
                                                 "has fast bf16")
    grad_checkpointing: bool = option("precision", False, "recompute activations in the backward pass: less "
                                                          "memory, slower steps")
    lock_image: bool = option("model", False, "LiT: freeze the image tower")
    lock_text: bool = option("model", False, "freeze the text tower")
    # bookkeeping
    seed: int = option("optimisation", 0, "seed of the initialisation and of the data order")
    output_dir: str = option("checkpoints", DEFAULT_RUN_DIR, "run folder: checkpoints, metrics, report and the "
                                                             "final model")
    checkpoint_every: int = option("checkpoints", 200, "steps between checkpoints; one is also saved at the end")
    keep_checkpoints: int = option("checkpoints", 2, "checkpoints kept; older ones are deleted")
    eval_every: int = option("evaluation", 0, "steps between evaluations; 0: only at the end (the 10-minute "
                                              "default has no room for more)")
    log_every: int = option("logging", 10, "steps between throughput readings on the progress bar")
    device: str | None = option("precision", None, "torch device, such as cpu or cuda:0",
                                shown="this process's GPU if there is one, else the CPU")
    progress: bool = option("logging", True, "show a progress bar")

    def __post_init__(self) -> None:
        choices = {"tokenizer": ("learn", "openai"), "caption_choice": ("random", "txt"),
                   "loss": ("clip", "siglip"), "precision": ("auto", "bf16", "fp32")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.steps < 1 or self.batch_size < 1 or self.accum_freq < 1:
            raise ValueError("steps, batch_size and accum_freq must be positive")
        if self.batch_size % self.accum_freq:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of accum_freq {self.accum_freq}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training options {unknown}")
        return cls(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def add_arguments(parser: argparse.ArgumentParser) -> dict[str, argparse._ArgumentGroup]:
    """One `--option` per field, in its group, its help ending in the dataclass's default. Each defaults
    to None on the command line, so that only options given there override the JSON config or the
    dataclass defaults. Returns the groups by name, for options of the command that are not fields."""
    parser.add_argument("--config", help="JSON file of training options; options given here override it "
                                          "(default: none)")
    groups = {name: parser.add_argument_group(name) for name in OPTION_GROUPS}
    for option in dataclasses.fields(TrainConfig):
        flag = "--" + option.name.replace("_", "-")
        described = f"{option.metadata['help']} (default: {_shown_default(option)})".replace("%", "%%")
        group, kind = groups[option.metadata["group"]], _base_type(option.name)
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=described)
        elif kind is list:
            group.add_argument(flag, nargs="+", default=None, help=described)
        else:
            group.add_argument(flag, type=kind, default=None, help=described)
    return groups


def _shown_default(option: dataclasses.Field) -> str:
    value = option.default_factory() if option.default is dataclasses.MISSING else option.default
    if option.metadata["shown"] is not None:
        return option.metadata["shown"]
    if isinstance(value, bool):
        return "on" if value else "off"
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def config_from_arguments(args: argparse.Namespace) -> TrainConfig:
    """The `--config` file's options, overridden by those given on the command line."""
    data = {}
    if args.config:
        try:
            data = TrainConfig.from_json(args.config).to_dict()
        except (OSError, ValueError) as error:  # a missing or unreadable file, bad JSON, unknown options
            raise ValueError(f"cannot use --config {args.config}: {error}") from None
    for option in dataclasses.fields(TrainConfig):
        value = getattr(args, option.name, None)
        if value is not None:
            data[option.name] = value
    try:
        return TrainConfig.from_dict(data)
    except ValueError as error:  # its messages name fields: name the flags a user types instead
        raise ValueError(re.sub(r"^[a-z]\w*|\b[a-z]\w*_\w+", _as_flag, str(error))) from None


def _as_flag(match: re.Match) -> str:
    """A field's name as its flag (`batch_size` -> `--batch-size`); any other word as it is."""
    word = match[0]
    fields = {option.name for option in dataclasses.fields(TrainConfig)}
    return "--" + word.replace("_", "-") if word in fields else word


def _base_type(field_name: str) -> type:
    annotation = typing.get_type_hints(TrainConfig)[field_name]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation
