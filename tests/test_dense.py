"""Dense features per image tower (MaskCLIP's reading): one joint-space embedding per location, at
the model's size and others, consistent with the tower's pooled output where the arithmetic says
so; existing outputs unchanged."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipforge.evaluation.maps import crop_maps, dense_maps, similarity_maps, zero_pads
from clipforge.models import create_model

CONVNET = {"embed_dim": 32, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16, 32]},
           "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 32, "vocab_size": 512, "width": 32}}


def model_of(name: str):
    torch.manual_seed(0)
    return create_model(CONVNET if name == "convnet" else name)


@pytest.mark.parametrize("name, stride, size, grid", [
    ("tiny-vit", 8, (32, 32), (4, 4)), ("tiny-vit", 8, (48, 64), (6, 8)),
    ("tiny-rn", 32, (64, 64), (2, 2)), ("tiny-rn", 32, (128, 96), (4, 3)),
    ("convnet", 4, (32, 32), (8, 8)), ("convnet", 4, (40, 64), (10, 16)),
])
def test_one_embedding_per_location_at_any_multiple_of_the_stride(name, stride, size, grid):
    model = model_of(name)
    assert model.visual.dense_stride == stride
    with torch.no_grad():
        dense = model.encode_image_dense(torch.randn(2, 3, *size), normalize=True)
    assert dense.shape == (2, *grid, model.config.embed_dim)
    torch.testing.assert_close(dense.norm(dim=-1), torch.ones(2, *grid))


def test_convnet_pooled_output_is_the_mean_of_its_dense_features():
    model = model_of("convnet")
    pixels = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image_dense(pixels).mean(dim=(1, 2)), model.encode_image(pixels),
                                   atol=1e-5, rtol=1e-5)


def test_resnet_pooled_output_is_an_attention_mix_of_its_dense_features():
    """With one head the attention pool's output is a convex combination (its softmax weights) of the
    value-and-output projections of the mean token and of every position: the dense features."""
    model = create_model({"embed_dim": 16, "activation": "gelu",
                          "vision": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "heads": 1},
                          "text": CONVNET["text"]})
    pool = model.visual.attnpool
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        trunk = model.visual.forward_intermediates(pixels)[-1]
        tokens = trunk.flatten(2).transpose(1, 2)
        tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1) + pool.positional_embedding
        scores = pool.q_proj(tokens[:, :1]) @ pool.k_proj(tokens).transpose(1, 2) / tokens.shape[-1] ** 0.5
        weights = scores.softmax(dim=-1)
        mean_token = pool.c_proj(pool.v_proj(tokens[:, :1]))  # [2, 1, 16]
        dense = model.encode_image_dense(pixels).flatten(1, 2)  # [2, 4, 16]
        mixed = (weights.transpose(1, 2) * torch.cat([mean_token, dense], dim=1)).sum(dim=1)
        torch.testing.assert_close(mixed, model.encode_image(pixels), atol=1e-5, rtol=1e-5)


def test_vit_dense_path_is_the_last_blocks_value_projection_without_attention():
    """Swapping the last block's query and key weights changes the image embedding but not the dense
    features: they never use query-key attention."""
    model = model_of("tiny-vit")
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before_dense, before_pooled = model.encode_image_dense(pixels), model.encode_image(pixels)
        attention = model.visual.transformer.resblocks[-1].attn
        width = attention.out_proj.in_features
        attention.in_proj_weight[: 2 * width].normal_()
        after_dense, after_pooled = model.encode_image_dense(pixels), model.encode_image(pixels)
    torch.testing.assert_close(after_dense, before_dense)
    assert not torch.allclose(after_pooled, before_pooled)


def test_vit_positions_are_the_learnt_ones_at_the_trained_grid():
    visual = model_of("tiny-vit").visual
    assert visual.positions((4, 4)) is visual.positional_embedding
    resized = visual.positions((6, 8))
    assert resized.shape == (49, 64) and torch.equal(resized[0], visual.positional_embedding[0])


def test_existing_forward_still_refuses_another_size():
    model = model_of("tiny-vit")
    with pytest.raises(RuntimeError):
        model.encode_image(torch.randn(1, 3, 48, 48))


@pytest.mark.parametrize("method", ["dense", "crops"])
def test_similarity_maps_are_cosines_at_the_requested_size(method):
    model = model_of("convnet")
    text = F.normalize(torch.randn(3, 32), dim=-1)
    maps = similarity_maps(model, torch.randn(2, 3, 32, 48), text, method, size=(20, 30))
    assert maps.shape == (2, 3, 20, 30) and maps.abs().max() <= 1.0 + 1e-5
    with pytest.raises(ValueError, match="unknown map method"):
        similarity_maps(model, torch.randn(1, 3, 32, 32), text, "segment")


@pytest.mark.parametrize("name, margin", [("convnet", 4), ("tiny-rn", 32), ("tiny-vit", 0)])
def test_a_dense_map_is_the_grid_of_cosines_seen_with_a_margin_where_convolutions_pad(name, margin):
    """Zero-padding towers see the image inside one cell of its replicated edge, cut off again; a
    ViT's patches do not overlap, so it sees the image as it is."""
    model = model_of(name)
    assert zero_pads(model.visual) == bool(margin)
    text = F.normalize(torch.randn(2, model.config.embed_dim), dim=-1)
    pixels = torch.randn(1, 3, model.image_size, model.image_size)
    with torch.no_grad():
        cells = model.encode_image_dense(F.pad(pixels, (margin,) * 4, mode="replicate"), normalize=True)
    cells = cells[:, 1:-1, 1:-1] if margin else cells
    grid = torch.einsum("nhwd,pd->nphw", cells, text)
    torch.testing.assert_close(dense_maps(model, pixels, text, size=grid.shape[-2:]), grid)
    assert dense_maps(model, pixels, text).shape[-2:] == pixels.shape[-2:]


def test_the_crop_map_of_a_single_window_is_that_crops_cosine():
    model = model_of("convnet")
    text = F.normalize(torch.randn(2, 32), dim=-1)
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        whole = model.encode_image(pixels, normalize=True) @ text.t()
    maps = crop_maps(model, pixels, text, scales=(1.0,))
    torch.testing.assert_close(maps[0, :, 5, 7], whole[0], atol=1e-5, rtol=1e-5)
