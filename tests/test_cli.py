import json

import torch

import clipforge
from clipforge.cli import main
from clipforge.models import create_model


def test_models_lists_configs_and_pretrained(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "ViT-B-32" in out and "tiny-vit" in out and "pretrained: RN101" in out
    assert "ViT-B/32 (ViT-B-32)" in out  # the published spelling, and the config's


def test_convert_bare_weights_to_native_and_hf(tmp_path, capsys):
    model = create_model("tiny-vit")
    torch.save(model.state_dict(), tmp_path / "w.pt")
    assert main(["convert", str(tmp_path / "w.pt"), str(tmp_path / "native"), "--config", "tiny-vit"]) == 0
    assert json.loads(capsys.readouterr().out)["format"] == "native"
    loaded = clipforge.load_model(tmp_path / "native")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert main(["convert", str(tmp_path / "native"), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "hf" / "model.safetensors").is_file()


def test_convert_without_activation_explains_what_is_missing(tmp_path, capsys):
    torch.save(create_model("tiny-vit").state_dict(), tmp_path / "w.pt")
    assert main(["convert", str(tmp_path / "w.pt"), str(tmp_path / "out")]) == 1
    assert "activation" in capsys.readouterr().err


def test_tokenize_prints_ids_ending_in_eot(capsys):
    assert main(["tokenize", "a photo of a cat"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["ids"] == [49406, 320, 1125, 539, 320, 2368, 49407]


def test_data_shapes_then_shards_round_trip(tmp_path, capsys):
    assert main(["data", "shapes", str(tmp_path / "shapes"), "--count", "12", "--shard-size", "5"]) == 0
    assert len(list((tmp_path / "shapes").glob("*.tar"))) == 3
    assert main(["data", "shards", str(tmp_path / "shapes"), str(tmp_path / "small"), "--max-side", "32"]) == 0
    assert "wrote 12 samples" in capsys.readouterr().out


def test_train_without_prepared_data_says_to_run_prepare(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPFORGE_DATA", str(tmp_path / "nothing"))
    assert main(["train", "--output-dir", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "clipforge data prepare" in capsys.readouterr().err
