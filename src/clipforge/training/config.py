"""Every training option in one dataclass: saved with each checkpoint as JSON, loadable from a JSON
file, and overridable from the command line (`--batch-size 256`, `--no-lock-image`)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.locations import DEFAULT_RUN_DIR


@dataclass
class TrainConfig:
    # what to train
    model: str = "forge-cnn-ngram"  # config name or JSON path; ignored when `pretrained` is set
    pretrained: str | None = None  # fine-tune from a published name, file or folder
    tokenizer: str = "learn"  # a fresh transformer text tower's BPE: "learn" from the captions, or "openai"
    vocab_size: int = 4096  # for tokenizer "learn"
    # data
    train_data: list[str] = field(default_factory=lambda: ["builtin:train"])
    eval_data: list[str] = field(default_factory=lambda: ["builtin:eval"])
    caption_choice: str = "random"  # "random": one of the sample's captions per epoch; "txt": always key.txt
    workers: int = 0  # loader processes; the image memo below needs 0
    shuffle_buffer: int = 20000  # shards: samples (file bytes) shuffled together; >= the set's size shuffles fully
    image_memo_mib: int = 2048  # decoded training images kept between epochs (with workers 0); 0 = off
    augment_crop_scale: float = 1.0  # random crops of this fraction of the area up to all of it; 1 = none
    augment_grayscale: float = 0.0  # probability of turning a training image grayscale
    augment_shift: int = 2  # move each training image by up to this many pixels each way
    # schedule
    steps: int = 360  # defaults: the recipe chosen by measured runs (docs/training.md), ~10 min on 2 cores
    batch_size: int = 512
    accum_freq: int = 1  # micro-batches per step; features are cached so negatives span the full batch
    lr: float = 2e-3
    warmup_steps: int = 25
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float | None = 1.0
    # loss and model behaviour
    loss: str = "clip"  # "clip" (softmax contrastive) or "siglip" (sigmoid)
    local_loss: bool = False
    precision: str = "auto"  # "bf16" autocast, "fp32", or "auto": bf16 only where the hardware has fast bf16
    grad_checkpointing: bool = False
    lock_image: bool = False  # LiT: freeze the image tower
    lock_text: bool = False
    # bookkeeping
    seed: int = 0
    output_dir: str = DEFAULT_RUN_DIR
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    eval_every: int = 0  # 0: evaluate only at the end (the default: the 10-minute budget has no room for more)
    log_every: int = 10
    device: str | None = None
    progress: bool = True

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--option` per field, defaulting to None so that only options given on the command line
    override the JSON config or the dataclass defaults."""
    parser.add_argument("--config", help="JSON file of training options")
    for option in dataclasses.fields(TrainConfig):
        flag = "--" + option.name.replace("_", "-")
        kind = _base_type(option.name)
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        elif kind is list:
            parser.add_argument(flag, nargs="+", default=None)
        else:
            parser.add_argument(flag, type=kind, default=None)


def config_from_arguments(args: argparse.Namespace) -> TrainConfig:
    data = TrainConfig.from_json(args.config).to_dict() if args.config else {}
    for option in dataclasses.fields(TrainConfig):
        value = getattr(args, option.name, None)
        if value is not None:
            data[option.name] = value
    return TrainConfig.from_dict(data)


def _base_type(field_name: str) -> type:
    annotation = typing.get_type_hints(TrainConfig)[field_name]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    return typing.get_origin(annotation) or annotation
