"""Parity with Hugging Face `transformers` CLIP on random weights (transformers is test-only)."""

import json

import pytest
import torch

import clipforge
from clipforge.checkpoints import CheckpointError
from clipforge.checkpoints.huggingface import state_dict_from_huggingface, state_dict_to_huggingface
from clipforge.models import create_model
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


def test_key_mapping_is_exactly_invertible():
    state = create_model("tiny-vit").state_dict()
    back = state_dict_from_huggingface(state_dict_to_huggingface(state))
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)


def test_resnet_models_cannot_be_exported(tmp_path):
    with pytest.raises(CheckpointError, match="ResNet"):
        clipforge.export_huggingface(create_model("tiny-rn"), tmp_path)
