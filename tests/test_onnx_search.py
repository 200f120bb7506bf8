"""Search, indexing and the web app on an ONNX export (`--runtime onnx`), as a specification: an
export is known to an index by the fingerprint of the weights it was exported from, so an index built
under one runtime is searched (and updated) under the other with the same results; an export whose
files changed is another model; and a wrong folder, a GPU device or a missing extra is a clear error."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import clipforge
from clipforge.checkpoints.onnx_runtime import OnnxCLIP, load_for_inference, load_onnx
from clipforge.cli import main
from clipforge.search import ImageIndex, IndexModelMismatch, Searcher, build_index, model_fingerprint
from colour_model import COLOURS, colour_image

TOLERANCE = 1e-4
VARIANTS = 3
IMAGES = len(COLOURS) * VARIANTS


def write_colours(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for colour in COLOURS:
        for variant in range(VARIANTS):
            colour_image(colour, variant).save(folder / f"{colour}_{variant}.png")
    return folder


@pytest.fixture(scope="module")
def export(colour_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The colour model exported by `clipforge export --onnx`."""
    folder = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", str(colour_model), "--onnx", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colours(tmp_path_factory.mktemp("colours") / "images")


@pytest.fixture(scope="module")
def torch_index(colour_model: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("torch-index") / "index"
    build_index([images], index, colour_model, workers=0, progress=False)
    return index


@pytest.fixture(scope="module")
def onnx_index(export: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    index = tmp_path_factory.mktemp("onnx-index") / "index"
    build_index([images], index, export, workers=0, progress=False, runtime="onnx")
    return index


def vectors(index_path: Path) -> dict[str, np.ndarray]:
    """Every indexed path with its embedding."""
    with ImageIndex.open(index_path) as index, index.reading() as snapshot:
        return {path: np.array(snapshot.vectors[file.row]) for path, file in index.stored_files().items()}


def assert_same_ranking(expected: list, got: list) -> None:
    """Hits [(path, score)] with the same scores rank by rank (within 2 * TOLERANCE), and the same path
    at every rank whose score stands apart from its neighbours' (near ties may swap)."""
    assert len(got) == len(expected)
    scores = [float(score) for _, score in expected]
    for rank, ((path, score), (got_path, got_score)) in enumerate(zip(expected, got)):
        assert got_score == pytest.approx(score, abs=2 * TOLERANCE)
        neighbours = scores[max(0, rank - 1):rank] + scores[rank + 1:rank + 2]
        if all(abs(score - other) > 4 * TOLERANCE for other in neighbours):
            assert Path(got_path) == Path(path), f"rank {rank}"


def test_an_export_has_the_id_of_the_weights_it_was_exported_from(colour_model: Path, export: Path):
    model = clipforge.load_model(colour_model)
    onnx = OnnxCLIP(export)
    assert model_fingerprint(onnx) == model_fingerprint(model)
    assert onnx.config == model.config


def test_an_index_built_under_onnx_holds_pytorchs_features(torch_index: Path, onnx_index: Path):
    expected, got = vectors(torch_index), vectors(onnx_index)
    assert set(got) == set(expected) and len(got) == IMAGES
    for path, vector in expected.items():
        np.testing.assert_allclose(got[path], vector, atol=TOLERANCE, rtol=0)
    with ImageIndex.open(torch_index) as built_by_torch, ImageIndex.open(onnx_index) as built_by_onnx:
        assert built_by_onnx.model_id == built_by_torch.model_id


def test_query_features_under_onnx_equal_pytorchs(torch_index: Path, export: Path, colour_model: Path):
    with ImageIndex.open(torch_index) as index:
        under_torch = Searcher.for_index(index)
        under_onnx = Searcher.for_index(index, runtime="onnx", model=export)
        tokens = under_torch.model.tokenize([f"a {colour} square" for colour in COLOURS])
        with torch.no_grad():
            expected = under_torch.model.encode_text(tokens, normalize=True)
        torch.testing.assert_close(under_onnx.model.encode_text(tokens, normalize=True), expected,
                                   atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("built_under", ["torch", "onnx"])
def test_an_index_built_under_one_runtime_gives_the_other_the_same_top_results(
        built_under: str, torch_index: Path, onnx_index: Path, colour_model: Path, export: Path):
    index_path = torch_index if built_under == "torch" else onnx_index
    with ImageIndex.open(index_path) as index:
        under_torch = Searcher.for_index(index, model=colour_model)
        under_onnx = Searcher.for_index(index, runtime="onnx", model=export)
        for colour in COLOURS:
            expected = under_torch.by_text(f"a {colour} square", k=IMAGES)
            got = under_onnx.by_text(f"a {colour} square", k=IMAGES)
            assert_same_ranking(expected, got)
            assert {hit.path.name.split("_")[0] for hit in got[:VARIANTS]} == {colour}
        query = colour_image("blue", variant=7)
        assert_same_ranking(under_torch.by_image(query, k=IMAGES), under_onnx.by_image(query, k=IMAGES))


def test_an_export_whose_graph_changed_is_another_model(torch_index: Path, export: Path, tmp_path: Path):
    """A graph quantized in place no longer gives the recorded weights' features: its id is its own."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    changed = tmp_path / "int8"
    shutil.copytree(export, changed)
    quantize_dynamic(export / "image_encoder.onnx", changed / "image_encoder.onnx", weight_type=QuantType.QInt8)
    onnx = OnnxCLIP(changed)
    assert model_fingerprint(onnx) != model_fingerprint(OnnxCLIP(export))
    with ImageIndex.open(torch_index) as index, pytest.raises(IndexModelMismatch, match="ONNX export"):
        Searcher(index, onnx, onnx.preprocess)


def test_an_export_that_recorded_no_fingerprint_is_known_by_its_files(export: Path, tmp_path: Path):
    older = tmp_path / "older"
    shutil.copytree(export, older)
    metadata = json.loads((older / "clipforge_onnx.json").read_text())
    del metadata["weights"]
    (older / "clipforge_onnx.json").write_text(json.dumps(metadata))
    copy = tmp_path / "copy"
    shutil.copytree(older, copy)
    assert model_fingerprint(OnnxCLIP(older)) != model_fingerprint(OnnxCLIP(export))
    assert model_fingerprint(OnnxCLIP(older)) == model_fingerprint(OnnxCLIP(copy))  # the bytes, not the place


def test_cli_builds_under_onnx_searches_under_both_and_updates_under_torch(
        colour_model: Path, export: Path, tmp_path: Path, capsys):
    folder = write_colours(tmp_path / "images")
    index = ["--index", str(tmp_path / "index")]
    assert main(["index", "build", str(folder), "--model", str(export), "--runtime", "onnx", "--workers", "0",
                 "--no-progress", "--json", *index]) == 0
    assert json.loads(capsys.readouterr().out)["added"] == IMAGES
    assert main(["search", "a green square", "-k", str(IMAGES), "--json", "--runtime", "onnx", *index]) == 0
    under_onnx = [(hit["path"], hit["score"]) for hit in json.loads(capsys.readouterr().out)]
    assert main(["search", "a green square", "-k", str(IMAGES), "--json", "--model", str(colour_model), *index]) == 0
    under_torch = [(hit["path"], hit["score"]) for hit in json.loads(capsys.readouterr().out)]
    assert_same_ranking(under_torch, under_onnx)
    assert {Path(path).name.split("_")[0] for path, _ in under_onnx[:VARIANTS]} == {"green"}
    colour_image("red", 9).save(folder / "red_9.png")
    assert main(["index", "update", "--model", str(colour_model), "--workers", "0", "--no-progress", "--json",
                 *index]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["added"], report["indexed"]) == (1, IMAGES + 1)


def test_torch_runtime_on_an_export_says_to_add_the_runtime_option(export: Path, onnx_index: Path, capsys):
    """The index records the export as its model: searching it without --runtime onnx names the option."""
    assert main(["search", "a red square", "--index", str(onnx_index)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("clipforge search: ") and "--runtime onnx" in error and "Traceback" not in error


@pytest.mark.parametrize("command", ["index build", "search", "serve"])
def test_onnx_runtime_refuses_a_folder_that_is_not_an_export(command: str, colour_model: Path, images: Path,
                                                             torch_index: Path, tmp_path: Path, capsys):
    argv = {"index build": ["index", "build", str(images), "--index", str(tmp_path / "index"), "--workers", "0"],
            "search": ["search", "a red square", "--index", str(torch_index)],
            "serve": ["serve", "--index", str(torch_index)]}[command]
    assert main([*argv, "--model", str(colour_model), "--runtime", "onnx"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"clipforge {command}: ") and "clipforge_onnx.json" in error and "Traceback" not in error
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("command", ["classify", "index build", "search", "serve"])
def test_onnx_runtime_refuses_a_gpu_device(command: str, export: Path, images: Path, torch_index: Path,
                                           tmp_path: Path, capsys):
    argv = {"classify": ["classify", str(images / "red_0.png"), "--labels", "red,green"],
            "index build": ["index", "build", str(images), "--index", str(tmp_path / "index")],
            "search": ["search", "a red square", "--index", str(torch_index)],
            "serve": ["serve"]}[command]
    assert main([*argv, "--model", str(export), "--runtime", "onnx", "--device", "cuda:0"]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"clipforge {command}: ") and "runs on the CPU" in error and "--device cuda:0" in error
    assert not (tmp_path / "index").exists()


@pytest.mark.parametrize("command", ["index build", "search", "serve"])
def test_without_onnxruntime_the_commands_name_the_extra(command: str, export: Path, images: Path,
                                                         onnx_index: Path, tmp_path: Path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    argv = {"index build": ["index", "build", str(images), "--index", str(tmp_path / "index")],
            "search": ["search", "a red square", "--index", str(onnx_index)],
            "serve": ["serve", "--index", str(onnx_index)]}[command]
    assert main([*argv, "--model", str(export), "--runtime", "onnx"]) == 1
    assert "pip install 'clipforge[onnx]'" in capsys.readouterr().err
    assert not (tmp_path / "index").exists()


def test_load_for_inference_opens_either_runtime(colour_model: Path, export: Path):
    model, preprocess = load_for_inference(colour_model)
    onnx, onnx_preprocess = load_for_inference(export, "onnx", None)
    assert isinstance(onnx, OnnxCLIP) and not isinstance(model, OnnxCLIP)
    assert (onnx_preprocess.image_size, onnx_preprocess.mean) == (preprocess.image_size, preprocess.mean)
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        load_for_inference(export, "tensorrt")


def test_the_app_serves_an_export_and_searches_an_index_built_under_torch(export: Path, torch_index: Path,
                                                                         colour_parts):
    from app_fixtures import LIMITS, png
    from fastapi.testclient import TestClient

    from clipforge.app.server import create_app

    with ImageIndex.open(torch_index) as index:
        onnx_app = TestClient(create_app(*load_onnx(export), index, model_name="onnx", limits=LIMITS))
        torch_app = TestClient(create_app(*colour_parts, index, model_name="colour", limits=LIMITS))
        info = onnx_app.get("/api/info").json()
        assert (info["runtime"], info["maps"], info["index"]["images"]) == ("onnx", False, IMAGES)
        assert torch_app.get("/api/info").json()["maps"] is True
        request = {"text": "a yellow square", "k": IMAGES}
        expected = torch_app.post("/api/search/text", json=request).json()["hits"]
        got = onnx_app.post("/api/search/text", json=request).json()["hits"]
        assert_same_ranking([(hit["path"], hit["score"]) for hit in expected],
                            [(hit["path"], hit["score"]) for hit in got])
        ids = [app.post("/api/images", files={"file": ("a.png", png(colour_image("blue", 4)), "image/png")}).json()["id"]
               for app in (torch_app, onnx_app)]
        request = {"labels": list(COLOURS), "templates": ["a {} square", "a {} thing"]}
        expected = torch_app.post("/api/zeroshot", json={**request, "image": ids[0]}).json()["probabilities"]
        got = onnx_app.post("/api/zeroshot", json={**request, "image": ids[1]}).json()["probabilities"]
        assert got == pytest.approx(expected, abs=TOLERANCE)
        maps = onnx_app.post("/api/maps", json={"images": [ids[1]], "prompt": "a blue square"})
        assert maps.status_code == 501 and "ONNX export" in maps.json()["detail"]
