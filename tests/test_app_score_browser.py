"""The Score view end to end: Playwright drives Debian's Chromium (headless) over the served page, and the
scores and the reranked order it shows must be the API's. A screenshot goes to tests/artifacts/."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import ARTIFACTS, CHROMIUM, api, chromium, open_page
from colour_model import COLOURS, colour_image

import clipforge
from clipforge.app.background import serve_in_background
from clipforge.app.server import create_app

PROMPTS = [f"a {colour} square" for colour in COLOURS]

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (.ci/run installs it with apt-get)")
pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")


@pytest.fixture(scope="module")
def colour_files(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("squares")
    files = [folder / f"{colour}.png" for colour in COLOURS]
    for colour, path in zip(COLOURS, files):
        colour_image(colour, 1).save(path)
    return files


@pytest.fixture(scope="module")
def server(colour_model):
    model, preprocess = clipforge.load(colour_model)
    with serve_in_background(create_app(model, preprocess, model_name="colour model")) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def page(server):
    with chromium() as browser:
        yield open_page(browser, server)


def test_the_score_view_starts_with_the_demo_scored(page, server):
    page.click("[data-tab='score']")
    page.wait_for_selector("#score-table td.score-cell")
    demo = api(server, "/api/demo")
    prompts = demo["prompts"][:3]
    expected = api(server, "/api/score", json={"images": [image["id"] for image in demo["images"]], "prompts": prompts})
    cells = page.locator("#score-table td.score-cell")
    assert cells.count() == len(demo["images"]) * len(prompts)
    first = page.locator("td.score-cell[data-image='1'][data-prompt='2']")
    assert float(first.locator(".score-main").inner_text()) == pytest.approx(expected["clip_score"][1][2], abs=0.005)
    assert float(first.locator(".score-100").inner_text()) == pytest.approx(expected["clip_score_100"][1][2], abs=0.05)


def test_dropped_images_and_typed_prompts_show_scores_and_the_reranked_order(page, server, colour_files):
    page.click("[data-tab='score']")
    page.click("#score-clear")
    page.wait_for_function("document.querySelectorAll('#score-images figure').length === 0")
    page.fill("#score-prompts", "\n".join(PROMPTS))
    page.fill("#score-references", "a red square")
    page.set_input_files("#score-upload", [str(path) for path in colour_files])
    page.wait_for_function(f"document.querySelectorAll('#score-table td.score-cell').length === {len(COLOURS) ** 2}")
    ids = [api(server, "/api/images", files={"file": (path.name, path.read_bytes(), "image/png")})["id"]
           for path in colour_files]
    expected = api(server, "/api/score", json={"images": ids, "prompts": PROMPTS, "references": ["a red square"]})
    for row in range(len(COLOURS)):
        for column in range(len(PROMPTS)):
            cell = page.locator(f"td.score-cell[data-image='{row}'][data-prompt='{column}']")
            assert float(cell.locator(".score-main").inner_text()) == pytest.approx(
                expected["clip_score"][row][column], abs=0.005)
            assert cell.locator(".score-ref").inner_text() == f"Ref {expected['ref_clip_score'][row][column]:.2f}"
    for column, ranking in enumerate(expected["ranking"]):
        shown = page.locator(f".ranking[data-prompt='{column}'] li").all()
        assert [item.get_attribute("data-image") for item in shown] == [hit["image"] for hit in ranking]
        assert shown[0].get_attribute("data-image") == ids[column]  # each colour's own square first
    page.screenshot(path=str(ARTIFACTS / "app-score.png"), full_page=True)


def test_a_bad_drop_is_reported_and_the_good_images_are_still_scored(page, tmp_path, colour_files):
    page.click("[data-tab='score']")
    page.click("#score-clear")
    page.fill("#score-prompts", "a red square")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    page.set_input_files("#score-upload", [str(colour_files[0]), str(broken)])
    page.wait_for_selector("#error:not([hidden])")
    assert "400" in page.inner_text("#error")
    assert page.locator("#score-table td.score-cell").count() == 1
