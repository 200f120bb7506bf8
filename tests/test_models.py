import math

import pytest
import torch
import torch.nn.functional as F

import clipforge
from clipforge.models import (
    CLIP, CLIPConfig, ConvNet, ModifiedResNet, NgramBagText, TextTransformer, VisionTransformer, create_model,
    get_config, list_models, similarity,
)
from clipforge.models.layers import QuickGELU
from clipforge.text import NgramTokenizer, Tokenizer, tokenize, train_bpe
from conftest import random_text_tokens

NGRAM_TEXT = {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 64, "vocab_size": 1024, "width": 32}
TRANSFORMER_TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "layers": 1, "heads": 2}
VIT = {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "heads": 2}
RESNET = {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "heads": 2}
CONVNET = {"image_size": 32, "channels": [8, 16, 32]}
# Every image tower with every text tower, from the config alone.
TOWER_PAIRS = {
    "vit+ngram": (VIT, NGRAM_TEXT, VisionTransformer, NgramBagText, NgramTokenizer),
    "resnet+ngram": (RESNET, NGRAM_TEXT, ModifiedResNet, NgramBagText, NgramTokenizer),
    "convnet+transformer": (CONVNET, TRANSFORMER_TEXT, ConvNet, TextTransformer, Tokenizer),
    "convnet+ngram": (CONVNET, NGRAM_TEXT, ConvNet, NgramBagText, NgramTokenizer),
    "resnet+transformer": (RESNET, TRANSFORMER_TEXT, ModifiedResNet, TextTransformer, Tokenizer),
}

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
    assert isinstance(model.text.transformer.resblocks[0].mlp.gelu, QuickGELU)
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
    block = model.text.transformer.resblocks[0]
    assert model.text.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert model.text.positional_embedding.std().item() == pytest.approx(0.01, rel=0.1)
    assert block.attn.in_proj_weight.std().item() == pytest.approx(width**-0.5, rel=0.05)
    assert block.attn.out_proj.weight.std().item() == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.05)
    assert block.mlp.c_fc.weight.std().item() == pytest.approx((2 * width) ** -0.5, rel=0.05)
    assert block.mlp.c_proj.weight.std().item() == pytest.approx(width**-0.5 * (2 * layers) ** -0.5, rel=0.05)
    assert model.text.text_projection.std().item() == pytest.approx(width**-0.5, rel=0.05)
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
    model.set_grad_checkpointing(True)
    assert model.text.transformer.grad_checkpointing and model.visual.transformer.grad_checkpointing
    for a, b in zip(plain, gradients()):
        torch.testing.assert_close(a, b)


def test_set_grad_checkpointing_switches_both_towers_on_and_off():
    model = create_model("tiny-vit")
    towers = (model.text.transformer, model.visual.transformer)
    assert not any(tower.grad_checkpointing for tower in towers)
    model.set_grad_checkpointing(True)
    assert all(tower.grad_checkpointing for tower in towers)
    model.set_grad_checkpointing(False)
    assert not any(tower.grad_checkpointing for tower in towers)


def test_set_grad_checkpointing_passes_over_towers_without_a_transformer():
    model = create_model("tiny-rn")
    model.set_grad_checkpointing(True)
    assert model.text.transformer.grad_checkpointing
    assert not hasattr(model.visual, "transformer")


def test_a_clip_holds_its_image_tower_as_visual_and_its_text_tower_as_text():
    model = create_model("tiny-vit")
    assert isinstance(model, CLIP)
    assert isinstance(model.visual, VisionTransformer) and isinstance(model.text, TextTransformer)
    assert {key.split(".")[0] for key in model.state_dict()} == {"visual", "text", "logit_scale"}
    assert "text.token_embedding.weight" in model.state_dict()


def test_towers_give_unnormalized_features_that_the_encoders_normalize_on_request():
    model = create_model("tiny-vit")
    images = torch.randn(2, 3, model.image_size, model.image_size)
    text = random_text_tokens(2, model.context_length, model.vocab_size, [4, 9])
    with torch.no_grad():
        image_features, text_features = model.visual(images), model.text(text)
        assert not torch.allclose(image_features.norm(dim=-1), torch.ones(2))
        torch.testing.assert_close(model.encode_image(images), image_features)
        torch.testing.assert_close(model.encode_text(text), text_features)
        torch.testing.assert_close(model.encode_image(images, normalize=True), F.normalize(image_features, dim=-1))
        torch.testing.assert_close(model.encode_text(text, normalize=True), F.normalize(text_features, dim=-1))


@pytest.mark.parametrize("pair", TOWER_PAIRS)
def test_any_image_tower_pairs_with_any_text_tower_from_the_config_alone(pair, tmp_path):
    vision, text, image_tower, text_tower, tokenizer_class = TOWER_PAIRS[pair]
    torch.manual_seed(0)
    model = create_model({"embed_dim": 24, "activation": "gelu", "vision": vision, "text": text})
    assert isinstance(model.visual, image_tower) and isinstance(model.text, text_tower)
    assert isinstance(model.tokenizer, tokenizer_class)
    images = torch.randn(3, 3, model.image_size, model.image_size)
    tokens = model.tokenize(["a red square", "two blue circles above a green triangle"])
    assert tokens.shape == (2, text["context_length"]) and tokens.dtype == torch.int64
    with torch.no_grad():
        out = model(images, tokens)
    assert out.image_features.shape == (3, 24) and out.text_features.shape == (2, 24)
    assert out.logits_per_image.shape == (3, 2) and torch.isfinite(out.logits_per_image).all()

    clipforge.save_model(model, tmp_path / "model")
    loaded = clipforge.load_model(tmp_path / "model")
    assert loaded.config == model.config and type(loaded.tokenizer) is tokenizer_class
    assert torch.equal(loaded.tokenize(["a red square"]), model.tokenize(["a red square"]))
    with torch.no_grad():
        reloaded = loaded(images, tokens)
    for ours, theirs in zip(out, reloaded):
        assert torch.equal(ours, theirs)


def test_the_tokenizer_is_the_configs_and_tokenizes_at_the_models_context_length():
    model = create_model("tiny-vit")
    assert model.tokenizer is Tokenizer.openai()
    assert torch.equal(model.tokenize(["a photo of a cat", "a dog"]),
                       tokenize(["a photo of a cat", "a dog"], context_length=32))
    with pytest.raises(ValueError, match="context_length=32"):
        model.tokenize(["word " * 40])
    truncated = model.tokenize(["word " * 40], truncate=True)
    assert truncated.shape == (1, 32) and truncated[0, -1] == model.tokenizer.eot_token_id


def test_a_bpe_tokenizer_larger_than_the_embedding_table_is_refused():
    config = get_config("tiny-vit").to_dict()
    config["text"] |= {"vocab_size": 1000, "tokenizer": "bundled"}
    model = create_model(config)
    with pytest.raises(ValueError, match="1000 rows"):
        model.tokenizer = Tokenizer.openai()
    with pytest.raises(ValueError, match="1000 rows"):
        CLIP(get_config(config), tokenizer=Tokenizer.openai())


def test_a_model_with_its_own_vocabulary_has_no_tokenizer_until_one_is_attached():
    config = get_config("tiny-vit").to_dict()
    config["text"] |= {"vocab_size": 600, "tokenizer": "bundled"}
    model = create_model(config)
    with pytest.raises(ValueError, match="its own vocabulary"):
        model.tokenize(["a red square"])
    tokenizer = train_bpe(["a red square", "a blue circle", "a green triangle"] * 20, vocab_size=600)
    model.tokenizer = tokenizer
    assert model.tokenizer is tokenizer
    assert torch.equal(model.tokenize(["a red square"]), tokenizer(["a red square"], context_length=32))


def test_a_hashing_tokenizer_does_not_go_with_a_transformer_text_tower():
    model = create_model("tiny-vit")
    with pytest.raises(ValueError, match="does not go with"):
        model.tokenizer = NgramTokenizer(model.vocab_size)
    assert model.tokenizer is Tokenizer.openai()
