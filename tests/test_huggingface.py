"""Parity with Hugging Face `transformers` CLIP on random weights (transformers is test-only)."""

import json

import pytest
import torch

import clipforge
from clipforge.checkpoints import CheckpointError
from clipforge.checkpoints.huggingface import read_huggingface_folder, state_dict_from_huggingface, state_dict_to_huggingface
from clipforge.checkpoints.keys import to_file_keys
from clipforge.models import create_model, get_config
from clipforge.text import Tokenizer, train_bpe
from conftest import random_text_tokens

try:
    import transformers
except ImportError:  # the parity tests skip, and the conftest guard fails them: they are `reference`
    transformers = None

TEXT_LENGTHS = [2, 5, 17, 40]


def hf_model(activation: str) -> "transformers.CLIPModel":
    if transformers is None:
        pytest.skip("transformers is a test dependency: pip install -e .[test]")
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=40, vocab_size=49408, hidden_act=activation,
                         bos_token_id=49406, eos_token_id=49407),
        vision_config=dict(hidden_size=96, intermediate_size=384, num_hidden_layers=2, num_attention_heads=3,
                           image_size=48, patch_size=16, hidden_act=activation),
        projection_dim=32)
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # HF's own init is nearly zero in places; random weights make the test bite
        for name, parameter in model.named_parameters():
            parameter.normal_(1.0 if "norm" in name and name.endswith("weight") else 0.0, 0.05)
        model.logit_scale.fill_(3.0)
    return model


def inputs():
    generator = torch.Generator().manual_seed(3)
    return torch.randn(3, 3, 48, 48, generator=generator), random_text_tokens(4, 40, 49408, TEXT_LENGTHS)


def hf_outputs(model, images, text):
    with torch.no_grad():
        out = model(input_ids=text, pixel_values=images)
        return (model.get_image_features(pixel_values=images).pooler_output,
                model.get_text_features(input_ids=text).pooler_output,
                out.image_embeds, out.text_embeds, out.logits_per_image)


def clipforge_outputs(model, images, text):
    with torch.no_grad():
        out = model(images, text)
        return model.encode_image(images), model.encode_text(text), *out


def assert_close_all(ours, theirs, atol=1e-4):
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=1e-4)


@pytest.mark.reference
@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_huggingface_folder_loads_with_the_same_features_and_logits(activation, tmp_path):
    reference = hf_model(activation)
    reference.save_pretrained(tmp_path)
    model, preprocess = clipforge.load(tmp_path)
    assert model.config.activation == activation and preprocess.image_size == 48
    images, text = inputs()
    assert_close_all(clipforge_outputs(model, images, text), hf_outputs(reference, images, text))


@pytest.mark.reference
def test_huggingface_pytorch_model_bin_loads_too(tmp_path):
    reference = hf_model("quick_gelu")
    reference.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(reference.state_dict(), tmp_path / "pytorch_model.bin")
    model, _ = clipforge.load(tmp_path)
    images, text = inputs()
    assert_close_all(clipforge_outputs(model, images, text), hf_outputs(reference, images, text))


@pytest.mark.reference
@pytest.mark.parametrize("activation", ["quick_gelu", "gelu"])
def test_export_to_huggingface_round_trips(activation, tmp_path):
    reference = hf_model(activation)
    reference.save_pretrained(tmp_path / "hf")
    model, _ = clipforge.load(tmp_path / "hf")
    clipforge.export_huggingface(model, tmp_path / "exported")
    again = transformers.CLIPModel.from_pretrained(tmp_path / "exported").eval()
    images, text = inputs()
    assert_close_all(hf_outputs(again, images, text), clipforge_outputs(model, images, text))
    processor = json.loads((tmp_path / "exported" / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 48, "width": 48}


@pytest.mark.reference
def test_exported_tokenizer_files_give_huggingface_the_models_ids(tmp_path):
    if transformers is None:
        pytest.skip("transformers is a test dependency: pip install -e .[test]")
    model = create_model("tiny-vit")
    clipforge.export_huggingface(model, tmp_path / "exported")
    theirs = transformers.CLIPTokenizer.from_pretrained(tmp_path / "exported")
    for text in ["a photo of a cat", "Two DOGS playing in the snow!", "naïve café"]:
        ours = model.tokenize([text])[0]
        assert theirs(text)["input_ids"] == ours[: int(ours.argmax()) + 1].tolist()


def test_key_mapping_is_exactly_invertible():
    state = to_file_keys(create_model("tiny-vit").state_dict())
    back = state_dict_from_huggingface(state_dict_to_huggingface(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_resnet_models_cannot_be_exported(tmp_path):
    with pytest.raises(CheckpointError, match="ResNet"):
        clipforge.export_huggingface(create_model("tiny-rn"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_models_huggingface_has_no_class_for_are_refused_before_the_folder_is_made(tmp_path):
    ngram_text = {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 32, "vocab_size": 1024, "width": 64}
    sigmoid = get_config("tiny-vit")
    sigmoid.init_logit_bias = -10.0
    for config, reason in ((get_config("tiny-vit").to_dict() | {"text": ngram_text}, "ngram_bag"),
                           (sigmoid, "logit bias")):
        with pytest.raises(CheckpointError, match=reason):
            clipforge.export_huggingface(create_model(config), tmp_path / "hf")
        assert not (tmp_path / "hf").exists()


def test_export_writes_the_models_tokenizer_files(tmp_path):
    clipforge.export_huggingface(create_model("tiny-vit"), tmp_path / "hf")
    exported = Tokenizer.from_files(tmp_path / "hf")
    assert exported.vocab == Tokenizer.openai().vocab and exported.merges == Tokenizer.openai().merges


def test_a_model_with_its_own_vocabulary_exports_and_reloads_with_it(tmp_path):
    tokenizer = train_bpe([f"a {c} {s}" for c in ("red", "green", "blue") for s in ("circle", "square")] * 10,
                          vocab_size=560)
    config = get_config("tiny-vit")
    config.text.vocab_size, config.text.tokenizer = tokenizer.vocab_size, "bundled"
    model = create_model(config)
    model.tokenizer = tokenizer
    clipforge.export_huggingface(model, tmp_path / "hf")
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["text_config"]["eos_token_id"] == tokenizer.eot_token_id
    _, _, read_back = read_huggingface_folder(tmp_path / "hf")
    assert read_back.vocab == tokenizer.vocab
    loaded, _ = clipforge.load(tmp_path / "hf")
    assert loaded.config.text.tokenizer == "bundled"
    ids = model.tokenize(["a red circle", "a blue square"])
    assert torch.equal(loaded.tokenize(["a red circle", "a blue square"]), ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=1e-6)


def test_a_huggingface_folder_without_tokenizer_files_reads_as_openais_vocabulary(tmp_path):
    clipforge.export_huggingface(create_model("tiny-vit"), tmp_path / "hf")
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "hf" / name).unlink()
    config, _, tokenizer = read_huggingface_folder(tmp_path / "hf")
    assert tokenizer is None and config.text.tokenizer == "openai"
    assert clipforge.load(tmp_path / "hf")[0].tokenizer is Tokenizer.openai()
