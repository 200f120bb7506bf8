"""An image tower's token sequence and every layer's hidden states, for models that see through
CLIP (LLaVA and its kind), as open_clip's `forward_intermediates` and transformers'
`CLIPVisionModel(..., output_hidden_states=True)` give them.

For a ViT, `hidden_states` equals transformers' `hidden_states` layer by layer (the embeddings after
`ln_pre`, then each block's output; tests/test_features.py holds them to 1e-4). LLaVA-1.5 feeds its
language model `hidden_states[-2][:, 1:]`: the penultimate layer's patch tokens without the class
token, through a learnt projector (`ImageFeatures.patch_tokens()`). Shapes per published
architecture: docs/applications.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models import CLIP, ConvNet, ModifiedResNet, VisionTransformer

LLAVA_LAYER = -2  # the penultimate layer's output, as LLaVA's `mm_vision_select_layer`


@dataclass
class ImageFeatures:
    """What an image tower computed for a batch.

    - `hidden_states`: ViT: layers + 1 tensors [batch, 1 + patches, width], the class token first;
      ResNet: the stem's and the four stages' maps, ConvNet: each stage's map, as tokens
      [batch, h * w, channels] (no class token).
    - `grids`: each state's (h, w) of patches or cells.
    - `normed_states` (ViT, `final_norm=True`): every hidden state through the final LayerNorm (`ln_post`).
    - `projected` (`project=True`): the last state's tokens in the joint space [batch, tokens, embed_dim]
      (ViT: `ln_post` then `proj`, its class token the image embedding; ResNet and ConvNet: the dense
      features of `encode_image_dense`).
    - `image_embeds`: [batch, embed_dim], equal to `model.encode_image` (not normalized).
    """

    hidden_states: tuple[torch.Tensor, ...]
    grids: tuple[tuple[int, int], ...]
    has_class_token: bool
    image_embeds: torch.Tensor
    normed_states: tuple[torch.Tensor, ...] | None = None
    projected: torch.Tensor | None = None

    def patch_tokens(self, layer: int = LLAVA_LAYER) -> torch.Tensor:
        """[batch, patches, width] of one layer without its class token; the default is LLaVA's choice."""
        state = self.hidden_states[layer]
        return state[:, 1:] if self.has_class_token else state

    def class_tokens(self, layer: int = -1) -> torch.Tensor:
        """[batch, width]: one layer's class token (ViT only)."""
        if not self.has_class_token:
            raise ValueError("this image tower has no class token: its states are feature maps (use patch_tokens)")
        return self.hidden_states[layer][:, 0]


def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """[batch, channels, h, w] -> [batch, h * w, channels], row by row."""
    return feature_map.flatten(2).transpose(1, 2).contiguous()


def image_features(model: CLIP, pixels: torch.Tensor, final_norm: bool = False, project: bool = False) -> ImageFeatures:
    """The tower's states for preprocessed images [batch, 3, h, w] (the model's size, or for a ViT any
    multiple of the patch size, its positions interpolated) in one forward pass. `final_norm` asks
    for every state through `ln_post` (ViT only: the convolutional towers have no final norm)."""
    visual = model.visual
    pixels = pixels.to(model.logit_scale.device, next(visual.parameters()).dtype)
    if isinstance(visual, VisionTransformer):
        states = visual.forward_intermediates(pixels)
        grid = (pixels.shape[-2] // visual.dense_stride, pixels.shape[-1] // visual.dense_stride)
        last = visual.ln_post(states[-1])
        return ImageFeatures(
            tuple(states), (grid,) * len(states), True, last[:, 0] @ visual.proj,
            tuple(visual.ln_post(state) for state in states) if final_norm else None,
            last @ visual.proj if project else None)
    if final_norm:
        raise ValueError(f"a {type(visual).__name__} image tower has no final LayerNorm: final_norm is for ViTs")
    if isinstance(visual, ModifiedResNet):
        maps = visual.forward_intermediates(pixels)
        embeds = visual.attnpool(maps[-1])
        projected = visual.attnpool.forward_dense(maps[-1]).flatten(1, 2) if project else None
    elif isinstance(visual, ConvNet):
        maps = visual.forward_intermediates(pixels)
        embeds = visual.proj(maps[-1].mean(dim=(2, 3)))
        projected = visual.proj(maps[-1].permute(0, 2, 3, 1)).flatten(1, 2) if project else None
    else:
        raise ValueError(f"no hidden states for an image tower of type {type(visual).__name__}")
    return ImageFeatures(tuple(_tokens(m) for m in maps), tuple((m.shape[-2], m.shape[-1]) for m in maps), False,
                         embeds, None, projected)
