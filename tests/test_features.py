"""Features for multimodal models: every layer's hidden states equal transformers'
`output_hidden_states` on the same weights; the final norm, the projection and the image embedding
agree with the model's own forward; the shapes of the published architectures, as documented."""

from __future__ import annotations

import pytest
import torch

import clipforge
from clipforge.applications.features import image_features
from clipforge.models import CLIP, create_model, get_config

try:
    import transformers
except ImportError:  # the parity test skips, and the conftest guard fails it: it is `reference`
    transformers = None

CONVNET = {"embed_dim": 32, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16, 32]},
           "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 32, "vocab_size": 512, "width": 32}}


def random_hf_clip(folder) -> "transformers.CLIPModel":
    """A random transformers CLIP (3 vision layers, 48 px, patch 16) with weights far from HF's
    near-zero init, saved to `folder` so that clipforge loads the same weights."""
    if transformers is None:
        pytest.skip("transformers is a test dependency: pip install -e .[test]")
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=16, vocab_size=49408, hidden_act="quick_gelu",
                         bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                           image_size=48, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=24)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.05)
    model.save_pretrained(folder)
    return model


@pytest.mark.reference
def test_hidden_states_equal_transformers_layer_by_layer(tmp_path):
    reference = random_hf_clip(tmp_path)
    model, _ = clipforge.load(tmp_path)
    pixels = torch.randn(2, 3, 48, 48, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = reference.vision_model(pixel_values=pixels, output_hidden_states=True)
        ours = image_features(model, pixels, final_norm=True, project=True)
        their_embeds = reference.get_image_features(pixel_values=pixels)
    their_embeds = getattr(their_embeds, "pooler_output", their_embeds)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 4
    for layer, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        assert a.shape == b.shape == (2, 10, 64), layer
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"layer {layer}")
    torch.testing.assert_close(ours.hidden_states[-1], theirs.last_hidden_state, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.normed_states[-1][:, 0], theirs.pooler_output, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.image_embeds, their_embeds, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.projected[:, 0], their_embeds, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("config", ["tiny-vit", "tiny-rn", "convnet"])
def test_image_embeds_are_what_encode_image_gives(config):
    torch.manual_seed(0)
    model = create_model(CONVNET if config == "convnet" else config)
    pixels = torch.randn(2, 3, model.image_size, model.image_size)
    with torch.no_grad():
        features = image_features(model, pixels, project=True)
        expected = model.encode_image(pixels)
    torch.testing.assert_close(features.image_embeds, expected, atol=1e-5, rtol=1e-5)
    if config == "tiny-vit":
        torch.testing.assert_close(features.projected[:, 0], expected, atol=1e-5, rtol=1e-5)
    else:  # the joint-space features of every location, as encode_image_dense gives them
        dense = model.encode_image_dense(pixels)
        torch.testing.assert_close(features.projected, dense.flatten(1, 2), atol=1e-5, rtol=1e-5)


def test_vit_tokens_llava_style_and_the_class_token():
    model = create_model("tiny-vit")  # 32 px, patch 8: 16 patches of width 64, 2 layers
    features = image_features(model, torch.randn(3, 3, 32, 32), final_norm=True)
    assert features.has_class_token and features.grids == ((4, 4),) * 3
    assert features.patch_tokens().shape == (3, 16, 64)
    assert torch.equal(features.patch_tokens(), features.hidden_states[-2][:, 1:])
    assert torch.equal(features.class_tokens(), features.hidden_states[-1][:, 0])
    assert len(features.normed_states) == 3 and features.projected is None
    torch.testing.assert_close(features.normed_states[0], model.visual.ln_post(features.hidden_states[0]))


def test_a_vit_reads_other_sizes_with_interpolated_positions():
    model = create_model("tiny-vit")
    features = image_features(model, torch.randn(1, 3, 48, 64))
    assert features.grids[0] == (6, 8) and features.hidden_states[0].shape == (1, 49, 64)


def test_convolutional_towers_give_stage_maps_as_tokens_without_a_class_token():
    model = create_model(CONVNET)
    features = image_features(model, torch.randn(2, 3, 32, 32))
    assert not features.has_class_token
    assert features.grids == ((32, 32), (16, 16), (8, 8))
    assert [state.shape for state in features.hidden_states] == [(2, 1024, 8), (2, 256, 16), (2, 64, 32)]
    assert torch.equal(features.patch_tokens(-1), features.hidden_states[-1])
    with pytest.raises(ValueError, match="no class token"):
        features.class_tokens()
    with pytest.raises(ValueError, match="no final LayerNorm"):
        image_features(model, torch.randn(1, 3, 32, 32), final_norm=True)


# (hidden states, tokens per state, width) of each published ViT, and the ResNets' stage maps:
# the table in docs/applications.md
PUBLISHED_VIT = {"ViT-B-32": (13, 50, 768), "ViT-B-16": (13, 197, 768), "ViT-L-14": (25, 257, 1024),
                 "ViT-L-14-336": (25, 577, 1024)}
PUBLISHED_RESNET = {"RN50": [(64, 56), (256, 56), (512, 28), (1024, 14), (2048, 7)],
                    "RN50x64": [(128, 112), (512, 112), (1024, 56), (2048, 28), (4096, 14)]}


def meta_model(name: str) -> CLIP:
    """The published architecture without weights: shapes cost nothing on the meta device."""
    with torch.device("meta"):
        return CLIP(get_config(name))


@pytest.mark.parametrize("name", sorted(PUBLISHED_VIT))
def test_published_vit_hidden_state_shapes(name):
    model = meta_model(name)
    size = model.image_size
    states, tokens, width = PUBLISHED_VIT[name]
    features = image_features(model, torch.empty(1, 3, size, size, device="meta"), project=True)
    assert len(features.hidden_states) == states
    assert all(state.shape == (1, tokens, width) for state in features.hidden_states)
    assert features.patch_tokens().shape == (1, tokens - 1, width)  # LLaVA's input before its projector
    assert features.projected.shape == (1, tokens, model.config.embed_dim)


@pytest.mark.parametrize("name", sorted(PUBLISHED_RESNET))
def test_published_resnet_stage_shapes(name):
    model = meta_model(name)
    size = model.image_size
    features = image_features(model, torch.empty(1, 3, size, size, device="meta"), project=True)
    assert [(state.shape[-1], grid[0]) for state, grid in zip(features.hidden_states, features.grids)] == \
        PUBLISHED_RESNET[name]
    assert features.projected.shape == (1, features.grids[-1][0] ** 2, model.config.embed_dim)
