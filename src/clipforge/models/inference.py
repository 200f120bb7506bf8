"""The precision a model runs at for inference: fp32, bf16 (autocast) or int8 (dynamic quantization),
or "auto", chosen per machine and per image tower from the CPU's flags.

`for_inference(model, precision)` returns the model to run; `clipforge index build`, `search`,
`classify` and `serve` take it as `--precision`. Both fast paths kept cosine >= 0.99 to the float32
features on every model measured, but only on random weights (no published weights were at hand), so
the commands stay float32 unless told (an index keeps the precision it was built at), and evaluation
is float32. The rule behind "auto", from images/s at batch 32 on one core of an AVX-512 (VNNI, BF16)
CPU and under AVX2 emulation (`bench/forward_speed.py`; docs/performance.md has the runs):

| image tower | AVX-512, VNNI, BF16: fp32 / bf16 / int8 | AVX2: fp32 / bf16 / int8 | auto |
|---|---|---|---|
| ViT-B/32 (matmuls) | 8.9 / 30.0 / 49.4 | 9.6 / emulated / 20.5 | int8 on AVX2 and AVX-512 |
| RN50 (convolutions) | 4.3 / 11.5 / 4.4 | - | bf16 with AVX-512 BF16, else fp32 |
| forge ConvNet, 32 px | 2250 / 3290 / 2210 | - | bf16 with AVX-512 BF16, else fp32 |

int8 quantizes linear layers only, so a convolutional tower gains nothing from it; bf16 without
AVX-512 BF16 or AMX is emulated, tens of times slower than fp32 in matmuls. On a GPU, "auto" is bf16
where the GPU supports it; elsewhere (ARM, x86 without AVX2: not measured) it is fp32.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import torch
import torch.nn.functional as F

from .clip import CLIP
from .fingerprint import weights_fingerprint
from .quantization import ENGINES, TOWERS, copy_sharing_tensors, cpu_flags, int8_engine, quantize_int8
from .vision_transformer import VisionTransformer

PRECISIONS = ("auto", "fp32", "bf16", "int8")
FAST_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_CAPABILITIES = frozenset({"AVX2", "AVX512"})  # torch's CPU capability; fbgemm and oneDNN need AVX2
# values sampled per tensor for `source_fingerprint`, as `clipforge.search.fingerprint.SAMPLED_VALUES`
FINGERPRINT_VALUES = 65536


def auto_precision(model: CLIP, capability: str | None = None, flags: Collection[str] | None = None) -> str:
    """What "auto" means for `model` on its device. On the CPU: int8 for a ViT image tower where torch
    runs AVX2 or AVX-512 kernels (`capability`, default `torch.backends.cpu.get_cpu_capability()`, which
    follows ATEN_CPU_CAPABILITY), else bf16 where it is fast (AVX-512 with BF16 or AMX in `flags`,
    default `cpu_flags()`), else fp32. On a GPU bf16 where supported, else fp32."""
    device = model.logit_scale.device
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type != "cpu":
        return "fp32"
    capability = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    flags = frozenset(flags) if flags is not None else cpu_flags()
    if (isinstance(model.visual, VisionTransformer) and capability in INT8_CAPABILITIES
            and int8_engine(capability, flags) in ENGINES):
        return "int8"
    if capability == "AVX512" and flags & FAST_BF16_FLAGS:
        return "bf16"
    return "fp32"


def resolve_precision(precision: str, model: CLIP) -> str:
    """`precision` itself, or "auto" made concrete for `model`; ValueError for an unknown name or int8 off the CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return auto_precision(model)
    if precision == "int8" and model.logit_scale.device.type != "cpu":
        raise ValueError(f"int8 runs on the CPU; the model is on {model.logit_scale.device}: choose bf16 or fp32, "
                         "or the CPU")
    return precision


def inference_precision(model: torch.nn.Module) -> str:
    """The precision `model` runs at: what `for_inference` made it, else fp32."""
    return getattr(model, "inference_precision", "fp32")


class AutocastCLIP(CLIP):
    """A CLIP whose encoders run under bf16 autocast on the model's device and return float32
    features: matmuls and convolutions in bf16, what autocast keeps in float32 (layer norm, softmax)
    in float32. It takes the same float32 inputs; made by `for_inference(model, "bf16")`."""

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.logit_scale.device.type, dtype=torch.bfloat16)

    def encode_image(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with self._autocast():
            features = super().encode_image(image)
        return _float32(features, normalize)

    def encode_image_dense(self, image: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with self._autocast():
            features = super().encode_image_dense(image)
        return _float32(features, normalize)

    def encode_text(self, text: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        with self._autocast():
            features = super().encode_text(text)
        return _float32(features, normalize)


def _float32(features: torch.Tensor, normalize: bool) -> torch.Tensor:
    features = features.float()
    return F.normalize(features, dim=-1) if normalize else features


def for_inference(model: CLIP, precision: str = "auto", towers: Sequence[str] = TOWERS) -> CLIP:
    """The model to run at `precision` ("auto", "fp32", "bf16", "int8"): `model` itself for fp32, else
    an eval-mode copy sharing its float tensors: `AutocastCLIP` for bf16, `quantize_int8`'s copy for
    int8 (CPU). A copy records `inference_precision` and `source_fingerprint`, the fingerprint of the
    float weights it came from, with which an image index tells models and precisions apart. int8
    quantizes only `towers` (see `quantize_int8`). A model that is not a `CLIP` (an ONNX export) runs
    as it is: "auto" and "fp32" return it, others are refused."""
    if not isinstance(model, CLIP):
        if precision in ("auto", "fp32"):
            return model
        raise ValueError(f"precision {precision} converts a PyTorch model; {type(model).__name__} runs as it was "
                         "exported (for int8 under ONNX Runtime, quantize the export)")
    current = inference_precision(model)
    if current != "fp32":  # already converted: "auto" keeps it
        if precision in ("auto", current):
            return model
        raise ValueError(f"this model already runs at {current}; convert the float32 model to {precision} instead")
    chosen = resolve_precision(precision, model)
    if chosen == "fp32":
        return model
    if chosen == "int8":
        converted = quantize_int8(model, towers=towers)
    else:
        converted = copy_sharing_tensors(model).eval()
        converted.__class__ = AutocastCLIP
    converted.inference_precision = chosen
    converted.source_fingerprint = weights_fingerprint(model, max_values=FINGERPRINT_VALUES)
    return converted
