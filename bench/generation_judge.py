"""Guided generation judged by a model that did not guide it (docs/applications.md).

    python bench/generation_judge.py [--guide runs/default/model] [--judge runs/judge/model]
        [--parameterization shapes|pixels] [--steps 60] [--size 64] [--cutouts 32] [--resolution 16]
        [--seed 0] [--prompts FILE] [--sheet docs/images/generation-judge.png]

One image per prompt is generated with `clipforge.applications.generate` under the guide's guidance
(the 20 built-in prompts are emoji and icon concepts of the default model's training corpus, chosen
before any measurement). The PNG files are then scored exactly as `clipforge score` scores files (the
ordinary preprocessing, `score_images`), every image against every prompt, by the judge (a second
model trained by the main job with another seed, never used for guidance) and, for comparison, by
the guide. Reported per scorer: how often an image's own prompt ranks first among all prompts (chance
1 / n_prompts), its mean rank, and the mean CLIPScore (Hessel's 2.5 * max(cos, 0)) of the guided
images and of their unguided starts against their own prompts. Writes the images, results.json and a
contact sheet (starts above, results below) to bench/results/generation_judge/ and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

import clipforge
from clipforge.applications.generate import PixelImage, contact_sheet, generate, save_image
from clipforge.applications.scores import hessel_clip_score, score_images

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["a red heart", "a yellow star", "a green tree", "a blue circle", "fire", "a snowflake", "the sun",
           "a crescent moon", "a red apple", "a rainbow", "a water droplet", "a four leaf clover", "a banana",
           "an orange square", "a cloud", "a lightning bolt", "a slice of pizza", "a ghost", "a rocket",
           "a smiling face"]


def judged(model_path: str, files: list[str], starts: list[str], prompts: list[str]) -> dict:
    model, preprocess = clipforge.load(model_path)
    table = score_images(model, preprocess, files, prompts)
    start_table = score_images(model, preprocess, starts, prompts)
    if table.skipped or start_table.skipped:
        raise RuntimeError(f"unreadable generated files: {table.skipped + start_table.skipped}")
    cosine = table.cosine  # [image, prompt]
    own = cosine.diag()
    ranks = (cosine > own.unsqueeze(1)).sum(dim=1) + 1  # 1 = own prompt first
    return {"model": model_path,
            "own_first": int((ranks == 1).sum()), "prompts": len(prompts),
            "own_first_rate": float((ranks == 1).float().mean()), "mean_rank": float(ranks.float().mean()),
            "clip_score_guided": float(hessel_clip_score(own).mean()),
            "clip_score_start": float(hessel_clip_score(start_table.cosine.diag()).mean()),
            "ranks": ranks.tolist(), "cosine": cosine.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guide", default=str(ROOT / "runs/default/model"))
    parser.add_argument("--judge", default=str(ROOT / "runs/judge/model"))
    parser.add_argument("--parameterization", default="shapes", choices=["shapes", "pixels"])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--resolution", type=int, default=16, help="pixels: the grid's side (the size: a free image)")
    parser.add_argument("--cutouts", type=int, default=32, help="0: no cutouts, the whole image")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--seed", type=int, default=0, help="image i uses seed + i")
    parser.add_argument("--prompts", help="a text file, one prompt a line (default: the 20 built-in prompts)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench/results/generation_judge")
    parser.add_argument("--sheet", type=Path, help="also write the contact sheet here")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    prompts = PROMPTS if args.prompts is None else [
        line.strip() for line in Path(args.prompts).read_text().splitlines() if line.strip()]
    guide = clipforge.load_model(args.guide)
    args.output.mkdir(parents=True, exist_ok=True)
    files, starts, images, start_images = [], [], [], []
    began = time.perf_counter()
    for number, prompt in enumerate(prompts):
        seed = args.seed + number
        parameterization = (PixelImage(args.size, args.resolution, seed) if args.parameterization == "pixels"
                            else args.parameterization)
        result = generate(guide, [prompt], size=args.size, steps=args.steps, parameterization=parameterization,
                          lr=args.lr, cutout_count=args.cutouts, seed=seed, progress=False)
        stem = f"{number:02d}-{prompt.replace(' ', '-')}"
        files.append(str(args.output / f"{stem}.png"))
        starts.append(str(args.output / f"{stem}-start.png"))
        save_image(result.image, files[-1])
        save_image(result.start, starts[-1])
        images.append(result.image)
        start_images.append(result.start)
        print(f"{time.perf_counter() - began:7.1f} s  {prompt}: loss {result.losses[0]:.4f} -> {result.losses[-1]:.4f}",
              flush=True)
    generation_seconds = time.perf_counter() - began
    results = {"settings": {key: str(value) for key, value in vars(args).items()}, "prompts": prompts,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                          f"torch {torch.__version__}, {args.threads} threads",
               "generation_seconds": generation_seconds,
               "judge": judged(args.judge, files, starts, prompts),
               "guide": judged(args.guide, files, starts, prompts)}
    results["total_seconds"] = time.perf_counter() - began
    (args.output / "results.json").write_text(json.dumps(results, indent=2))
    sheet = contact_sheet([start_images, images], gap=2)
    sheet.save(args.output / "sheet.png")
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(args.sheet, optimize=True)

    grid = f" {args.resolution}x{args.resolution}" if args.parameterization == "pixels" else ""
    print(f"\n{len(prompts)} prompts, {args.parameterization}{grid}, {args.steps} steps, {args.size} px, "
          f"{args.cutouts} cutouts; generation {generation_seconds:.0f} s, total {results['total_seconds']:.0f} s")
    print("| scorer | own prompt first | mean rank of own prompt | CLIP-S guided | CLIP-S unguided start |")
    print("|---|---|---|---|---|")
    for name in ("judge", "guide"):
        r = results[name]
        print(f"| {name} | {r['own_first']} / {r['prompts']} ({100 * r['own_first_rate']:.0f} %) | "
              f"{r['mean_rank']:.2f} | {r['clip_score_guided']:.3f} | {r['clip_score_start']:.3f} |")
    print("per prompt, judge's rank of the own prompt: "
          + ", ".join(f"{prompt} {rank}" for prompt, rank in zip(prompts, results['judge']['ranks'])))


if __name__ == "__main__":
    main()
