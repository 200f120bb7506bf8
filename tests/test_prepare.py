"""`clipforge data prepare`: conversion of each built-in set from a small fake package folder, caption
and held-out rules, the manifest, reruns and failures. Only the test marked slow uses the network."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from clipforge.data.prepare import PrepareError, SOURCES, build_set, default_data_dir, pipeline, prepare
from clipforge.data.prepare.captions import captions_for, identifier_words
from clipforge.data.prepare.emoji_concepts import (TRAINED_EMOJI_VERSION, code_points, concept_id, fully_qualified,
                                                   is_held_out)
from clipforge.data.prepare.manifest import MANIFEST_NAME
from clipforge.data.prepare.noto import FONT_PATH
from clipforge.data.prepare.obtain import ObtainError, Package, obtain

SQUARE_SVG = ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" fill="none" stroke="currentColor" '
              'stroke-width="2"><path d="M4 4h16v16H4z"/></svg>')
BROKEN_SVG = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><path d="M4 4h16'


def emoji_sequences(held_out: bool, count: int) -> list[str]:
    """Hex sequences of single-code-point emoji the training sets keep (or hold out)."""
    found = [code_points(info.text) for info in fully_qualified() if len(info.text) == 1
             and info.version <= TRAINED_EMOJI_VERSION and is_held_out(code_points(info.text)) == held_out]
    return found[:count]


def write_png(path: Path, size: int = 64) -> None:
    image = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, size - 8, size - 8), fill=(240, 180, 0, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


def fake_twemoji(root: Path) -> Path:
    """Two kept emoji (one with a corrupt PNG), one held out, one skin-tone component."""
    kept, held = emoji_sequences(False, 2), emoji_sequences(True, 1)
    entries = [{"unified": sequence, "image": f"{sequence.lower()}.png", "name": f"NAME {sequence}",
                "short_names": [f"short-{sequence.lower()}"], "category": "Smileys & Emotion",
                "subcategory": "face-smiling", "has_img_twitter": True} for sequence in kept + held]
    entries.append({**entries[0], "unified": "1F3FB", "image": "1f3fb.png", "category": "Component"})
    write_files(root, {"emoji.json": json.dumps(entries)})
    write_png(root / "img" / "twitter" / "64" / entries[0]["image"])
    (root / "img" / "twitter" / "64" / entries[1]["image"]).write_bytes(b"not a png")
    write_png(root / "img" / "twitter" / "64" / entries[2]["image"])
    return root


def fake_tabler(root: Path) -> Path:
    icons = {name: {"name": name, "category": "Shapes", "tags": ["box", "shape", 4], "styles": {"outline": {}}}
             for name in ("square", "square-rounded", "broken-square")}
    return write_files(root, {"icons.json": json.dumps(icons), "icons/outline/square.svg": SQUARE_SVG,
                              "icons/outline/square-rounded.svg": SQUARE_SVG,
                              "icons/outline/broken-square.svg": BROKEN_SVG})


def fake_mdi(root: Path) -> Path:
    meta = [{"name": "square-outline", "aliases": ["box-outline"], "tags": ["Shape", "Files / Folders"],
             "deprecated": False},
            {"name": "old-square", "aliases": [], "tags": [], "deprecated": True},
            {"name": "square-plus", "aliases": [], "tags": [], "deprecated": False},
            {"name": "nothing", "aliases": [], "tags": [], "deprecated": False}]
    return write_files(root, {"meta.json": json.dumps(meta), "svg/square-outline.svg": SQUARE_SVG,
                              "svg/old-square.svg": SQUARE_SVG, "svg/square-plus.svg": SQUARE_SVG,
                              "svg/nothing.svg": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"/>'})


def fake_openmoji(root: Path) -> Path:
    kept, held = emoji_sequences(False, 1), emoji_sequences(True, 1)
    base = {"annotation": "some face", "tags": "face, smile", "openmoji_tags": "", "openmoji_author": "A. Artist",
            "subgroups": "face-smiling", "skintone": ""}
    entries = [{**base, "hexcode": kept[0], "group": "smileys-emotion"},
               {**base, "hexcode": held[0], "group": "flags"},
               {**base, "hexcode": f"{kept[0]}-1F3FB", "group": "smileys-emotion", "skintone": 1},
               {**base, "hexcode": "E000", "group": "extras-openmoji"}]
    files = {"data/openmoji.json": json.dumps(entries)}
    files.update({f"color/svg/{entry['hexcode']}.svg": SQUARE_SVG for entry in entries})
    return write_files(root, files)


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = np.array([magic, *array.shape], ">u4").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def fake_fashion_mnist(root: Path) -> Path:
    folder = root / "usr" / "share" / "datasets" / "fashion-mnist"
    images = np.zeros((3, 28, 28), np.uint8)
    images[:, 10:18, 10:18] = 255  # a bright garment on black, as in the dataset
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images, 2051)
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 9, 8]), 2049)
    return root


FAKES = {"twemoji": fake_twemoji, "tabler": fake_tabler, "mdi": fake_mdi, "openmoji": fake_openmoji,
         "fashion-mnist": fake_fashion_mnist}


@pytest.fixture
def fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Every set but Noto served from a fake package folder instead of its registry."""
    roots = {name: make(tmp_path / "packages" / name) for name, make in FAKES.items()}
    by_package = {SOURCES[name].package: root for name, root in roots.items()}
    monkeypatch.setattr(pipeline, "obtain", lambda package, downloads: by_package[package])
    return roots


def read_shards(paths: list[Path]) -> dict[str, dict[str, bytes]]:
    """key → {extension: bytes} over all shards."""
    samples: dict[str, dict[str, bytes]] = {}
    for path in paths:
        with tarfile.open(path) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def built(data_dir: Path, name: str) -> dict[str, dict[str, bytes]]:
    entry = build_set(SOURCES[name], data_dir, workers=1, progress=False)
    return read_shards([data_dir / shard["file"] for shard in entry["shards"]])


# Captions


def test_captions_are_stable_per_key_and_vary_across_keys() -> None:
    first_captions = {captions_for(f"key-{index}", "grinning face", "emoji", ["grinning"], ["smile"], "Smileys")[0]
                      for index in range(40)}
    assert captions_for("key-1", "grinning face", "emoji") == captions_for("key-1", "grinning face", "emoji")
    assert len(first_captions) >= 5
    assert all("grinning face" in caption for caption in first_captions)


def test_captions_are_distinct_and_draw_on_aliases_tags_and_category() -> None:
    captions = captions_for("k", "Arrow_Up", "icon", ["up arrow", "arrow up"], ["direction", "north"], "Arrows",
                            count=20)
    assert len(captions) == len(set(captions))
    assert "an icon of arrow up" in captions
    assert "arrow up, also called up arrow" in captions
    assert any("north" in caption for caption in captions)
    assert "an icon of arrow up from the arrows group" in captions
    assert identifier_words("brand-unsplash") == "brand unsplash"


# Held-out emoji concepts


def test_concept_ignores_variation_selectors_and_skin_tones() -> None:
    assert concept_id("1f44d-1f3fd") == concept_id("1F44D") == "1F44D"
    assert concept_id("0023-FE0F-20E3") == "0023-20E3"


def test_held_out_split_is_pinned_and_about_ten_percent() -> None:
    concepts = {concept_id(code_points(info.text)) for info in fully_qualified()}
    share = sum(map(is_held_out, concepts)) / len(concepts)
    assert 0.07 < share < 0.13
    assert is_held_out("1F1E6-1F1F8") and not is_held_out("1F600")  # pinned: changing the rule changes the sets


# Conversion of each set


def test_twemoji_writes_rgb_pngs_captions_and_metadata_without_held_out_concepts(fake_packages, tmp_path) -> None:
    entry = build_set(SOURCES["twemoji"], tmp_path / "data", workers=1, progress=False)
    samples = read_shards([tmp_path / "data" / shard["file"] for shard in entry["shards"]])
    assert (entry["samples"], entry["skipped"], entry["held_out_concepts"]) == (1, 1, 1)
    assert entry["skipped_reasons"] == {"unreadable (UnidentifiedImageError)": 1}
    (sample,) = samples.values()
    meta = json.loads(sample["json"])
    image = Image.open(io.BytesIO(sample["png"]))
    assert image.mode == "RGB" and image.size == (64, 64) and image.getpixel((0, 0)) == (255, 255, 255)
    assert sample["txt"].decode() == meta["captions"][0] and len(meta["captions"]) > 2
    assert meta["set"] == "twemoji" and meta["category"] == "Smileys & Emotion" and meta["name"]


def test_svg_sets_render_at_128_on_white_and_skip_broken_blank_or_deprecated_icons(fake_packages, tmp_path) -> None:
    tabler = build_set(SOURCES["tabler"], tmp_path / "data", workers=2, progress=False)
    assert (tabler["samples"], tabler["skipped"]) == (2, 1)
    mdi_entry = build_set(SOURCES["mdi"], tmp_path / "data", workers=1, progress=False)
    assert mdi_entry["skipped_reasons"] == {"blank picture": 1}
    mdi = read_shards([tmp_path / "data" / shard["file"] for shard in mdi_entry["shards"]])
    assert set(mdi) == {"mdi-square-outline", "mdi-square-plus"}
    meta = json.loads(mdi["mdi-square-outline"]["json"])
    assert meta["category"] == "Shape" and meta["aliases"] == ["box outline"]
    image = Image.open(io.BytesIO(mdi["mdi-square-plus"]["png"]))
    assert image.mode == "RGB" and image.size == (128, 128)
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((64, 22)) == (0, 0, 0)


def test_openmoji_keeps_base_emoji_of_nine_groups_and_marks_unseen_concepts(fake_packages, tmp_path) -> None:
    samples = built(tmp_path / "data", "openmoji")
    metas = {json.loads(sample["json"])["group"]: json.loads(sample["json"]) for sample in samples.values()}
    assert set(metas) == {"smileys-emotion", "flags"}
    assert metas["smileys-emotion"]["seen"] is True and metas["flags"]["seen"] is False


def test_fashion_mnist_is_inverted_to_white_and_upscaled(fake_packages, tmp_path) -> None:
    samples = built(tmp_path / "data", "fashion-mnist")
    metas = [json.loads(samples[key]["json"]) for key in sorted(samples)]
    assert [(meta["class_id"], meta["name"]) for meta in metas] == [(0, "t-shirt"), (9, "ankle boot"), (8, "bag")]
    image = Image.open(io.BytesIO(samples["fashion-mnist-00000"]["png"]))
    assert image.mode == "RGB" and image.size == (64, 64)
    assert image.getpixel((0, 0)) == (255, 255, 255) and image.getpixel((32, 32)) == (0, 0, 0)


def test_noto_lists_skin_tones_and_leaves_out_held_out_concepts(tmp_path) -> None:
    (tmp_path / FONT_PATH).parent.mkdir(parents=True)
    (tmp_path / FONT_PATH).touch()
    listing = SOURCES["noto"].list_items(tmp_path)
    metas = [item.meta for item in listing.items]
    assert len({item.key for item in listing.items}) == len(metas) > 3000
    assert any(meta["skin_tone"] for meta in metas)
    assert not any(is_held_out(meta["concept"]) for meta in metas)
    assert len(listing.held_out) > 150


def test_noto_needs_pillow_text_layout_for_emoji_sequences(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("PIL.features.check", lambda feature: False)
    with pytest.raises(RuntimeError, match="libfribidi0"):
        SOURCES["noto"].list_items(tmp_path)


@pytest.mark.slow
def test_noto_refuses_an_emoji_missing_from_the_font() -> None:
    font = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
    prepared = default_data_dir() / "_downloads" / "apt" / f"fonts-noto-color-emoji-{SOURCES['noto'].package.version}"
    font = next((path for path in (font, prepared / FONT_PATH) if path.is_file()), None)
    if font is None:
        pytest.skip("Noto Color Emoji is not installed or prepared here")
    draw = SOURCES["noto"].draw
    assert draw((str(font), "\N{GRINNING FACE}")).size == (136, 136)
    with pytest.raises(ValueError, match="no single glyph"):
        draw((str(font), "\N{LATIN SMALL LETTER A}\N{ZERO WIDTH JOINER}\N{GRINNING FACE}"))


# The manifest, reruns and failures


def test_manifest_records_checksums_and_a_rerun_skips_finished_sets(fake_packages, tmp_path, monkeypatch) -> None:
    data = tmp_path / "data"
    manifest = prepare(data, sources=["tabler", "fashion-mnist"], progress=False, workers=1)
    entry = manifest["sets"]["tabler"]
    assert json.loads((data / MANIFEST_NAME).read_text()) == manifest
    assert entry["split"] == "train" and manifest["sets"]["fashion-mnist"]["split"] == "eval"
    assert entry["licence"] == "MIT" and entry["source"]["version"] == SOURCES["tabler"].package.version
    assert [shard["file"] for shard in entry["shards"]] == ["tabler/shard-000000.tar"]
    assert len(entry["shards"][0]["sha256"]) == 64

    def fail(*args, **kwargs):
        raise AssertionError("a finished set was rebuilt")

    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "build_set", fail)
        rerun = prepare(data, sources=["tabler", "fashion-mnist"], progress=False, workers=1)
    assert rerun["sets"] == manifest["sets"] and rerun["last_run"]["built"] == []
    assert manifest["last_run"]["built"] == ["tabler", "fashion-mnist"] and manifest["last_run"]["evaluation_overlap"] == 0


def test_force_or_a_damaged_shard_rebuilds_the_set(fake_packages, tmp_path) -> None:
    data = tmp_path / "data"
    first = prepare(data, sources=["mdi"], progress=False, workers=1)["sets"]["mdi"]
    shard = data / first["shards"][0]["file"]
    shard.write_bytes(b"damaged")
    rebuilt = prepare(data, sources=["mdi"], progress=False, workers=1)["sets"]["mdi"]
    assert rebuilt["shards"] == first["shards"]
    forced = prepare(data, sources=["mdi"], force=True, progress=False, workers=1)["sets"]["mdi"]
    assert forced["shards"] == first["shards"]


def test_a_failed_set_keeps_finished_and_previously_built_sets(fake_packages, tmp_path, monkeypatch) -> None:
    data = tmp_path / "data"
    prepare(data, sources=["tabler"], progress=False, workers=1)
    (fake_packages["tabler"] / "icons.json").write_text("{broken")
    with pytest.raises(PrepareError, match="tabler"):
        prepare(data, sources=["tabler", "mdi"], force=True, progress=False, workers=1)
    manifest = json.loads((data / MANIFEST_NAME).read_text())
    assert set(manifest["sets"]) == {"tabler", "mdi"}
    assert (data / manifest["sets"]["tabler"]["shards"][0]["file"]).is_file()
    assert not list(data.glob(".*partial"))


def test_unknown_set_names_are_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown sets"):
        prepare(tmp_path, sources=["imagenet"], progress=False)


def test_data_dir_defaults_to_the_environment_then_the_cache(tmp_path, monkeypatch, offline_cache) -> None:
    monkeypatch.setenv("CLIPFORGE_DATA", str(tmp_path / "elsewhere"))
    assert default_data_dir() == tmp_path / "elsewhere"
    monkeypatch.delenv("CLIPFORGE_DATA")
    assert default_data_dir() == offline_cache / "data"


# Fetching


def test_a_missing_client_says_what_to_install(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ObtainError, match="install Node.js"):
        obtain(Package("npm", "openmoji", "17.0.0"), tmp_path)
    with pytest.raises(ObtainError, match="apt-get"):
        obtain(Package("apt", "dataset-fashion-mnist", "1"), tmp_path)
    assert list(tmp_path.glob("*/*")) == []


def test_offline_mode_refuses_to_fetch(tmp_path) -> None:
    with pytest.raises(ObtainError, match="CLIPFORGE_OFFLINE"):
        obtain(Package("npm", "openmoji", "17.0.0"), tmp_path)


@pytest.mark.slow
def test_real_tabler_icons_from_the_npm_registry(tmp_path, monkeypatch) -> None:
    package = SOURCES["tabler"].package
    try:
        answer = subprocess.run(["npm", "view", str(package), "version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        pytest.skip(f"npm is unusable here: {error}")
    if answer.returncode != 0:
        pytest.skip(f"the npm registry did not answer: {answer.stderr.strip()[-200:]}")
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    entry = prepare(tmp_path, sources=["tabler"], progress=False)["sets"]["tabler"]
    assert entry["samples"] > 5000 and entry["skipped"] < 10
    first = read_shards([tmp_path / entry["shards"][0]["file"]])
    assert all(Image.open(io.BytesIO(sample["png"])).size == (128, 128) for sample in first.values())
