"""The default model's kind (a ConvNet image tower with the bag-of-n-grams text tower), trained in
the test session through `clipforge train` on data laid out as `clipforge data prepare` leaves it,
then taken through every command a user runs on it, beside the ViT colour model; and `clipforge
train` and `clipforge eval` printing identical figures under the same names."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch

import clipforge
from clipforge.cli import main
from clipforge.data import ShardWriter
from clipforge.text import NgramTokenizer
from colour_model import COLOURS, colour_image
from data_helpers import encode

NGRAM_MODEL = {"embed_dim": 32, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16, 32]},
               "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 64, "vocab_size": 1024,
                        "width": 32, "ngram_dropout": 0.1}}
SEEN = ("red", "green")  # the evaluation set's concepts that count as seen in training


def write_set(folder: Path, per_colour: int, with_labels: bool) -> list[dict]:
    with ShardWriter(folder, shard_size=20) as writer:
        for colour in COLOURS:
            for variant in range(per_colour):
                meta = {"captions": [f"a {colour} square", f"a {colour} box"]}
                if with_labels:
                    meta |= {"group": colour, "seen": colour in SEEN}
                writer.write(f"{colour}{variant}", encode(colour_image(colour, variant)), "png", f"a {colour} square",
                             meta)
    return [{"file": str(shard.relative_to(folder.parent))} for shard in writer.shards]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with a manifest as `clipforge data prepare` writes it: a training set, and an
    evaluation set named `openmoji`, so its tasks (retrieval, 9-group zero-shot) come from tasks.json."""
    root = tmp_path_factory.mktemp("prepared")
    sets = {"colours": {"split": "train", "shards": write_set(root / "colours", 16, with_labels=False)},
            "openmoji": {"split": "eval", "shards": write_set(root / "openmoji", 5, with_labels=True)}}
    (root / "manifest.json").write_text(json.dumps({"format": 1, "sets": sets}))
    return root


def printed_figures(output: str) -> dict[str, str]:
    """`name value` lines of a command's output, the value as printed."""
    figures = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].replace(".", "", 1).replace("-", "", 1).isdigit():
            figures[parts[0]] = parts[1]
    return figures


@pytest.fixture(scope="module")
def trained(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(model folder, the figures `clipforge train` printed)."""
    root = tmp_path_factory.mktemp("ngram-run")
    (root / "model.json").write_text(json.dumps(NGRAM_MODEL))
    environment = {**os.environ, "CLIPFORGE_DATA": str(prepared)}
    command = [sys.executable, "-m", "clipforge.cli", "train", "--model", str(root / "model.json"),
               "--steps", "40", "--batch-size", "32", "--lr", "3e-3", "--warmup-steps", "5",
               "--output-dir", str(root / "run"), "--no-progress", "--precision", "fp32"]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return root / "run" / "model", printed_figures(done.stdout)


@pytest.fixture(params=["ngram", "vit"])
def any_model(request: pytest.FixtureRequest) -> Path:
    """The session's two trained models: the default kind and the ViT colour model."""
    return request.getfixturevalue("trained")[0] if request.param == "ngram" else request.getfixturevalue("colour_model")


def test_the_trained_model_is_the_default_kind(trained):
    model = clipforge.load_model(trained[0])
    assert type(model.visual).__name__ == "ConvNet" and type(model.text).__name__ == "NgramBagText"
    assert isinstance(model.tokenizer, NgramTokenizer) and model.tokenizer.vocab_size == 1024


def test_train_and_eval_print_identical_figures_under_shared_names(trained, prepared, tmp_path, capsys):
    model_dir, from_training = trained
    assert main(["eval", "--model", str(model_dir), "--dataset", "openmoji", "--data-dir", str(prepared),
                 "--output", str(tmp_path / "eval")]) == 0
    from_eval = printed_figures(capsys.readouterr().out)
    shared = sorted(set(from_training) & set(from_eval))
    assert {"openmoji_one_caption_image_to_text_R@10", "openmoji_all_captions_image_to_text_R@10",
            "openmoji_one_caption_seen_text_to_image_R@1", "openmoji_zeroshot_top1"} <= set(shared)
    assert {name: from_training[name] for name in shared} == {name: from_eval[name] for name in shared}


def test_the_two_retrieval_protocols_differ_in_their_galleries(trained, prepared, tmp_path, capsys):
    main(["eval", "--model", str(trained[0]), "--dataset", "openmoji", "--data-dir", str(prepared),
          "--output", str(tmp_path / "eval"), "--task", "retrieval"])
    retrieval = json.loads((tmp_path / "eval" / "results.json").read_text())["results"][str(trained[0])]["openmoji"]
    assert retrieval["retrieval"]["one_caption"]["captions"] == 20
    assert retrieval["retrieval"]["all_captions"]["captions"] == 40


def test_tokenize_prints_the_models_ngram_ids(trained, capsys):
    assert main(["tokenize", "--model", str(trained[0]), "a red square", "blue"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    hasher = NgramTokenizer(1024)
    assert [row["ids"] for row in rows] == [hasher.encode("a red square"), hasher.encode("blue")]


def test_convert_to_native_keeps_the_outputs(trained, tmp_path, capsys):
    assert main(["convert", str(trained[0]), str(tmp_path / "copy")]) == 0
    original, copy = clipforge.load_model(trained[0]), clipforge.load_model(tmp_path / "copy")
    images, texts = torch.randn(2, 3, 32, 32), original.tokenize(["a red square", "a blue box"])
    assert torch.equal(original(images, texts).logits_per_image, copy(images, texts).logits_per_image)


def test_convert_to_huggingface_is_refused_with_a_reason_and_writes_nothing(trained, tmp_path, capsys):
    assert main(["convert", str(trained[0]), str(tmp_path / "hf"), "--to", "hf"]) == 1
    error = capsys.readouterr().err
    assert "Hugging Face" in error and "ConvNet" in error
    assert not (tmp_path / "hf").exists()


def test_classify_ranks_every_label_with_probabilities(any_model, tmp_path, capsys):
    colour_image("red", 1).save(tmp_path / "red.png")
    assert main(["classify", str(tmp_path / "red.png"), "--labels", ",".join(COLOURS), "--model", str(any_model),
                 "--json", "--no-cache"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {entry["label"] for entry in result["top"]} == set(COLOURS)
    assert sum(entry["probability"] for entry in result["top"]) == pytest.approx(1.0, abs=1e-5)


def test_index_build_then_text_search_finds_every_image(any_model, tmp_path, capsys):
    for colour in COLOURS:
        colour_image(colour, 2).save(tmp_path / f"{colour}.png")
    index = tmp_path / "index"
    assert main(["index", "build", str(tmp_path), "--model", str(any_model), "--index", str(index),
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["search", "a red square", "--index", str(index), "--json", "-k", "10"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert {Path(hit["path"]).name for hit in hits} == {f"{colour}.png" for colour in COLOURS}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_answers_with_the_models_tokenizer(any_model, tmp_path):
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "clipforge.cli", "serve", "--model", str(any_model),
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                info = httpx.get(f"{base}/api/info", timeout=5).json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.5)
        model = clipforge.load_model(any_model)
        assert info["context_length"] == model.context_length
        image = tmp_path / "red.png"
        colour_image("red", 1).save(image)
        uploaded = httpx.post(f"{base}/api/images", files={"file": ("red.png", image.read_bytes(), "image/png")}).json()
        matrix = httpx.post(f"{base}/api/matrix", json={"images": [uploaded["id"]],
                                                        "prompts": ["a red square", "a blue square"]}).json()
        features = model.encode_image(clipforge.load(any_model)[1](colour_image("red", 1)).unsqueeze(0), normalize=True)
        expected = features @ model.encode_text(model.tokenize(["a red square", "a blue square"]), normalize=True).t()
        assert matrix["cosine"][0] == pytest.approx(expected[0].tolist(), abs=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_results_name_a_prepared_set_not_this_machines_paths(trained, prepared, tmp_path):
    assert main(["eval", "--model", str(trained[0]), "--dataset", "openmoji", "--data-dir", str(prepared),
                 "--output", str(tmp_path / "eval"), "--task", "retrieval"]) == 0
    results = (tmp_path / "eval" / "results.json").read_text()
    assert json.loads(results)["datasets"]["openmoji"]["source"] == "builtin:openmoji"
    assert str(prepared) not in results
