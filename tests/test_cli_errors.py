"""Every mistake a user was seen to make gets a message that says what was wrong and what to do, and
a non-zero exit code; a command that fails leaves behind no output it created, and none exits 0
having done nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.checkpoints.loading import published_name
from clipforge.cli import main
from clipforge.data import ShardWriter
from clipforge.models import create_model
from clipforge.models.factory import canonical_name
from colour_model import COLOURS, colour_image
from data_helpers import encode

NGRAM_CONVNET = {"embed_dim": 16, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16]},
                 "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 32, "vocab_size": 256,
                          "width": 16}}


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `clipforge argv`, whether it returns or exits."""
    try:
        code = main(list(argv))
    except SystemExit as done:
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def entries(folder: Path) -> list[str]:
    """What a folder holds, hidden entries included, recursively."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture(scope="module")
def vit_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return clipforge.save_model(create_model("tiny-vit"), tmp_path_factory.mktemp("vit") / "model")


@pytest.fixture(scope="module")
def ngram_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default model's kind (ConvNet + n-gram text), which Hugging Face has no class for."""
    return clipforge.save_model(create_model(NGRAM_CONVNET), tmp_path_factory.mktemp("ngram") / "model")


@pytest.fixture(scope="module")
def index(vit_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(an index of four colour squares under `pictures/`, that folder)."""
    root = tmp_path_factory.mktemp("search")
    (root / "pictures").mkdir()
    for colour in COLOURS:
        colour_image(colour).save(root / "pictures" / f"{colour}.png")
    clipforge.search.build_index([root / "pictures"], root / "index", vit_model, workers=0, progress=False)
    return root / "index", root / "pictures"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run in an empty folder, so that nothing they write by default lands in the repository."""
    monkeypatch.chdir(tmp_path)


# search and dedup


def test_search_in_a_folder_that_does_not_exist_says_so(index, capsys):
    code, out, err = run(capsys, "search", "red", "--folder", "no/such/folder", "--index", str(index[0]))
    assert code == 1 and out == ""
    assert err.startswith("clipforge search: --folder no/such/folder: it does not exist")
    assert str(index[1]) in err  # what the index does cover


def test_search_in_a_folder_without_indexed_images_says_so(index, tmp_path, capsys):
    (tmp_path / "elsewhere").mkdir()
    code, out, err = run(capsys, "search", "red", "--folder", str(tmp_path / "elsewhere"), "--index", str(index[0]))
    assert code == 1 and out == "" and "it holds no indexed image" in err


def test_search_in_an_indexed_folder_answers(index, capsys):
    code, out, err = run(capsys, "search", "red", "--folder", str(index[1]), "--index", str(index[0]), "-k", "2")
    assert code == 0 and len(out.splitlines()) == 2


@pytest.mark.parametrize("query", ["", "   "])
def test_an_empty_search_query_is_refused(index, query, capsys):
    code, out, err = run(capsys, "search", query, "--index", str(index[0]))
    assert code == 1 and out == ""
    assert "the query is empty" in err and "--image" in err


def test_search_for_no_results_is_a_usage_error(index, capsys):
    code, _, err = run(capsys, "search", "red", "-k", "0", "--index", str(index[0]))
    assert code == 2 and "-k: must be at least 1, got 0" in err


def test_dedup_in_a_folder_that_does_not_exist_says_so(index, capsys):
    code, out, err = run(capsys, "dedup", "--folder", "no/such/folder", "--index", str(index[0]))
    assert code == 1 and out == "" and "--folder no/such/folder: it does not exist" in err


def test_search_of_an_index_whose_images_are_all_gone_says_it_is_empty(vit_model, tmp_path, capsys):
    (tmp_path / "pictures").mkdir()
    colour_image("red").save(tmp_path / "pictures" / "red.png")
    clipforge.search.build_index([tmp_path / "pictures"], tmp_path / "index", vit_model, workers=0, progress=False)
    (tmp_path / "pictures" / "red.png").unlink()
    assert run(capsys, "index", "update", "--index", str(tmp_path / "index"), "--no-progress", "--workers", "0")[0] == 0
    code, out, err = run(capsys, "search", "red", "--index", str(tmp_path / "index"))
    assert code == 1 and out == "" and "holds no images" in err and "clipforge index build" in err


def test_indexing_a_folder_without_images_fails_and_leaves_no_index(vit_model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "index", "build", str(tmp_path / "empty"), "--model", str(vit_model),
                         "--index", str(tmp_path / "index"), "--no-progress", "--workers", "0")
    assert code == 1 and "found no images to index under" in err and "png" in err
    assert not (tmp_path / "index").exists()


# classify


@pytest.mark.parametrize("labels", ["red,,blue", ",red,blue", "red,blue,", "red, ,blue"])
def test_classify_refuses_an_empty_label(vit_model, tmp_path, labels, capsys):
    colour_image("red").save(tmp_path / "red.png")
    code, out, err = run(capsys, "classify", str(tmp_path / "red.png"), "--labels", labels, "--model", str(vit_model))
    assert code == 1 and out == ""
    assert "has an empty label" in err and '--labels "cat,dog,car"' in err


def test_classify_refuses_a_single_label(vit_model, tmp_path, capsys):
    colour_image("red").save(tmp_path / "red.png")
    code, out, err = run(capsys, "classify", str(tmp_path / "red.png"), "--labels", "red", "--model", str(vit_model))
    assert code == 1 and out == "" and "two or more" in err


def test_classify_refuses_a_labels_file_with_a_single_class(vit_model, tmp_path, capsys):
    colour_image("red").save(tmp_path / "red.png")
    (tmp_path / "classes.txt").write_text("red\n")
    code, _, err = run(capsys, "classify", str(tmp_path / "red.png"), "--labels-file", str(tmp_path / "classes.txt"),
                       "--model", str(vit_model))
    assert code == 1 and "two or more" in err


# convert and unreadable checkpoints


def test_convert_to_huggingface_refused_creates_no_folder(ngram_model, tmp_path, capsys):
    code, out, err = run(capsys, "convert", str(ngram_model), str(tmp_path / "out" / "hf"), "--to", "hf")
    assert code == 1 and out == "" and "Hugging Face" in err
    assert entries(tmp_path) == []  # neither the folder nor the one above it


def test_convert_to_huggingface_refused_leaves_an_existing_empty_folder_as_it_was(ngram_model, tmp_path, capsys):
    (tmp_path / "hf").mkdir()
    assert run(capsys, "convert", str(ngram_model), str(tmp_path / "hf"), "--to", "hf")[0] == 1
    assert entries(tmp_path) == ["hf"]


def test_convert_refuses_a_destination_that_holds_files_and_leaves_them(vit_model, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    code, _, err = run(capsys, "convert", str(vit_model), str(tmp_path / "out"))
    assert code == 1 and "already exists" in err
    assert entries(tmp_path) == ["out", "out/notes.txt"] and (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_convert_into_an_empty_folder_writes_the_model_there(vit_model, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    assert run(capsys, "convert", str(vit_model), str(tmp_path / "out"))[0] == 0
    assert entries(tmp_path) == ["out", "out/config.json", "out/model.safetensors"]


def test_a_text_file_named_pt_is_named_for_what_it_is(tmp_path, capsys):
    (tmp_path / "x.pt").write_text("hello\n")
    code, out, err = run(capsys, "convert", str(tmp_path / "x.pt"), str(tmp_path / "out"))
    assert code == 1 and out == ""
    assert "x.pt as a checkpoint: it is a text file, not weights" in err and "clipforge reads .safetensors" in err
    assert "101" not in err and not (tmp_path / "out").exists()


def test_a_png_named_pt_is_named_for_what_it_is_without_torchs_advice(tmp_path, capsys):
    colour_image("red").save(tmp_path / "y.pt", format="PNG")
    code, _, err = run(capsys, "convert", str(tmp_path / "y.pt"), str(tmp_path / "out"))
    assert code == 1 and "it is a PNG image, not weights" in err
    assert "weights_only" not in err and not (tmp_path / "out").exists()


def test_a_pickle_holding_objects_names_the_object_and_how_to_save_weights(tmp_path, capsys):
    torch.save({"args": argparse.Namespace(lr=1.0), "state_dict": create_model("tiny-vit").state_dict()},
               tmp_path / "run.pt")
    code, _, err = run(capsys, "convert", str(tmp_path / "run.pt"), str(tmp_path / "out"), "--config", "tiny-vit")
    assert code == 1 and "argparse.Namespace" in err and "torch.save(model.state_dict(), path)" in err
    assert "weights_only" not in err


def test_an_empty_and_a_truncated_checkpoint_say_so(tmp_path, capsys):
    torch.save(create_model("tiny-vit").state_dict(), tmp_path / "whole.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "whole.pt").read_bytes()[:1000])
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "damaged or incomplete" in run(capsys, "convert", str(tmp_path / "cut.pt"), str(tmp_path / "a"))[2]
    assert "the file is empty" in run(capsys, "convert", str(tmp_path / "empty.pt"), str(tmp_path / "b"))[2]


# eval


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    """A data folder with a training set and two evaluation sets, as `clipforge data prepare` leaves it."""
    sets = {}
    for name, split in (("twemoji", "train"), ("openmoji", "eval"), ("fashion-mnist", "eval")):
        with ShardWriter(tmp_path / "data" / name, shard_size=10) as writer:
            writer.write("0", encode(colour_image("red")), "png", "a red square", {"group": "red", "name": "red"})
        shards = [{"file": str(path.relative_to(tmp_path / "data"))} for path in writer.shards]
        sets[name] = {"split": split, "shards": shards}
    (tmp_path / "data" / "manifest.json").write_text(json.dumps({"format": 1, "sets": sets}))
    return tmp_path / "data"


def test_a_mistyped_eval_dataset_lists_the_evaluation_sets(prepared, vit_model, capsys):
    code, out, err = run(capsys, "eval", "--model", str(vit_model), "--dataset", "openmojii",
                         "--data-dir", str(prepared), "--output", "eval")
    assert code == 1 and out == ""
    assert "no dataset 'openmojii'" in err and "fashion-mnist, openmoji" in err and "shapes" in err
    assert "Did you mean openmoji?" in err
    assert "builtin:" not in err and "twemoji" not in err  # no internal prefix, no training sets
    assert not Path("eval").exists()


def test_a_mistyped_eval_dataset_without_prepared_data_is_still_a_typo(vit_model, tmp_path, capsys):
    code, _, err = run(capsys, "eval", "--model", str(vit_model), "--dataset", "openmojii",
                       "--data-dir", str(tmp_path / "nothing"))
    assert code == 1 and "no dataset 'openmojii'" in err and "clipforge data prepare" not in err


def test_eval_of_a_model_that_cannot_load_leaves_no_output_folder(tmp_path, capsys):
    code, _, err = run(capsys, "eval", "--model", "no-such-model", "--dataset", "shapes",
                       "--output", str(tmp_path / "runs" / "eval"))
    assert code == 1 and "no-such-model is neither a file, a folder nor a published model" in err
    assert entries(tmp_path) == []


# tokenize and published names


def test_an_overlong_text_names_the_truncate_flag(capsys):
    code, out, err = run(capsys, "tokenize", "word " * 100)
    assert code == 1 and out == ""
    assert "pass --truncate" in err and "--context-length 77" in err
    assert "truncate=True" not in err and "context_length=" not in err
    code, out, _ = run(capsys, "tokenize", "word " * 100, "--truncate")
    assert code == 0 and len(json.loads(out)["ids"]) == 77


def test_an_overlong_text_for_an_ngram_model_names_the_flags(ngram_model, capsys):
    code, _, err = run(capsys, "tokenize", "--model", str(ngram_model), "word " * 40)
    assert code == 1 and "--context-length 32" in err and "pass --truncate" in err


def test_published_names_are_shown_and_accepted_in_both_spellings(capsys):
    code, out, _ = run(capsys, "models")
    assert code == 0 and "ViT-B/32 (ViT-B-32)" in out and "ViT-L/14@336px (ViT-L-14-336)" in out
    for name in clipforge.list_pretrained():
        assert canonical_name(published_name(name)) == name
    for spelling in ("ViT-B/32", "ViT-B-32"):  # offline: accepted as the published model, then not downloaded
        code, _, err = run(capsys, "tokenize", "--model", spelling, "a cat")
        assert code == 1 and "ViT-B-32.pt is not in the cache" in err


def test_an_unknown_model_name_lists_published_names_in_both_spellings(capsys):
    code, _, err = run(capsys, "tokenize", "--model", "ViT-B/33", "a cat")
    assert code == 1 and "neither a file, a folder nor a published model" in err and "ViT-B/32 (ViT-B-32)" in err


# train and data


def test_train_without_data_leaves_no_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLIPFORGE_DATA", str(tmp_path / "nothing"))
    code, _, err = run(capsys, "train", "--output-dir", str(tmp_path / "runs" / "first"), "--no-progress")
    assert code == 1 and "clipforge data prepare" in err
    assert entries(tmp_path) == []


def test_a_bad_training_option_is_named_as_its_flag(capsys):
    code, _, err = run(capsys, "train", "--batch-size", "10", "--accum-freq", "3")
    assert code == 1 and "--batch-size 10 must be a multiple of --accum-freq 3" in err
    code, _, err = run(capsys, "train", "--loss", "hinge")
    assert code == 1 and "--loss must be one of" in err


def test_a_training_config_file_that_cannot_be_read_is_named(tmp_path, capsys):
    (tmp_path / "run.json").write_text("{")
    code, _, err = run(capsys, "train", "--config", str(tmp_path / "run.json"))
    assert code == 1 and f"cannot use --config {tmp_path / 'run.json'}" in err


def test_shards_of_a_source_that_does_not_exist_are_refused_before_writing(tmp_path, capsys):
    code, _, err = run(capsys, "data", "shards", str(tmp_path / "pairs.csv"), str(tmp_path / "shards"))
    assert code == 1 and "pairs.csv does not exist" in err and "a table (.csv" in err
    assert entries(tmp_path) == []


def test_shards_of_an_empty_folder_fail_and_leave_no_output(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, out, err = run(capsys, "data", "shards", str(tmp_path / "empty"), str(tmp_path / "shards"))
    assert code == 1 and out == "" and "holds no samples" in err
    assert entries(tmp_path) == ["empty"]


def test_shards_of_unusable_samples_fail_and_say_why(tmp_path, capsys):
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "a.png").write_text("not an image")
    (tmp_path / "pictures" / "a.txt").write_text("a caption")
    code, _, err = run(capsys, "data", "shards", str(tmp_path / "pictures"), str(tmp_path / "shards"))
    assert code == 1 and "every sample" in err and "skipped 1 sample" in err
    assert not (tmp_path / "shards").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["data", "shapes", "out", "--count", "0"], "--count: must be at least 1, got 0"),
    (["tokenize", "a", "--context-length", "x"], "--context-length: must be a whole number, got 'x'"),
    (["eval", "--model", "m", "--dataset", "shapes", "--limit", "-1"], "--limit: must be at least 1, got -1"),
])
def test_a_bad_number_is_a_usage_error(argv, message, capsys):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err
