"""CLIPScore and RefCLIPScore: how generated images and captions are judged with a CLIP.

Two published conventions scale the same clipped cosine, and each is named for its source:

* Hessel et al. (2021), "CLIPScore: A Reference-free Evaluation Metric for Image Captioning":
  ``CLIP-S(c, v) = w * max(cos(c, v), 0)`` with ``w = 2.5`` (`hessel_clip_score`);
* torchmetrics' ``CLIPScore``: ``max(100 * cos(c, v), 0)`` (`torchmetrics_clip_score`). torchmetrics
  clamps the *mean* over the pairs it is given, so for one pair, or pairs whose cosines are all
  positive, its value is the mean of this function's.

RefCLIPScore (Hessel et al.) is the harmonic mean of CLIP-S and ``max(max_r cos(c, r), 0)`` over the
reference captions ``r`` of the image (`ref_clip_score`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.folder import IMAGE_SUFFIXES, FolderSource
from ..data.samples import DEFAULT_MAX_PIXELS
from ..images import ImageLoadError, ImageTransform, load_image
from ..models import CLIP

HESSEL_WEIGHT = 2.5
TORCHMETRICS_WEIGHT = 100.0
HESSEL_PREFIX = "A photo depicts"  # the caption prefix of Hessel et al.'s experiments (photos; not icons)


def clip_score(cosine: torch.Tensor, weight: float = HESSEL_WEIGHT) -> torch.Tensor:
    """``weight * max(cosine, 0)`` elementwise, any shape."""
    return weight * cosine.clamp(min=0)


def hessel_clip_score(cosine: torch.Tensor) -> torch.Tensor:
    """Hessel et al.'s CLIP-S: ``2.5 * max(cos, 0)``, in [0, 2.5]."""
    return clip_score(cosine, HESSEL_WEIGHT)


def torchmetrics_clip_score(cosine: torch.Tensor) -> torch.Tensor:
    """torchmetrics' per-pair CLIPScore: ``100 * max(cos, 0)``, in [0, 100]."""
    return clip_score(cosine, TORCHMETRICS_WEIGHT)


def ref_clip_score(image_cosine: torch.Tensor, reference_cosine: torch.Tensor,
                   weight: float = HESSEL_WEIGHT) -> torch.Tensor:
    """RefCLIPScore: the harmonic mean of ``clip_score(image_cosine, weight)`` and the best reference
    similarity ``max(max_r reference_cosine, 0)``; 0 where either is 0.

    image_cosine: [...] cosine of each candidate caption with its image; reference_cosine: [..., n_refs]
    cosine of each candidate with each of its image's reference captions (n_refs >= 1).
    """
    if reference_cosine.shape[-1] == 0:
        raise ValueError("RefCLIPScore needs at least one reference caption")
    with_image = clip_score(image_cosine, weight)
    with_references = reference_cosine.max(dim=-1).values.clamp(min=0)
    total = with_image + with_references
    return torch.where(total > 0, 2 * with_image * with_references / total.clamp(min=1e-12), torch.zeros_like(total))


def check_prompts(prompts: str | Sequence[str], what: str = "prompt") -> list[str]:
    """The prompts as a list; an empty list or a blank prompt is a ValueError naming it."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError(f"give at least one {what}")
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str) or not prompt.strip():
            raise ValueError(f"{what} {number} is empty: every {what} needs some text")
    return prompts


def list_candidates(sources: Sequence[str | os.PathLike]) -> list[str]:
    """Image files from files and folders (searched recursively, hidden entries passed over), in
    order and without repeats. A source that does not exist is a FileNotFoundError."""
    found: dict[str, None] = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            for entry in FolderSource(path).entries:
                if entry.suffix.lower() in IMAGE_SUFFIXES:
                    found[str(path / entry)] = None
        elif path.exists() or path.is_symlink():
            found[str(path)] = None
        else:
            raise FileNotFoundError(f"{source} does not exist")
    return list(found)


@dataclass
class EncodedImages:
    """The readable images of a list of paths as unit features, and the ones that could not be read."""

    paths: list[str]
    features: torch.Tensor  # [len(paths), embed_dim], unit norm
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, why)


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.no_grad()
def encode_image_files(model: CLIP, preprocess: Callable[[Image.Image], torch.Tensor] | ImageTransform,
                       paths: Sequence[str | os.PathLike], batch_size: int = 64, progress: bool = False,
                       description: str = "encoding") -> EncodedImages:
    """Unit image features of the files, `batch_size` at a time, with a progress bar when asked. A file
    that cannot be read or preprocessed is listed in `skipped` with the reason, never fatal."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = model.logit_scale.device
    kept: list[str] = []
    chunks: list[torch.Tensor] = []
    skipped: list[tuple[str, str]] = []
    paths = [os.fspath(path) for path in paths]
    with tqdm(total=len(paths), unit="img", desc=description, disable=not progress) as bar:
        for batch in _batches(paths, batch_size):
            pixels = []
            for path in batch:
                try:
                    pixels.append(preprocess(load_image(path, max_pixels=DEFAULT_MAX_PIXELS)))
                    kept.append(path)
                except ImageLoadError as error:
                    skipped.append((path, str(error)))
                except Exception as error:  # noqa: BLE001 - one odd file never ends a long run
                    skipped.append((path, f"cannot preprocess image {path!r}: {error}"))
            if pixels:
                chunks.append(model.encode_image(torch.stack(pixels).to(device), normalize=True).float().cpu())
            bar.update(len(batch))
    features = torch.cat(chunks) if chunks else torch.zeros(0, model.config.embed_dim)
    return EncodedImages(kept, features, skipped)


@torch.no_grad()
def encode_prompts(model: CLIP, prompts: Sequence[str], prefix: str = "") -> torch.Tensor:
    """[n_prompts, embed_dim] unit text features; `prefix` (e.g. `HESSEL_PREFIX`) is put before each
    prompt with a space. Texts longer than the model's context are truncated."""
    prompts = check_prompts(prompts)
    texts = [f"{prefix.strip()} {prompt.strip()}" if prefix.strip() else prompt.strip() for prompt in prompts]
    tokens = model.tokenize(texts, truncate=True).to(model.logit_scale.device)
    return model.encode_text(tokens, normalize=True).float().cpu()


@dataclass
class ScoreTable:
    """Every image against every prompt. Rows are images, columns prompts."""

    images: list[str]
    prompts: list[str]
    cosine: torch.Tensor  # [n_images, n_prompts]
    references: list[list[str]] | None = None  # per image, when RefCLIPScore was asked for
    reference_cosine: list[torch.Tensor] | None = None  # per image: [n_prompts, n_refs]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def hessel(self) -> torch.Tensor:
        """[n_images, n_prompts] CLIP-S, 2.5 * max(cos, 0)."""
        return hessel_clip_score(self.cosine)

    @property
    def torchmetrics(self) -> torch.Tensor:
        """[n_images, n_prompts] torchmetrics' convention, 100 * max(cos, 0)."""
        return torchmetrics_clip_score(self.cosine)

    @property
    def ref_clip_score(self) -> torch.Tensor | None:
        """[n_images, n_prompts] RefCLIPScore (Hessel's weight), or None without references."""
        if self.reference_cosine is None:
            return None
        return torch.stack([ref_clip_score(self.cosine[row], self.reference_cosine[row])
                            for row in range(len(self.images))])

    def rows(self) -> list[dict]:
        """One JSON-ready dict per image: its path and, per prompt, each score."""
        refs = self.ref_clip_score
        rows = []
        for row, image in enumerate(self.images):
            scores = []
            for column, prompt in enumerate(self.prompts):
                entry = {"prompt": prompt, "cosine": float(self.cosine[row, column]),
                         "clip_score_hessel": float(self.hessel[row, column]),
                         "clip_score_torchmetrics": float(self.torchmetrics[row, column])}
                if refs is not None:
                    entry["ref_clip_score"] = float(refs[row, column])
                scores.append(entry)
            rows.append({"image": image, "scores": scores})
        return rows


def score_images(model: CLIP, preprocess: Callable[[Image.Image], torch.Tensor] | ImageTransform,
                 images: Sequence[str | os.PathLike], prompts: Sequence[str],
                 references: Mapping[str, Sequence[str]] | Sequence[str] | None = None, prefix: str = "",
                 batch_size: int = 64, progress: bool = False) -> ScoreTable:
    """Score image files against prompts. `references` (for RefCLIPScore) is either one list of
    captions for every image or a mapping from an image's path (as given, or its file name) to its
    own; the prefix is put before prompts and references alike. Unreadable files are skipped and
    listed; no readable image at all is a ValueError."""
    prompts = check_prompts(prompts)
    if not images:
        raise ValueError("give at least one image to score")
    encoded = encode_image_files(model, preprocess, images, batch_size, progress, "scoring")
    if not encoded.paths:
        raise ValueError(f"none of the {len(images)} images could be read: "
                         + "; ".join(reason for _, reason in encoded.skipped))
    text = encode_prompts(model, prompts, prefix)
    table = ScoreTable(encoded.paths, prompts, encoded.features @ text.t(), skipped=encoded.skipped)
    if references is not None:
        per_image = [_references_of(references, path) for path in encoded.paths]
        table.references = per_image
        table.reference_cosine = []
        for captions in per_image:
            table.reference_cosine.append(text @ encode_prompts(model, captions, prefix).t())
    return table


def _references_of(references: Mapping[str, Sequence[str]] | Sequence[str], path: str) -> list[str]:
    if isinstance(references, Mapping):
        captions = references.get(path, references.get(Path(path).name))
        if captions is None:
            raise ValueError(f"the references name no captions for {path}")
    else:
        captions = references
    return check_prompts(captions, "reference caption")


def load_references(path: str | os.PathLike) -> dict[str, list[str]] | list[str]:
    """Reference captions from a file: JSON, either a list of captions for every image or an object
    mapping an image path or file name to its list (or to one caption); or text, one caption a line,
    for every image."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
        if isinstance(data, list):
            return check_prompts(data, "reference caption")
        if isinstance(data, dict):
            return {str(key): check_prompts([value] if isinstance(value, str) else list(value), "reference caption")
                    for key, value in data.items()}
        raise ValueError(f"{path}: expected a list of captions or an object of image -> captions")
    return check_prompts([line.strip() for line in text.splitlines() if line.strip()], "reference caption")
