"""End to end: Playwright drives Debian's Chromium (headless) over the served page, and every
number the page shows must be the one the API returns. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import ARTIFACTS, CHROMIUM, api, chromium, open_page
from colour_model import COLOURS, colour_image

import clipforge
from clipforge.app.background import serve_in_background
from clipforge.app.server import create_app
from clipforge.search import ImageIndex, build_index

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (.ci/run installs it with apt-get)")
pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("squares")
    files = {colour: folder / f"{colour}.png" for colour in COLOURS}
    for colour, path in files.items():
        colour_image(colour, 3).save(path)
    return files


@pytest.fixture(scope="module")
def server(colour_model, colour_files, tmp_path_factory):
    """The app on the colour model, searching an index of the four squares."""
    index_path = tmp_path_factory.mktemp("index") / "squares.index"
    build_index([colour_files["red"].parent], index_path, colour_model, workers=0, progress=False)
    model, preprocess = clipforge.load(colour_model)
    app = create_app(model, preprocess, ImageIndex.open(index_path), model_name="colour model")
    with serve_in_background(app) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser, server):
    page = open_page(browser, server)
    yield page
    page.close()


def demo_matrix(server: str) -> dict:
    demo = api(server, "/api/demo")
    return api(server, "/api/matrix", json={"images": [image["id"] for image in demo["images"]],
                                            "prompts": demo["prompts"]})


def shown(locator) -> float:
    """The number as the page shows it (rounded: tests compare to the API within that rounding)."""
    return float(locator.inner_text())


def test_clicking_a_cell_shows_the_apis_cosine_and_probabilities(page, server):
    matrix = demo_matrix(server)
    page.click("td.cell[data-image='2'][data-prompt='5']")
    assert shown(page.locator("td.cell[data-image='2'][data-prompt='5']")) == pytest.approx(matrix["cosine"][2][5], abs=0.005)
    assert shown(page.locator("[data-fact='cosine']")) == pytest.approx(matrix["cosine"][2][5], abs=0.005)
    assert shown(page.locator("[data-fact='prompt-probability']")) == pytest.approx(
        matrix["prompt_probabilities"][2][5], abs=0.0005)
    assert shown(page.locator("[data-fact='image-probability']")) == pytest.approx(
        matrix["image_probabilities"][5][2], abs=0.0005)
    assert page.locator("td.cell.selected").count() == 1


def test_clicking_an_image_highlights_its_column_and_shows_p_prompt_given_image(page, server):
    matrix = demo_matrix(server)
    page.click("th.image-head[data-image='1']")
    assert page.locator("td.cell.selected[data-image='1']").count() == len(matrix["prompts"])
    values = [shown(row) for row in page.locator("#details .bar-value").all()]
    assert values == pytest.approx(matrix["prompt_probabilities"][1], abs=0.0005)


def test_clicking_a_prompt_highlights_its_row_and_shows_p_image_given_prompt(page, server):
    matrix = demo_matrix(server)
    page.click("th.prompt-head[data-prompt='3']")
    assert page.locator("td.cell.selected[data-prompt='3']").count() == len(matrix["images"])
    values = [shown(row) for row in page.locator("#details .bar-value").all()]
    assert values == pytest.approx(matrix["image_probabilities"][3], abs=0.0005)
    page.screenshot(path=str(ARTIFACTS / "app-demo-matrix.png"))


def test_uploaded_images_and_typed_prompts_replace_the_demo(page, server, colour_files):
    demo_size = len(api(server, "/api/demo")["prompts"])
    page.set_input_files("#matrix-upload", [str(path) for path in colour_files.values()])
    for colour in COLOURS:
        page.fill("#prompt-input", f"a {colour} square")
        page.press("#prompt-input", "Enter")
    page.wait_for_function(f"document.querySelectorAll('td.cell').length === {(demo_size + 4) ** 2}")
    for left in range(demo_size + 3, 3, -1):  # the demo's images and prompts come first: remove them
        page.click("th.image-head[data-image='0'] .remove")
        page.wait_for_function(f"document.querySelectorAll('th.image-head').length === {left}")
        page.click("th.prompt-head[data-prompt='0'] .remove")
        page.wait_for_function(f"document.querySelectorAll('th.prompt-head').length === {left}")

    ids = [api(server, "/api/images", files={"file": (path.name, path.read_bytes(), "image/png")})["id"]
           for path in colour_files.values()]
    matrix = api(server, "/api/matrix", json={"images": ids, "prompts": [f"a {c} square" for c in COLOURS]})
    for image in range(4):
        for prompt in range(4):
            cell = page.locator(f"td.cell[data-image='{image}'][data-prompt='{prompt}']")
            assert shown(cell) == pytest.approx(matrix["cosine"][image][prompt], abs=0.005)
    page.click("th.image-head[data-image='0']")
    page.screenshot(path=str(ARTIFACTS / "app-matrix.png"))
    bars = [shown(value) for value in page.locator("#details .bar-value").all()]
    assert bars == pytest.approx(matrix["prompt_probabilities"][0], abs=0.0005)
    assert max(range(4), key=bars.__getitem__) == 0  # the red square's best prompt is "a red square"


def test_zeroshot_playground_bars_match_the_api_in_both_modes(page, server, colour_files):
    page.click("[data-tab='zeroshot']")
    page.fill("#zs-labels", ", ".join(COLOURS))
    page.select_option("#zs-set", "custom")
    page.fill("#zs-templates", "a {} square\na picture of a {} square")
    page.set_input_files("#zs-upload", str(colour_files["blue"]))
    page.wait_for_selector("#zs-bars .bar-row")
    image_id = api(server, "/api/images", files={"file": ("blue.png", colour_files["blue"].read_bytes(), "image/png")})["id"]
    for mode in ["ensemble", "single"]:
        page.check(f"input[name='zs-mode'][value='{mode}']")
        page.wait_for_function(f"document.querySelector('#zs-used').textContent.includes("
                               f"'{'ensemble of 2' if mode == 'ensemble' else 'prompt: a {} square'}')")
        result = api(server, "/api/zeroshot", json={"image": image_id, "labels": list(COLOURS), "mode": mode,
                                                    "templates": ["a {} square", "a picture of a {} square"]})
        expected = dict(zip(result["labels"], result["probabilities"]))
        rows = page.locator("#zs-bars .bar-row").all()
        shown_bars = {row.locator(".bar-label").inner_text(): shown(row.locator(".bar-value")) for row in rows}
        assert shown_bars == pytest.approx(expected, abs=0.0005)
        assert rows[0].locator(".bar-label").inner_text() == "blue"
    page.screenshot(path=str(ARTIFACTS / "app-zeroshot.png"))


def test_a_bad_upload_shows_the_apis_message(page, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    page.set_input_files("#matrix-upload", str(broken))
    page.wait_for_selector("#error:not([hidden])")
    assert "400" in page.inner_text("#error") and "not an image" in page.inner_text("#error")


def test_search_shows_the_apis_hits_and_scores(page, server):
    page.click("[data-tab='search']")
    page.fill("#search-text", "a green square")
    page.press("#search-text", "Enter")
    page.wait_for_selector("#search-results .hit")
    result = api(server, "/api/search/text", json={"text": "a green square", "k": 20})
    hits = page.locator("#search-results .hit").all()
    assert len(hits) == len(result["hits"]) == 4
    assert [hit.get_attribute("title") for hit in hits] == [hit["path"] for hit in result["hits"]]
    assert [shown(hit.locator(".hit-score")) for hit in hits] == pytest.approx(
        [hit["score"] for hit in result["hits"]], abs=0.0005)
    assert Path(result["hits"][0]["path"]).name == "green.png"
    page.wait_for_function("[...document.querySelectorAll('#search-results img')].every((img) => img.naturalWidth > 0)")
    page.screenshot(path=str(ARTIFACTS / "app-search.png"))
