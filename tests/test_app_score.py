"""The web app's Score view API (/api/score), through FastAPI's test client, on the session's colour model:
the same numbers as the library's scores and reranking."""

from __future__ import annotations

import pytest
import torch
from app_fixtures import LIMITS, client, png  # noqa: F401 (client: a fixture)
from colour_model import COLOURS, colour_image

from clipforge.applications.scores import encode_prompts, ref_clip_score

PROMPTS = [f"a {colour} square" for colour in COLOURS]


@pytest.fixture(scope="module")
def colour_ids(client):
    """Ids of one uploaded square per colour, in COLOURS order."""
    files = [{"file": ("x.png", png(colour_image(colour, 2)), "image/png")} for colour in COLOURS]
    return [client.post("/api/images", files=file).json()["id"] for file in files]


def test_score_gives_both_conventions_per_pair(client, colour_ids, colour_parts):
    body = client.post("/api/score", json={"images": colour_ids, "prompts": PROMPTS}).json()
    cosine = torch.tensor(body["cosine"])
    assert cosine.shape == (4, 4) and cosine.argmax(dim=1).tolist() == [0, 1, 2, 3]
    assert torch.allclose(torch.tensor(body["clip_score"]), 2.5 * cosine.clamp(min=0), atol=1e-6)
    assert torch.allclose(torch.tensor(body["clip_score_100"]), 100 * cosine.clamp(min=0), atol=1e-4)
    assert body["ref_clip_score"] is None
    model, preprocess = colour_parts
    with torch.no_grad():
        image = model.encode_image(preprocess(colour_image("green", 2)).unsqueeze(0), normalize=True)
    expected = image @ encode_prompts(model, PROMPTS).t()
    assert torch.allclose(cosine[list(COLOURS).index("green")], expected[0], atol=1e-5)


def test_score_reranks_the_images_for_every_prompt(client, colour_ids):
    body = client.post("/api/score", json={"images": colour_ids, "prompts": PROMPTS}).json()
    for column, ranking in enumerate(body["ranking"]):
        assert ranking[0]["image"] == colour_ids[column]
        assert sorted(hit["image"] for hit in ranking) == sorted(colour_ids)
        scores = [hit["clip_score"] for hit in ranking]
        assert scores == sorted(scores, reverse=True)
        assert ranking[0]["cosine"] == pytest.approx(body["cosine"][column][column])


def test_score_with_references_adds_ref_clip_score(client, colour_ids, colour_parts):
    references = ["a red square", "red"]
    body = client.post("/api/score", json={"images": colour_ids[:2], "prompts": PROMPTS[:2],
                                           "references": references}).json()
    model = colour_parts[0]
    prompts, refs = encode_prompts(model, PROMPTS[:2]), encode_prompts(model, references)
    expected = ref_clip_score(torch.tensor(body["cosine"]), (prompts @ refs.t()).expand(2, -1, -1))
    assert torch.allclose(torch.tensor(body["ref_clip_score"]), expected, atol=1e-5)


def test_score_refuses_unknown_images_and_empty_inputs(client, colour_ids):
    assert client.post("/api/score", json={"images": ["nope"], "prompts": PROMPTS}).status_code == 404
    assert client.post("/api/score", json={"images": colour_ids, "prompts": []}).status_code == 422
    assert client.post("/api/score", json={"images": [], "prompts": PROMPTS}).status_code == 422
    response = client.post("/api/score", json={"images": colour_ids, "prompts": ["   "]})
    assert response.status_code == 422
    no_references = {"images": colour_ids, "prompts": PROMPTS, "references": []}
    assert client.post("/api/score", json=no_references).status_code == 422


def test_score_is_in_the_schema_and_on_the_page(client):
    assert "/api/score" in client.get("/openapi.json").json()["paths"]
    page = client.get("/").text
    assert 'data-tab="score"' in page and 'id="score-tab"' in page
    assert "runScore" in client.get("/static/app.js").text
