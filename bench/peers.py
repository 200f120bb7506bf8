"""The peers, open_clip and Hugging Face transformers, built with a clipforge config's architecture so
that benchmarks can load the same weights into both and run them side by side."""

from __future__ import annotations

from typing import Any

import torch

from clipforge.checkpoints.keys import to_file_keys
from clipforge.models import CLIP, get_config


def openclip_model(name: str):
    """open_clip's CLIP with the architecture of clipforge's config `name` (freshly initialised)."""
    from open_clip.model import CLIP as OpenCLIP
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    config = get_config(name)
    vision, text = config.vision, config.text
    channels = vision.width * 32 if vision.is_resnet else vision.width  # what the heads split
    if channels % vision.num_heads:
        raise ValueError(f"{name}: {channels} channels do not split into {vision.num_heads} heads")
    vision_cfg = CLIPVisionCfg(layers=tuple(vision.layers) if vision.is_resnet else vision.layers,
                               width=vision.width, head_width=channels // vision.num_heads,
                               mlp_ratio=vision.mlp_ratio, patch_size=vision.patch_size or 16,
                               image_size=vision.image_size)
    text_cfg = CLIPTextCfg(context_length=text.context_length, vocab_size=text.vocab_size, width=text.width,
                           heads=text.num_heads, layers=text.layers, mlp_ratio=text.mlp_ratio)
    return OpenCLIP(config.embed_dim, vision_cfg, text_cfg, quick_gelu=config.activation == "quick_gelu",
                    init_logit_scale=config.init_logit_scale, init_logit_bias=config.init_logit_bias)


def openclip_copy(ours: CLIP, name: str) -> Any:
    """open_clip's model of config `name` holding `ours`'s weights, in eval mode; every key must match."""
    theirs = openclip_model(name)
    keys = theirs.load_state_dict(to_file_keys(ours.state_dict()), strict=False)  # open_clip keeps OpenAI's layout
    if keys.missing_keys or keys.unexpected_keys:
        raise ValueError(f"{name}: state-dict keys differ: {keys}")
    return theirs.eval()


def huggingface_copy(ours: CLIP) -> Any | None:
    """transformers' CLIPModel holding `ours`'s weights, or None for towers it has no class for (a ResNet
    or ConvNet image tower, a bag-of-n-grams text tower)."""
    import transformers

    from clipforge.checkpoints import CheckpointError
    from clipforge.checkpoints.huggingface import config_to_huggingface, state_dict_to_huggingface

    try:
        hf_config = config_to_huggingface(ours.config)
    except CheckpointError:
        return None
    theirs = transformers.CLIPModel(transformers.CLIPConfig(**hf_config)).eval()
    theirs.load_state_dict(state_dict_to_huggingface(to_file_keys(ours.state_dict())), strict=False)
    return theirs


@torch.no_grad()
def perturb_(model: torch.nn.Module, scale: float = 0.1) -> None:
    """Add noise to every weight and buffer: CLIP's init zeroes each bottleneck's last BatchNorm, which
    would hide a wrong branch from an agreement check."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            noise = torch.randn_like(tensor) * scale
            tensor.add_(noise.abs() if key.endswith("running_var") else noise)
