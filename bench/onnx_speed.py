"""Image embedding speed under ONNX Runtime (float32, and int8 by its dynamic quantization) beside
PyTorch float32, on the same weights, in one process.

    python bench/onnx_speed.py [--model ViT-B-32] [--batch 32] [--repeats 3] [--threads N]

The model is built with random weights (`create_model`): speed does not depend on their values.
It is exported with `export_onnx` (as `clipforge export MODEL --onnx OUT` does) and the image
encoder quantized with `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations
quantized per batch at run time). Before timing, ONNX Runtime float32 must equal PyTorch within
1e-4 (largest difference relative to the largest entry) and int8 is reported with its lowest cosine
to PyTorch's features. The contenders take turns within each repeat, so a change in the machine's
load falls on all of them; printed are median images/s and each one's ratio to PyTorch float32.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from clipforge.checkpoints.onnx_export import export_onnx
from clipforge.checkpoints.onnx_runtime import OnnxCLIP
from clipforge.core.extras import require
from clipforge.models import create_model


def images_per_second(run: Callable[[], object], batch: int) -> float:
    start = time.perf_counter()
    run()
    return batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32", help="model config to build with random weights")
    parser.add_argument("--batch", type=int, default=32, help="images per forward pass")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per contender (after one warm-up)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for PyTorch and ONNX Runtime")
    args = parser.parse_args()
    quantization = require("onnxruntime.quantization", "onnx", "the ONNX benchmark")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.model).eval()
    pixels = torch.randn(args.batch, 3, model.image_size, model.image_size)

    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "onnx"
        start = time.perf_counter()
        export_onnx(model, None, folder)
        print(f"export: {time.perf_counter() - start:.1f} s")
        int8_path = folder / "image_encoder.int8.onnx"
        start = time.perf_counter()
        quantization.quantize_dynamic(folder / "image_encoder.onnx", int8_path,
                                      weight_type=quantization.QuantType.QInt8)
        print(f"int8 quantization: {time.perf_counter() - start:.1f} s")
        fp32 = OnnxCLIP(folder, threads=args.threads)
        int8 = OnnxCLIP(folder, threads=args.threads)
        ort = require("onnxruntime", "onnx", "the ONNX benchmark")
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        int8.image_session = ort.InferenceSession(str(int8_path), options, providers=["CPUExecutionProvider"])

        with torch.inference_mode():
            reference = model.encode_image(pixels)
        contenders = {
            "pytorch fp32": lambda: model.encode_image(pixels),
            "onnxruntime fp32": lambda: fp32.encode_image(pixels),
            "onnxruntime int8": lambda: int8.encode_image(pixels),
        }
        error = (fp32.encode_image(pixels) - reference).abs().max().item() / reference.abs().max().item()
        cosine = F.cosine_similarity(int8.encode_image(pixels), reference, dim=-1).min().item()
        if error > 1e-4:
            raise SystemExit(f"ONNX Runtime fp32 differs from PyTorch by {error:.2e} of the largest entry")
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        with torch.inference_mode():
            for name, run in contenders.items():  # warm-up
                run()
            for _ in range(args.repeats):
                for name, run in contenders.items():
                    rates[name].append(images_per_second(run, args.batch))

    print(f"{args.model} random weights, batch {args.batch}, {args.threads} threads, median of {args.repeats}; "
          f"torch {torch.__version__}, onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}")
    print(f"onnxruntime fp32 vs pytorch: largest difference {error:.1e} of the largest entry; "
          f"int8 lowest cosine to pytorch fp32 {cosine:.4f}")
    baseline = statistics.median(rates["pytorch fp32"])
    print("| runtime | images/s | ratio to pytorch fp32 |")
    print("|---|---:|---:|")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / baseline:.2f}x |")


if __name__ == "__main__":
    main()
