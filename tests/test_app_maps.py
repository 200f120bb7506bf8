"""The web app's similarity maps: /api/maps gives, per image, the map's peak in the uploaded image's
pixels (the same as `clipforge locate`) and an overlay picture; the page lays a prompt's map over
the matrix's images and a label's over the playground's image."""

from __future__ import annotations

import base64
import io

import pytest
from browser_helpers import CHROMIUM, chromium, open_page
from colour_model import COLOURS
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from quadrant_models import GREY, train_quadrant_model

from clipforge.app.background import serve_in_background
from clipforge.app.server import create_app
from clipforge.applications.localization import locate
from clipforge.images import ImageTransform


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def red_on_the_right() -> Image.Image:
    image = Image.new("RGB", (200, 100), GREY)
    ImageDraw.Draw(image).rectangle([140, 30, 179, 69], fill=COLOURS["red"])
    return image


@pytest.fixture(scope="module")
def model():
    return train_quadrant_model("convnet", steps=60)


@pytest.fixture(scope="module")
def client(model):
    return TestClient(create_app(model, ImageTransform(model.image_size), model_name="quadrants"))


@pytest.fixture(scope="module")
def red_id(client) -> str:
    return client.post("/api/images", files={"file": ("red.png", png(red_on_the_right()), "image/png")}).json()["id"]


def decoded(data_url: str) -> Image.Image:
    assert data_url.startswith("data:image/png;base64,")
    return Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))


def test_the_map_peaks_where_locate_says_in_the_uploaded_images_pixels(client, model, red_id):
    response = client.post("/api/maps", json={"images": [red_id], "prompt": "a red square"})
    assert response.status_code == 200
    [found] = response.json()["maps"]
    [[expected]] = locate(model, [red_on_the_right()], ["a red square"])
    assert (found["image"], found["width"], found["height"]) == (red_id, 200, 100)
    assert found["peak"] == list(expected.peak) and found["peak"][0] >= 120
    assert found["peak_cosine"] == pytest.approx(expected.peak_similarity, abs=1e-5)
    assert found["peak_cosine"] > found["low_cosine"]
    overlay = decoded(found["overlay"])
    assert overlay.size == (128, 64)


def test_demo_images_have_maps_too(client):
    demo = client.get("/api/demo").json()
    ids = [image["id"] for image in demo["images"]]
    found = client.post("/api/maps", json={"images": ids, "prompt": demo["prompts"][0]}).json()["maps"]
    assert [entry["image"] for entry in found] == ids
    assert all(0 <= entry["peak"][0] < entry["width"] and 0 <= entry["peak"][1] < entry["height"] for entry in found)


def test_a_prompt_can_be_embedded_through_templates_as_zero_shot_does(client, red_id):
    plain = client.post("/api/maps", json={"images": [red_id], "prompt": "red"}).json()
    templated = client.post("/api/maps", json={"images": [red_id], "prompt": "red",
                                               "templates": ["a {} square", "a {} box"]}).json()
    assert plain["templates"] is None and templated["templates"] == ["a {} square", "a {} box"]
    assert templated["maps"][0]["peak_cosine"] != plain["maps"][0]["peak_cosine"]
    named = client.post("/api/maps", json={"images": [red_id], "prompt": "red", "template_set": "shapes"}).json()
    assert len(named["templates"]) > 1


def test_bad_map_requests_say_what_is_wrong(client, red_id):
    unknown = client.post("/api/maps", json={"images": ["nope"], "prompt": "a red square"})
    assert unknown.status_code == 404 and "upload the image again" in unknown.json()["detail"]
    assert client.post("/api/maps", json={"images": [red_id], "prompt": "  "}).status_code == 422
    assert client.post("/api/maps", json={"images": [], "prompt": "red"}).status_code == 422
    both = client.post("/api/maps", json={"images": [red_id], "prompt": "red", "template_set": "shapes",
                                          "templates": ["a {}"]})
    assert both.status_code == 422 and "at most one" in both.text
    assert "/api/maps" in client.get("/openapi.json").json()["paths"]


# --- the page ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def page(model):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (.ci/run installs it with apt-get)")
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    app = create_app(model, ImageTransform(model.image_size), model_name="quadrants")
    with serve_in_background(app) as base_url, chromium() as browser:
        yield open_page(browser, base_url)


def test_clicking_a_prompt_lays_its_map_over_each_image_and_again_takes_it_off(page):
    images = page.locator("th.image-head img")
    originals = [images.nth(i).get_attribute("src") for i in range(images.count())]
    page.click("th.prompt-head[data-prompt='1'] span")
    page.wait_for_function("[...document.querySelectorAll('th.image-head img')].every((img) => "
                           "img.src.startsWith('data:image/png'))")
    assert page.locator("th.prompt-head.mapped").count() == 1
    page.click("th.prompt-head[data-prompt='1'] span")
    page.wait_for_function("document.querySelectorAll('th.prompt-head.mapped').length === 0")
    assert [images.nth(i).get_attribute("src") for i in range(images.count())] == originals


def test_clicking_a_playground_label_lays_its_map_over_the_image(page, tmp_path):
    path = tmp_path / "red.png"
    red_on_the_right().save(path)
    page.click("[data-tab='zeroshot']")
    page.fill("#zs-labels", ", ".join(COLOURS))
    page.select_option("#zs-set", "custom")
    page.fill("#zs-templates", "a {} square")
    page.set_input_files("#zs-upload", str(path))
    page.wait_for_selector("#zs-bars .bar-row")
    page.locator("#zs-bars .bar-row").first.click()
    page.wait_for_function("document.querySelector('#zs-preview').src.startsWith('data:image/png')")
    assert page.locator("#zs-bars .bar-row.mapped").count() == 1
