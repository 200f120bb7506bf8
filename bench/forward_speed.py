"""Inference speed: clipforge (float32, int8, bfloat16, auto) vs open_clip and Hugging Face
transformers (float32, bfloat16), on the same weights, in one process.

    bench/setup_peers.sh                       # once: torch 2.14.1 + open_clip + transformers + clipforge
    $PEERS_VENV/bin/python bench/forward_speed.py [--models ViT-B-32 RN50 forge-s] [--image-batch 1 32]
        [--text-batch 1 256] [--variants fp32 int8] [--peer-variants fp32] [--repeats 5] [--threads 2]
        [--clock wall|cpu]
    # the image-embedding goal: clipforge's fastest mode against the peers' fastest, ViT-B/32, batch 32
    $PEERS_VENV/bin/python bench/forward_speed.py --models ViT-B-32 --image-batch 32 --text-batch \
        --variants int8 bf16 auto --peer-variants fp32 bf16

Every contender gets the same inputs: random images, and token ids with the lengths of real captions
(bench/captions.py) padded to the context, as a tokenizer hands them over. Before any timing, the
peers' embeddings must agree with clipforge's float32 ones (largest difference within 1e-4 of the
largest entry) and every faster mode (clipforge's int8, bf16 and auto; the peers' bf16, their weights
cast to bfloat16) must keep cosine >= 0.99 to them. A peer that is not installed is left out;
transformers has no ResNet tower. Each row also names the fastest clipforge mode and the fastest peer
mode and their ratio (the issue's goal: 1.5x for ViT-B/32 images at batch 32).

The contenders take turns within each repeat, so a change in the machine's load falls on all of
them; reported are medians of images/s and texts/s, each ratio to open_clip float32, and achieved
GFLOP/s (the floating-point work each contender actually runs, counted by torch's FlopCounterMode,
per second) against this machine's measured matmul peak in float32 and bfloat16. Writes
bench/results/forward.json and forward.md. Run it on an idle machine: with two threads on two busy
cores, every OpenMP barrier waits out a scheduler slice and small models slow down a hundredfold. On a
busy one, `--threads 1 --clock cpu` times each call by the thread's CPU time instead of the wall clock.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import clipforge
from captions import caption_tokens
from clipforge.models.inference import for_inference, inference_precision
from clipforge.models.quantization import quantize_int8
from peers import huggingface_copy, openclip_copy, perturb_

RESULTS = Path(__file__).resolve().parent / "results" / "forward.json"
REFERENCE = "open_clip"  # ratios in the table are to open_clip in float32
EXACT_PEERS = ("open_clip", "transformers")  # float32 peers: must equal clipforge's float32 features
AGREEMENT, MIN_COSINE = 1e-4, 0.99

Encoders = dict[str, Callable[[torch.Tensor], torch.Tensor]]  # "image" / "text" -> features
# variables that cap the instruction sets (AVX2 emulation on an AVX-512 CPU), recorded with the results
CPU_ENVIRONMENT = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "MKL_ENABLE_INSTRUCTIONS")


def contenders(name: str, variants: list[str], peer_variants: list[str]) -> dict[str, Encoders]:
    """clipforge's variants and the installed peers' (fp32, bf16), all holding one set of (perturbed) weights."""
    torch.manual_seed(0)
    ours = clipforge.create_model(name)
    perturb_(ours, scale=0.02)  # CLIP's init zeroes each bottleneck's last BatchNorm: make every path count
    found: dict[str, Encoders] = {"clipforge": {"image": ours.encode_image, "text": ours.encode_text}}
    for variant in (v for v in variants if v.startswith("int8")):  # int8: the default engine; int8-ENGINE: that one
        int8 = quantize_int8(ours, variant.partition("-")[2] or None)
        found[f"clipforge {variant}"] = {"image": int8.encode_image, "text": int8.encode_text}
    if "bf16" in variants:
        bf16 = copy.deepcopy(ours).to(torch.bfloat16)
        found["clipforge bf16"] = {"image": lambda x: bf16.encode_image(x.to(torch.bfloat16)),
                                   "text": bf16.encode_text}
    if "auto" in variants:  # what `--precision auto` runs on this machine
        auto = for_inference(ours, "auto")
        found[f"clipforge auto ({inference_precision(auto)})"] = {"image": auto.encode_image, "text": auto.encode_text}
    if importlib.util.find_spec("open_clip"):
        theirs = openclip_copy(ours, name)
        if "fp32" in peer_variants:
            found["open_clip"] = {"image": theirs.encode_image, "text": theirs.encode_text}
        if "bf16" in peer_variants:
            theirs_bf16 = copy.deepcopy(theirs).to(torch.bfloat16)
            found["open_clip bf16"] = {"image": lambda x: theirs_bf16.encode_image(x.to(torch.bfloat16)),
                                       "text": theirs_bf16.encode_text}
    hf = huggingface_copy(ours) if importlib.util.find_spec("transformers") else None
    if hf is not None:
        if "fp32" in peer_variants:
            found["transformers"] = {"image": lambda x: hf.get_image_features(pixel_values=x).pooler_output,
                                     "text": lambda t: hf.get_text_features(input_ids=t).pooler_output}
        if "bf16" in peer_variants:
            hf_bf16 = copy.deepcopy(hf).to(torch.bfloat16)
            found["transformers bf16"] = {
                "image": lambda x: hf_bf16.get_image_features(pixel_values=x.to(torch.bfloat16)).pooler_output,
                "text": lambda t: hf_bf16.get_text_features(input_ids=t).pooler_output}
    return found


def is_peer(contender: str) -> bool:
    return not contender.startswith("clipforge")


def check_agreement(name: str, kind: str, outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """float32 peers: largest difference relative to clipforge's float32 largest entry; every faster
    mode (clipforge's variants, the peers' bf16): least cosine to clipforge's float32 features."""
    reference = outputs["clipforge"].float()
    report = {}
    for contender, features in outputs.items():
        if contender == "clipforge":
            continue
        if contender not in EXACT_PEERS:
            report[contender] = F.cosine_similarity(features.float(), reference).min().item()
            ok = report[contender] >= MIN_COSINE
        else:
            report[contender] = ((features.float() - reference).abs().max() / reference.abs().max()).item()
            ok = report[contender] <= AGREEMENT
        if not ok:
            raise SystemExit(f"{name} {kind}: {contender} disagrees with clipforge ({report[contender]:.3g}); "
                             "not timing")
    return report


def flops(encode: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        encode(inputs)
    return counter.get_total_flops()


def time_contenders(encoders: dict[str, Callable[[], Any]], repeats: int,
                    clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each by `clock`, the contenders taking turns within every repeat."""
    for run in encoders.values():
        run()  # warm-up
    seconds: dict[str, list[float]] = {contender: [] for contender in encoders}
    for _ in range(repeats):
        for contender, run in encoders.items():
            start = clock()
            run()
            seconds[contender].append(clock() - start)
    return {contender: statistics.median(values) for contender, values in seconds.items()}


def fastest(per_s: dict[str, float], agreement: dict[str, float]) -> dict[str, Any]:
    """The fastest clipforge mode and the fastest peer mode of one row, their ratio and their cosines."""
    ours = max((c for c in per_s if not is_peer(c)), key=per_s.get)
    peers = [c for c in per_s if is_peer(c)]
    if not peers:
        return {"clipforge": ours}
    theirs = max(peers, key=per_s.get)
    cosine = {c: agreement.get(c, 1.0) if c not in EXACT_PEERS else 1.0 for c in (ours, theirs)}
    return {"clipforge": ours, "peer": theirs, "ratio": per_s[ours] / per_s[theirs], "cosine_to_fp32": cosine}


def matmul_peak(dtype: torch.dtype, size: int, repeats: int = 10, budget_s: float = 5.0) -> float:
    """GFLOP/s of one square matmul, the best of `repeats` after a warm-up; where the dtype is emulated
    (bf16 without AVX-512 BF16), a smaller matmul, and fewer repeats, so that it takes about `budget_s`."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    warm_up = _seconds(lambda: a @ b[:, :128])  # 128 / size of the work, to size the rest
    if warm_up * size / 128 > budget_s:
        return matmul_peak(dtype, size // 2, repeats, budget_s) if size > 256 else 2 * size**2 * 128 / warm_up / 1e9
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(max(1, min(repeats, int(budget_s / (warm_up * size / 128))))))
    return 2 * size**3 / best / 1e9


def _seconds(run: Callable[[], Any]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, variants: list[str], peer_variants: list[str], image_batches: list[int],
            text_batches: list[int], repeats: int, clock: Callable[[], float]) -> list[dict[str, Any]]:
    found = contenders(name, variants, peer_variants)
    config = clipforge.models.get_config(name)
    size, context, vocab = config.vision.image_size, config.text.context_length, config.text.vocab_size
    rows = []
    for kind, batches in (("image", image_batches), ("text", text_batches)):
        for batch in batches:
            if kind == "image":
                inputs, lengths = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0)), None
            else:
                inputs, lengths = caption_tokens(batch, context, vocab)
            with torch.inference_mode():
                outputs = {contender: encoders[kind](inputs) for contender, encoders in found.items()}
                agreement = check_agreement(name, kind, outputs)
                work = {contender: flops(encoders[kind], inputs) for contender, encoders in found.items()}
                work.update({c: work["clipforge"] for c in work if c.startswith("clipforge ")})  # int8 goes uncounted
                seconds = time_contenders({contender: (lambda e=encoders[kind]: e(inputs))
                                           for contender, encoders in found.items()}, repeats, clock)
            per_s = {contender: batch / s for contender, s in seconds.items()}
            best = fastest(per_s, agreement)
            rows.append({"model": name, "kind": kind, "batch": batch, "text_lengths": lengths,
                         "per_s": per_s, "agreement": agreement,
                         "gflop_per_call": {c: w / 1e9 for c, w in work.items()},
                         "gflop_per_s": {c: work[c] / seconds[c] / 1e9 for c in seconds},
                         "ratio_to_open_clip": ({c: per_s[c] / per_s[REFERENCE] for c in per_s}
                                                if REFERENCE in per_s else None),
                         "fastest": best})
            print(f"{name} {kind} batch {batch}: " + ", ".join(f"{c} {v:.1f}/s" for c, v in per_s.items())
                  + (f"; fastest {best['clipforge']} / fastest peer {best['peer']} = {best['ratio']:.2f}x"
                     if "peer" in best else ""), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]], peaks: dict[str, float], header: str) -> str:
    contenders_seen = list(dict.fromkeys(c for row in rows for c in row["per_s"]))
    lines = [header, "",
             f"matmul peak measured here: fp32 {peaks['fp32']:.1f} GFLOP/s, bf16 {peaks['bf16']:.1f} GFLOP/s", "",
             "| model | what | batch | " + " | ".join(contenders_seen) + " |",
             "|---|---|---|" + "---|" * len(contenders_seen)]
    for row in rows:
        cells = []
        for contender in contenders_seen:
            if contender not in row["per_s"]:
                cells.append("-")
                continue
            ratio = f" ({row['ratio_to_open_clip'][contender]:.2f}x)" if row["ratio_to_open_clip"] else ""
            cells.append(f"{row['per_s'][contender]:.1f}{ratio}, {row['gflop_per_s'][contender]:.0f} GFLOP/s")
        what = "images/s" if row["kind"] == "image" else (
            f"texts/s ({row['text_lengths']['mean_length']:.1f} / {row['text_lengths']['max_length']} tokens of "
            f"{row['text_lengths']['context_length']})")
        lines.append(f"| {row['model']} | {what} | {row['batch']} | " + " | ".join(cells) + " |")
    lines += ["", "| model | what | batch | fastest clipforge mode | fastest peer mode | ratio | cosine to fp32 |",
              "|---|---|---|---|---|---|---|"]
    for row in rows:
        best = row["fastest"]
        if "peer" in best:
            cosines = ", ".join(f"{best['cosine_to_fp32'][c]:.4f}" for c in (best["clipforge"], best["peer"]))
            lines.append(f"| {row['model']} | {row['kind']} | {row['batch']} | {best['clipforge']} | {best['peer']} | "
                         f"**{best['ratio']:.2f}x** | {cosines} |")
    lines += ["", "Ratios in brackets are to open_clip float32. GFLOP/s count each contender's own work "
              "(open_clip and transformers run every padded position; clipforge only up to each length group's "
              "last end token; clipforge's int8 and bf16 are credited with its float32 work)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["ViT-B-32", "RN50", "forge-s"])
    parser.add_argument("--image-batch", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--text-batch", nargs="*", type=int, default=[1, 256], help="none: images only")
    parser.add_argument("--variants", nargs="*", default=["fp32", "int8"],
                        choices=["fp32", "int8", "int8-onednn", "int8-fbgemm", "bf16", "auto"],
                        help="clipforge's besides float32 (which always runs): int8 dynamic quantization (with the "
                             "quantized engine `int8_engine()` picks, or the one named), bf16 weights, auto (what "
                             "--precision auto picks here)")
    parser.add_argument("--peer-variants", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                        help="the peers' modes: float32, and their weights cast to bfloat16")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: the thread's CPU time, steadier on a busy machine (needs --threads 1)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-size", type=int, default=2048, help="side of the square matmuls that measure the peak")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu measures one thread: add --threads 1")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    peaks = {"fp32": matmul_peak(torch.float32, args.peak_size), "bf16": matmul_peak(torch.bfloat16, args.peak_size)}
    rows = [row for name in args.models
            for row in measure(name, args.variants, args.peer_variants, args.image_batch, args.text_batch,
                               args.repeats, clock)]
    header = (f"{args.threads} threads, median of {args.repeats} interleaved repeats ({args.clock} clock); "
              f"torch {torch.__version__}, "
              f"{torch.backends.cpu.get_cpu_capability()}; load average before {load_before[0]:.2f}, "
              f"after {os.getloadavg()[0]:.2f}"
              + "".join(f"; {key}={os.environ[key]}" for key in CPU_ENVIRONMENT if key in os.environ))
    table = markdown(rows, peaks, header)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.write_text(json.dumps({
        "date": started.isoformat(timespec="seconds"), "threads": args.threads, "repeats": args.repeats,
        "clock": args.clock, "environment": {key: os.environ[key] for key in CPU_ENVIRONMENT if key in os.environ},
        "python": platform.python_version(), "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "matmul_peak_gflop_per_s": peaks,
        "load_average_before": load_before, "load_average_after": os.getloadavg(), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
