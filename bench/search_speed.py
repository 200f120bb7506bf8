"""Image search speed: images embedded per second while indexing, then exact search against the FAISS
IVF index at 10k, 100k and 1M unit vectors of dimension 512: build time, Recall@10 against exact
search, queries per second (a batch of queries) and single-query latency, and memory.

    python bench/search_speed.py [--sizes 10000 100000 1000000] [--distribution random|clustered]
                                 [--images 1000] [--config small-vit] [--workers 0 2] [--queries 200]

Indexing: `--images` generated shapes scenes (64 px PNGs) embedded by `build_index` with a randomly
initialised `--config` model (speed does not depend on the weights), once per `--workers` value
after one untimed build, model loading included; then an update with nothing changed. Queries: `--distribution random` draws database and queries uniformly on the
sphere (the worst case for an approximate index: every neighbour is nearly equidistant);
`clustered` draws both around 1,000 centres, closer to real embeddings. The vectors are a
memory-mapped `.npy`, as in an index. Memory: the vectors' bytes for exact search, the FAISS file's
bytes for IVF, and the process's peak RSS. Writes bench/results/search_speed[_clustered].json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch

import clipforge
from clipforge.data.shapes import generate
from clipforge.models import create_model
from clipforge.search import build_index
from clipforge.search.ann import build_ann, recall_at_k
from clipforge.search.exact import exact_top_k

ROOT = Path(__file__).resolve().parents[1]
DIM = 512
K = 10
SINGLE_QUERIES = 20
MIB = 1024 * 1024


def indexing_rate(images: int, config: str, workers: int, scratch: Path) -> dict:
    """Images/s of a clean `build_index` over `images` generated PNGs (the folder is made once)."""
    folder, model = scratch / "images", scratch / "model"
    if not folder.exists():
        folder.mkdir()
        for number, (image, _) in enumerate(generate(images, seed=0)):
            image.save(folder / f"{number:07d}.png")
        clipforge.save_model(create_model(config), model)
        build_index([folder], scratch / "warm-up", model, workers=0, progress=False)  # file cache, one-off costs
    index = scratch / f"index-{workers}"
    start = time.perf_counter()
    report = build_index([folder], index, model, workers=workers, progress=False)
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    build_index([folder], index, model, workers=workers, progress=False)  # nothing changed
    return {"workers": workers, "images": report.indexed, "seconds": seconds, "images_per_s": report.indexed / seconds,
            "unchanged_update_seconds": time.perf_counter() - start}


def unit_vectors(count: int, seed: int, distribution: str) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, DIM), dtype=np.float32)
    if distribution == "clustered":
        centres = np.random.default_rng(1234).standard_normal((1000, DIM), dtype=np.float32)
        vectors = centres[rng.integers(len(centres), size=count)] + 0.5 * vectors
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def timed(search, queries: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(queries/s for the whole batch, median single-query latency in ms, rows of the batch)."""
    search(queries[:1])  # warm-up: page cache, thread pools
    start = time.perf_counter()
    rows = search(queries)
    per_second = len(queries) / (time.perf_counter() - start)
    latencies = []
    for query in queries[:SINGLE_QUERIES]:
        start = time.perf_counter()
        search(query[None])
        latencies.append((time.perf_counter() - start) * 1000)
    return per_second, statistics.median(latencies), rows


def query_speed(size: int, distribution: str, queries: int, scratch: Path) -> dict:
    path = scratch / f"vectors-{size}.npy"
    np.save(path, unit_vectors(size, seed=0, distribution=distribution))
    vectors = np.load(path, mmap_mode="r")
    query_vectors = unit_vectors(queries, seed=1, distribution=distribution)
    exact_qps, exact_ms, truth = timed(lambda q: exact_top_k(vectors, q, K)[1], query_vectors)
    start = time.perf_counter()
    ann = build_ann(vectors)
    build_seconds = time.perf_counter() - start
    faiss.write_index(ann.index, str(scratch / "ann.faiss"))
    ann_qps, ann_ms, found = timed(lambda q: ann.search(q, K)[1], query_vectors)
    result = {
        "vectors": size, "exact": {"queries_per_s": exact_qps, "latency_ms": exact_ms, "memory_mib": vectors.nbytes / MIB},
        "faiss_ivf": {"lists": ann.index.nlist, "nprobe": ann.nprobe, "build_s": build_seconds,
                      "calibration_recall_at_10": ann.recall, "recall_at_10": recall_at_k(truth, found, K),
                      "queries_per_s": ann_qps, "latency_ms": ann_ms,
                      "memory_mib": (scratch / "ann.faiss").stat().st_size / MIB},
    }
    path.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--distribution", choices=["random", "clustered"], default="random")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--images", type=int, default=1000, help="images to index (0: skip indexing)")
    parser.add_argument("--config", default="small-vit", help="model config for the indexing run (OpenAI vocabulary)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        indexing = [indexing_rate(args.images, args.config, workers, Path(scratch))
                    for workers in args.workers] if args.images else []
        querying = []
        for size in args.sizes:
            querying.append(query_speed(size, args.distribution, args.queries, Path(scratch)))
            print(f"{size:,} vectors done", flush=True)

    print(f"\n{os.cpu_count()} CPUs, torch {torch.__version__}, faiss {faiss.__version__}")
    if indexing:
        print(f"\nindexing {args.images} generated 64 px PNGs with a random {args.config}\n")
        print("| workers | images/s | build s | unchanged update s |\n|---:|---:|---:|---:|")
        for row in indexing:
            print(f"| {row['workers']} | {row['images_per_s']:,.0f} | {row['seconds']:.1f} | "
                  f"{row['unchanged_update_seconds']:.2f} |")
    print(f"\n{args.distribution} unit vectors, dim {DIM}, {args.queries} queries, Recall@{K} against exact\n")
    print("| vectors | exact q/s | exact ms | IVF lists | nprobe | IVF build s | Recall@10 | IVF q/s | IVF ms "
          "| exact MiB | IVF MiB |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in querying:
        exact, ivf = row["exact"], row["faiss_ivf"]
        print(f"| {row['vectors']:,} | {exact['queries_per_s']:,.1f} | {exact['latency_ms']:.1f} | {ivf['lists']} "
              f"| {ivf['nprobe']} | {ivf['build_s']:.1f} | {ivf['recall_at_10']:.3f} | {ivf['queries_per_s']:,.1f} "
              f"| {ivf['latency_ms']:.1f} | {exact['memory_mib']:,.0f} | {ivf['memory_mib']:,.0f} |")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS {peak_rss:,.0f} MiB")

    results = ROOT / "bench" / "results" / ("search_speed.json" if args.distribution == "random"
                                            else f"search_speed_{args.distribution}.json")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps({
        "cpus": os.cpu_count(), "torch": torch.__version__, "faiss": faiss.__version__,
        "python": platform.python_version(), "distribution": args.distribution, "queries": args.queries,
        "indexing": {"images": args.images, "config": args.config, "runs": indexing},
        "querying": querying, "peak_rss_mib": peak_rss,
    }, indent=2))
    print(f"wrote {results.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
