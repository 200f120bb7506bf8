"""int8 inference on the CPU: every matmul of the transformer towers in int8.

Dynamic quantization stores each weight as int8 per output channel and quantizes activations per
batch on the fly (`torch.ao.nn.quantized.dynamic.Linear`). `quantize_int8` builds a copy of the model
in which every linear layer is such a layer, and so are the two projections that the float model
does not hold as `nn.Linear`: attention's packed q/k/v projection (a bare parameter, so that OpenAI's
checkpoint keys load unchanged) and the ViT's patch embedding (a convolution whose stride is its
kernel: the same product on flattened patches). The float model, its parameters and its keys are
untouched; the copy shares the float tensors it does not quantize (layer norms, embeddings).
QuickGELU, x * sigmoid(1.702 x), is folded into the MLP's weights as SiLU: one kernel instead of
three over the widest activations, which took ViT-B/32 from 37 to 53 images/s on one core. What
stays float32: the ResNet's and ConvNet's convolutions, attention's softmax(q k^T) v, and the final
projections (one token per image or text).

The kernels are oneDNN's or fbgemm's (`torch.backends.quantized.engine`); both use VNNI where the
CPU has it: oneDNN names its kernel `brg_matmul:avx512_core_vnni` under ONEDNN_VERBOSE=1, and both
fall to about half their speed when VNNI is masked (ONEDNN_MAX_CPU_ISA=AVX512_CORE,
FBGEMM_ENABLE_INSTRUCTIONS=AVX512). Weights are packed for one engine (`int8_engine()` picks it per
machine) and keep it whatever the global setting is later. Figures: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import warnings
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import torch
import torch.ao.nn.quantized.dynamic as nnqd
import torch.nn.functional as F
from torch import nn
from torch.ao.quantization import per_channel_dynamic_qconfig

from .clip import CLIP
from .layers import MLP, QuickGELU, SelfAttention
from .vision_transformer import VisionTransformer

ENGINES = ("onednn", "fbgemm")  # "x86" runs fbgemm's kernels for these layers
TOWERS = ("visual", "text")
QUICK_GELU_SLOPE = 1.702


class LinearProjectionAttention(nn.Module):
    """`SelfAttention` whose packed q/k/v projection is a module (`in_proj`, [width] -> [3 width]), here
    an int8 linear layer. `in_proj_weight` / `in_proj_bias` read back its float equivalent, for the code
    that slices them (MaskCLIP's value path in `VisionTransformer.forward_dense`)."""

    def __init__(self, heads: int, in_proj: nn.Module, out_proj: nn.Module):
        super().__init__()
        self.heads, self.in_proj, self.out_proj = heads, in_proj, out_proj

    @property
    def in_proj_weight(self) -> torch.Tensor:
        """[3 width, width] float32, dequantized."""
        weight = self.in_proj.weight
        return weight().dequantize() if callable(weight) else weight

    @property
    def in_proj_bias(self) -> torch.Tensor:
        bias = self.in_proj.bias
        return bias() if callable(bias) else bias

    def forward(self, x: torch.Tensor, causal: bool = False) -> torch.Tensor:
        """x: [batch, tokens, width] -> [batch, tokens, width], as `SelfAttention`."""
        batch, tokens, width = x.shape
        q, k, v = self.in_proj(x).view(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class PatchEmbedding(nn.Module):
    """A ViT's `conv1` (kernel = stride = patch, no padding, no bias) as a linear layer `proj` over
    flattened patches ([channels * patch * patch] -> [width]): the same output, from a matmul."""

    def __init__(self, patch: tuple[int, int], proj: nn.Module):
        super().__init__()
        self.kernel_size = self.stride = patch  # `VisionTransformer.dense_stride` reads the stride
        self.proj = proj

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: [batch, channels, h, w] -> [batch, width, h // patch, w // patch], as the convolution."""
        batch, channels, height, width = image.shape
        ph, pw = self.kernel_size
        rows, cols = height // ph, width // pw
        patches = (image[:, :, : rows * ph, : cols * pw].reshape(batch, channels, rows, ph, cols, pw)
                   .permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, channels * ph * pw))
        return self.proj(patches).transpose(1, 2).reshape(batch, -1, rows, cols)


def int8_linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nnqd.Linear:
    """A dynamic int8 linear layer computing x @ weight^T + bias, weight [out, in] quantized
    symmetrically per output channel, packed for the current quantized engine."""
    observer = per_channel_dynamic_qconfig.weight()
    observer(weight)
    scales, zero_points = observer.calculate_qparams()
    qweight = torch.quantize_per_channel(weight.detach().float(), scales.double(), zero_points.long(), 0, torch.qint8)
    # built 1 x 1 so that the constructor packs no full-size zero weight; set_weight_bias packs the real one
    layer = nnqd.Linear(1, 1, dtype=torch.qint8)
    layer.in_features, layer.out_features = weight.shape[1], weight.shape[0]
    layer.set_weight_bias(qweight, None if bias is None else bias.detach().float())
    return layer


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere), e.g. "avx512_vnni"."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.startswith(("flags", "Features"))), "")
    return frozenset(line.partition(":")[2].split())


def int8_engine(capability: str | None = None, flags: Collection[str] | None = None) -> str:
    """The quantized engine to pack weights for: oneDNN where torch runs AVX-512 kernels (`capability`,
    default `torch.backends.cpu.get_cpu_capability()`) and the CPU has AVX-512 VNNI or AMX (`flags`,
    default `cpu_flags()`), fbgemm elsewhere. Whole ViT-B/32 at batch 32, one core: oneDNN 24 % faster
    with VNNI (49.4 against 39.7 images/s); without, the two are level within 10 % either way and
    fbgemm converts in half the time (docs/performance.md). A build without the chosen engine gets
    the other, or its default."""
    capability = capability if capability is not None else torch.backends.cpu.get_cpu_capability()
    flags = frozenset(flags) if flags is not None else cpu_flags()
    vnni = capability == "AVX512" and bool(flags & {"avx512_vnni", "amx_int8"})
    preferred = ("onednn", "fbgemm") if vnni else ("fbgemm", "onednn")
    supported = torch.backends.quantized.supported_engines
    return next((engine for engine in preferred if engine in supported), torch.backends.quantized.engine)


@contextlib.contextmanager
def quantized_engine(engine: str) -> Iterator[None]:
    """Set `torch.backends.quantized.engine` for the block (weights are packed for it), then restore it."""
    if engine not in torch.backends.quantized.supported_engines:
        raise ValueError(f"quantized engine {engine!r} is not in this torch build "
                         f"({', '.join(torch.backends.quantized.supported_engines)})")
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous



@torch.no_grad()
def quantize_int8(model: CLIP, engine: str | None = None, towers: Sequence[str] = TOWERS) -> CLIP:
    """An eval-mode copy of `model` whose linear layers, attention's q/k/v projection and the ViT's
    patch embedding included, compute in int8 (CPU only), packed for `engine` (default
    `int8_engine()`); `model` is untouched. Only `towers` are quantized (an image index needs only
    "visual": half the conversion time for ViT-B/32); the others run in float32 as they were."""
    if not towers or set(towers) - set(TOWERS):
        raise ValueError(f"towers must name some of {TOWERS}, got {tuple(towers)}")
    device = model.logit_scale.device
    if device.type != "cpu":
        raise ValueError(f"int8 dynamic quantization runs on the CPU; the model is on {device}")
    if model.logit_scale.dtype != torch.float32:
        raise ValueError(f"int8 dynamic quantization starts from float32 weights, not {model.logit_scale.dtype}")
    quantized = copy_sharing_tensors(model).eval()
    with warnings.catch_warnings(), quantized_engine(engine or int8_engine()):
        # torch's quantized tensors warn that they move to torchao; these kernels are what runs either way
        warnings.filterwarnings("ignore", message=".*quantize_per_(tensor|channel).*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        for tower in towers:
            _quantize_children(getattr(quantized, tower))
    return quantized


def copy_sharing_tensors(model: CLIP) -> CLIP:
    """A copy of `model` with modules of its own that hold `model`'s parameters and buffers (and its
    tokenizer): replacing a layer in the copy leaves `model` as it was, and costs no memory for the rest."""
    shared = {id(tensor): tensor for tensor in itertools.chain(model.parameters(), model.buffers())}
    shared[id(model._tokenizer)] = model._tokenizer
    return copy.deepcopy(model, memo=shared)


def _quantize_children(module: nn.Module) -> None:
    """Replace, in `module` and below, every linear layer and every projection that is one in disguise."""
    if isinstance(module, VisionTransformer):
        conv = module.conv1
        if conv.kernel_size != conv.stride or conv.padding != (0, 0) or conv.bias is not None:
            raise ValueError("a ViT's patch embedding is a convolution whose stride is its kernel, without "
                             "padding or bias")
        module.conv1 = PatchEmbedding(conv.kernel_size, int8_linear(conv.weight.flatten(1), None))
    for name, child in list(module.named_children()):
        if isinstance(child, SelfAttention):
            setattr(module, name, LinearProjectionAttention(
                child.heads, int8_linear(child.in_proj_weight, child.in_proj_bias),
                int8_linear(child.out_proj.weight, child.out_proj.bias)))
        elif isinstance(child, MLP) and isinstance(child.gelu, QuickGELU):
            # x sigmoid(a x) = silu(a x) / a: scale c_fc's output by a, c_proj's input by 1 / a
            child.c_fc = int8_linear(child.c_fc.weight * QUICK_GELU_SLOPE, child.c_fc.bias * QUICK_GELU_SLOPE)
            child.c_proj = int8_linear(child.c_proj.weight / QUICK_GELU_SLOPE, child.c_proj.bias)
            child.gelu = nn.SiLU()
        elif type(child) is nn.Linear:
            setattr(module, name, int8_linear(child.weight, child.bias))
        else:
            _quantize_children(child)
