"""Image<->text retrieval metrics from feature matrices, with one or several captions per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                      ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k (percent), median and mean rank (1-based) in both directions.

    image_features: [n_images, dim]; text_features: [n_texts, dim]; text_to_image: [n_texts], the
    index of each caption's image. An image counts as found at the rank of its best-scored caption.
    Ties are resolved in the query's favour (only strictly higher scores rank above it).
    """
    similarity = F.normalize(image_features.float(), dim=-1) @ F.normalize(text_features.float(), dim=-1).t()
    text_to_image = text_to_image.to(similarity.device)
    texts = torch.arange(similarity.shape[1], device=similarity.device)
    # text -> image: how many images score above the caption's own image
    own_image_score = similarity[text_to_image, texts]
    text_ranks = (similarity > own_image_score[None, :]).sum(dim=0)
    # image -> text: how many captions score above the image's best own caption
    best_own = torch.full((similarity.shape[0],), float("-inf"), device=similarity.device)
    best_own = best_own.scatter_reduce(0, text_to_image, own_image_score, reduce="amax")
    image_ranks = (similarity > best_own[:, None]).sum(dim=1)
    metrics = {}
    for direction, ranks in (("image_to_text", image_ranks), ("text_to_image", text_ranks)):
        for k in ks:
            metrics[f"{direction}_R@{k}"] = 100.0 * (ranks < k).float().mean().item()
        metrics[f"{direction}_median_rank"] = (ranks.float() + 1).median().item()
        metrics[f"{direction}_mean_rank"] = (ranks.float() + 1).mean().item()
    return metrics


def subset_retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_to_image: torch.Tensor,
                             keep: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """`retrieval_metrics` among the images where `keep` [n_images] is true and their captions only
    (e.g. the concepts seen in training), as if the others were not in the gallery."""
    keep = keep.to(text_to_image.device)
    texts = keep[text_to_image]
    new_index = torch.cumsum(keep.long(), dim=0) - 1
    images = image_features[keep.to(image_features.device)]
    return retrieval_metrics(images, text_features[texts.to(text_features.device)], new_index[text_to_image[texts]], ks)
