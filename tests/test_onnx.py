"""ONNX export as a specification: each tower kind exported by `export_onnx` (and `clipforge export`)
gives, under ONNX Runtime, PyTorch's features within 1e-4 at any batch size and text length; the
JSON beside the graphs carries the preprocessing, the tokenizer and the logit scale; bad input fails
with a clear message and leaves nothing behind."""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from clipforge.checkpoints.native import save_model
from clipforge.checkpoints.onnx_export import export_onnx
from clipforge.checkpoints.onnx_runtime import OnnxCLIP, OnnxModelError, load_onnx
from clipforge.cli import main
from clipforge.core.extras import MissingExtraError
from clipforge.images import ImageTransform
from clipforge.models import create_model

NGRAM_MODEL = {"embed_dim": 32, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16, 32]},
               "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 64, "vocab_size": 1024,
                        "width": 32, "ngram_dropout": 0.1}}
MODELS = {"tiny-vit": "tiny-vit", "tiny-rn": "tiny-rn", "convnet-ngram": NGRAM_MODEL}
TEXTS = ["a red square", "", "two small green circles beside a large blue triangle on a white background",
         "a photo of a dog", "émoji ✨ and punctuation!?"]
TOLERANCE = 1e-4


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    """(PyTorch model, its export folder) for each tower kind, exported once per module."""
    torch.manual_seed(0)
    model = create_model(MODELS[request.param]).eval()
    with torch.no_grad():
        model.logit_scale.fill_(3.2)
    folder = tmp_path_factory.mktemp("onnx") / request.param
    export_onnx(model, None, folder)
    return model, folder


@pytest.mark.parametrize("batch", [1, 3, 8])
def test_image_features_equal_pytorch_at_any_batch_size(exported, batch):
    model, folder = exported
    pixels = torch.randn(batch, 3, model.image_size, model.image_size)
    onnx = OnnxCLIP(folder)
    with torch.no_grad():
        expected = model.encode_image(pixels)
    assert onnx.encode_image(pixels).shape == expected.shape
    torch.testing.assert_close(onnx.encode_image(pixels), expected, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(onnx.encode_image(pixels.numpy(), normalize=True),
                               model.encode_image(pixels, normalize=True).detach(), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("count", [1, 2, 5])
def test_text_features_equal_pytorch_at_any_batch_size(exported, count):
    model, folder = exported
    tokens = model.tokenize(TEXTS[:count], truncate=True)
    with torch.no_grad():
        expected = model.encode_text(tokens)
    torch.testing.assert_close(OnnxCLIP(folder).encode_text(tokens), expected, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("length", [5, 12, 20])
def test_text_features_equal_pytorch_at_any_text_length(exported, length):
    """Rows cut to `length` columns (shorter than the context), fed to the graph as they are."""
    model, folder = exported
    tokens = model.tokenize(TEXTS, truncate=True)[:, :length]
    session = OnnxCLIP(folder).text_session
    direct = torch.from_numpy(session.run(None, {"tokens": tokens.numpy()})[0])
    with torch.no_grad():
        expected = model.encode_text(tokens)
    torch.testing.assert_close(direct, expected, atol=TOLERANCE, rtol=0)
    torch.testing.assert_close(OnnxCLIP(folder).encode_text(tokens), expected, atol=TOLERANCE, rtol=0)


def test_the_runtime_tokenizes_and_scales_as_the_model_does(exported):
    model, folder = exported
    onnx, preprocess = load_onnx(folder)
    assert torch.equal(onnx.tokenize(TEXTS, truncate=True), model.tokenize(TEXTS, truncate=True))
    assert (onnx.image_size, onnx.context_length) == (model.image_size, model.context_length)
    assert onnx.logit_scale_exp().item() == pytest.approx(model.logit_scale_exp().item())
    assert preprocess.image_size == model.image_size


def test_the_json_round_trips_preprocessing_and_tokenizer(tmp_path):
    model = create_model("tiny-vit")
    preprocess = ImageTransform(model.image_size, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), interpolation="bilinear")
    export_onnx(model, preprocess, tmp_path / "out")
    metadata = json.loads((tmp_path / "out" / "clipforge_onnx.json").read_text())
    assert metadata["preprocess"] == {"image_size": 32, "mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3],
                                      "interpolation": "bilinear", "resize_mode": "shortest"}
    assert metadata["tokenizer"] == {"kind": "bpe", "context_length": model.context_length,
                                     "vocab": "vocab.json", "merges": "merges.txt"}
    assert {"vocab.json", "merges.txt", "image_encoder.onnx", "text_encoder.onnx"} <= {
        path.name for path in (tmp_path / "out").iterdir()}
    loaded = OnnxCLIP(tmp_path / "out").preprocess
    assert (loaded.mean, loaded.std, loaded.interpolation) == (preprocess.mean, preprocess.std, "bilinear")


def test_the_tokenizer_is_described_beside_the_graphs(exported):
    """BPE: its files beside the JSON; the n-gram hasher: its bucket count, and no files."""
    model, folder = exported
    info = json.loads((folder / "clipforge_onnx.json").read_text())["tokenizer"]
    assert info["context_length"] == model.context_length
    if model.config.text.kind == "ngram_bag":
        assert (info["kind"], info["buckets"]) == ("ngram", model.tokenizer.vocab_size)
        assert not (folder / "vocab.json").exists()
    else:
        assert info["kind"] == "bpe" and (folder / info["vocab"]).is_file() and (folder / info["merges"]).is_file()


def test_export_command_writes_a_folder_the_runtime_reads(tmp_path, capsys):
    model = create_model(NGRAM_MODEL)
    save_model(model, tmp_path / "model")
    assert main(["export", str(tmp_path / "model"), "--onnx", str(tmp_path / "out")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "image_encoder.onnx" in printed["files"] and "clipforge_onnx.json" in printed["files"]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(OnnxCLIP(tmp_path / "out").encode_image(pixels), model.encode_image(pixels),
                                   atol=TOLERANCE, rtol=0)


def test_export_of_a_missing_model_says_so_and_writes_nothing(tmp_path, capsys):
    assert main(["export", str(tmp_path / "no-such-model"), "--onnx", str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert error.startswith("clipforge export: ") and "no-such-model" in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_folder_that_holds_files_and_leaves_it_alone(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    assert main(["export", "tiny-vit", "--onnx", str(tmp_path / "out")]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [path.name for path in (tmp_path / "out").iterdir()] == ["notes.txt"]
    with pytest.raises(FileExistsError, match="already exists"):
        export_onnx(create_model("tiny-vit"), None, tmp_path / "out")


def test_the_runtime_refuses_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        OnnxCLIP(tmp_path / "missing")
    with pytest.raises(OnnxModelError, match="clipforge_onnx.json"):
        OnnxCLIP(tmp_path)


def test_the_runtime_refuses_inputs_of_the_wrong_shape(exported):
    model, folder = exported
    onnx = OnnxCLIP(folder)
    with pytest.raises(ValueError, match="expected images"):
        onnx.encode_image(torch.zeros(1, 3, model.image_size + 1, model.image_size))
    with pytest.raises(ValueError, match="expected token ids"):
        onnx.encode_text(torch.ones(1, model.context_length + 1, dtype=torch.long))


def test_without_onnxruntime_the_runtime_names_the_extra(exported, monkeypatch):
    _, folder = exported
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'clipforge\[onnx\]'"):
        OnnxCLIP(folder)


def test_classify_with_the_onnx_runtime_gives_pytorchs_probabilities(tmp_path, capsys):
    from PIL import Image

    torch.manual_seed(0)
    model = create_model(NGRAM_MODEL)
    save_model(model, tmp_path / "model")
    export_onnx(model, None, tmp_path / "onnx")
    images = []
    for name, colour in (("red.png", (220, 30, 30)), ("green.png", (30, 200, 40))):
        Image.new("RGB", (40, 40), colour).save(tmp_path / name)
        images.append(str(tmp_path / name))
    common = [*images, "--labels", "red,green,blue", "--json", "--top", "3"]
    assert main(["classify", *common, "--model", str(tmp_path / "model"), "--no-cache"]) == 0
    torch_lines = capsys.readouterr().out.splitlines()
    assert main(["classify", *common, "--model", str(tmp_path / "onnx"), "--runtime", "onnx"]) == 0
    onnx_lines = capsys.readouterr().out.splitlines()
    assert len(onnx_lines) == len(torch_lines) == 2
    for expected, got in zip(map(json.loads, torch_lines), map(json.loads, onnx_lines)):
        assert got["image"] == expected["image"]
        probabilities = {entry["label"]: entry["probability"] for entry in got["top"]}
        for entry in expected["top"]:
            assert probabilities[entry["label"]] == pytest.approx(entry["probability"], abs=TOLERANCE)


def test_classify_with_the_onnx_runtime_refuses_a_model_that_is_not_an_export(tmp_path, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    save_model(create_model(NGRAM_MODEL), tmp_path / "model")
    argv = ["classify", str(tmp_path / "a.png"), "--labels", "a,b", "--model", str(tmp_path / "model"), "--runtime", "onnx"]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert error.startswith("clipforge classify: ") and "clipforge_onnx.json" in error


def test_without_onnxscript_export_names_the_extra_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'clipforge\[onnx\]'"):
        export_onnx(create_model(NGRAM_MODEL), None, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
