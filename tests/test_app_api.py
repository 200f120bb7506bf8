"""The web app's JSON API, through FastAPI's test client, on the session's colour model."""

from __future__ import annotations

import copy
import hashlib
import io
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from app_fixtures import LIMITS, client, png  # noqa: F401 (client: a fixture)
from colour_model import COLOURS, colour_image
from fastapi.testclient import TestClient
from PIL import Image

import clipforge
from clipforge.app.commands import model_source
from clipforge.app.demo import demo_set
from clipforge.app.server import create_app
from clipforge.cli import build_parser
from clipforge.evaluation.templates import load_templates
from clipforge.evaluation.zeroshot import ZeroShotClassifier
from clipforge.search import ImageIndex, IndexModelMismatch, Searcher, build_index

MAIN_MODEL = Path(__file__).resolve().parents[1] / "runs" / "default" / "model"


def upload(client: TestClient, data: bytes, route: str = "/api/images", **fields):
    return client.post(route, files={"file": ("image.png", data, "image/png")}, data=fields)


@pytest.fixture(scope="module")
def colour_ids(client):
    """Ids of one uploaded image per colour, in COLOURS order."""
    return [upload(client, png(colour_image(colour, 3))).json()["id"] for colour in COLOURS]


def test_info_reports_the_model_and_its_temperature(client, colour_parts):
    info = client.get("/api/info").json()
    scale = colour_parts[0].logit_scale_exp().item()
    assert info["model"] == "colour" and info["index"] is None
    assert info["logit_scale"] == pytest.approx(scale) and info["temperature"] == pytest.approx(1 / scale)
    assert info["limits"]["max_upload_bytes"] == LIMITS.max_bytes and info["limits"]["max_pixels"] == LIMITS.max_pixels


def test_openapi_schema_documents_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/info", "/api/demo", "/api/images", "/api/matrix", "/api/zeroshot", "/api/template-sets",
            "/api/search/text", "/api/search/image", "/api/index/image"} <= set(paths)
    assert "413" in paths["/api/images"]["post"]["responses"]


def test_page_and_its_assets_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/style.css").status_code == 200


def test_demo_images_are_served_from_memory_one_per_prompt(client):
    demo = client.get("/api/demo").json()
    assert len(demo["images"]) == len(demo["prompts"]) == len(demo_set())
    assert [image["prompt"] for image in demo["images"]] == demo["prompts"]
    response = client.get(demo["images"][0]["url"])
    assert response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).size == demo_set()[0][0].size
    assert client.get("/api/demo/images/99").status_code == 404


@pytest.mark.skipif(not MAIN_MODEL.is_dir(), reason="the main job's model (runs/default/model) is not trained here")
def test_demo_shows_mostly_the_diagonal_with_the_main_model():
    """The demo's drawn icons are outside the training corpus; a main-job model puts most of their own
    prompts first (chance: one in eight); single training runs differ by an icon or two."""
    model, preprocess = clipforge.load(MAIN_MODEL)
    demo_client = TestClient(create_app(model, preprocess))
    demo = demo_client.get("/api/demo").json()
    matrix = demo_client.post("/api/matrix", json={"images": [image["id"] for image in demo["images"]],
                                                   "prompts": demo["prompts"]}).json()
    best_prompt = torch.tensor(matrix["cosine"]).argmax(dim=1)
    own_first = (best_prompt == torch.arange(len(demo["prompts"]))).sum().item()
    assert own_first >= 0.75 * len(demo["prompts"])


def test_uploading_the_same_image_twice_gives_the_same_id(client):
    data = png(colour_image("red", 1))
    first, second = upload(client, data).json(), upload(client, data).json()
    assert first == second == {"id": hashlib.sha256(data).hexdigest()[:32], "width": 32, "height": 32}


def test_matrix_is_the_models_cosine_and_both_softmaxes(client, colour_parts, colour_ids):
    model, preprocess = colour_parts
    prompts = [f"a {colour} square" for colour in COLOURS]
    matrix = client.post("/api/matrix", json={"images": colour_ids, "prompts": prompts}).json()
    with torch.no_grad():
        images = model.encode_image(torch.stack([preprocess(colour_image(c, 3)) for c in COLOURS]), normalize=True)
        texts = model.encode_text(model.tokenize(prompts), normalize=True)
    cosine = images @ texts.t()
    logits = model.logit_scale_exp().item() * cosine
    assert matrix["images"] == colour_ids and matrix["prompts"] == prompts
    assert torch.tensor(matrix["cosine"]) == pytest.approx(cosine, abs=1e-5)
    assert torch.tensor(matrix["prompt_probabilities"]) == pytest.approx(logits.softmax(dim=1), abs=1e-5)
    assert torch.tensor(matrix["image_probabilities"]) == pytest.approx(logits.t().softmax(dim=1), abs=1e-5)
    assert torch.tensor(matrix["cosine"]).argmax(dim=1).tolist() == [0, 1, 2, 3]


def test_matrix_refuses_an_unknown_image_id(client):
    response = client.post("/api/matrix", json={"images": ["never-uploaded"], "prompts": ["a red square"]})
    assert response.status_code == 404 and "upload the image again" in response.json()["detail"]


@pytest.mark.parametrize("body", [
    {"images": [], "prompts": ["a red square"]},
    {"images": ["demo-0"], "prompts": []},
    {"images": ["demo-0"], "prompts": ["   "]},
    {"images": ["demo-0"], "prompts": ["x" * 301]},
    {"images": ["../../etc/passwd"], "prompts": ["a red square"]},
    {"images": ["demo-0"] * 65, "prompts": ["a red square"]},
    {"images": ["demo-0"], "prompts": "a red square"},
    {"prompts": ["a red square"]},
])
def test_matrix_validates_its_body(client, body):
    assert client.post("/api/matrix", json=body).status_code == 422


def test_zeroshot_ensemble_and_single_prompt_match_the_classifier(client, colour_parts, colour_ids):
    model, preprocess = colour_parts
    labels, templates = list(COLOURS), ["a {} square", "a picture of a {} square", "{}"]
    with torch.no_grad():
        features = model.encode_image(preprocess(colour_image("blue", 3)).unsqueeze(0))
    for mode, used in [("ensemble", templates), ("single", templates[:1])]:
        result = client.post("/api/zeroshot", json={"image": colour_ids[2], "labels": labels, "templates": templates,
                                                    "mode": mode}).json()
        expected = ZeroShotClassifier(model, labels, used).predict_proba(features)[0]
        assert result["templates"] == used and result["mode"] == mode
        assert torch.tensor(result["probabilities"]) == pytest.approx(expected, abs=1e-5)
        assert result["labels"][int(torch.tensor(result["probabilities"]).argmax())] == "blue"


def test_zeroshot_uses_a_named_template_set(client, colour_ids):
    result = client.post("/api/zeroshot", json={"image": colour_ids[0], "labels": ["red", "green"],
                                                "template_set": "shapes"}).json()
    assert result["templates"] == load_templates("shapes")
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    sets = {entry["name"]: entry["templates"] for entry in client.get("/api/template-sets").json()}
    assert sets["shapes"] == load_templates("shapes")


@pytest.mark.parametrize("change", [
    {"template_set": "no-such-set"},
    {"template_set": "/etc/passwd"},
    {"templates": ["a square without a placeholder"]},
    {"templates": ["{0} and {1}"]},
    {"templates": ["{name}"]},
    {"templates": ["a {} square"], "template_set": "shapes"},
    {"labels": ["red", "red"]},
    {"labels": []},
    {"mode": "average"},
])
def test_zeroshot_validates_its_body(client, change):
    body = {"image": "demo-0", "labels": ["red", "green"], **change}
    if "templates" not in change and "template_set" not in change:
        body["templates"] = ["a {} square"]
    assert client.post("/api/zeroshot", json=body).status_code == 422


def test_zeroshot_without_a_template_source_is_refused(client):
    response = client.post("/api/zeroshot", json={"image": "demo-0", "labels": ["red"]})
    assert response.status_code == 422 and "exactly one of template_set and templates" in response.text


@pytest.mark.parametrize("data, message", [
    (b"", "empty"),
    (b"not an image at all", "not an image"),
    (png(colour_image("red"))[:60], "cannot"),
])
def test_a_bad_image_is_a_400_with_a_message(client, data, message):
    response = upload(client, data)
    assert response.status_code == 400 and message in response.json()["detail"]


def test_an_upload_over_the_byte_limit_is_a_413(client):
    response = upload(client, b"\x89PNG" + bytes(LIMITS.max_bytes))
    assert response.status_code == 413 and f"{LIMITS.max_bytes:,} bytes" in response.json()["detail"]


def test_a_body_far_over_the_limit_is_refused_unread_or_midstream(client):
    declared = client.post("/api/images", content=bytes(1_000_000), headers={"content-type": "multipart/form-data"})
    assert declared.status_code == 413 and "limit" in declared.json()["detail"]
    streamed = client.post("/api/matrix", content=(bytes(100_000) for _ in range(10)),
                           headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and "limit" in streamed.json()["detail"]


def test_an_image_over_the_pixel_limit_is_a_413(client):
    response = upload(client, png(Image.new("RGB", (2000, 1000), "white")))
    assert response.status_code == 413 and "2000x1000" in response.json()["detail"]


def test_odd_image_modes_are_accepted(client):
    for image in [Image.new("RGBA", (40, 30), (200, 0, 0, 128)), Image.new("I;16", (20, 20), 40000),
                  Image.new("P", (20, 20)), Image.new("1", (20, 20))]:
        assert upload(client, png(image)).status_code == 200


def test_search_without_an_index_is_a_404_that_says_how_to_serve_one(client):
    response = client.post("/api/search/text", json={"text": "a red square"})
    assert response.status_code == 404 and "--index" in response.json()["detail"]
    assert upload(client, png(colour_image("red")), "/api/search/image").status_code == 404
    assert client.get("/api/index/image", params={"path": "/etc/passwd"}).status_code == 404


def test_serve_is_a_command_that_binds_loopback_by_default():
    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.port == 8000 and args.model is None and args.index is None


def test_the_served_model_is_the_named_one_then_the_indexs_then_the_main_jobs(tmp_path):
    index = SimpleNamespace(model_source="index-model")
    assert model_source("named", index, default=tmp_path) == "named"
    assert model_source(None, index, default=tmp_path) == "index-model"
    assert model_source(None, None, default=tmp_path) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match="clipforge train.*--model"):
        model_source(None, None, default=tmp_path / "missing")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, colour_model, colour_parts):
    """An index of two squares per colour, one folder per colour, and what lies around it."""
    base = tmp_path_factory.mktemp("search")
    root = base / "squares"
    for colour in COLOURS:
        (root / colour).mkdir(parents=True)
        for variant in (1, 6):
            colour_image(colour, variant).save(root / colour / f"{variant}.png")
    (root / "notes.txt").write_text("not an image")
    colour_image("red").save(base / "secret.png")
    colour_image("yellow", 2).save(root / "decoy.png")  # what root/elsewhere/../decoy.png reads lexically
    (base / "outside" / "inner").mkdir(parents=True)
    colour_image("blue", 2).save(base / "outside" / "decoy.png")  # ... and what the OS would open
    (root / "elsewhere").symlink_to(base / "outside" / "inner", target_is_directory=True)
    build_index([root], base / "index", colour_model, workers=0, progress=False)
    index = ImageIndex.open(base / "index")
    client = TestClient(create_app(*colour_parts, index, model_name="colour", limits=LIMITS))
    return SimpleNamespace(root=root.resolve(), base=base.resolve(), index=index, client=client,
                           searcher=Searcher(index, *colour_parts))


def test_info_describes_the_served_index(indexed):
    info = indexed.client.get("/api/info").json()["index"]
    assert info == {"images": 9, "roots": [str(indexed.root)], "model_id": indexed.index.model_id}


def test_text_search_returns_the_searchers_hits_and_serves_their_images(indexed):
    hits = indexed.client.post("/api/search/text", json={"text": "a red square", "k": 3}).json()["hits"]
    expected = indexed.searcher.by_text("a red square", k=3)
    assert [hit["path"] for hit in hits] == [str(hit.path) for hit in expected]
    assert [hit["score"] for hit in hits] == pytest.approx([hit.score for hit in expected], abs=1e-6)
    assert Path(hits[0]["path"]).parent.name == "red"
    served = indexed.client.get(hits[0]["url"])
    assert served.status_code == 200 and served.content == Path(hits[0]["path"]).read_bytes()


def test_image_search_by_upload_within_a_folder(indexed):
    response = upload(indexed.client, png(colour_image("blue", 4)), "/api/search/image", k="5")
    hits = response.json()["hits"]
    assert len(hits) == 5 and Path(hits[0]["path"]).parent.name == "blue"
    inside = upload(indexed.client, png(colour_image("blue", 4)), "/api/search/image",
                    folder=str(indexed.root / "green")).json()["hits"]
    assert len(inside) == 2 and all(Path(hit["path"]).parent.name == "green" for hit in inside)


def test_search_validates_its_inputs(indexed):
    assert indexed.client.post("/api/search/text", json={"text": "", "k": 3}).status_code == 422
    assert indexed.client.post("/api/search/text", json={"text": "red", "k": 0}).status_code == 422
    assert upload(indexed.client, png(colour_image("red")), "/api/search/image", k="1000").status_code == 422
    assert upload(indexed.client, b"junk", "/api/search/image").status_code == 400


@pytest.mark.parametrize("path", [
    "{root}/../secret.png",
    "{root}/red/../../secret.png",
    "{base}/secret.png",
    "{root}/notes.txt",
    "{base}/index/index.sqlite",
    "red/1.png",
    "../secret.png",
    "/etc/passwd",
    "{root}/red/1.png\x00",
    "",
])
def test_index_images_are_served_only_from_the_index(indexed, path):
    path = path.format(root=indexed.root, base=indexed.base)
    assert indexed.client.get("/api/index/image", params={"path": path}).status_code == 404


def test_a_symlink_before_dotdot_cannot_redirect_a_served_path(indexed):
    response = indexed.client.get("/api/index/image", params={"path": f"{indexed.root}/elsewhere/../decoy.png"})
    assert response.status_code == 200
    assert response.content == (indexed.root / "decoy.png").read_bytes()
    assert response.content != (indexed.base / "outside" / "decoy.png").read_bytes()


def test_an_index_of_another_model_is_refused(indexed, colour_parts):
    model, preprocess = colour_parts
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.logit_scale += 0.5
    with pytest.raises(IndexModelMismatch):
        create_app(other, preprocess, indexed.index)
