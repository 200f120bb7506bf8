"""clipforge.data.shapes: seeded scenes, varied captions, held-out pairs, probes that tell the truth, shards."""

import functools
import io
import json
import math
import re
import tarfile
from itertools import combinations

import numpy as np
import pytest

from clipforge.data.shapes import (
    COLORS,
    KINDS,
    counting_probes,
    generate,
    held_out_pairs,
    sample_scene,
    shape_radius,
    spatial_probes,
    write_shapes_shards,
)

NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4}
RELATIONS = ("to the left of", "to the right of", "above", "below")
PLACES = "top left|top right|bottom left|bottom right|top|bottom|left|right|center"


def png_bytes(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@functools.cache
def train_scenes(count: int = 300):
    return list(generate(count, seed=0, split="train"))


def color_mask(image, color: str) -> np.ndarray:
    return (np.asarray(image) == COLORS[color]).all(axis=-1)


def blobs(mask: np.ndarray) -> list[np.ndarray]:
    """8-connected components of a boolean mask, each as an array of (row, column) pixels."""
    seen = np.zeros_like(mask)
    components = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        seen[start] = True
        stack, pixels = [start], []
        while stack:
            row, col = stack.pop()
            pixels.append((row, col))
            for dr in (-1, 0, 1):
                for dc in (-1, 0, 1):
                    r, c = row + dr, col + dc
                    if 0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c] and not seen[r, c]:
                        seen[r, c] = True
                        stack.append((r, c))
        components.append(np.array(pixels))
    return components


def colors_in_order(caption: str) -> list[str]:
    return [word for word in re.findall(r"[a-z]+", caption) if word in COLORS]


def test_same_seed_gives_identical_images_and_captions():
    first = [(png_bytes(image), scene.captions) for image, scene in generate(20, seed=3)]
    second = [(png_bytes(image), scene.captions) for image, scene in generate(20, seed=3)]
    assert first == second


def test_different_seed_gives_different_samples():
    first = [png_bytes(image) for image, _ in generate(20, seed=3)]
    second = [png_bytes(image) for image, _ in generate(20, seed=4)]
    assert sum(a != b for a, b in zip(first, second)) >= 18


def test_sample_does_not_depend_on_count_or_neighbours():
    long = list(generate(12, seed=5))
    short = list(generate(4, seed=5))
    for index in range(4):
        assert png_bytes(long[index][0]) == png_bytes(short[index][0])
        assert long[index][1] == short[index][1] == sample_scene(index, seed=5)


def test_images_are_rgb_of_the_requested_size():
    image, _ = next(generate(1, image_size=96))
    assert image.mode == "RGB" and image.size == (96, 96)


def test_shapes_stay_inside_the_image_and_apart():
    for _, scene in train_scenes():
        assert 1 <= len(scene.shapes) <= 3
        for shape in scene.shapes:
            radius = shape_radius(shape.size, 64)
            assert radius <= shape.x <= 63 - radius and radius <= shape.y <= 63 - radius
        for a, b in combinations(scene.shapes, 2):
            assert math.hypot(a.x - b.x, a.y - b.y) > shape_radius(a.size, 64) + shape_radius(b.size, 64)


def test_every_drawn_shape_is_its_own_blob_of_its_colour():
    for image, scene in train_scenes()[:100]:
        for color in {shape.color for shape in scene.shapes}:
            expected = sum(shape.color == color for shape in scene.shapes)
            assert len(blobs(color_mask(image, color))) == expected


def test_there_are_at_least_five_kinds_and_six_colours_and_all_are_drawn():
    assert len(KINDS) >= 5 and len(COLORS) >= 6
    drawn = {(shape.color, shape.kind) for _, scene in train_scenes() for shape in scene.shapes}
    assert {color for color, _ in drawn} == set(COLORS)
    assert {kind for _, kind in drawn} == set(KINDS)


def test_captions_mention_every_shapes_colour_and_kind():
    for _, scene in train_scenes():
        assert scene.caption == scene.captions[0]
        for caption in scene.captions:
            for shape in scene.shapes:
                assert shape.color in caption and shape.kind in caption, (caption, shape)


def test_a_scene_has_several_distinct_phrasings():
    counts = [len(set(scene.captions)) for _, scene in train_scenes()]
    assert min(counts) >= 2 and np.mean(counts) >= 3.5


def test_captions_of_one_shape_scenes_vary_in_wording():
    frames = set()
    for _, scene in train_scenes():
        if len(scene.shapes) == 1:
            shape = scene.shapes[0]
            frames.add(scene.caption.replace(shape.color, "COLOR").replace(shape.kind, "KIND"))
    assert len(frames) >= 15
    words = " ".join(frames)
    for phrase in ("one COLOR", "a picture of", "background", "large", "small"):
        assert phrase in words


def test_position_words_agree_with_the_shape_centre():
    said = 0
    for _, scene in train_scenes():
        pairs = [(shape.color, shape.kind) for shape in scene.shapes]
        for shape in (shape for shape in scene.shapes if pairs.count((shape.color, shape.kind)) == 1):
            for caption in scene.captions:
                match = re.search(rf"{shape.color} {shape.kind} (?:in|at|on) the ({PLACES})\b", caption)
                if match is None:
                    continue
                words = set(match.group(1).split())
                assert ("top" in words) == (shape.y < 64 / 3) and ("bottom" in words) == (shape.y > 128 / 3)
                assert ("left" in words) == (shape.x < 64 / 3) and ("right" in words) == (shape.x > 128 / 3)
                said += 1
    assert said >= 20


def test_repeated_shapes_of_one_size_are_counted_in_words_with_plurals():
    checked = 0
    for _, scene in train_scenes():
        for shape in scene.shapes:
            same = [other for other in scene.shapes if (other.color, other.kind) == (shape.color, shape.kind)]
            if len(same) > 1 and len({other.size for other in same}) == 1:
                word = [w for w, n in NUMBERS.items() if n == len(same)][0]
                plural = shape.kind + ("es" if shape.kind.endswith("s") else "s")
                for caption in scene.captions:
                    assert re.search(rf"\b{word} (\w+ )?{shape.color} {plural}\b", caption), caption
                checked += 1
    assert checked >= 20


def test_held_out_pairs_are_about_fifteen_percent_and_fixed_by_seed():
    pairs = held_out_pairs(0)
    assert pairs == held_out_pairs(0) != held_out_pairs(1)
    assert 0.1 <= len(pairs) / (len(COLORS) * len(KINDS)) <= 0.2
    assert pairs <= {(color, kind) for color in COLORS for kind in KINDS}


def test_held_out_pairs_never_appear_in_train():
    held_out = held_out_pairs(0)
    for _, scene in train_scenes():
        assert not {(shape.color, shape.kind) for shape in scene.shapes} & held_out


def test_every_heldout_scene_contains_a_held_out_pair():
    held_out = held_out_pairs(0)
    for _, scene in generate(100, seed=0, split="heldout"):
        assert {(shape.color, shape.kind) for shape in scene.shapes} & held_out


def test_unknown_split_is_refused():
    with pytest.raises(ValueError, match="split"):
        next(generate(1, split="validation"))


def test_counting_caption_states_the_number_of_shapes_drawn():
    probes = counting_probes(24, seed=2)
    assert {NUMBERS[next(w for w in p.caption.split() if w in NUMBERS)] for p in probes} == {1, 2, 3, 4}
    for probe in probes:
        number = NUMBERS[next(word for word in probe.caption.split() if word in NUMBERS)]
        (color,) = colors_in_order(probe.caption)
        assert len(blobs(color_mask(probe.image, color))) == number, probe.caption
        assert probe.kind == "counting"


def test_counting_negatives_name_the_same_shape_with_another_number():
    def number(caption):
        return [word for word in caption.split() if word in NUMBERS]

    for probe in counting_probes(12, seed=2):
        kind = next(kind for kind in KINDS if kind in probe.caption)
        assert len(probe.negatives) == 3 and probe.caption not in probe.negatives
        for negative in probe.negatives:
            assert colors_in_order(negative) == colors_in_order(probe.caption) and kind in negative
            assert len(number(negative)) == 1 and number(negative) != number(probe.caption)


def test_spatial_caption_agrees_with_the_shape_centres_in_pixels():
    probes = spatial_probes(24, seed=2)
    assert {relation for p in probes for relation in RELATIONS if relation in p.caption} == set(RELATIONS)
    for probe in probes:
        subject, other = colors_in_order(probe.caption)
        (sy, sx), (oy, ox) = (np.argwhere(color_mask(probe.image, c)).mean(axis=0) for c in (subject, other))
        relation = next(r for r in RELATIONS if r in probe.caption)
        along, across = {"to the left of": (ox - sx, sy - oy), "to the right of": (sx - ox, sy - oy),
                         "above": (oy - sy, sx - ox), "below": (sy - oy, sx - ox)}[relation]
        assert along >= 10 and abs(across) <= along / 2 + 1, (probe.caption, along, across)
        assert probe.kind == "spatial"


def test_spatial_negatives_swap_the_objects_or_reverse_the_relation():
    for probe in spatial_probes(8, seed=2):
        subject, other = colors_in_order(probe.caption)
        relation = next(r for r in RELATIONS if r in probe.caption)
        swapped, reversed_ = probe.negatives
        assert colors_in_order(swapped) == [other, subject] and relation in swapped
        assert colors_in_order(reversed_) == [subject, other] and relation not in reversed_
        assert probe.caption not in probe.negatives


def test_probes_are_deterministic():
    for make in (counting_probes, spatial_probes):
        first, second = make(6, seed=9), make(6, seed=9)
        assert [(png_bytes(p.image), p.caption, p.negatives) for p in first] == [
            (png_bytes(p.image), p.caption, p.negatives) for p in second
        ]


def test_shards_hold_png_caption_and_meta_for_every_sample(tmp_path):
    shards = write_shapes_shards(tmp_path, count=10, seed=1, shard_size=4)
    assert len(shards) == 3 and all(path.exists() for path in shards)
    samples = {}
    for path in shards:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".")
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    assert len(samples) == 10
    scenes = [scene for _, scene in generate(10, seed=1)]
    for index, key in enumerate(sorted(samples)):
        files = samples[key]
        assert set(files) == {"png", "txt", "json"}
        assert files["png"].startswith(b"\x89PNG")
        meta = json.loads(files["json"])
        assert files["txt"].decode() == scenes[index].caption == meta["captions"][0]
        assert meta["split"] == "train" and len(meta["shapes"]) == len(scenes[index].shapes)
