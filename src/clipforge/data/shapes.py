"""The synthetic `shapes` data: small images of coloured shapes with captions in varied words, a
held-out split of colour-shape pairs for compositional tests, and counting and spatial probes.

Everything is seeded: item ``i`` of a stream is drawn from ``default_rng([seed, stream, i])``, so
the same seed gives byte-identical images and captions and any slice can be made alone. Shapes are
drawn without antialiasing, so every shape pixel has exactly its named colour, and captions are
built from the shapes actually placed, so they never mention a shape that is not drawn.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from clipforge.data.shard_writer import ShardWriter

COLORS = {
    "red": (215, 25, 30),
    "green": (35, 150, 50),
    "blue": (30, 80, 210),
    "yellow": (240, 200, 20),
    "purple": (130, 50, 170),
    "orange": (245, 130, 20),
    "black": (25, 25, 25),
}
BACKGROUNDS = {"white": (255, 255, 255), "light grey": (232, 232, 232), "cream": (252, 246, 228)}
SIZES = ("small", "large")
SPLITS = ("train", "heldout")
MAX_SHAPES = 3  # per scene
MAX_COUNT = 4  # shapes in a counting probe
MIN_IMAGE_SIZE = 32

# Circumradius of each size as a fraction of the image side: every outline lies inside that circle.
_SIZE_RADIUS = {"small": 0.11, "large": 0.19}
_SIZE_WORDS = {"small": ("small", "little"), "large": ("large", "big")}
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four"}  # a single shape is "a", "an" or "one"
_TEMPLATES = (
    "{objects}",
    "a picture of {objects}",
    "an image of {objects}",
    "a drawing of {objects}",
    "a simple illustration of {objects}",
    "there {be} {objects}",
    "{objects} on a {background} background",
    "a {background} background with {objects}",
)
# relation -> (axis it is read along: 0 = x, 1 = y; whether its subject has the smaller coordinate)
_RELATIONS = {
    "to the left of": (0, True),
    "to the right of": (0, False),
    "above": (1, True),
    "below": (1, False),
}
_OPPOSITE = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
_STREAMS = {"train": 0, "heldout": 1, "counting": 2, "spatial": 3, "held_out_pairs": 4}
_REPEAT_PROBABILITY = 0.35  # a further shape copies an earlier one's colour and kind ("two blue squares")
_CAPTIONS_PER_SCENE = 4
_CAPTION_DRAWS = 12  # phrasings drawn to find _CAPTIONS_PER_SCENE distinct ones
_PLACEMENT_TRIES = 100


def _ring(count: int, start_degrees: float, radii: Sequence[float] = (1.0,)) -> tuple[tuple[float, float], ...]:
    """`count` vertices evenly around the unit circle, cycling through `radii` (a star alternates two)."""
    return tuple(
        (
            radii[k % len(radii)] * math.cos(math.radians(start_degrees + 360 * k / count)),
            radii[k % len(radii)] * math.sin(math.radians(start_degrees + 360 * k / count)),
        )
        for k in range(count)
    )


_ARM, _HALF_WIDTH = 0.9, 0.3
# Each kind's outline on the unit circumcircle (y points down); a circle is a 48-gon at 64 px.
_UNIT_OUTLINES = {
    "circle": _ring(48, 0, (0.85,)),
    "square": _ring(4, 45, (0.95,)),
    "triangle": _ring(3, -90),
    "star": _ring(10, -90, (1.0, 0.5)),
    "cross": (
        (-_HALF_WIDTH, -_ARM), (_HALF_WIDTH, -_ARM), (_HALF_WIDTH, -_HALF_WIDTH), (_ARM, -_HALF_WIDTH),
        (_ARM, _HALF_WIDTH), (_HALF_WIDTH, _HALF_WIDTH), (_HALF_WIDTH, _ARM), (-_HALF_WIDTH, _ARM),
        (-_HALF_WIDTH, _HALF_WIDTH), (-_ARM, _HALF_WIDTH), (-_ARM, -_HALF_WIDTH), (-_HALF_WIDTH, -_HALF_WIDTH),
    ),
    "hexagon": _ring(6, 0),
    "diamond": _ring(4, -90),
}
KINDS = tuple(_UNIT_OUTLINES)


@dataclass(frozen=True)
class ShapeSpec:
    """One shape: `size` is "small" or "large"; `x`, `y` its centre in pixels of the scene's image."""

    kind: str
    color: str
    size: str
    x: int
    y: int


@dataclass
class ShapeScene:
    """The shapes of one image and its captions; `caption` is `captions[0]`, the rest rephrase it."""

    shapes: list[ShapeSpec]
    caption: str
    captions: list[str]
    background: str = "white"


@dataclass
class Probe:
    """An image, its true caption and hard negatives that differ from it only in a number or relation."""

    image: Image.Image
    caption: str
    negatives: list[str]
    kind: str  # "counting" or "spatial"


def shape_radius(size: str, image_size: int) -> float:
    """Circumradius in pixels of a `size` shape: its outline stays within that distance of the centre."""
    return _SIZE_RADIUS[size] * image_size


def held_out_pairs(seed: int = 0) -> set[tuple[str, str]]:
    """(colour, kind) pairs never drawn in "train": one colour per kind, each colour at most once, so
    every colour and every kind is still seen in training (7 of 49 pairs, fixed by `seed`)."""
    rng = np.random.default_rng([seed, _STREAMS["held_out_pairs"]])
    colors = [list(COLORS)[k] for k in rng.permutation(len(COLORS))]
    return set(zip(colors, KINDS))


def render(scene: ShapeScene, image_size: int = 64) -> Image.Image:
    """Draw `scene` as RGB; `image_size` must be the one its centres were laid out for."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for shape in scene.shapes:
        radius = shape_radius(shape.size, image_size)
        outline = [(shape.x + radius * u, shape.y + radius * v) for u, v in _UNIT_OUTLINES[shape.kind]]
        draw.polygon(outline, fill=COLORS[shape.color])
    return image


def sample_scene(index: int, seed: int = 0, split: str = "train", image_size: int = 64) -> ShapeScene:
    """Scene `index` of a split, made alone: one to three shapes, often repeating a colour and kind.

    "train" scenes use no held-out pair; each "heldout" scene's first shape is a held-out pair."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = _rng(seed, split, index, image_size)
    training = _training_pairs(seed)
    pool = training if split == "train" else sorted(_all_pairs())
    first_pool = training if split == "train" else sorted(held_out_pairs(seed))
    pairs = [_choice(rng, first_pool)]
    for _ in range(int(rng.integers(MAX_SHAPES))):
        pairs.append(_choice(rng, pairs if rng.random() < _REPEAT_PROBABILITY else pool))
    sizes = [_choice(rng, SIZES) for _ in pairs]
    centres = _scatter(rng, [shape_radius(size, image_size) for size in sizes], image_size)
    shapes = [
        ShapeSpec(kind, color, size, *centre)
        for (color, kind), size, centre in zip(pairs, sizes, centres)
        if centre is not None
    ]
    background = _choice(rng, list(BACKGROUNDS))
    captions: list[str] = []
    for _ in range(_CAPTION_DRAWS):
        caption = _describe(rng, shapes, background, image_size)
        if caption not in captions:
            captions.append(caption)
        if len(captions) == _CAPTIONS_PER_SCENE:
            break
    return ShapeScene(shapes, captions[0], captions, background)


def generate(
    count: int, seed: int = 0, split: str = "train", image_size: int = 64
) -> Iterator[tuple[Image.Image, ShapeScene]]:
    """Scenes 0..count-1 of `split` with their images; scene i does not depend on `count`."""
    for index in range(count):
        scene = sample_scene(index, seed, split, image_size)
        yield render(scene, image_size), scene


def counting_probes(count: int, seed: int = 0, image_size: int = 64) -> list[Probe]:
    """Images of 1..4 identical small shapes of a training pair ("three red circles"), the number
    cycling with the index; the negatives are the same caption with every other number."""
    probes = []
    for index in range(count):
        rng = _rng(seed, "counting", index, image_size)
        color, kind = _choice(rng, _training_pairs(seed))
        target = 1 + index % MAX_COUNT
        radius = shape_radius("small", image_size)
        centres = [centre for centre in _scatter(rng, [radius] * target, image_size) if centre is not None]
        shapes = [ShapeSpec(kind, color, "small", *centre) for centre in centres]
        background = _choice(rng, list(BACKGROUNDS))
        template = _choice(rng, _TEMPLATES)

        def caption(number: int) -> str:
            return _fill(template, _noun_phrase(number, [color, kind], say_one=True), background, number)

        truth = caption(len(shapes))
        image = render(ShapeScene(shapes, truth, [truth], background), image_size)
        negatives = [caption(number) for number in range(1, MAX_COUNT + 1) if number != len(shapes)]
        probes.append(Probe(image, truth, negatives, "counting"))
    return probes


def spatial_probes(count: int, seed: int = 0, image_size: int = 64) -> list[Probe]:
    """Two shapes of different colours and kinds, clearly apart along one axis ("a red circle to the
    left of a blue square"), the relation cycling with the index; the negatives swap the two objects
    or reverse the relation. Along that axis the gap between outlines is at least a few pixels, and
    the offset across it is at most half the distance along it."""
    relations = list(_RELATIONS)
    probes = []
    for index in range(count):
        rng = _rng(seed, "spatial", index, image_size)
        pool = _training_pairs(seed)
        subject = _choice(rng, pool)
        other = _choice(rng, [pair for pair in pool if pair[0] != subject[0] and pair[1] != subject[1]])
        sizes = [_choice(rng, SIZES) for _ in range(2)]
        relation = relations[index % len(relations)]
        centres = _separate(rng, relation, [shape_radius(size, image_size) for size in sizes], image_size)
        shapes = [
            ShapeSpec(kind, color, size, *centre)
            for (color, kind), size, centre in zip((subject, other), sizes, centres)
        ]
        background = _choice(rng, list(BACKGROUNDS))
        template = _choice(rng, _TEMPLATES)
        a, b = (_noun_phrase(1, list(pair)) for pair in (subject, other))
        truth, swapped, reversed_ = (
            _fill(template, phrase, background, 1)
            for phrase in (f"{a} {relation} {b}", f"{b} {relation} {a}", f"{a} {_OPPOSITE[relation]} {b}")
        )
        image = render(ShapeScene(shapes, truth, [truth], background), image_size)
        probes.append(Probe(image, truth, [swapped, reversed_], "spatial"))
    return probes


def write_shapes_shards(
    out_dir: str | os.PathLike,
    count: int,
    seed: int = 0,
    split: str = "train",
    shard_size: int = 1000,
    image_size: int = 64,
) -> list[Path]:
    """Write `count` scenes as WebDataset shards: `key.png`, `key.txt` (the caption) and `key.json`
    (split, seed, index, background, shapes and every phrasing). Returns the shard paths."""
    with ShardWriter(out_dir, shard_size, prefix=f"shapes-{split}") as writer:
        for index, (image, scene) in enumerate(generate(count, seed, split, image_size)):
            png = io.BytesIO()
            image.save(png, format="PNG")
            meta = {
                "split": split,
                "seed": seed,
                "index": index,
                "image_size": image_size,
                "background": scene.background,
                "shapes": [asdict(shape) for shape in scene.shapes],
                "captions": scene.captions,
            }
            writer.write(f"{split}_{index:08d}", png.getvalue(), "png", scene.caption, meta)
    return writer.shards


def _rng(seed: int, stream: str, index: int, image_size: int) -> np.random.Generator:
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be at least {MIN_IMAGE_SIZE} for shapes to fit apart, got {image_size}")
    return np.random.default_rng([seed, _STREAMS[stream], index])


def _choice(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _all_pairs() -> set[tuple[str, str]]:
    return {(color, kind) for color in COLORS for kind in KINDS}


def _training_pairs(seed: int) -> list[tuple[str, str]]:
    return sorted(_all_pairs() - held_out_pairs(seed))


def _gap(image_size: int) -> float:
    """Least distance between two shapes' circumcircles: keeps them separate blobs after rasterising."""
    return max(2.0, 0.05 * image_size)


def _centre_range(radius: float, image_size: int) -> tuple[int, int]:
    """Inclusive range of integer centre coordinates that keep a shape of `radius` inside the image."""
    margin = math.ceil(radius)
    return margin, image_size - 1 - margin


def _scatter(rng: np.random.Generator, radii: Sequence[float], image_size: int) -> list[tuple[int, int] | None]:
    """Place shapes one by one at random centres clear of those before; None for one that found no room
    in `_PLACEMENT_TRIES` draws (the first always fits)."""
    placed: list[tuple[int, int, float]] = []
    centres: list[tuple[int, int] | None] = []
    for radius in radii:
        low, high = _centre_range(radius, image_size)
        centre = None
        for _ in range(_PLACEMENT_TRIES):
            x, y = (int(value) for value in rng.integers(low, high + 1, size=2))
            if all(math.hypot(x - px, y - py) >= radius + pr + _gap(image_size) for px, py, pr in placed):
                centre = (x, y)
                placed.append((x, y, radius))
                break
        centres.append(centre)
    return centres


def _separate(
    rng: np.random.Generator, relation: str, radii: Sequence[float], image_size: int
) -> list[tuple[int, int]]:
    """Centres for (subject, object) that satisfy `relation` unambiguously (see `spatial_probes`)."""
    axis, subject_first = _RELATIONS[relation]
    need = math.ceil(sum(radii) + _gap(image_size))
    first, second = (0, 1) if subject_first else (1, 0)
    first_low, first_high = _centre_range(radii[first], image_size)
    second_low, second_high = _centre_range(radii[second], image_size)
    along = [0, 0]
    along[first] = int(rng.integers(first_low, min(first_high, second_high - need) + 1))
    along[second] = int(rng.integers(max(second_low, along[first] + need), second_high + 1))
    slack = abs(along[1] - along[0]) // 2
    (low, high), (other_low, other_high) = (_centre_range(radius, image_size) for radius in radii)
    across = [int(rng.integers(low, high + 1))]
    across.append(int(rng.integers(max(other_low, across[0] - slack), min(other_high, across[0] + slack) + 1)))
    return [(along[k], across[k]) if axis == 0 else (across[k], along[k]) for k in range(2)]


def _describe(rng: np.random.Generator, shapes: Sequence[ShapeSpec], background: str, image_size: int) -> str:
    """One random phrasing of a scene: shapes grouped by colour and kind (and size when sizes are
    said) and counted in words, optionally with size and (for a lone shape) position words."""
    with_size = rng.random() < 0.4
    with_position = rng.random() < 0.3
    say_one = rng.random() < 0.3
    groups: dict[tuple[str, str, str | None], list[ShapeSpec]] = {}
    for shape in shapes:
        groups.setdefault((shape.color, shape.kind, shape.size if with_size else None), []).append(shape)
    keys = list(groups)
    phrases = []
    for k in rng.permutation(len(keys)):
        color, kind, size = keys[k]
        members = groups[keys[k]]
        words = ([_choice(rng, _SIZE_WORDS[size])] if size else []) + [color, kind]
        phrase = _noun_phrase(len(members), words, say_one)
        position = _position_phrase(members[0], image_size) if with_position and len(members) == 1 else None
        phrases.append(f"{phrase} {position}" if position else phrase)
    objects = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    return _fill(_choice(rng, _TEMPLATES), objects, background, len(shapes))


def _noun_phrase(number: int, words: list[str], say_one: bool = False) -> str:
    """"a red circle" / "an orange star" / "one red circle" / "three red circles"."""
    if number == 1:
        determiner = "one" if say_one else ("an" if words[0][0] in "aeiou" else "a")
        return " ".join([determiner, *words])
    noun = words[-1] + ("es" if words[-1].endswith("s") else "s")
    return " ".join([_NUMBER_WORDS[number], *words[:-1], noun])


def _fill(template: str, objects: str, background: str, number: int) -> str:
    return template.format(objects=objects, background=background, be="is" if number == 1 else "are")


def _position_phrase(shape: ShapeSpec, image_size: int) -> str | None:
    """Where a centre falls in a 3x3 grid ("in the top left", "at the bottom", "in the center"), or
    None when it lies too near a border between cells for the words to be clearly true."""
    column, row = (_third(coordinate, image_size) for coordinate in (shape.x, shape.y))
    if column is None or row is None:
        return None
    vertical, horizontal = ("top", None, "bottom")[row], ("left", None, "right")[column]
    if vertical and horizontal:
        return f"in the {vertical} {horizontal}"
    if vertical:
        return f"at the {vertical}"
    if horizontal:
        return f"on the {horizontal}"
    return "in the center"


def _third(coordinate: int, image_size: int) -> int | None:
    """Which third (0, 1, 2) of the image a coordinate is in; None within image_size/16 of a border."""
    if min(abs(coordinate - image_size * k / 3) for k in (1, 2)) < image_size / 16:
        return None
    return min(3 * coordinate // image_size, 2)
