"""Training-step speed and peak memory: clipforge vs open_clip on the same architecture.

Configs open_clip cannot build (the default `forge-cnn-ngram`: a plain ConvNet and a bag-of-n-grams
text tower) are timed on clipforge alone, so the default's samples/s and peak memory are on record.

    bench/setup_peers.sh                       # once: torch 2.14.1 + open_clip + clipforge, outside the repo
    $PEERS_VENV/bin/python bench/training_speed.py [--configs forge-cnn-ngram forge-s ViT-B-32] [--batch 512 128 16]
                                                   [--steps 5] [--rounds 4] [--threads 2] [--precision fp32]

One step is what a trainer does per batch: zero the gradients, encode images and texts, normalize,
the symmetric contrastive loss, backward, an AdamW step (fused where torch has it), clamp the
temperature; `--precision bf16` runs the forward and the loss under bf16 autocast on both sides.
Texts are token ids with the lengths of real captions (bench/captions.py), padded to the context.
The open_clip model is built from clipforge's config (`open_clip.model.CLIP` with matching
vision/text configs); a first subprocess loads clipforge's weights into it and checks that image
features, text features (relative to their largest entry) and the loss agree to 1e-4, then trains
both from those weights for a few steps with the same optimizer groups and reports how far their
loss curves part, before anything is timed.

Each (implementation, config) then trains in a fresh subprocess, so its peak RSS is its own; the
workers alternate implementation every round, so a change in machine load hits both. The parent
imports no torch: on Linux a child's ru_maxrss starts at its parent's peak RSS (exec keeps it), so
a heavy parent would inflate every child's figure. Reports the median samples/s over all timed
steps and the largest peak RSS; writes bench/results/training_speed.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "training_speed.json"
IMPLEMENTATIONS = ("clipforge", "open_clip")
# config -> (batch, timed steps); others (32, 5)
DEFAULTS = {"forge-cnn-ngram": (512, 3), "forge-s": (128, 5), "ViT-B-32": (16, 3)}
TOLERANCE = 1e-4
CURVE_STEPS = 5
CURVE_TOLERANCE = {"fp32": 1e-3, "bf16": 5e-2}  # largest loss difference over the curve steps
LR, WEIGHT_DECAY, BETAS, EPS = 1e-3, 0.1, (0.9, 0.98), 1e-6


# ---- run inside the subprocesses (these import torch) ----

def synthetic_batch(name: str, batch: int):
    """Random images [batch, 3, size, size] and token ids [batch, context] with real captions' lengths."""
    import torch
    from captions import caption_tokens, ngram_tokens
    from clipforge.models import get_config

    config = get_config(name)
    generator = torch.Generator().manual_seed(0)
    size = config.vision.image_size
    images = torch.randn(batch, 3, size, size, generator=generator)
    make_tokens = ngram_tokens if config.text.kind == "ngram_bag" else caption_tokens
    tokens, lengths = make_tokens(batch, config.text.context_length, config.text.vocab_size)
    return images, tokens, lengths


def open_clip_can_build(name: str) -> bool:
    from clipforge.models import get_config

    config = get_config(name)
    return config.text.kind == "transformer" and config.vision.kind != "ConvNet"


def autocast_for(precision: str):
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")


def check(name: str, precision: str) -> dict[str, Any]:
    """Load clipforge's weights into open_clip and compare features and loss on the same inputs, then
    the loss curves of a few training steps from those weights."""
    import clipforge
    import torch
    import torch.nn.functional as F
    from clipforge.checkpoints.keys import to_file_keys
    from clipforge.training.loss import contrastive_loss
    from open_clip.loss import ClipLoss
    from peers import openclip_model, perturb_

    torch.manual_seed(0)
    ours = clipforge.create_model(name)
    perturb_(ours)
    theirs = openclip_model(name)
    keys = theirs.load_state_dict(to_file_keys(ours.state_dict()), strict=False)  # open_clip keeps OpenAI's layout
    theirs.eval()
    images, tokens, _ = synthetic_batch(name, 8)
    with torch.no_grad():
        ours_image, ours_text = ours.encode_image(images), ours.encode_text(tokens)
        theirs_image, theirs_text = theirs.encode_image(images), theirs.encode_text(tokens)
        unit = lambda features: F.normalize(features, dim=-1)  # noqa: E731
        ours_loss = contrastive_loss(unit(ours_image), unit(ours_text), ours.logit_scale_exp())
        theirs_loss = ClipLoss()(unit(theirs_image), unit(theirs_text), theirs.logit_scale.exp())
    # Raw features relative to their largest entry (normalized image features of random images are
    # nearly identical, so an absolute tolerance on them would hide a wrong branch), and the loss.
    differences = {"image_features": ((ours_image - theirs_image).abs().max() / ours_image.abs().max()).item(),
                   "text_features": ((ours_text - theirs_text).abs().max() / ours_text.abs().max()).item(),
                   "loss": (ours_loss - theirs_loss).abs().item()}
    curves = loss_curves(ours, theirs, name, precision)
    curve_difference = max(abs(a - b) for a, b in zip(*curves.values()))
    return {"versions": versions(), "missing_keys": keys.missing_keys, "unexpected_keys": keys.unexpected_keys,
            "max_difference": differences, "loss_curves": curves, "loss_curve_max_difference": curve_difference,
            "agree": all(d <= TOLERANCE for d in differences.values()) and curve_difference <= CURVE_TOLERANCE[precision]}


def loss_curves(ours, theirs, name: str, precision: str) -> dict[str, list[float]]:
    """Each model's losses over CURVE_STEPS steps on one batch, with clipforge's optimizer groups for
    both (its rule reads names and shapes, which match but for clipforge's `text.` prefix), so the
    curves differ only by the implementations' arithmetic."""
    import torch
    import torch.nn.functional as F
    from clipforge.training.loss import contrastive_loss
    from clipforge.training.optim import make_optimizer

    images, tokens, _ = synthetic_batch(name, 16)
    curves = {}
    for label, model in (("clipforge", ours), ("open_clip", theirs)):
        model.train()
        optimizer = make_optimizer(model, LR, WEIGHT_DECAY, BETAS, EPS)
        curves[label] = []
        for _ in range(CURVE_STEPS):
            optimizer.zero_grad(set_to_none=True)
            with autocast_for(precision):
                image, text = model.encode_image(images), model.encode_text(tokens)
                loss = contrastive_loss(F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1),
                                        model.logit_scale.clamp(max=math.log(100)).exp())
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            curves[label].append(loss.item())
    return curves


def proc_status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def resident_mib() -> float:
    """This process's resident memory now (imported libraries' touched pages included)."""
    return proc_status_mib("VmRSS")


def peak_rss_mib() -> dict[str, float]:
    """ru_maxrss, and the kernel's high-water mark of this process image (VmHWM) as a cross-check."""
    return {"ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "VmHWM": proc_status_mib("VmHWM")}


def train(implementation: str, name: str, batch: int, warmup: int, steps: int, threads: int,
          precision: str) -> dict[str, Any]:
    """Seconds per training step of one implementation, after `warmup` untimed steps."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    images, tokens, lengths = synthetic_batch(name, batch)  # before the RSS baseline: both pay for it
    if implementation == "clipforge":
        import clipforge
        from clipforge.training.loss import contrastive_loss
        from clipforge.training.optim import make_optimizer

        rss_after_imports = resident_mib()
        model = clipforge.create_model(name)
        optimizer = make_optimizer(model, LR, WEIGHT_DECAY, BETAS, EPS)
        loss_of = lambda image, text: contrastive_loss(image, text, model.logit_scale_exp())  # noqa: E731
        clamp = model.clamp_logit_scale_
    else:
        import clipforge.models  # reads the config; about 13 MiB of the open_clip worker's RSS
        import open_clip.model  # noqa: F401  (imported before measuring, so its RSS counts as import cost)
        from open_clip.loss import ClipLoss
        from peers import openclip_model

        rss_after_imports = resident_mib()
        model = openclip_model(name)
        # open_clip's trainer: no decay on gains, biases, BatchNorm, LayerNorm and the temperature.
        exempt = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n  # noqa: E731
        named = list(model.named_parameters())
        groups = [{"params": [p for n, p in named if not exempt(n, p)], "weight_decay": WEIGHT_DECAY},
                  {"params": [p for n, p in named if exempt(n, p)], "weight_decay": 0.0}]
        try:
            optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS, fused=True)
        except (RuntimeError, ValueError):
            optimizer = torch.optim.AdamW(groups, lr=LR, betas=BETAS, eps=EPS)
        clip_loss = ClipLoss()
        loss_of = lambda image, text: clip_loss(image, text, model.logit_scale.exp())  # noqa: E731

        @torch.no_grad()
        def clamp() -> None:
            model.logit_scale.clamp_(0, math.log(100))

    model.train()
    seconds, losses = [], []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(precision):
            image, text = model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True)
            loss = loss_of(image.float(), text.float())
        loss.backward()
        optimizer.step()
        clamp()
        losses.append(loss.item())
        if step >= warmup:
            seconds.append(time.perf_counter() - start)
    return {"implementation": implementation, "config": name, "batch": batch, "threads": threads,
            "precision": precision, "text_lengths": lengths, "seconds_per_step": seconds, "losses": losses,
            "fused_adamw": bool(optimizer.defaults.get("fused")),
            "parameters": sum(p.numel() for p in model.parameters()), "rss_after_imports_mib": rss_after_imports,
            "peak_rss_mib": peak_rss_mib()}


def versions() -> dict[str, str]:
    import open_clip
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "open_clip": open_clip.__version__,
            "mkl": str(torch.backends.mkl.is_available()), "cpu_capability": torch.backends.cpu.get_cpu_capability()}


# ---- the parent: no torch here ----

def child(*arguments: str) -> dict[str, Any]:
    """Run this script with `arguments` in a fresh interpreter; its last stdout line is JSON."""
    done = subprocess.run([sys.executable, __file__, *arguments], capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(arguments)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def summarise(name: str, batch: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row: dict[str, Any] = {"config": name, "batch": batch, "text_lengths": runs[0]["text_lengths"]}
    for implementation in IMPLEMENTATIONS:
        mine = [run for run in runs if run["implementation"] == implementation]
        if not mine:
            row[implementation] = None
            continue
        seconds = [s for run in mine for s in run["seconds_per_step"]]
        row[implementation] = {
            "samples_per_s": batch / statistics.median(seconds),
            "peak_rss_mib": max(run["peak_rss_mib"]["ru_maxrss"] for run in mine),
            "peak_rss_mib_vmhwm": max(run["peak_rss_mib"]["VmHWM"] for run in mine),
            "rss_after_imports_mib": max(run["rss_after_imports_mib"] for run in mine),
            "fused_adamw": mine[0]["fused_adamw"], "parameters": mine[0]["parameters"],
            "seconds_per_step": seconds, "rounds": len(mine)}
    if row["open_clip"] is None:
        row["ratio"], row["ratio_per_round"] = None, []
        return row
    row["ratio"] = row["clipforge"]["samples_per_s"] / row["open_clip"]["samples_per_s"]
    # Each round's two neighbouring workers, compared alone: their spread shows the machine's noise.
    rate = {(i // 2, run["implementation"]): batch / statistics.median(run["seconds_per_step"])
            for i, run in enumerate(runs)}
    row["ratio_per_round"] = [rate[r, "clipforge"] / rate[r, "open_clip"] for r in range(len(runs) // 2)]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULTS))
    parser.add_argument("--batch", nargs="+", type=int,
                        help="one per config, or one for all (default: forge-cnn-ngram 512, forge-s 128, ViT-B-32 16, else 32)")
    parser.add_argument("--steps", type=int, help="timed steps per worker (default: forge-cnn-ngram 3, forge-s 5, ViT-B-32 3, else 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per worker before timing")
    parser.add_argument("--rounds", type=int, default=4, help="workers per implementation, alternating")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                        help="bf16: forward and loss under bf16 autocast, on both sides")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--check", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--buildable", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "CONFIG"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.check:
        print(json.dumps(check(args.check, args.precision)))
        return
    if args.buildable:
        print(json.dumps({"open_clip": open_clip_can_build(args.buildable)}))
        return
    if args.worker:
        implementation, name = args.worker
        print(json.dumps(train(implementation, name, args.batch[0], args.warmup, args.steps, args.threads,
                               args.precision)))
        return

    if args.batch and len(args.batch) not in (1, len(args.configs)):
        parser.error("--batch takes one value, or one per config")
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    rows, checks = [], {}
    for index, name in enumerate(args.configs):
        batch = args.batch[min(index, len(args.batch) - 1)] if args.batch else DEFAULTS.get(name, (32, 5))[0]
        steps = args.steps or DEFAULTS.get(name, (32, 5))[1]
        implementations = IMPLEMENTATIONS if child("--buildable", name)["open_clip"] else IMPLEMENTATIONS[:1]
        if len(implementations) == 1:
            print(f"{name}: open_clip has no such towers; timing clipforge alone", file=sys.stderr)
        else:
            checks[name] = child("--check", name, "--precision", args.precision)
        if name in checks and (checks[name]["missing_keys"] or checks[name]["unexpected_keys"]):
            print(f"{name}: state-dict keys differ: {checks[name]}", file=sys.stderr)
        if name in checks and not checks[name]["agree"]:
            print(f"{name}: clipforge and open_clip disagree {checks[name]['max_difference']}, loss curves "
                  f"{checks[name]['loss_curve_max_difference']:.2g} apart; not timing", file=sys.stderr)
            continue
        runs = []
        for round_ in range(args.rounds):
            for implementation in implementations[:: 1 if round_ % 2 == 0 else -1]:
                runs.append(child("--worker", implementation, name, "--batch", str(batch), "--steps", str(steps),
                                  "--warmup", str(args.warmup), "--threads", str(args.threads),
                                  "--precision", args.precision))
                print(f"{name} {implementation}: {batch / statistics.median(runs[-1]['seconds_per_step']):.1f} samples/s",
                      file=sys.stderr)
        rows.append(summarise(name, batch, runs))

    lines = [f"{args.precision}, {args.threads} threads; per implementation {args.rounds} alternating workers of "
             f"{args.warmup} warm-up + timed steps; load average before {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}",
             "", "| config | batch | text tokens (mean / max of context) | clipforge samples/s | open_clip samples/s | "
             "ratio | clipforge peak RSS | open_clip peak RSS |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        ours, theirs, lengths = row["clipforge"], row["open_clip"], row["text_lengths"]
        their_cells = (["— (no such towers)", "—", "—"] if theirs is None else
                       [f"{theirs['samples_per_s']:.1f}", f"{row['ratio']:.2f}x",
                        f"{theirs['peak_rss_mib']:.0f} MiB ({theirs['rss_after_imports_mib']:.0f})"])
        cells = [row["config"], str(row["batch"]),
                 f"{lengths['mean_length']:.1f} / {lengths['max_length']} of {lengths['context_length']}",
                 f"{ours['samples_per_s']:.1f}", their_cells[0], their_cells[1],
                 f"{ours['peak_rss_mib']:.0f} MiB ({ours['rss_after_imports_mib']:.0f})", their_cells[2]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "peak RSS (RSS after imports, before the model is built); text tokens of the n-gram tower "
              "are n-grams", ""]
    for row in (row for row in rows if row["config"] in checks):
        lines.append(f"{row['config']}: ratio per round " + ", ".join(f"{r:.2f}" for r in row["ratio_per_round"])
                     + f"; loss curves {checks[row['config']]['loss_curve_max_difference']:.2g} apart over "
                     f"{CURVE_STEPS} steps")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.write_text(json.dumps({
        "date": started.isoformat(timespec="seconds"), "machine": {"cpu": cpu_model(), "cores": os.cpu_count()},
        "threads": args.threads, "precision": args.precision, "warmup": args.warmup, "rounds": args.rounds,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "versions": next(iter(checks.values()))["versions"] if checks else None,
        "checks": checks, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
