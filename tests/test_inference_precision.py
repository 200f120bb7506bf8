"""Inference precision: int8 on every matmul of the transformer towers (attention's q/k/v projection
and the ViT's patch embedding included) within cosine 0.99 of float32, the per-machine "auto" rule,
and `--precision` from the command line to the model and into the index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import clipforge
import clipforge.search.builder
import clipforge.search.query
from clipforge.cli import main
from clipforge.models import create_model, inference
from clipforge.models.inference import AutocastCLIP, auto_precision, for_inference, inference_precision
from clipforge.models.layers import SelfAttention
from clipforge.models.quantization import PatchEmbedding, int8_engine, quantize_int8
from clipforge.search import ImageIndex, IndexModelMismatch, Searcher, build_index, model_fingerprint
from colour_model import COLOURS, colour_image
from conftest import random_text_tokens

ENGINES = [engine for engine in ("onednn", "fbgemm") if engine in torch.backends.quantized.supported_engines]


@pytest.fixture
def vit_model() -> clipforge.CLIP:
    torch.manual_seed(0)
    return create_model("tiny-vit").eval()


def inputs(model: clipforge.CLIP) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(6, 3, model.image_size, model.image_size, generator=torch.Generator().manual_seed(3))
    lengths = [2, 5, 9, model.context_length, 3, 12]
    return images, random_text_tokens(len(lengths), model.context_length, model.vocab_size, lengths)


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a.flatten(0, -2).float(), b.flatten(0, -2).float()).min().item()


def test_int8_leaves_no_float_projection_in_either_tower(vit_model):
    int8 = quantize_int8(vit_model)
    assert not any(isinstance(module, (SelfAttention, nn.Linear, nn.Conv2d)) for module in int8.modules())
    assert not any("in_proj_weight" in name for name, _ in int8.named_parameters())
    attentions = [block.attn for tower in (int8.visual, int8.text) for block in tower.transformer.resblocks]
    assert attentions and all(isinstance(attention.in_proj, torch.ao.nn.quantized.dynamic.Linear)
                              for attention in attentions)
    assert isinstance(int8.visual.conv1, PatchEmbedding)
    assert isinstance(int8.visual.conv1.proj, torch.ao.nn.quantized.dynamic.Linear)


@pytest.mark.parametrize("engine", ENGINES)
def test_int8_keeps_cosine_099_to_float32_features(vit_model, engine):
    images, tokens = inputs(vit_model)
    int8 = quantize_int8(vit_model, engine)
    with torch.no_grad():
        assert min_cosine(int8.encode_image(images), vit_model.encode_image(images)) >= 0.99
        assert min_cosine(int8.encode_text(tokens), vit_model.encode_text(tokens)) >= 0.99
        assert min_cosine(int8.encode_image_dense(images), vit_model.encode_image_dense(images)) >= 0.99


def test_int8_of_the_image_tower_alone_leaves_the_text_tower_float32(vit_model):
    _, tokens = inputs(vit_model)
    int8 = quantize_int8(vit_model, towers=("visual",))
    assert isinstance(int8.visual.conv1, PatchEmbedding)
    assert int8.text.transformer.resblocks[0].attn.in_proj_weight is vit_model.text.transformer.resblocks[0].attn.in_proj_weight
    with torch.no_grad():
        torch.testing.assert_close(int8.encode_text(tokens), vit_model.encode_text(tokens))
    with pytest.raises(ValueError, match="towers"):
        quantize_int8(vit_model, towers=("image",))


def test_int8_model_is_a_copy_and_the_float_model_keeps_its_parameters_and_keys(vit_model):
    before = {key: value.clone() for key, value in vit_model.state_dict().items()}
    int8 = quantize_int8(vit_model)
    after = vit_model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[key], before[key]) for key in before)
    assert isinstance(vit_model.visual.transformer.resblocks[0].attn, SelfAttention)
    assert int8.visual.ln_post.weight is vit_model.visual.ln_post.weight  # shared, not copied


def test_patch_embedding_computes_the_convolution(vit_model):
    conv = vit_model.visual.conv1
    patches = PatchEmbedding(conv.kernel_size, nn.Linear(conv.weight[0].numel(), conv.out_channels, bias=False))
    with torch.no_grad():
        patches.proj.weight.copy_(conv.weight.flatten(1))
        image = torch.randn(2, 3, 3 * conv.kernel_size[0] + 5, 2 * conv.kernel_size[1])  # a ragged edge is dropped
        torch.testing.assert_close(patches(image), conv(image), atol=1e-5, rtol=1e-5)


def test_a_quick_gelu_model_quantizes_within_cosine_099():
    torch.manual_seed(1)
    model = create_model("tiny-vit")
    model.config.activation = "quick_gelu"
    model = clipforge.models.CLIP(model.config).eval()
    images, tokens = inputs(model)
    int8 = quantize_int8(model)
    assert isinstance(int8.visual.transformer.resblocks[0].mlp.gelu, nn.SiLU)
    with torch.no_grad():
        assert min_cosine(int8.encode_image(images), model.encode_image(images)) >= 0.99
        assert min_cosine(int8.encode_text(tokens), model.encode_text(tokens)) >= 0.99


@pytest.mark.parametrize("tower, capability, flags, expected", [
    ("tiny-vit", "AVX512", {"avx512_bf16", "avx512_vnni"}, "int8"),
    ("tiny-vit", "AVX2", set(), "int8"),
    ("tiny-vit", "DEFAULT", {"avx512_bf16"}, "fp32"),
    ("forge-cnn-ngram", "AVX512", {"avx512_bf16"}, "bf16"),
    ("forge-cnn-ngram", "AVX512", {"amx_bf16"}, "bf16"),
    ("forge-cnn-ngram", "AVX512", {"avx512_vnni"}, "fp32"),
    ("forge-cnn-ngram", "AVX2", {"avx512_bf16"}, "fp32"),  # ATEN_CPU_CAPABILITY=avx2 on a BF16 CPU
])
def test_auto_picks_by_image_tower_and_cpu_flags(tower, capability, flags, expected):
    assert auto_precision(create_model(tower), capability, flags) == expected


@pytest.mark.parametrize("capability, flags, expected", [
    ("AVX512", {"avx512_vnni"}, "onednn"),
    ("AVX512", {"amx_int8"}, "onednn"),
    ("AVX512", set(), "fbgemm"),
    ("AVX2", {"avx512_vnni", "avx_vnni"}, "fbgemm"),  # AVX2 emulation on a VNNI CPU
])
def test_int8_packs_for_onednn_with_vnni_and_fbgemm_without(capability, flags, expected):
    if set(ENGINES) != {"onednn", "fbgemm"}:
        pytest.skip("this torch build lacks oneDNN or fbgemm quantized kernels")
    assert int8_engine(capability, flags) == expected


def test_auto_reads_the_machines_flags(vit_model, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.setattr(inference, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert inference_precision(for_inference(vit_model, "auto")) == "int8"
    assert inference_precision(for_inference(create_model("forge-cnn-ngram"), "auto")) == "bf16"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "DEFAULT")
    assert for_inference(vit_model, "auto") is vit_model


def test_bf16_runs_under_autocast_and_returns_float32_features(vit_model):
    images, tokens = inputs(vit_model)
    bf16 = for_inference(vit_model, "bf16")
    assert isinstance(bf16, AutocastCLIP) and bf16.visual.conv1.weight is vit_model.visual.conv1.weight
    with torch.no_grad():
        features = bf16.encode_image(images, normalize=True)
        assert features.dtype == torch.float32 and torch.allclose(features.norm(dim=-1), torch.ones(len(images)))
        assert min_cosine(features, vit_model.encode_image(images)) >= 0.99
        assert min_cosine(bf16.encode_text(tokens), vit_model.encode_text(tokens)) >= 0.99


def test_for_inference_records_the_precision_and_the_float_weights(vit_model):
    assert for_inference(vit_model, "fp32") is vit_model
    for precision in ("bf16", "int8"):
        converted = for_inference(vit_model, precision)
        assert inference_precision(converted) == precision
        assert model_fingerprint(converted) == f"{model_fingerprint(vit_model)}-{precision}"
        assert for_inference(converted, "auto") is converted
    with pytest.raises(ValueError, match="already runs at int8"):
        for_inference(for_inference(vit_model, "int8"), "bf16")
    with pytest.raises(ValueError, match="unknown precision"):
        for_inference(vit_model, "fp16")


def write_colours(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for colour in COLOURS:
        for variant in range(3):
            colour_image(colour, variant).save(folder / f"{colour}_{variant}.png")
    return folder


def test_an_index_records_its_precision_keeps_it_and_refuses_another(colour_model, tmp_path):
    folder, index_path = write_colours(tmp_path / "images"), tmp_path / "index"
    build_index([folder], index_path, colour_model, workers=0, progress=False, precision="int8")
    with ImageIndex.open(index_path) as index:
        assert index.model_id == f"{model_fingerprint(clipforge.load_model(colour_model))}-int8"
    colour_image("red", 7).save(folder / "red_7.png")
    assert build_index([folder], index_path, colour_model, workers=0, progress=False).added == 1  # stays int8
    with pytest.raises(IndexModelMismatch):
        build_index([folder], index_path, colour_model, workers=0, progress=False, precision="fp32")
    with ImageIndex.open(index_path) as index:
        assert inference_precision(Searcher.for_index(index).model) == "int8"
        told = Searcher.for_index(index, precision="fp32")
        assert inference_precision(told.model) == "fp32"
        assert {hit.path.name.split("_")[0] for hit in told.by_text("a red square", k=4)} == {"red"}


def test_the_cli_option_reaches_the_model(colour_model, tmp_path, capsys, monkeypatch):
    reached = []

    def recording(model, precision="auto", **options):
        reached.append(precision)
        return for_inference(model, precision, **options)

    for module in (inference, clipforge.search.builder, clipforge.search.query):  # classify imports it when it runs
        monkeypatch.setattr(module, "for_inference", recording)
    folder, index = write_colours(tmp_path / "images"), ["--index", str(tmp_path / "index")]
    assert main(["index", "build", str(folder), "--model", str(colour_model), "--workers", "0", "--no-progress",
                 "--precision", "bf16", *index]) == 0
    with ImageIndex.open(tmp_path / "index") as built:
        assert built.model_id.endswith("-bf16")
    capsys.readouterr()
    assert main(["search", "a blue square", "-k", "3", "--json", *index]) == 0
    assert {Path(hit["path"]).name.split("_")[0] for hit in json.loads(capsys.readouterr().out)} == {"blue"}
    assert main(["classify", str(folder / "green_1.png"), "--labels", ",".join(COLOURS), "--model", str(colour_model),
                 "--precision", "int8", "--json", "--no-cache"]) == 0
    assert json.loads(capsys.readouterr().out)["top"][0]["label"] == "green"
    assert reached == ["bf16", "bf16", "int8"]  # build, search (the index's own), classify


def test_int8_is_refused_off_the_cpu(vit_model):
    with pytest.raises(ValueError, match="int8 runs on the CPU"):
        for_inference(vit_model.to("meta"), "int8")
