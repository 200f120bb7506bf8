"""End-to-end indexing speed: `clipforge index build` (read, decode, preprocess, embed, store; in
images/s) beside a peer pipeline doing the same job with open_clip: PIL decoding, a torch DataLoader
with workers, open_clip's preprocessing and `encode_image`, on the same folder of photo-sized JPEGs
and the same weights.

    bench/setup_peers.sh                       # once: torch + open_clip + transformers + clipforge
    $PEERS_VENV/bin/python bench/index_build_speed.py [--images 300] [--width 1024] [--height 768]
        [--model ViT-B-32] [--precision auto] [--peer-precisions fp32 bf16] [--workers 2] [--batch 64]
        [--rounds 2] [--threads 2] [--photos DIR]

The photos are generated once (smooth gradients, shapes, grain and blur, JPEG quality 90) into
`--photos`, outside the repository (default: the clipforge cache's `bench/photos-WxH-N`). The weights
are `--model`'s architecture with random weights, perturbed as in forward_speed.py (speed does not
depend on them; published weights are not needed offline), saved as a clipforge folder and loaded
into open_clip with every key matched. clipforge runs `build_index` (what `clipforge index build`
calls) into a fresh index each round, at `--precision`; its time includes loading the model (and
converting it to that precision), listing, hashing and storing, and is also given without the model
load, which is measured apart. The peer's time is its loop alone, the model already built, at each
of `--peer-precisions` (bf16: weights and pixels cast to bfloat16). Both use `--workers` DataLoader
processes and batches of `--batch`. The pipelines take turns, `--rounds` times, after an untimed
warm-up of each on 32 of the photos; reported are medians. Before timing anything else, each image's
clipforge features must keep cosine >= 0.99 to the peer's float32 ones. Writes
bench/results/index_build_speed.json and .md. On a shared machine, state the load (printed).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter
from torch.utils.data import DataLoader, Dataset

import clipforge
from clipforge.core.download import cache_dir
from clipforge.models.inference import for_inference, inference_precision
from clipforge.search import ImageIndex, build_index
from forward_speed import CPU_ENVIRONMENT
from peers import openclip_copy, perturb_

RESULTS = Path(__file__).resolve().parent / "results" / "index_build_speed.json"
MIN_COSINE = 0.99
WARM_UP_IMAGES = 32


def photo(number: int, width: int, height: int) -> Image.Image:
    """A photo-like picture: a smooth two-colour gradient, a few soft shapes, sensor grain, lens blur."""
    rng = np.random.default_rng(number)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ramp = (np.cos(angle) * x / width + np.sin(angle) * y / height + 1) / 3
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = start + ramp[..., None] * (end - start)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(3, 9)):
        left, top = rng.uniform(0, width), rng.uniform(0, height)
        box = [left, top, left + rng.uniform(40, width / 2), top + rng.uniform(40, height / 2)]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    grain = rng.normal(0, 6, (height, width, 3))
    noisy = np.clip(np.asarray(image, dtype=np.float32) + grain, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy).filter(ImageFilter.GaussianBlur(1.2))


def photo_folder(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """`count` JPEGs in `folder`, written once; the first `WARM_UP_IMAGES` also linked into `warm_up_folder`."""
    paths = [folder / f"{number:05d}.jpg" for number in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    for number, path in enumerate(paths):
        if not path.exists():
            partial = path.with_suffix(".partial")
            photo(number, width, height).save(partial, format="JPEG", quality=90)
            partial.rename(path)
    warm_up = warm_up_folder(folder)
    warm_up.mkdir(exist_ok=True)
    for path in paths[:WARM_UP_IMAGES]:
        if not (warm_up / path.name).exists():
            os.link(path, warm_up / path.name)
    return paths


def warm_up_folder(folder: Path) -> Path:
    return folder.with_name(folder.name + "-warm-up")  # beside the photos: an index of them must not see it


class PeerPhotos(Dataset):
    """The peer's dataset: PIL decoding and open_clip's preprocessing, one photo per item."""

    def __init__(self, paths: Sequence[Path], preprocess: Any) -> None:
        self.paths, self.preprocess = list(paths), preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, position: int) -> torch.Tensor:
        with Image.open(self.paths[position]) as image:
            return self.preprocess(image)


def peer_pipeline(model: Any, preprocess: Any, paths: Sequence[Path], dtype: torch.dtype, workers: int,
                  batch: int) -> torch.Tensor:
    """[n, dim] unit float32 features of `paths`, in order, the peer's way."""
    loader = DataLoader(PeerPhotos(paths, preprocess), batch_size=batch, num_workers=workers)
    features = []
    with torch.inference_mode():
        for pixels in loader:
            features.append(F.normalize(model.encode_image(pixels.to(dtype)).float(), dim=-1))
    return torch.cat(features)


def clipforge_pipeline(folder: Path, index: Path, model: Path, precision: str, workers: int, batch: int) -> None:
    report = build_index([folder], index, model, workers=workers, batch_size=batch, progress=False, precision=precision)
    if report.added != report.indexed or report.skipped:
        raise SystemExit(f"clipforge indexed {report.indexed} of the photos, skipped {report.skipped}")


def index_vectors(index_path: Path, paths: Sequence[Path]) -> torch.Tensor:
    """The index's vectors in the order of `paths`."""
    with ImageIndex.open(index_path) as index, index.reading() as snapshot:
        rows = {path: stored.row for path, stored in index.stored_files().items()}
        return torch.from_numpy(np.asarray(snapshot.vectors[[rows[str(path.resolve())] for path in paths]]))


def timed(run: Any) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--height", type=int, default=768)
    parser.add_argument("--model", default="ViT-B-32", help="a clipforge config; random weights")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "int8"],
                        help="clipforge's (`clipforge index build --precision`)")
    parser.add_argument("--peer-precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--workers", type=int, default=2, help="DataLoader processes, both pipelines")
    parser.add_argument("--batch", type=int, default=64, help="images per forward pass, both pipelines")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--photos", type=Path, help="folder of the generated JPEGs (default: in the clipforge cache)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if "fp32" not in args.peer_precisions:
        parser.error("--peer-precisions needs fp32: the features every other pipeline is compared with")
    torch.set_num_threads(args.threads)
    import open_clip

    started = datetime.datetime.now(datetime.timezone.utc)
    folder = args.photos or cache_dir() / "bench" / f"photos-{args.width}x{args.height}-{args.images}"
    start = time.perf_counter()
    paths = photo_folder(folder, args.images, args.width, args.height)
    print(f"{len(paths)} photos of {args.width}x{args.height} in {folder} ({time.perf_counter() - start:.1f} s)",
          flush=True)
    for path in paths:
        path.read_bytes()  # into the page cache, for both pipelines alike
    load_before = os.getloadavg()

    with tempfile.TemporaryDirectory(prefix="clipforge-index-speed-") as scratch_name:
        scratch = Path(scratch_name)
        torch.manual_seed(0)
        ours = clipforge.create_model(args.model).eval()
        perturb_(ours, scale=0.02)
        clipforge.save_model(ours, scratch / "model")
        theirs = openclip_copy(ours, args.model)
        peers = {"fp32": theirs} | ({"bf16": copy.deepcopy(theirs).to(torch.bfloat16)}
                                    if "bf16" in args.peer_precisions else {})
        peers = {precision: peers[precision] for precision in args.peer_precisions}
        preprocess = open_clip.image_transform(ours.image_size, is_train=False)
        setup = {"load": timed(lambda: clipforge.load(scratch / "model"))}
        start = time.perf_counter()
        converted = for_inference(clipforge.load(scratch / "model")[0], args.precision, towers=("visual",))
        setup["load_and_convert"] = time.perf_counter() - start  # as `build_index` converts it: the image tower
        chosen = inference_precision(converted)
        del converted
        print(f"clipforge --precision {args.precision} runs {chosen} here; loading takes {setup['load']:.1f} s, "
              f"with the conversion {setup['load_and_convert']:.1f} s", flush=True)

        runs = {f"clipforge ({chosen})": lambda index: clipforge_pipeline(
                    folder, index, scratch / "model", args.precision, args.workers, args.batch)}
        runs |= {f"open_clip {precision}": (lambda index, p=precision: peer_pipeline(
                    peers[p], preprocess, paths, torch.bfloat16 if p == "bf16" else torch.float32, args.workers,
                    args.batch)) for precision in peers}
        ours_name = next(iter(runs))

        # warm-up, and the agreement every timed figure rests on
        clipforge_pipeline(warm_up_folder(folder), scratch / "warm-up", scratch / "model", args.precision, args.workers,
                           args.batch)
        for name in runs:
            if name != ours_name:
                peer_pipeline(peers[name.split()[-1]], preprocess, paths[:WARM_UP_IMAGES],
                              torch.bfloat16 if name.endswith("bf16") else torch.float32, args.workers, args.batch)
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        cosine: dict[str, dict[str, float]] = {}
        for round_number in range(args.rounds):
            for name, run in runs.items():
                index = scratch / f"index-{round_number}"
                start = time.perf_counter()
                features = run(index)  # the peer's features; clipforge's are in the index
                seconds[name].append(time.perf_counter() - start)
                if round_number == 0:
                    cosine[name] = features if features is not None else index_vectors(index, paths)
            if round_number == 0 and "open_clip fp32" in cosine:
                reference = cosine["open_clip fp32"]
                cosine = {name: {"min": F.cosine_similarity(features.float(), reference).min().item(),
                                 "mean": F.cosine_similarity(features.float(), reference).mean().item()}
                          for name, features in cosine.items()}
                low = {name: value["min"] for name, value in cosine.items() if value["min"] < MIN_COSINE}
                if low:
                    raise SystemExit(f"features below cosine {MIN_COSINE} to open_clip's float32: {low}")
            print(f"round {round_number + 1}: " + ", ".join(f"{name} {len(paths) / seconds[name][-1]:.1f} images/s"
                                                            for name in runs), flush=True)
    load_after = os.getloadavg()

    median = {name: statistics.median(values) for name, values in seconds.items()}
    per_s = {name: len(paths) / value for name, value in median.items()}
    without_load = len(paths) / max(median[ours_name] - setup["load_and_convert"], 1e-9)
    peer_names = [name for name in runs if name != ours_name]
    best_peer = max(peer_names, key=per_s.get) if peer_names else None
    environment = {key: os.environ[key] for key in CPU_ENVIRONMENT if key in os.environ}
    header = (f"{len(paths)} JPEGs of {args.width}x{args.height}, {args.model} (random weights), batch {args.batch}, "
              f"{args.workers} DataLoader workers, {args.threads} threads, median of {args.rounds} rounds; torch "
              f"{torch.__version__}, {torch.backends.cpu.get_cpu_capability()}"
              + "".join(f", {key}={value}" for key, value in environment.items())
              + f"; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    lines = [header, "", "| pipeline | images/s | seconds per round | cosine to open_clip fp32 (min / mean) |",
             "|---|---|---|---|"]
    for name in runs:
        agreement = cosine.get(name, {})
        shown = f"{agreement['min']:.4f} / {agreement['mean']:.4f}" if isinstance(agreement, dict) and agreement else "-"
        lines.append(f"| {name} | {per_s[name]:.1f} | {', '.join(f'{s:.1f}' for s in seconds[name])} | {shown} |")
    lines += ["", f"clipforge's model load and conversion to {chosen}: {setup['load_and_convert']:.1f} s (load alone "
              f"{setup['load']:.1f} s), included above; without it clipforge runs at {without_load:.1f} images/s."]
    if best_peer:
        lines.append(f"Against the fastest peer pipeline ({best_peer}): **{per_s[ours_name] / per_s[best_peer]:.2f}x** "
                     f"end to end, {without_load / per_s[best_peer]:.2f}x without clipforge's model load.")
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table)
    args.out.write_text(json.dumps({
        "date": started.isoformat(timespec="seconds"), "images": len(paths), "size": [args.width, args.height],
        "model": args.model, "precision": args.precision, "chosen_precision": chosen, "batch": args.batch,
        "workers": args.workers, "threads": args.threads, "rounds": args.rounds, "environment": environment,
        "python": platform.python_version(), "torch": torch.__version__, "open_clip": open_clip.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "seconds": seconds, "images_per_s": per_s,
        "clipforge_setup_seconds": setup, "clipforge_images_per_s_without_load": without_load,
        "fastest_peer": best_peer, "cosine_to_open_clip_fp32": cosine,
        "load_average_before": load_before, "load_average_after": load_after}, indent=2))


if __name__ == "__main__":
    main()
