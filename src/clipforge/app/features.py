"""The web app's model side: one CLIP encoding images and prompts one request at a time, with
bounded memories of recent features, so that a page redrawing its matrix re-encodes nothing."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

import torch
from PIL import Image

from clipforge.images import ImageTransform
from clipforge.models import CLIP

Value = TypeVar("Value")


class BoundedCache(Generic[Value]):
    """A thread-safe least-recently-used map that holds at most `capacity` entries."""

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"a cache needs room for at least one entry, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[Hashable, Value] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Value | None:
        with self._lock:
            if key not in self._entries:
                return None
            self._entries.move_to_end(key)
            return self._entries[key]

    def put(self, key: Hashable, value: Value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)

    def get_or_create(self, key: Hashable, create: Callable[[], Value]) -> Value:
        """The cached value, or `create()` stored; two racing callers may both create (harmless)."""
        value = self.get(key)
        if value is None:
            value = create()
            self.put(key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)


class UnknownImage(KeyError):
    """An image id the server never saw or has since forgotten: the client should upload it again."""


class FeatureEncoder:
    """Every model call goes through `run`, one at a time: concurrent forwards on a few CPU cores only
    fight over them, and a lock keeps latency predictable under load."""

    def __init__(self, model: CLIP, preprocess: ImageTransform, image_capacity: int = 1024, prompt_capacity: int = 4096):
        self.model, self.preprocess = model.eval(), preprocess
        self.device = model.logit_scale.device
        self._lock = threading.Lock()
        self._images: BoundedCache[torch.Tensor] = BoundedCache(image_capacity)
        self._pinned_images: dict[str, torch.Tensor] = {}
        self._prompts: BoundedCache[torch.Tensor] = BoundedCache(prompt_capacity)

    def run(self, call: Callable[..., Value], *args, **kwargs) -> Value:
        with self._lock, torch.no_grad():
            return call(*args, **kwargs)

    def logit_scale(self) -> float:
        """exp(logit_scale): the inverse softmax temperature the model was trained with."""
        return float(self.model.logit_scale_exp().detach())

    def add_image(self, image_id: str, image: Image.Image, pinned: bool = False) -> None:
        """Encode `image` and remember its unit feature [dim] under `image_id`; pinned ones are never
        forgotten (the demo set)."""
        pixels = self.preprocess(image).unsqueeze(0).to(self.device)
        feature = self.run(self.model.encode_image, pixels, normalize=True)[0].float().cpu()
        if pinned:
            self._pinned_images[image_id] = feature
        else:
            self._images.put(image_id, feature)

    def has_image(self, image_id: str) -> bool:
        return image_id in self._pinned_images or self._images.get(image_id) is not None

    def image_features(self, image_ids: Sequence[str]) -> torch.Tensor:
        """[n_images, dim] unit features; raises `UnknownImage` naming the first id not held."""
        features = []
        for image_id in image_ids:
            feature = self._pinned_images.get(image_id)
            if feature is None:
                feature = self._images.get(image_id)
            if feature is None:
                raise UnknownImage(image_id)
            features.append(feature)
        return torch.stack(features)

    def prompt_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """[n_prompts, dim] unit features; only prompts not seen recently go through the text tower."""
        features: dict[str, torch.Tensor] = {}
        for prompt in dict.fromkeys(prompts):
            cached = self._prompts.get(prompt)
            if cached is not None:
                features[prompt] = cached
        missing = [prompt for prompt in dict.fromkeys(prompts) if prompt not in features]
        if missing:
            tokens = self.model.tokenize(missing, truncate=True)
            encoded = self.run(self.model.encode_text, tokens.to(self.device), normalize=True).float().cpu()
            for prompt, feature in zip(missing, encoded):
                self._prompts.put(prompt, feature)
                features[prompt] = feature
        return torch.stack([features[prompt] for prompt in prompts])
