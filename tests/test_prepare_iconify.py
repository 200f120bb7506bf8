"""The Iconify sets of `clipforge data prepare` (many artists' icon and emoji sets in one npm layout),
from small fake packages; the check that no training picture is an evaluation picture; and, where a
prepared folder exists on this machine, the real corpus's size and disjointness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clipforge.data.prepare import PrepareError, SOURCES, build_set, default_data_dir, pipeline, prepare
from clipforge.data.prepare.disjoint import evaluation_overlap
from clipforge.data.prepare.emoji_concepts import code_points, fully_qualified, is_held_out, TRAINED_EMOJI_VERSION
from clipforge.data.prepare.iconify import Collection, emoji_slug, list_emoji, list_icons, split_style
from clipforge.data.prepare.manifest import summary

from test_prepare import fake_openmoji, fake_tabler, read_shards

SQUARE = '<path fill="currentColor" d="M4 4h16v16H4z"/>'
CIRCLE = '<circle cx="12" cy="12" r="8" fill="#f0b400"/>'


def write_package(root: Path, icons: dict, aliases: dict | None = None, metadata: dict | None = None,
                  chars: dict | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "icons.json").write_text(json.dumps({"prefix": "x", "icons": icons, "aliases": aliases or {},
                                                 "width": 24, "height": 24}))
    if metadata is not None:
        (root / "metadata.json").write_text(json.dumps(metadata))
    if chars is not None:
        (root / "chars.json").write_text(json.dumps(chars))
    return root


def trained_emoji(count: int, held_out: bool = False) -> list:
    return [info for info in fully_qualified() if len(info.text) == 1 and info.version <= TRAINED_EMOJI_VERSION
            and is_held_out(code_points(info.text)) == held_out][:count]


def test_icon_names_drop_the_style_suffix_and_keep_aliases_and_categories(tmp_path) -> None:
    root = write_package(
        tmp_path / "pkg",
        icons={"acorn": {"body": SQUARE}, "acorn-bold": {"body": SQUARE}, "old-acorn": {"body": SQUARE, "hidden": True},
               "tree-24-filled": {"body": SQUARE}, "tree-20-filled": {"body": SQUARE}},
        aliases={"oak-nut-bold": {"parent": "acorn-bold"}, "acorn-turned": {"parent": "acorn", "rotate": 1}},
        metadata={"suffixes": {"": "Regular", "bold": "Bold", "24-filled": "24 Filled", "20-filled": "20 Filled"},
                  "categories": {"NatureAndFood": ["acorn", "acorn-bold"]}})
    listing = list_icons(root, Collection("x", "1", "icon", "MIT"))
    by_key = {item.key: item.meta for item in listing.items}
    assert set(by_key) == {"x-acorn", "x-acorn-bold", "x-tree-24-filled", "x-tree-20-filled"}  # hidden left out
    bold = by_key["x-acorn-bold"]
    assert (bold["name"], bold["style"], bold["category"], bold["aliases"]) == ("acorn", "bold", "Nature And Food", ["oak nut"])
    assert any("also called oak nut" in caption for caption in bold["captions"])
    assert by_key["x-acorn"]["aliases"] == []  # a rotated alias is another picture, not another name
    only_24 = list_icons(root, Collection("x", "1", "icon", "MIT", styles=("24-filled",)))
    assert [item.key for item in only_24.items] == ["x-tree-24-filled"]
    assert split_style("tree", ["", "bold"]) == ("tree", "") and split_style("bold", ["bold"]) == ("bold", "")


def test_emoji_are_matched_by_chars_or_cldr_name_and_held_out_concepts_stay_out(tmp_path) -> None:
    kept, held = trained_emoji(2), trained_emoji(1, held_out=True)
    names = [emoji_slug(info.name) for info in kept + held]
    icons = {name: {"body": CIRCLE} for name in names} | {"not-an-emoji-at-all": {"body": CIRCLE}}
    root = write_package(tmp_path / "pkg", icons,
                         chars={code_points(kept[0].text).lower(): names[0]})  # the second is found by its name
    listing = list_emoji(root, Collection("e", "1", "emoji", "MIT"))
    concepts = [item.meta["concept"] for item in listing.items]
    assert concepts == [code_points(info.text) for info in kept]
    assert listing.held_out == {code_points(held[0].text)}
    assert listing.skipped == {"not an emoji the emoji package names": 1}
    assert emoji_slug("A button (blood type)") == "a-button-blood-type"


def test_an_iconify_set_draws_its_icons_black_on_white(tmp_path, monkeypatch) -> None:
    source = SOURCES["lucide"]
    root = write_package(tmp_path / "pkg", {"square": {"body": SQUARE}, "blank": {"body": "<g/>"}})
    monkeypatch.setattr(pipeline, "obtain", lambda package, downloads: root)
    entry = build_set(source, tmp_path / "data", workers=1, progress=False)
    assert entry["samples"] == 1 and entry["skipped_reasons"] == {"blank picture": 1}
    samples = read_shards([tmp_path / "data" / shard["file"] for shard in entry["shards"]])
    assert set(samples) == {"lucide-square"}
    from PIL import Image
    import io
    picture = Image.open(io.BytesIO(samples["lucide-square"]["png"]))
    assert picture.size == (128, 128) and picture.getpixel((64, 64)) == (0, 0, 0)  # currentColor drawn black
    assert picture.getpixel((2, 2)) == (255, 255, 255)


def test_a_training_picture_equal_to_an_evaluation_picture_fails_the_preparation(tmp_path, monkeypatch) -> None:
    tabler, openmoji = fake_tabler(tmp_path / "tabler"), fake_openmoji(tmp_path / "openmoji")  # both draw one square
    by_package = {SOURCES["tabler"].package: tabler, SOURCES["openmoji"].package: openmoji}
    monkeypatch.setattr(pipeline, "obtain", lambda package, downloads: by_package[package])
    data = tmp_path / "data"
    with pytest.raises(PrepareError, match="training pictures equal evaluation pictures"):
        prepare(data, sources=["tabler", "openmoji"], progress=False, workers=1)
    record = json.loads((data / "manifest.json").read_text())
    assert set(record["sets"]) == {"tabler", "openmoji"}  # the sets stay, the overlap is reported
    overlap = evaluation_overlap(data, record["sets"])
    assert {train for train, _ in overlap} == {"tabler-square", "tabler-square-rounded"}
    assert "training pictures equal to an evaluation picture: 2" in summary(record)


def prepared_corpus() -> Path | None:
    folder = default_data_dir()
    return folder if (folder / "manifest.json").is_file() else None


@pytest.mark.skipif(prepared_corpus() is None, reason="no prepared corpus on this machine (clipforge data prepare)")
def test_the_prepared_corpus_holds_100k_training_pairs_and_no_evaluation_picture() -> None:
    folder = prepared_corpus()
    sets = json.loads((folder / "manifest.json").read_text())["sets"]
    if set(sets) != set(SOURCES):
        pytest.skip(f"{folder} holds only some of the built-in sets")
    assert sum(entry["samples"] for entry in sets.values() if entry["split"] == "train") >= 100_000
    assert evaluation_overlap(folder, sets) == []


def test_builtin_kinds_name_the_training_sets_of_a_kind_and_repeats_weight_them(tmp_path) -> None:
    from clipforge.data.builtin import builtin_sets, resolve_training_source

    def entry(name: str, split: str) -> dict:
        (tmp_path / name).mkdir()
        (tmp_path / name / "shard-000000.tar").write_bytes(b"")
        return {"split": split, "shards": [{"file": f"{name}/shard-000000.tar"}]}

    sets = {"twemoji": entry("twemoji", "train"), "ph": entry("ph", "train"), "openmoji": entry("openmoji", "eval")}
    (tmp_path / "manifest.json").write_text(json.dumps({"sets": sets}))
    assert set(builtin_sets("builtin:emoji", tmp_path)) == {"twemoji"}  # evaluation emoji are never training data
    assert set(builtin_sets("builtin:icon", tmp_path)) == {"ph"}
    shards = resolve_training_source(["builtin:train", "builtin:emoji*2"], tmp_path)
    assert sorted(Path(shard).parent.name for shard in shards) == ["ph", "twemoji", "twemoji", "twemoji"]
    with pytest.raises(ValueError, match="kinds emoji, icon"):
        builtin_sets("builtin:photo", tmp_path)
    with pytest.raises(ValueError, match="whole number"):
        resolve_training_source(["builtin:emoji*0"], tmp_path)
    del sets["twemoji"]
    (tmp_path / "manifest.json").write_text(json.dumps({"sets": sets}))
    assert builtin_sets("builtin:emoji", tmp_path) == {}  # none prepared: the mix has none
    with pytest.raises(ValueError, match="name no prepared training set"):
        resolve_training_source(["builtin:emoji"], tmp_path)


def test_sets_sharing_a_package_fetch_it_once(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(pipeline, "obtain", lambda package, downloads: calls.append(package))
    fetched = pipeline._fetch_all([SOURCES["openmoji"], SOURCES["openmoji-variants"], SOURCES["lucide"]],
                                  tmp_path, progress=False)
    assert sorted(fetched) == ["lucide", "openmoji", "openmoji-variants"]
    assert sorted(str(package) for package in calls) == sorted({str(SOURCES["openmoji"].package),
                                                                 str(SOURCES["lucide"].package)})
