"""Open-vocabulary localization: each image tower's dense map finds a colour where a model trained
in this session knows it is; boxes, connected regions, AP and the pointing game on cases with
known answers; the composite scenes; the benchmark through `clipforge eval --task localization`;
and `clipforge locate`, bad input included."""

from __future__ import annotations

import itertools
import json
import struct
import zlib
from collections import deque
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import clipforge
from clipforge.applications.localization import Locator, locate, overlay_sheet
from clipforge.cli import main
from clipforge.data import DEFAULT_MAX_PIXELS, ShardWriter
from clipforge.data.scenes import BACKGROUNDS, compose_scene, compose_scenes, cut_out
from clipforge.evaluation.datasets import EvalDataset, task_table
from clipforge.evaluation.localization import average_precision, iou, localization_figures
from clipforge.evaluation.maps import Box, boxes_from_map, connected_components, crop_windows, input_size, peak
from clipforge.evaluation.runner import run_evaluation
from clipforge.evaluation.suite import EvalOptions, format_headline, headline_metrics
from clipforge.images import ImageLoadError, load_image
from colour_model import COLOURS
from data_helpers import encode
from quadrant_models import GREY, PROMPTS, quadrant_of, quadrant_scene, train_quadrant_model

ORDERS = list(itertools.permutations(COLOURS))[::6]  # 4 of the 24 placements, each colour in each quadrant once


TRAINED = {}  # tower -> its quadrant model, trained once in the session


def trained(tower: str):
    if tower not in TRAINED:
        TRAINED[tower] = train_quadrant_model(tower, steps=60)
    return TRAINED[tower]


@pytest.fixture(scope="module")
def convnet_model():
    return trained("convnet")


def quadrant_hits(locator: Locator, size: int) -> list[bool]:
    hits = []
    for order in ORDERS:
        found = locator.locate(quadrant_scene(list(order), size), PROMPTS)
        hits += [quadrant_of(found[PROMPTS.index(f"a {colour} square")].peak, size) == quadrant
                 for quadrant, colour in enumerate(order)]
    return hits


@pytest.mark.parametrize("tower", ["vit", "resnet", "convnet"])
def test_each_towers_dense_map_peaks_in_the_quadrant_of_the_named_colour(tower):
    model = trained(tower)
    assert all(quadrant_hits(Locator(model, short_side=model.image_size), model.image_size))


@pytest.mark.parametrize("tower", ["resnet", "convnet"])
def test_a_larger_input_than_trained_still_finds_the_quadrants(tower):
    """The ResNet's attention-pool positions are interpolated to the 4x4 grid of twice its size."""
    model = trained(tower)
    assert all(quadrant_hits(Locator(model, short_side=2 * model.image_size), 2 * model.image_size))


def test_the_crop_baseline_finds_the_quadrants_too(convnet_model):
    assert all(quadrant_hits(Locator(convnet_model, method="crops", short_side=32), 32))


def test_peak_and_boxes_are_in_the_input_images_pixels(convnet_model):
    image = Image.new("RGB", (240, 120), GREY)
    ImageDraw.Draw(image).rectangle([170, 40, 209, 79], fill=COLOURS["red"])
    [[red]] = locate(convnet_model, [image], ["a red square"], boxes=True)
    assert red.size == (240, 120) and 150 <= red.peak[0] < 230 and 20 <= red.peak[1] < 100
    assert red.boxes and all(0 <= box.x0 < box.x1 <= 240 and 0 <= box.y0 < box.y1 <= 120 for box in red.boxes)
    best = red.boxes[0]
    assert iou(best, (170, 40, 210, 80)) > 0.3
    line = red.to_json()
    assert set(line) == {"image", "prompt", "size", "peak", "boxes"} and line["size"] == [240, 120]
    assert all(len(box) == 5 for box in line["boxes"])


def test_no_prompt_or_a_blank_one_is_refused(convnet_model):
    image = Image.new("RGB", (32, 32), GREY)
    with pytest.raises(ValueError, match="at least one prompt"):
        locate(convnet_model, [image], [])
    with pytest.raises(ValueError, match="empty"):
        locate(convnet_model, [image], ["a red square", "  "])
    with pytest.raises(ValueError, match="unknown map method"):
        Locator(convnet_model, method="sliding")


def huge_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with a tiny (broken) body: only a header check sees the size."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16))
                     + chunk(b"IEND", b""))
    return path


def test_huge_and_broken_images_are_refused_with_their_names(tmp_path):
    with pytest.raises(ImageLoadError, match=r"10000x10000 = 100,000,000 pixels, over the limit"):
        load_image(huge_png(tmp_path / "huge.png", 10000, 10000), max_pixels=DEFAULT_MAX_PIXELS)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ImageLoadError, match="broken.png"):
        load_image(tmp_path / "broken.png", max_pixels=DEFAULT_MAX_PIXELS)


# --- maps, regions, boxes and metrics on known answers --------------------------------------------

def test_boxes_surround_each_high_region_best_first():
    value_map = torch.zeros(40, 60)
    value_map[4:12, 6:18] = 1.0
    value_map[25:35, 40:55] = 0.8
    assert boxes_from_map(value_map) == [Box(6, 4, 18, 12, 1.0), Box(40, 25, 55, 35, pytest.approx(0.8))]
    assert boxes_from_map(value_map, max_boxes=1) == [Box(6, 4, 18, 12, 1.0)]


def test_a_large_map_is_read_at_box_resolution_and_scaled_back():
    value_map = torch.zeros(256, 256)
    value_map[64:128, 32:96] = 1.0
    [box] = boxes_from_map(value_map)
    assert (box.x0, box.y0, box.x1, box.y1) == (32, 64, 96, 128)


def test_a_flat_map_gives_the_whole_image_and_a_bad_threshold_is_refused():
    assert boxes_from_map(torch.full((8, 10), 0.3)) == [Box(0, 0, 10, 8, 0.0)]
    with pytest.raises(ValueError, match="threshold"):
        boxes_from_map(torch.rand(8, 8), threshold=1.5)


def reference_components(mask: np.ndarray) -> np.ndarray:
    labels, current = np.zeros(mask.shape, int), 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        labels[start] = current
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < mask.shape[0] and 0 <= nx < mask.shape[1] and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    queue.append((ny, nx))
    return labels


def test_connected_components_partition_like_a_breadth_first_search():
    generator = torch.Generator().manual_seed(0)
    for density in (0.3, 0.5, 0.6, 0.8):
        masks = torch.rand(4, 19, 23, generator=generator) < density
        labels = connected_components(masks)
        for mask, ours in zip(masks.numpy(), labels.numpy()):
            theirs = reference_components(mask)
            assert ((ours > 0) == mask).all()
            pairs = set(zip(theirs[mask].tolist(), ours[mask].tolist()))
            assert len(pairs) == len(set(theirs[mask].tolist())) == len(set(ours[mask].tolist()))


def test_crop_windows_cover_every_pixel_with_squares_of_each_scale():
    windows = crop_windows(50, 80, scales=(0.3, 0.6), overlap=0.5)
    covered = torch.zeros(50, 80, dtype=torch.bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == y1 - y0 in (15, 30) and 0 <= x0 and x1 <= 80 and 0 <= y0 and y1 <= 50
        covered[y0:y1, x0:x1] = True
    assert covered.all()


def test_peak_is_the_highest_value_as_x_and_y():
    value_map = torch.zeros(5, 7)
    value_map[3, 6] = 2.0
    assert peak(value_map) == (6, 3)


def test_input_size_keeps_the_aspect_within_limits_on_the_towers_stride(convnet_model):
    assert convnet_model.visual.dense_stride == 4
    assert input_size(convnet_model, 100, 100) == (56, 56)  # 14 cells of 4 pixels
    assert input_size(convnet_model, 300, 100) == (168, 56)
    assert input_size(convnet_model, 100, 1000) == (56, 224)  # at most 4 short sides long
    assert input_size(convnet_model, 64, 32, short_side=32) == (64, 32)


def test_iou_and_average_precision_on_known_rankings():
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    truths = {0: [(0, 0, 10, 10)], 1: [(20, 20, 30, 30)]}
    right, wrong = Box(0, 0, 10, 10, 0.0), Box(50, 50, 60, 60, 0.0)
    assert average_precision([(0, right._replace(score=0.9)), (1, Box(20, 20, 30, 30, 0.8))], truths) == 1.0
    # a false positive ranked first: precision 1/2 at recall 1/2, 2/3 at recall 1; VOC takes at each
    # recall the best precision at that recall or beyond, so 2/3 throughout
    ranked = [(0, wrong._replace(score=0.95)), (0, right._replace(score=0.9)), (1, Box(20, 20, 30, 30, 0.8))]
    assert average_precision(ranked, truths) == pytest.approx(2 / 3)
    ranked = [(0, right._replace(score=0.95)), (0, wrong._replace(score=0.9)), (1, Box(20, 20, 30, 30, 0.8))]
    assert average_precision(ranked, truths) == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    # a second box on an already found object is a false positive; a missed object caps recall
    assert average_precision([(0, right._replace(score=0.9)), (0, right._replace(score=0.8))], truths) == 0.5
    assert average_precision([], truths) == 0.0


# --- composite scenes -----------------------------------------------------------------------------

def ring_glyph(colour: tuple[int, int, int], size: int = 48) -> Image.Image:
    """A ring of the colour on white, white inside: the inside is part of the glyph."""
    image = Image.new("RGB", (size, size), (255, 255, 255))
    ImageDraw.Draw(image).ellipse([8, 6, size - 9, size - 5], outline=colour, width=5)
    return image


def test_cut_out_removes_the_background_but_keeps_light_parts_inside_the_outline():
    cut = cut_out(ring_glyph((200, 30, 30)))
    assert cut.mode == "RGBA" and cut.size == (32, 38)  # the ellipse's box, [8, 6, 39, 43] inclusive
    alpha = np.asarray(cut)[..., 3]
    assert alpha[18, 15] == 255  # the white centre of the ring
    assert alpha[0, 0] == 0  # a corner outside it
    with pytest.raises(ValueError, match="no glyph"):
        cut_out(Image.new("RGB", (20, 20), (255, 255, 255)))


def glyph_set() -> list[tuple[Image.Image, str]]:
    colours = {"red": (200, 30, 30), "green": (30, 160, 40), "blue": (30, 60, 200), "black": (0, 0, 0)}
    return [(cut_out(ring_glyph(rgb)), name) for name, rgb in colours.items()]


def test_scenes_are_seeded_and_place_distinct_glyphs_apart_inside_the_canvas():
    first, again, other = (compose_scenes(glyph_set(), 6, seed) for seed in (3, 3, 4))
    assert [np.asarray(s.image).tobytes() for s in first] == [np.asarray(s.image).tobytes() for s in again]
    assert [np.asarray(s.image).tobytes() for s in first] != [np.asarray(s.image).tobytes() for s in other]
    for scene in first:
        assert scene.image.size == (128, 128) and scene.background in BACKGROUNDS and 2 <= len(scene.objects) <= 4
        names = [item.name for item in scene.objects]
        assert len(set(names)) == len(names)
        for a, b in itertools.combinations([item.box for item in scene.objects], 2):
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
        for item in scene.objects:
            x0, y0, x1, y1 = item.box
            assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128
            assert 0.2 * 128 <= max(x1 - x0, y1 - y0) <= 0.46 * 128


def test_a_scene_pastes_each_glyph_where_its_box_says():
    scene = compose_scene(glyph_set(), np.random.default_rng(0), canvas=96, objects=(1, 1), backgrounds=["plain"])
    [item] = scene.objects
    pixels = np.asarray(scene.image).astype(int)
    background = pixels[0, 0] if item.box[:2] != (0, 0) else pixels[-1, -1]
    differs = np.abs(pixels - background).sum(axis=-1) > 0
    ys, xs = np.nonzero(differs)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == item.box


def test_too_few_names_for_the_scenes_are_refused():
    with pytest.raises(ValueError, match="distinct names"):
        compose_scene(glyph_set()[:2], np.random.default_rng(0), objects=(2, 3))


# --- the benchmark ----------------------------------------------------------------------------------

SMALL_SPEC = {"label": "name", "vocabulary": 4, "scenes": 8, "canvas": 64, "objects": [2, 3], "sizes": [0.3, 0.45]}


@pytest.fixture(scope="module")
def colour_glyphs(tmp_path_factory) -> tuple[list[str], Path]:
    """Shards of one square per colour on white, named by colour, and a template file "a {} square"."""
    root = tmp_path_factory.mktemp("glyphs")
    with ShardWriter(root / "shards", shard_size=10) as writer:
        for colour, rgb in COLOURS.items():
            image = Image.new("RGB", (32, 32), (255, 255, 255))
            ImageDraw.Draw(image).rectangle([4, 4, 27, 27], fill=rgb)
            writer.write(colour, encode(image), "png", f"a {colour} square", {"name": colour})
    (root / "templates.txt").write_text("a {} square\n")
    return [str(shard) for shard in writer.shards], root / "templates.txt"


def test_the_benchmark_reports_both_methods_beside_chance(convnet_model, colour_glyphs):
    shards, templates = colour_glyphs
    figures = localization_figures(convnet_model, shards, {**SMALL_SPEC, "templates": str(templates)}, seed=0)
    assert figures["scenes"] == 8 and sorted(figures["vocabulary"]) == sorted(COLOURS)
    assert figures["isolated_top1"] in (0.0, 25.0, 50.0, 75.0, 100.0)  # four glyphs alone, one per name
    for method in ("dense", "crops"):
        assert set(figures[method]) >= {"pointing_game", "box_AP@0.5"}
        assert figures[method]["pointing_game"] > 2 * figures["chance"]["pointing_game"]
    assert 0 < figures["chance"]["pointing_game"] < 30 and 0 <= figures["chance"]["box_AP@0.5"] < 50
    again = localization_figures(convnet_model, shards, {**SMALL_SPEC, "templates": str(templates)}, seed=0)
    assert again == figures


def test_localization_runs_only_when_asked_for():
    openmoji = EvalDataset("openmoji", [], task_table()["openmoji"])
    assert "localization" not in openmoji.tasks_to_run(None)
    assert openmoji.tasks_to_run(["localization"]) == ["localization"]
    assert "localization" in openmoji.tasks_to_run(["zeroshot", "localization"])
    with pytest.raises(ValueError, match="none of the tasks localization"):
        EvalDataset("fashion-mnist", [], task_table()["fashion-mnist"]).tasks_to_run(["localization"])


def test_eval_writes_the_localization_section_and_headline(convnet_model, colour_glyphs, tmp_path):
    shards, templates = colour_glyphs
    folder = tmp_path / "model"
    clipforge.save_model(convnet_model, folder)
    dataset = EvalDataset("colours", shards, {"localization": {**SMALL_SPEC, "templates": str(templates)}})
    report = run_evaluation([str(folder)], [dataset], tmp_path / "eval", EvalOptions(tasks=["localization"]),
                            log=lambda line: None)
    text = report.read_text()
    assert "### Localization: 8 composite scenes" in text and "pointing game, dense maps" in text
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    figures = results["results"][str(folder)]["colours"]
    headline = headline_metrics("colours", figures)
    assert set(headline) == {f"colours_localization_{method}_{key}" for method in ("dense", "crops", "chance")
                             for key in ("pointing_game", "box_AP@0.5")}
    assert "colours_localization_dense_pointing_game" in format_headline(headline)


# --- clipforge locate -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_convnet(convnet_model, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("convnet") / "model"
    clipforge.save_model(convnet_model, folder)
    return folder


def test_locate_prints_one_json_line_per_image_and_prompt(saved_convnet, tmp_path, capsys):
    paths = []
    for number, order in enumerate(ORDERS[:2]):
        paths.append(tmp_path / f"scene{number}.png")
        quadrant_scene(list(order), 64).resize((128, 96)).save(paths[-1])
    code = main(["locate", *map(str, paths), "--prompt", "a red square", "--prompt", "a blue square", "--boxes",
                 "--json", "--model", str(saved_convnet), "-o", str(tmp_path / "overlays.png")])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["image"], line["prompt"]) for line in lines] == [
        (str(path), prompt) for path in paths for prompt in ("a red square", "a blue square")]
    for line, (path, prompt) in zip(lines, itertools.product(range(2), ("red", "blue"))):
        assert line["size"] == [128, 96] and line["boxes"]
        quadrant = ORDERS[path].index(prompt)
        assert quadrant_of((line["peak"][0] * 64 // 128, line["peak"][1] * 64 // 96), 64) == quadrant
    sheet = Image.open(tmp_path / "overlays.png")
    assert sheet.size[0] == 2 * 256 and sheet.size[1] > 2 * 256


def test_locate_skips_unreadable_files_and_says_so(saved_convnet, tmp_path, capsys):
    good = tmp_path / "good.png"
    quadrant_scene(list(ORDERS[0]), 32).save(good)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    huge = huge_png(tmp_path / "huge.png", 10000, 10000)
    code = main(["locate", str(good), str(tmp_path / "broken.jpg"), str(huge), "--prompt", "a red square",
                 "--model", str(saved_convnet)])
    out, err = capsys.readouterr()
    assert code == 1 and "good.png (32x32)" in out
    assert "broken.jpg" in err and "100,000,000 pixels" in err and "2 of 3 images could not be read" in err


def test_locate_refuses_a_blank_prompt_and_a_non_png_output(saved_convnet, tmp_path, capsys):
    assert main(["locate", "x.png", "--prompt", " ", "--model", str(saved_convnet)]) == 1
    assert "empty" in capsys.readouterr().err
    assert main(["locate", "x.png", "--prompt", "a", "-o", str(tmp_path / "x.jpg"), "--model", str(saved_convnet)]) == 1
    assert "PNG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["locate", "x.png"])  # --prompt is required


def test_overlay_sheet_needs_something_to_show():
    with pytest.raises(ValueError, match="at least one image"):
        overlay_sheet([], [])
