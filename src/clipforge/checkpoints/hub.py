"""Models by name: Hugging Face Hub repos (`hf-hub:ORG/NAME[@REVISION]`) and open_clip's pretrained
tags (`ViT-B-32:laion2b_s34b_b79k`), read through `huggingface_hub`'s cache.

A Hub repo is open_clip's (`open_clip_config.json` + `open_clip_model.safetensors` or
`open_clip_pytorch_model.bin`) or transformers' (`config.json` + `model.safetensors` or
`pytorch_model.bin`, `preprocessor_config.json`); its config gives the activation and the
preprocessing. An open_clip tag's source, activation and preprocessing come from
`openclip_pretrained.json`, and its architecture from the weights' shapes. `HF_HUB_OFFLINE=1` (or
`CLIPFORGE_OFFLINE=1`) reads the cache only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from ..core.download import OFFLINE_ENV, DownloadError, fetch, sha256_of
from ..core.extras import require
from ..images import CLIP_MEAN, CLIP_STD, ImageTransform
from ..models import CLIP, CLIPConfig, TextConfig, VisionConfig
from ..models.factory import canonical_name
from .huggingface import read_huggingface_folder
from .state_dict import CheckpointError, infer_config, model_from_state_dict, read_weights

HUB_PREFIX = "hf-hub:"
QUICKGELU_SUFFIX = "-quickgelu"
OPENCLIP_CONFIG = "open_clip_config.json"
OPENCLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_OPTIONAL = ("preprocessor_config.json", "vocab.json", "merges.txt")
# Hugging Face's `resample` codes (PIL's) by the names ImageTransform takes.
HF_RESAMPLE = {3: "bicubic", 2: "bilinear", 0: "nearest"}
# open_clip model_cfg keys clipforge builds; any other key must be unset (null, false, empty).
OPENCLIP_KEYS = {"model": {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu", "init_logit_scale", "init_logit_bias"},
                 "vision": {"image_size", "layers", "width", "patch_size", "head_width", "mlp_ratio"},
                 "text": {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio"}}


@dataclass(frozen=True)
class OpenClipTag:
    """One published (architecture, tag) pair of open_clip, as `openclip_pretrained.json` gives it."""

    architecture: str  # as open_clip lists it, "-quickgelu" variants included
    tag: str
    activation: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    resize_mode: str
    hf_hub: str | None = None  # a Hub repo holding open_clip's weight files
    url: str | None = None
    sha256: str | None = None  # published in full (OpenAI's releases)
    sha256_prefix: str | None = None  # the part open_clip's release file names carry

    @property
    def name(self) -> str:
        """The spelling `load` and the CLI accept: "ViT-B-32:laion2b_s34b_b79k"."""
        return f"{self.architecture}:{self.tag}"


@cache
def openclip_registry() -> dict[tuple[str, str], OpenClipTag]:
    """Every (architecture, tag) pair of `openclip_pretrained.json`; quick_gelu tags also appear
    under "ARCH-quickgelu", as open_clip lists them."""
    document = json.loads((resources.files(__package__) / "openclip_pretrained.json").read_text())
    registry = {}
    for architecture, tags in document["models"].items():
        for tag, entry in tags.items():
            entry = dict(entry)
            preprocess = document["preprocess"][entry.pop("preprocess")]
            fields = {**entry, "mean": tuple(preprocess["mean"]), "std": tuple(preprocess["std"]),
                      "interpolation": preprocess["interpolation"], "resize_mode": preprocess["resize_mode"]}
            registry[architecture, tag] = OpenClipTag(architecture=architecture, tag=tag, **fields)
            if entry["activation"] == "quick_gelu":
                variant = architecture + QUICKGELU_SUFFIX
                registry[variant, tag] = OpenClipTag(architecture=variant, tag=tag, **fields)
    return registry


def list_openclip_pretrained() -> list[tuple[str, str]]:
    """open_clip's published (architecture, tag) pairs whose architecture clipforge builds."""
    return sorted(openclip_registry())


def find_openclip_tag(architecture: str, tag: str) -> OpenClipTag:
    """The entry of a pair; names are read as open_clip reads them ("ViT-B/32" = "ViT-B-32", tags
    case- and dash-insensitive). An unknown pair raises CheckpointError listing the known tags."""
    registry = openclip_registry()
    key = (canonical_name(architecture), tag.lower().replace("-", "_"))
    if key in registry:
        return registry[key]
    tags = sorted(known for arch, known in registry if arch == key[0])
    if tags:
        raise CheckpointError(f"{key[0]} has no open_clip pretrained tag {tag!r}; its tags are {', '.join(tags)}")
    architectures = sorted({arch for arch, _ in registry})
    raise CheckpointError(f"{architecture!r} has no open_clip pretrained tags in clipforge; the architectures "
                          f"with tags are {', '.join(architectures)}")


def split_hub_name(name: str) -> tuple[str, str | None] | None:
    """"hf-hub:ORG/NAME[@REVISION]" -> (repo id, revision or None); None for any other name."""
    if not name.startswith(HUB_PREFIX):
        return None
    repo_id, _, revision = name[len(HUB_PREFIX):].partition("@")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or (_ and not revision):
        raise ValueError(f"{name!r} is not a Hub name: write hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
    return repo_id, revision or None


def split_tagged_name(name: str) -> tuple[str, str] | None:
    """"ARCH:TAG" -> (architecture, tag) when ARCH has open_clip tags; None for any other name."""
    architecture, colon, tag = name.rpartition(":")
    if not colon or not tag or canonical_name(architecture) not in {arch for arch, _ in openclip_registry()}:
        return None
    return architecture, tag


def _hub_download(repo_id: str, filename: str, revision: str | None) -> Path | None:
    """The cached path of one file of a repo (downloaded first unless offline); None if the repo has no
    such file, or, offline, if the cache holds none."""
    hub = require("huggingface_hub", "hub", "loading from the Hugging Face Hub")
    errors = require("huggingface_hub.errors", "hub", "loading from the Hugging Face Hub")
    offline = os.environ.get(OFFLINE_ENV, "") not in ("", "0")
    try:
        return Path(hub.hf_hub_download(repo_id, filename, revision=revision, local_files_only=offline))
    except errors.EntryNotFoundError:  # also what an offline lookup of an uncached file raises
        return None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"the Hub repo {repo_id} has no revision {revision!r}") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"no Hub repo {repo_id} (or it is private or gated: log in with `hf auth login`)") from None
    except errors.HfHubHTTPError as error:
        raise DownloadError(f"could not fetch {filename} of {repo_id} from the Hub: {error}") from error


def _first_file(repo_id: str, filenames: tuple[str, ...], revision: str | None) -> Path | None:
    for filename in filenames:
        if (path := _hub_download(repo_id, filename, revision)) is not None:
            return path
    return None


def _not_found(repo_id: str, revision: str | None, wanted: str) -> DownloadError:
    where = f"{repo_id}@{revision}" if revision else repo_id
    return DownloadError(f"hf-hub:{where} has no {wanted}, or it is not in the Hugging Face cache and the Hub "
                         f"cannot be reached (HF_HUB_OFFLINE or {OFFLINE_ENV} set, or no network): run once "
                         f"online, or `hf download {repo_id}" + (f" --revision {revision}`" if revision else "`"))


def load_from_hub(repo_id: str, revision: str | None = None,
                  activation: str | None = None) -> tuple[CLIP, ImageTransform]:
    """(model, preprocess) from an open_clip or transformers CLIP repo on the Hub, at `revision`
    (a branch, tag or commit; the default branch when None). `activation` overrides the repo's."""
    if (config_path := _hub_download(repo_id, OPENCLIP_CONFIG, revision)) is not None:
        document = json.loads(config_path.read_text())
        config = config_from_openclip(document.get("model_cfg", document), activation)
        weights = _first_file(repo_id, OPENCLIP_WEIGHTS, revision)
        if weights is None:
            raise _not_found(repo_id, revision, " or ".join(OPENCLIP_WEIGHTS))
        model = model_from_state_dict(config, read_weights(weights)[0])
        return model, transform_from_openclip(document.get("preprocess_cfg", {}), model.image_size)
    if (config_path := _hub_download(repo_id, HF_CONFIG, revision)) is None:
        raise _not_found(repo_id, revision, f"{OPENCLIP_CONFIG} or {HF_CONFIG}")
    if _first_file(repo_id, HF_WEIGHTS, revision) is None:
        raise _not_found(repo_id, revision, " or ".join(HF_WEIGHTS))
    for filename in HF_OPTIONAL:
        _hub_download(repo_id, filename, revision)
    folder = config_path.parent  # huggingface_hub keeps a revision's files in one snapshot folder
    if json.loads(config_path.read_text()).get("model_type") != "clip":
        raise CheckpointError(f"hf-hub:{repo_id} is not a CLIP repo: its config.json has no model_type \"clip\"")
    config, state, tokenizer = read_huggingface_folder(folder)
    if activation is not None:
        config = dataclasses.replace(config, activation=activation)
    model = model_from_state_dict(config, state, tokenizer)
    processor = folder / "preprocessor_config.json"
    settings = json.loads(processor.read_text()) if processor.is_file() else {}
    return model, transform_from_huggingface(settings, model.image_size)


def load_openclip_tag(architecture: str, tag: str, revision: str | None = None) -> tuple[CLIP, ImageTransform]:
    """(model, preprocess) for an open_clip pair: the weights from the tag's source (a URL whose
    full SHA-256 is published, else its Hub repo), the activation and preprocessing from the table."""
    entry = find_openclip_tag(architecture, tag)
    if entry.url and (entry.sha256 or not entry.hf_hub):
        if revision is not None:
            raise ValueError(f"{entry.name} is a file at {entry.url}, which has no revisions")
        path = fetch(entry.url, entry.sha256, filename=entry.url.rsplit("/", 1)[-1])
        if entry.sha256_prefix and not sha256_of(path).startswith(entry.sha256_prefix):
            path.unlink()
            raise DownloadError(f"{entry.url} does not have the SHA-256 its name publishes ({entry.sha256_prefix}...): "
                                "the download was removed; fetch it again")
    else:
        path = _first_file(entry.hf_hub, OPENCLIP_WEIGHTS, revision)
        if path is None:
            raise _not_found(entry.hf_hub, revision, " or ".join(OPENCLIP_WEIGHTS))
    state, _ = read_weights(path)
    model = model_from_state_dict(infer_config(state, entry.activation), state)
    return model, ImageTransform(model.image_size, entry.mean, entry.std, interpolation=entry.interpolation,
                                 resize_mode=entry.resize_mode)


def config_from_openclip(model_cfg: dict[str, Any], activation: str | None = None) -> CLIPConfig:
    """A native config from open_clip's `model_cfg`; the activation is GELU unless `quick_gelu` is set.
    Settings clipforge does not build (timm or HF towers, other pooling, ...) raise CheckpointError."""
    vision, text = model_cfg.get("vision_cfg") or {}, model_cfg.get("text_cfg") or {}
    for part, section in (("model", model_cfg), ("vision", vision), ("text", text)):
        unsupported = sorted(key for key, value in section.items()
                             if key not in OPENCLIP_KEYS[part] and value not in (None, False, "", 0, {}, []))
        if unsupported:
            raise CheckpointError(f"this open_clip model sets {part} options clipforge does not build: "
                                  + ", ".join(f"{key}={section[key]!r}" for key in unsupported))
    width = vision.get("width", 768)
    layers = vision.get("layers", 12)
    heads = None
    if "head_width" in vision:  # open_clip's ResNet attention pool works on 32x the stem width
        heads = width * (32 if isinstance(layers, list) else 1) // vision["head_width"]
    defaults = {"init_logit_scale": model_cfg["init_logit_scale"]} if "init_logit_scale" in model_cfg else {}
    return CLIPConfig(
        embed_dim=model_cfg["embed_dim"],
        activation=activation or ("quick_gelu" if model_cfg.get("quick_gelu") else "gelu"),
        vision=VisionConfig(image_size=_square(vision.get("image_size", 224)), width=width, layers=layers,
                            patch_size=_square(vision["patch_size"]) if vision.get("patch_size") else None,
                            heads=heads, mlp_ratio=vision.get("mlp_ratio", 4.0)),
        text=TextConfig(context_length=text.get("context_length", 77), vocab_size=text.get("vocab_size", 49408),
                        width=text.get("width", 512), layers=text.get("layers", 12), heads=text.get("heads", 8),
                        mlp_ratio=text.get("mlp_ratio", 4.0)),
        init_logit_bias=model_cfg.get("init_logit_bias"), **defaults)


def _square(size: int | list[int]) -> int:
    if isinstance(size, (list, tuple)):
        if len(set(size)) != 1:
            raise CheckpointError(f"clipforge builds square images and patches only, not {list(size)}")
        return size[0]
    return size


def transform_from_openclip(preprocess_cfg: dict[str, Any], image_size: int) -> ImageTransform:
    """open_clip's `preprocess_cfg` (mean, std, interpolation, resize_mode; its defaults are OpenAI's)."""
    size = preprocess_cfg.get("size", image_size)
    if _square(size) != image_size:
        raise CheckpointError(f"the repo preprocesses to {size} pixels but its model reads {image_size}")
    mode = preprocess_cfg.get("resize_mode", "shortest")
    if mode not in ("shortest", "squash"):
        raise CheckpointError(f"open_clip's resize_mode {mode!r} (padding) is not supported; clipforge has "
                              "'shortest' (resize and centre crop) and 'squash'")
    return ImageTransform(image_size, preprocess_cfg.get("mean", CLIP_MEAN), preprocess_cfg.get("std", CLIP_STD),
                          interpolation=preprocess_cfg.get("interpolation", "bicubic"), resize_mode=mode)


def transform_from_huggingface(processor: dict[str, Any], image_size: int) -> ImageTransform:
    """A `preprocessor_config.json` of CLIPImageProcessor: resize the short side then crop the centre
    (or resize both sides with no crop), `resample` and mean/std; an empty one means CLIP's defaults."""
    resample = processor.get("resample", 3)
    if resample not in HF_RESAMPLE:
        raise CheckpointError(f"preprocessor_config.json resamples with PIL filter {resample}; clipforge has "
                              + ", ".join(f"{code} ({name})" for code, name in HF_RESAMPLE.items()))
    size = processor.get("size", {"shortest_edge": image_size})
    size = size if isinstance(size, dict) else {"shortest_edge": size}
    crop = processor.get("crop_size", image_size)
    crop = _square([crop["height"], crop["width"]]) if isinstance(crop, dict) else crop
    if processor.get("do_center_crop", True) and "shortest_edge" in size:
        mode, resized, final = "shortest", size["shortest_edge"], crop
    elif "height" in size and not processor.get("do_center_crop", True):
        mode, resized = "squash", _square([size["height"], size["width"]])
        final = resized
    else:
        raise CheckpointError(f"preprocessor_config.json's size {size} with do_center_crop="
                              f"{processor.get('do_center_crop', True)} is not a resize clipforge has")
    if resized != final or final != image_size:
        raise CheckpointError(f"preprocessor_config.json resizes to {resized} and crops {final} pixels, but the model "
                              f"reads {image_size}: clipforge resizes straight to the model's size")
    return ImageTransform(image_size, processor.get("image_mean", CLIP_MEAN), processor.get("image_std", CLIP_STD),
                          interpolation=HF_RESAMPLE[resample], resize_mode=mode)

