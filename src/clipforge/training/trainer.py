"""The training loop: data -> towers -> contrastive loss -> AdamW, with exact resume.

Read top to bottom: set up (process group, seeds, tokenizer, model, optimizer), restore a
checkpoint if asked, then one loop over steps that logs, evaluates and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from ..checkpoints import load_model, save_model
from ..data import SampleError, ShardSource, SkipReport, make_loader, open_source
from ..data.memo import ImageMemo
from ..data.samples import alternative_captions, read_caption, read_metadata
from ..data.builtin import resolve_eval_sources, resolve_training_source
from ..evaluation.datasets import EvalDataset, datasets_from_sources
from ..evaluation.suite import EvalOptions, evaluate_dataset, headline_metrics
from ..images import ImageTransform, TrainAugment
from ..models import CLIP, create_model, get_config
from ..text import Tokenizer, train_bpe
from .checkpointing import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import TrainConfig
from ..core.allocator import keep_freed_memory
from ..core.distributed import DistributedContext, init_distributed
from .loss import contrastive_loss, sigmoid_loss
from .optim import cosine_lr, make_optimizer
from .report import write_report


@dataclass
class TrainResult:
    model_dir: Path
    report: Path
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def train(config: TrainConfig, resume: str | None = None) -> TrainResult:
    keep_freed_memory()
    context = init_distributed(config.device)
    out = Path(config.output_dir)
    start = _restore(out, resume) if resume else None
    if start is not None:  # the saved options win: a changed schedule could not continue exactly
        config = TrainConfig.from_dict({**start["config"], "output_dir": str(out), "progress": config.progress,
                                        "device": config.device})
    elif latest_checkpoint(out / "checkpoints") is not None:
        raise FileExistsError(f"{out} holds checkpoints of an earlier run: pass --resume latest to continue "
                              f"it, or choose another --output-dir")
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        if start is None:  # an earlier attempt that died before its first checkpoint left nothing to keep
            (out / "metrics.jsonl").unlink(missing_ok=True)
    torch.manual_seed(config.seed)

    train_source = open_source(resolve_training_source(config.train_data))
    if isinstance(train_source, ShardSource):
        train_source.shuffle_buffer = config.shuffle_buffer
    model = _model(config, out, train_source, context).to(context.device)
    optimizer = make_optimizer(model, config.lr, config.weight_decay, (config.beta1, config.beta2), config.eps)
    step, epoch, batch_in_epoch = 0, 0, 0
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        step, epoch, batch_in_epoch = start["step"], start["epoch"], start["batch_in_epoch"]
        set_rng_state(start["rng"])
    wrapped = DistributedDataParallel(model) if context.enabled else model
    transform = ImageTransform(model.image_size)
    skips = SkipReport()
    batches = _batches(config, context, train_source, transform, model, epoch, batch_in_epoch, skips)
    eval_sets = datasets_from_sources(resolve_eval_sources(config.eval_data)) if context.is_main else []

    metrics_file = out / "metrics.jsonl"
    tensorboard = _tensorboard_writer(out) if context.is_main else None
    history = _read_history(metrics_file, upto=step) if start is not None else []
    bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and context.is_main), unit="step")
    autocast = torch.autocast(context.device.type, dtype=torch.bfloat16,
                              enabled=use_bf16(config.precision, context.device))
    last_time, samples_since = time.perf_counter(), 0
    while step < config.steps:
        epoch, batch_in_epoch, images, tokens = next(batches)
        if context.enabled:  # a batch that met bad samples is short; every rank must gather the same size
            images, tokens = _common_batch(images, tokens)
        lr = cosine_lr(step, config.lr, config.warmup_steps, config.steps, config.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = _train_step(wrapped, model, optimizer, images.to(context.device), tokens.to(context.device),
                           config, autocast)
        step += 1
        samples_since += images.shape[0] * context.world_size
        record = {"step": step, "epoch": epoch, "loss": loss, "lr": lr, "logit_scale": model.logit_scale.item()}
        if step % config.log_every == 0 or step == config.steps:
            now = time.perf_counter()
            record["samples_per_s"] = samples_since / (now - last_time)
            last_time, samples_since = now, 0
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", temp=f"{math.exp(-record['logit_scale']):.4f}",
                            samples_s=f"{record['samples_per_s']:.0f}")
        if eval_sets and (step == config.steps or config.eval_every and step % config.eval_every == 0):
            record.update(evaluate_for_training(model, transform, eval_sets))
        if context.is_main:
            history.append(record)
            with open(metrics_file, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if tensorboard is not None:
                for key, value in record.items():
                    tensorboard.add_scalar(key, value, step)
        if context.is_main and (step % config.checkpoint_every == 0 or step == config.steps):
            save_checkpoint(out / "checkpoints", step, {
                "config": config.to_dict(), "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "rng": rng_state(),
            }, keep=config.keep_checkpoints)
        bar.update(1)
    bar.close()
    if tensorboard is not None:
        tensorboard.close()
    if skips.total and context.is_main:
        print(f"skipped bad training samples: {skips.summary()}")

    model_dir = out / "model"
    final = history[-1] if history else {}
    report = out / "report.md"
    if context.is_main:
        save_model(model.eval(), model_dir)
        write_report(out, config, history)
    if context.enabled:
        torch.distributed.barrier()
    return TrainResult(model_dir=model_dir, report=report, metrics=final, history=history)


def evaluate_for_training(model: CLIP, transform: ImageTransform, datasets: list[EvalDataset]) -> dict[str, float]:
    """Zero-shot and retrieval on each evaluation set, by the code and under the names of `clipforge eval`."""
    metrics: dict[str, float] = {}
    for dataset in datasets:
        tasks = [task for task in dataset.supported_tasks if task != "linear-probe"]
        metrics.update(headline_metrics(dataset.name, evaluate_dataset(model, transform, dataset, tasks, EvalOptions())))
    return metrics


def use_bf16(precision: str, device: torch.device) -> bool:
    """"auto" takes bf16 only where it is fast: CPUs with AVX-512 BF16 / AMX (elsewhere bf16
    matmuls are emulated, about 100x slower than fp32) and GPUs that support it."""
    if precision != "auto":
        return precision == "bf16"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def _train_step(wrapped: torch.nn.Module, model: CLIP, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                tokens: torch.Tensor, config: TrainConfig, autocast: torch.autocast) -> float:
    """One optimizer step. With accum_freq K, features of all K micro-batches are first computed
    without gradients; each micro-batch is then re-encoded with gradients and scored against the
    cached rest, so every micro-step sees the full batch's negatives and the summed gradient
    equals the full batch's (exactly so for towers without BatchNorm)."""
    model.train()
    if config.lock_image:  # a locked tower also keeps its BatchNorm statistics
        model.visual.eval()
    optimizer.zero_grad(set_to_none=True)
    micro_images, micro_tokens = images.chunk(config.accum_freq), tokens.chunk(config.accum_freq)
    cached = None
    if config.accum_freq > 1:
        with torch.no_grad(), autocast:
            cached = [wrapped(i, t) for i, t in zip(micro_images, micro_tokens)]
        cached_images = [o.image_features.float() for o in cached]
        cached_texts = [o.text_features.float() for o in cached]
    for j, (micro_image, micro_token) in enumerate(zip(micro_images, micro_tokens)):
        sync = contextlib.nullcontext() if j == config.accum_freq - 1 or not hasattr(wrapped, "no_sync") else wrapped.no_sync()
        with sync:
            with autocast:
                output = wrapped(micro_image, micro_token)
            image_features, text_features = output.image_features.float(), output.text_features.float()
            if cached is not None:
                image_features = torch.cat(cached_images[:j] + [image_features] + cached_images[j + 1:])
                text_features = torch.cat(cached_texts[:j] + [text_features] + cached_texts[j + 1:])
            scale = model.logit_scale_exp()
            if config.loss == "siglip":
                loss = sigmoid_loss(image_features, text_features, scale, model.logit_bias)
            else:
                loss = contrastive_loss(image_features, text_features, scale, config.local_loss)
            loss.backward()
    if config.accum_freq > 1:  # every micro-step saw the full loss's dependence on the temperature
        for parameter in (model.logit_scale, model.logit_bias):
            if parameter is not None and parameter.grad is not None:
                parameter.grad /= config.accum_freq
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
    optimizer.step()
    model.clamp_logit_scale_()
    return loss.item()


def _batches(config: TrainConfig, context: DistributedContext, source: Any, transform: ImageTransform,
             model: CLIP, epoch: int, batch_in_epoch: int, skips: SkipReport
             ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """(epoch, loader position in that epoch, images, tokens) forever; a resumed run starts at the
    saved position, so it sees the batches the uninterrupted run would have seen. Bad samples of
    finished epochs are added to `skips`."""
    augment = TrainAugment(config.augment_crop_scale, config.augment_grayscale)
    memo = ImageMemo(config.image_memo_mib * 2**20) if config.image_memo_mib and not config.workers else None
    while True:
        loader = make_loader(source, transform, model.tokenizer, config.batch_size, num_workers=config.workers,
                             seed=config.seed, epoch=epoch, rank=context.rank, world_size=context.world_size,
                             caption_choice=config.caption_choice, context_length=model.context_length,
                             skip_batches=batch_in_epoch, augment=None if augment.is_identity else augment, memo=memo,
                             shift=config.augment_shift)
        for images, tokens in loader:
            yield epoch, loader.position, images, tokens
        skips.merge(loader.skips)
        epoch, batch_in_epoch = epoch + 1, 0


def _tensorboard_writer(out: Path) -> Any:
    """A TensorBoard writer when the `tensorboard` package is installed; metrics.jsonl either way."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


def _common_batch(images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    size = torch.tensor(images.shape[0])
    torch.distributed.all_reduce(size, op=torch.distributed.ReduceOp.MIN)
    return images[: int(size)], tokens[: int(size)]


def _learnt_vocabulary(config: TrainConfig, out: Path, source: Any, context: DistributedContext) -> Tokenizer:
    """The run's BPE vocabulary, learnt once (by rank 0) and stored in the run folder, so resumed
    runs and other ranks use the very same ids."""
    folder = out / "tokenizer"
    if context.is_main and not (folder / "vocab.json").is_file():
        train_bpe(_captions(source), vocab_size=config.vocab_size).save(folder)
    if context.enabled:
        torch.distributed.barrier()
    return Tokenizer.from_files(folder)


def _captions(source: Any) -> Iterator[str]:
    """Every usable caption of the training data, metadata alternatives included, read without
    decoding any image."""
    for raw in open_source(source):
        try:
            yield read_caption(raw.caption)
            yield from alternative_captions(read_metadata(raw.meta))
        except SampleError:
            continue


def _model(config: TrainConfig, out: Path, source: Any, context: DistributedContext) -> CLIP:
    """A pretrained model comes with its tokenizer. A fresh one takes its config's: the n-gram
    hasher, or for a transformer text tower OpenAI's BPE (`tokenizer: openai`) or a vocabulary
    learnt from the captions (`tokenizer: learn`), which the saved model then carries."""
    if config.pretrained:
        model = load_model(config.pretrained)
    else:
        model_config = get_config(config.model)
        tokenizer = None
        if model_config.text.kind == "transformer":
            if config.tokenizer == "learn":
                tokenizer = _learnt_vocabulary(config, out, source, context)
                model_config.text.vocab_size, model_config.text.tokenizer = tokenizer.vocab_size, "bundled"
            else:
                model_config.text.tokenizer = "openai"
        if config.loss == "siglip" and model_config.init_logit_bias is None:
            model_config.init_logit_scale, model_config.init_logit_bias = math.log(10.0), -10.0
        model = create_model(model_config)
        if tokenizer is not None:
            model.tokenizer = tokenizer
    model.set_grad_checkpointing(config.grad_checkpointing)
    if config.lock_image:
        model.visual.requires_grad_(False)
    if config.lock_text:
        model.text.requires_grad_(False)
    return model


def _restore(out: Path, resume: str) -> dict[str, Any]:
    path = latest_checkpoint(out / "checkpoints") if resume == "latest" else Path(resume)
    if path is None or not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from ({resume}) in {out / 'checkpoints'}")
    return load_checkpoint(path)


def _read_history(metrics_file: Path, upto: int) -> list[dict[str, Any]]:
    """Metrics up to the resumed step; lines logged after that checkpoint by the killed run are
    dropped so the curve is continuous."""
    if not metrics_file.is_file():
        return []
    records = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    kept = [r for r in records if r["step"] <= upto]
    metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept))
    return kept
