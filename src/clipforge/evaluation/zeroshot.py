"""Zero-shot classification: class embeddings from prompt templates, averaged (the prompt
ensemble), then p(y|x) = softmax(exp(logit_scale) * cos(image, class))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models import CLIP
from .cache import ClassEmbeddingCache


class ZeroShotClassifier:
    """`cache`, when given, keeps the class embeddings on disk keyed by the text tower's weights and
    the prompts, so a second classifier over the same model, classes and templates embeds nothing."""

    def __init__(self, model: CLIP, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256,
                 cache: ClassEmbeddingCache | None = None):
        if not classnames or not templates:
            raise ValueError("zero-shot classification needs at least one class name and one template")
        self.model, self.classnames, self.templates = model, list(classnames), list(templates)
        prompts = [template.format(name) for name in self.classnames for template in self.templates]
        tokens = model.tokenize(prompts, truncate=True)
        if cache is None:
            self.class_embeddings = self._embed_classes(tokens, batch_size)
        else:
            key = cache.key(model, tokens, len(self.classnames))
            embeddings = cache.load_or_compute(key, lambda: self._embed_classes(tokens, batch_size))
            self.class_embeddings = embeddings.to(model.logit_scale.device)

    @torch.no_grad()
    def _embed_classes(self, tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
        """[n_classes, dim]: each class's normalized template embeddings, averaged, renormalized."""
        device = self.model.logit_scale.device
        features = torch.cat([self.model.encode_text(chunk.to(device), normalize=True)
                              for chunk in tokens.split(batch_size)])
        per_class = features.view(len(self.classnames), len(self.templates), -1).mean(dim=1)
        return F.normalize(per_class, dim=-1)

    def logits(self, image_features: torch.Tensor) -> torch.Tensor:
        """[n_images, n_classes] scaled cosine logits for image features [n_images, dim]."""
        features = F.normalize(image_features.float(), dim=-1).to(self.class_embeddings.device)
        return self.model.logit_scale_exp().detach() * features @ self.class_embeddings.float().t()

    def predict_proba(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logits(image_features).softmax(dim=-1)

    def predict(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.logits(image_features).argmax(dim=-1)

    def top_classes(self, image_features: torch.Tensor, k: int = 5) -> list[list[tuple[str, float]]]:
        """Per image, its `k` most probable classes as (class name, probability), best first."""
        probabilities, indices = self.predict_proba(image_features).topk(min(k, len(self.classnames)), dim=-1)
        return [[(self.classnames[i], p) for i, p in zip(row_indices.tolist(), row_probabilities.tolist())]
                for row_indices, row_probabilities in zip(indices, probabilities)]
