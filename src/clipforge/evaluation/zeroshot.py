"""Zero-shot classification: class embeddings from prompt templates, averaged (the prompt
ensemble), then p(y|x) = softmax(exp(logit_scale) * cos(image, class))."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..models import CLIP
from ..text import Tokenizer


class ZeroShotClassifier:
    def __init__(self, model: CLIP, classnames: Sequence[str], templates: Sequence[str], tokenizer: Tokenizer,
                 batch_size: int = 256):
        if not classnames or not templates:
            raise ValueError("zero-shot classification needs at least one class name and one template")
        self.model, self.classnames, self.templates = model, list(classnames), list(templates)
        self.class_embeddings = self._embed_classes(tokenizer, batch_size)

    @torch.no_grad()
    def _embed_classes(self, tokenizer: Tokenizer, batch_size: int) -> torch.Tensor:
        """[n_classes, dim]: each class's normalized template embeddings, averaged, renormalized."""
        prompts = [template.format(name) for name in self.classnames for template in self.templates]
        tokens = tokenizer(prompts, context_length=self.model.context_length, truncate=True)
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
