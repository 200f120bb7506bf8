"""Hugging Face `transformers` CLIP folders <-> native models, by key mapping.

HF splits the packed q/k/v projection into three linears and stores projections as
[out, in] linear weights; the native layout packs q/k/v and stores projections as [in, out].
HF CLIP is ViT-only, so ResNet models cannot be exported.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from ..core.atomic import write_atomically
from ..images import CLIP_MEAN, CLIP_STD
from ..models import CLIP, CLIPConfig, TextConfig, VisionConfig
from ..text import Tokenizer
from .keys import to_file_keys
from .state_dict import CheckpointError

# (HF name inside a layer, native name inside a block), identical for both towers.
_LAYER_KEYS = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
               ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]
# (HF key, native key) outside the layers; projections are transposed.
_TOP_KEYS = [("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
             ("text_model.embeddings.position_embedding.weight", "positional_embedding"),
             ("text_model.final_layer_norm.weight", "ln_final.weight"),
             ("text_model.final_layer_norm.bias", "ln_final.bias"),
             ("vision_model.embeddings.class_embedding", "visual.class_embedding"),
             ("vision_model.embeddings.patch_embedding.weight", "visual.conv1.weight"),
             ("vision_model.embeddings.position_embedding.weight", "visual.positional_embedding"),
             ("vision_model.pre_layrnorm.weight", "visual.ln_pre.weight"),
             ("vision_model.pre_layrnorm.bias", "visual.ln_pre.bias"),
             ("vision_model.post_layernorm.weight", "visual.ln_post.weight"),
             ("vision_model.post_layernorm.bias", "visual.ln_post.bias"),
             ("logit_scale", "logit_scale")]
_PROJECTIONS = [("text_projection.weight", "text_projection"), ("visual_projection.weight", "visual.proj")]
_TOWERS = [("text_model.encoder.layers.", "transformer.resblocks."),
           ("vision_model.encoder.layers.", "visual.transformer.resblocks.")]
_LAYER_INDEX = re.compile(r"^(\d+)\.")


def is_huggingface_state_dict(state: dict[str, Any]) -> bool:
    return any(key.startswith(("text_model.", "vision_model.")) for key in state)


def state_dict_from_huggingface(hf: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF CLIPModel keys -> native keys. Buffers such as `position_ids` are dropped."""
    native = {ours: hf[theirs] for theirs, ours in _TOP_KEYS if theirs in hf}
    native.update({ours: hf[theirs].t() for theirs, ours in _PROJECTIONS if theirs in hf})
    for hf_prefix, prefix in _TOWERS:
        for layer in sorted({int(m.group(1)) for k in hf if k.startswith(hf_prefix)
                             and (m := _LAYER_INDEX.match(k[len(hf_prefix):]))}):
            src, dst = f"{hf_prefix}{layer}.", f"{prefix}{layer}."
            for suffix in ("weight", "bias"):
                native[f"{dst}attn.in_proj_{suffix}"] = torch.cat(
                    [hf[f"{src}self_attn.{p}_proj.{suffix}"] for p in "qkv"])
                for theirs, ours in _LAYER_KEYS:
                    native[f"{dst}{ours}.{suffix}"] = hf[f"{src}{theirs}.{suffix}"]
    return native


def state_dict_to_huggingface(native: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Native keys -> HF CLIPModel keys (the inverse of `state_dict_from_huggingface`)."""
    if "visual.proj" not in native:
        raise CheckpointError("only ViT models can be exported to Hugging Face: its CLIPModel has no ResNet tower")
    hf = {theirs: native[ours] for theirs, ours in _TOP_KEYS}
    hf.update({theirs: native[ours].t().contiguous() for theirs, ours in _PROJECTIONS})
    for hf_prefix, prefix in _TOWERS:
        for layer in sorted({int(m.group(1)) for k in native if k.startswith(prefix)
                             and (m := _LAYER_INDEX.match(k[len(prefix):]))}):
            src, dst = f"{prefix}{layer}.", f"{hf_prefix}{layer}."
            for suffix in ("weight", "bias"):
                for name, part in zip("qkv", native[f"{src}attn.in_proj_{suffix}"].chunk(3)):
                    hf[f"{dst}self_attn.{name}_proj.{suffix}"] = part.contiguous()
                for theirs, ours in _LAYER_KEYS:
                    hf[f"{dst}{theirs}.{suffix}"] = native[f"{src}{ours}.{suffix}"]
    return hf


def config_from_huggingface(hf: dict[str, Any]) -> CLIPConfig:
    """A native config from a HF `config.json` of `model_type` "clip"."""
    text, vision = hf.get("text_config") or {}, hf.get("vision_config") or {}
    defaults = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}  # HF CLIPConfig's own defaults
    text, vision = {**defaults, **text}, {**defaults, **vision}
    if text["hidden_act"] != vision["hidden_act"]:
        raise CheckpointError(f"towers use different activations ({text['hidden_act']} / {vision['hidden_act']}); clipforge uses one")
    if text["layer_norm_eps"] != 1e-5 or vision["layer_norm_eps"] != 1e-5:
        raise CheckpointError("only layer_norm_eps 1e-5 is supported, as in every published CLIP")
    vocab_size = text.get("vocab_size", 49408)
    if text.get("eos_token_id", 2) not in (2, vocab_size - 1):
        raise CheckpointError(f"eos_token_id {text['eos_token_id']} is not the last id of the vocabulary; "
                              "clipforge pools text at the highest id, like OpenAI's CLIP")
    text_width, vision_width = text.get("hidden_size", 512), vision.get("hidden_size", 768)
    return CLIPConfig(
        embed_dim=hf.get("projection_dim", 512),
        activation=text["hidden_act"],
        vision=VisionConfig(image_size=vision.get("image_size", 224), patch_size=vision.get("patch_size", 32),
                            width=vision_width, layers=vision.get("num_hidden_layers", 12),
                            heads=vision.get("num_attention_heads", 12),
                            mlp_ratio=vision.get("intermediate_size", 3072) / vision_width),
        text=TextConfig(context_length=text.get("max_position_embeddings", 77), vocab_size=vocab_size,
                        width=text_width, layers=text.get("num_hidden_layers", 12),
                        heads=text.get("num_attention_heads", 8),
                        mlp_ratio=text.get("intermediate_size", 2048) / text_width),
        init_logit_scale=hf.get("logit_scale_init_value", 2.6592),
    )


def config_to_huggingface(config: CLIPConfig) -> dict[str, Any]:
    text, vision = config.text, config.vision
    if vision.kind != "ViT":
        raise CheckpointError(f"only ViT models can be exported to Hugging Face: its CLIPModel has no {vision.kind} tower")
    if text.kind != "transformer":
        raise CheckpointError(f"Hugging Face's CLIPModel has no {text.kind} text tower: this model cannot be exported")
    if config.init_logit_bias is not None:
        raise CheckpointError("a model with a logit bias (sigmoid loss) has no Hugging Face CLIPModel equivalent")
    return {
        "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": config.embed_dim,
        "logit_scale_init_value": config.init_logit_scale,
        "text_config": {"model_type": "clip_text_model", "vocab_size": text.vocab_size, "hidden_size": text.width,
                        "intermediate_size": int(text.width * text.mlp_ratio), "num_hidden_layers": text.layers,
                        "num_attention_heads": text.num_heads, "max_position_embeddings": text.context_length,
                        "hidden_act": config.activation, "layer_norm_eps": 1e-5, "projection_dim": config.embed_dim,
                        "bos_token_id": text.vocab_size - 2, "eos_token_id": text.vocab_size - 1, "pad_token_id": 0},
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": vision.width,
                          "intermediate_size": int(vision.width * vision.mlp_ratio), "num_hidden_layers": vision.layers,
                          "num_attention_heads": vision.num_heads, "image_size": vision.image_size,
                          "patch_size": vision.patch_size, "num_channels": 3, "hidden_act": config.activation,
                          "layer_norm_eps": 1e-5, "projection_dim": config.embed_dim},
    }


def read_huggingface_folder(folder: str | os.PathLike) -> tuple[CLIPConfig, dict[str, torch.Tensor], Tokenizer | None]:
    """config.json + model.safetensors (or pytorch_model.bin, read with weights_only), and the
    tokenizer's vocab.json + merges.txt when the folder has them (the model then carries them)."""
    folder = Path(folder)
    config = config_from_huggingface(json.loads((folder / "config.json").read_text()))
    if (folder / "model.safetensors").is_file():
        hf = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        hf = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise CheckpointError(f"{folder} has a Hugging Face config.json but no model.safetensors or pytorch_model.bin")
    tokenizer = None
    if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
        tokenizer = Tokenizer.from_files(folder)
        config.text.tokenizer = "bundled"
    return config, state_dict_from_huggingface(hf), tokenizer


def export_huggingface(model: CLIP, folder: str | os.PathLike) -> Path:
    """Write a folder that `transformers.CLIPModel.from_pretrained` and `CLIPTokenizer` read: weights,
    config, the tokenizer's vocab.json + merges.txt and the image processor's settings. A model
    Hugging Face has no class for is refused before anything is written."""
    hf_config = config_to_huggingface(model.config)
    tokenizer = model.tokenizer
    if tokenizer.vocab_size != model.config.text.vocab_size:
        raise CheckpointError(f"the tokenizer has {tokenizer.vocab_size} tokens and the text tower {model.config.text.vocab_size}"
                              " rows: Hugging Face reads the end token as the table's last id, so the two must be equal")
    hf_state = state_dict_to_huggingface(to_file_keys({k: v.detach().cpu().contiguous()
                                                       for k, v in model.state_dict().items()}))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    size = model.config.vision.image_size
    processor = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
                 "resample": 3, "do_center_crop": True, "crop_size": {"height": size, "width": size},
                 "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True,
                 "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}
    tokenizer.save(folder)
    write_atomically(folder / "preprocessor_config.json",
                     lambda path: path.write_text(json.dumps(processor, indent=2) + "\n"))
    write_atomically(folder / "model.safetensors",
                     lambda path: save_file(hf_state, str(path), metadata={"format": "pt"}))
    write_atomically(folder / "config.json", lambda path: path.write_text(json.dumps(hf_config, indent=2) + "\n"))
    return folder
