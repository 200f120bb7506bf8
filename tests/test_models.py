import math

import pytest
import torch

from clipforge.models import CLIPConfig, create_model, get_config, list_models, similarity
from clipforge.models.layers import QuickGELU
from conftest import random_text_tokens

# The parameter counts OpenAI's released models report (logit_scale included).
PUBLISHED_PARAMETERS = {
    "RN50": 102_007_137, "RN101": 119_688_033, "RN50x4": 178_300_601, "RN50x16": 290_979_217,
    "RN50x64": 623_258_305, "ViT-B/32": 151_277_313, "ViT-B/16": 149_620_737, "ViT-L/14": 427_616_513,
    "ViT-L/14@336px": 427_944_193,
}


@pytest.mark.parametrize("name", PUBLISHED_PARAMETERS)
def test_openai_configs_have_the_published_parameter_counts(name):
    with torch.device("meta"):
        model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMETERS[name]


def test_list_models_names_every_openai_architecture_and_small_configs():
    names = set(list_models())
    assert {"RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"} <= names
    assert {"tiny-vit", "tiny-rn", "small-vit"} <= names


def test_openai_models_use_quickgelu_and_cannot_omit_the_activation():
    assert get_config("ViT-B/32").activation == "quick_gelu"
    assert isinstance(create_model("tiny-vit").visual.transformer.resblocks[0].mlp.gelu, torch.nn.GELU)
    data = get_config("tiny-vit").to_dict()
    del data["activation"]
    with pytest.raises(ValueError, match="activation"):
        CLIPConfig.from_dict(data)
    data["activation"] = "relu"
    with pytest.raises(ValueError, match="activation"):
        CLIPConfig.from_dict(data)


def test_quickgelu_config_builds_quickgelu_layers():
    data = get_config("tiny-vit").to_dict() | {"activation": "quick_gelu"}
    model = create_model(data)
    assert isinstance(model.transformer.resblocks[0].mlp.gelu, QuickGELU)
    assert isinstance(model.visual.transformer.resblocks[0].mlp.gelu, QuickGELU)


def test_config_rejects_unknown_keys():
    data = get_config("tiny-vit").to_dict()
    data["vision"]["patch"] = 8
    with pytest.raises(ValueError, match="patch"):
        CLIPConfig.from_dict(data)


def test_unknown_model_name_lists_known_ones():
    with pytest.raises(ValueError, match="ViT-B-32"):
        create_model("ViT-Q/99")


def test_logit_scale_starts_at_log_one_over_007_and_exp_never_exceeds_100():
    model = create_model("tiny-vit")
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.logit_scale_exp().item() == pytest.approx(100.0)
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100))


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_forward_returns_unit_features_and_scaled_cosine_logits(name):
    model = create_model(name)
    images = torch.randn(3, 3, model.image_size, model.image_size)
    text = random_text_tokens(4, model.context_length, model.vocab_size, [3, 7, 12, 32])
    with torch.no_grad():
        out = model(images, text)
    assert out.image_features.shape == (3, 64) and out.text_features.shape == (4, 64)
    torch.testing.assert_close(out.image_features.norm(dim=-1), torch.ones(3))
    expected = model.logit_scale.exp() * similarity(model.encode_image(images), model.encode_text(text))
    torch.testing.assert_close(out.logits_per_image, expected)
    torch.testing.assert_close(out.logits_per_text, expected.t())


def test_similarity_is_cosine():
    a, b = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    torch.testing.assert_close(similarity(a, b), torch.tensor([[0.6, 0.8]]))


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_each_batch_item_is_encoded_independently(name):
    model = create_model(name)
    images = torch.randn(4, 3, model.image_size, model.image_size)
    text = random_text_tokens(4, model.context_length, model.vocab_size, [2, 5, 9, 32])
    with torch.no_grad():
        batched_images, batched_text = model.encode_image(images), model.encode_text(text)
        for i in range(4):
            torch.testing.assert_close(model.encode_image(images[i : i + 1])[0], batched_images[i], atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(model.encode_text(text[i : i + 1])[0], batched_text[i], atol=1e-5, rtol=1e-4)


def test_text_features_come_from_the_end_token_and_ignore_what_follows_it():
    model = create_model("tiny-vit")
    text = random_text_tokens(1, model.context_length, model.vocab_size, [6])
    after = text.clone()
    after[0, 6:] = torch.randint(1, model.vocab_size - 2, (model.context_length - 6,))
    before = text.clone()
    before[0, 2] = (before[0, 2] + 1) % (model.vocab_size - 2)
    with torch.no_grad():
        reference = model.encode_text(text)
        torch.testing.assert_close(model.encode_text(after), reference)
        torch.testing.assert_close(model.encode_text(text[:, :6]), reference, atol=1e-6, rtol=1e-5)
        assert not torch.allclose(model.encode_text(before), reference)


def test_text_longer_than_the_context_is_refused():
    model = create_model("tiny-vit")
    with pytest.raises(ValueError, match="at most 32"):
        model.encode_text(torch.zeros(1, 33, dtype=torch.long))


def test_initialisation_follows_clips_width_and_depth_scaling():
    torch.manual_seed(0)
    model = create_model({"embed_dim": 256, "activation": "gelu",
                          "vision": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 32},
                          "text": {"context_length": 16, "vocab_size": 1000, "width": 256, "layers": 8}})
    width, layers = 256, 8
    block = model.transformer.resblocks[0]
    assert model.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.positional_embedding.std().item() == pytest.approx(0.01, rel=0.1)
    assert block.attn.in_proj_weight.std().item() == pytest.approx(width**-0.5, rel=0.05)
    assert block.attn.out_proj.weight.std().item() == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.05)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx((2 * width) ** -0.5, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.05)
    assert model.text_projection.std().item() == pytest.approx(width**-0.5, rel=0.05)
    assert torch.all(model.visual.layer1[0].bn3.weight == 0)
    assert model.visual.attnpool.q_proj.weight.std().item() == pytest.approx((32 * 32) ** -0.5, rel=0.05)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = create_model("tiny-vit").train()
    images = torch.randn(2, 3, 32, 32)
    text = random_text_tokens(2, 32, model.vocab_size, [4, 9])

    def gradients():
        model.zero_grad()
        model(images, text).logits_per_image.sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    plain = gradients()
    model.transformer.grad_checkpointing = model.visual.transformer.grad_checkpointing = True
    for a, b in zip(plain, gradients()):
        torch.testing.assert_close(a, b)
