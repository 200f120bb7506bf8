"""Reading tables, folders and shards; splitting epochs over ranks and workers; resuming; writing shards."""

from __future__ import annotations

import csv
import json
import math
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import CharTokenizer, encode, noise_image
from PIL import Image

from clipforge.data import (
    FolderSource,
    ShardSource,
    ShardWriter,
    TableSource,
    check_sample,
    distributed_rank,
    make_loader,
    open_source,
    write_shards,
)
from clipforge.data.partition import Split, resume_plan
from clipforge.images import ImageTransform, TrainAugment

TRANSFORM = ImageTransform(8)
TOKENIZER = CharTokenizer()


def loader_for(source, **options):
    return make_loader(source, TRANSFORM, TOKENIZER, options.pop("batch_size", 4), context_length=32, **options)


def epoch_captions(loader) -> list[list[str]]:
    """Each batch's captions, read back from its tokens."""
    return [CharTokenizer.decode(tokens) for _, tokens in loader]


def make_shards(folder: Path, count: int, shard_size: int, meta=None) -> list[str]:
    with ShardWriter(folder, shard_size) as writer:
        for i in range(count):
            image = encode(noise_image(4, 4, seed=i))
            writer.write(f"{i:06d}", image, "png", f"caption {i}", meta(i) if meta else None)
    return [f"caption {i}" for i in range(count)]


def make_table(folder: Path, count: int, missing: tuple[int, ...] = ()) -> Path:
    """`pairs.csv` over `images/NNN.png` (captions `caption N`); rows in `missing` point at absent files."""
    (folder / "images").mkdir(parents=True)
    with open(folder / "pairs.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "caption"])
        for i in range(count):
            if i not in missing:
                noise_image(6, 5, seed=i).save(folder / "images" / f"{i:03d}.png")
            writer.writerow([f"images/{i:03d}.png", f"caption {i}"])
    return folder / "pairs.csv"


# --- readers -----------------------------------------------------------------------------------

def test_csv_reader_resolves_paths_relative_to_the_file_and_keeps_other_columns(tmp_path):
    (tmp_path / "data" / "pics").mkdir(parents=True)
    noise_image(5, 4).save(tmp_path / "data" / "pics" / "a.png")
    (tmp_path / "data" / "pairs.csv").write_text('filepath,title,url\npics/a.png,"a red, round ball",http://x/a\n')
    source = open_source(tmp_path / "data" / "pairs.csv")
    sample = check_sample(source[0])
    assert (len(source), sample.caption, sample.meta) == (1, "a red, round ball", {"url": "http://x/a"})
    assert sample.image.size == (5, 4)


def test_tsv_reader_takes_custom_column_names_and_no_quoting(tmp_path):
    noise_image(4, 4).save(tmp_path / "b.png")
    (tmp_path / "pairs.tsv").write_text('id\tpicture\tdescription\n7\tb.png\t"quoted" start\n')
    source = TableSource(tmp_path / "pairs.tsv", image_column="picture", caption_column="description")
    sample = check_sample(source[0])
    assert (sample.caption, sample.meta) == ('"quoted" start', {"id": "7"})


def test_jsonl_reader_takes_custom_column_names_and_absolute_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    noise_image(4, 4).save(tmp_path / "sub" / "c.png")
    lines = [{"img": "c.png", "alt": "relative"}, {"img": str(tmp_path / "sub" / "c.png"), "alt": "absolute", "n": 2}]
    (tmp_path / "sub" / "pairs.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    source = open_source(tmp_path / "sub" / "pairs.jsonl", image_column="img", caption_column="alt")
    samples = [check_sample(raw) for raw in source]
    assert [(sample.caption, sample.meta) for sample in samples] == [("relative", {}), ("absolute", {"n": 2})]


def test_table_without_a_known_column_names_its_columns(tmp_path):
    (tmp_path / "pairs.csv").write_text("picture,caption\nx.png,a\n")
    with pytest.raises(ValueError, match="picture"):
        TableSource(tmp_path / "pairs.csv")


def test_folder_reader_finds_nested_images_and_their_captions(tmp_path):
    for relative, caption in [("a.png", "top"), ("x/b.JPG", "nested"), ("x/y/c.webp", "deeper")]:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        noise_image(4, 4).save(path, {".png": "PNG", ".JPG": "JPEG", ".webp": "WEBP"}[path.suffix])
        path.with_suffix(".txt").write_text(caption)
    (tmp_path / ".partial").mkdir()
    noise_image(4, 4).save(tmp_path / ".partial" / "hidden.png")
    source = open_source(tmp_path)
    assert isinstance(source, FolderSource)
    assert [(raw.key, check_sample(raw).caption) for raw in source] == [
        ("a.png", "top"), ("x/b.JPG", "nested"), ("x/y/c.webp", "deeper")]


def test_shard_reader_groups_members_by_key_with_their_metadata(tmp_path):
    make_shards(tmp_path, 5, shard_size=2, meta=lambda i: {"i": i})
    source = open_source(tmp_path)
    samples = [check_sample(raw) for raw in source]
    assert len(source.shards) == 3
    assert [(s.key, s.caption, s.meta) for s in samples] == [(f"{i:06d}", f"caption {i}", {"i": i}) for i in range(5)]


def test_a_shard_read_again_is_read_by_its_listing_without_parsing_tar_headers(tmp_path, monkeypatch):
    make_shards(tmp_path, 5, shard_size=5, meta=lambda i: {"i": i})
    first = [(s.key, s.image, s.caption, s.meta) for s in map(check_sample, open_source(tmp_path))]

    def no_tar(*args, **kwargs):
        raise AssertionError("the tar headers were parsed again")

    monkeypatch.setattr(tarfile, "open", no_tar)
    assert [(s.key, s.image, s.caption, s.meta) for s in map(check_sample, open_source(tmp_path))] == first


def test_a_shard_rewritten_after_its_listing_is_listed_again(tmp_path):
    make_shards(tmp_path, 4, shard_size=4)
    assert len(list(open_source(tmp_path))) == 4
    next(tmp_path.glob("*.tar")).unlink()
    make_shards(tmp_path, 3, shard_size=3)
    assert [check_sample(raw).caption for raw in open_source(tmp_path)] == [f"caption {i}" for i in range(3)]


def test_listings_stop_being_kept_at_their_sample_limit(tmp_path, monkeypatch):
    from clipforge.data import shards

    monkeypatch.setattr(shards, "LISTED_SAMPLES_MAX", shards._listed_samples + 3)
    make_shards(tmp_path, 6, shard_size=3)
    list(open_source(tmp_path))
    parsed, real_open = [], tarfile.open

    def counted_open(path, *args, **kwargs):
        parsed.append(path.name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(tarfile, "open", counted_open)
    assert len(list(open_source(tmp_path))) == 6
    assert parsed == ["shard-000001.tar"]


def test_open_source_tells_the_kind_from_the_path(tmp_path):
    make_shards(tmp_path / "shards", 4, shard_size=2)
    (tmp_path / "t.jsonl").write_text("")
    (tmp_path / "pictures").mkdir()
    pattern = str(tmp_path / "shards" / "shard-{000000..000001}.tar")
    assert isinstance(open_source(tmp_path / "t.jsonl"), TableSource)
    assert isinstance(open_source(tmp_path / "pictures"), FolderSource)
    assert len(open_source(tmp_path).shards) == 2  # a folder holding shards at any depth
    assert len(open_source(pattern).shards) == 2
    assert len(open_source([tmp_path / "shards" / "shard-000000.tar"]).shards) == 1
    with pytest.raises(FileNotFoundError):
        open_source(tmp_path / "shards" / "shard-000009.tar")


# --- splitting epochs --------------------------------------------------------------------------

def test_shards_over_two_ranks_and_two_workers_give_every_sample_exactly_once(tmp_path):
    captions = make_shards(tmp_path, 40, shard_size=5)
    seen = Counter()
    for rank in range(2):
        loader = loader_for(tmp_path, batch_size=3, num_workers=2, rank=rank, world_size=2, seed=1, epoch=2)
        seen.update(caption for batch in epoch_captions(loader) for caption in batch)
    assert seen == Counter(captions)


def test_each_rank_and_worker_stream_of_shards_is_disjoint(tmp_path):
    make_shards(tmp_path, 40, shard_size=5)
    source = ShardSource(tmp_path)
    streams = {(rank, worker): [pending().key for pending in source.partition(Split(0, 0, rank, 2, worker, 2, 4))]
               for rank in range(2) for worker in range(2)}
    keys = [key for stream in streams.values() for key in stream]
    assert all(len(stream) == 10 for stream in streams.values())
    assert sorted(keys) == [f"{i:06d}" for i in range(40)]


def test_table_over_three_ranks_and_two_workers_is_disjoint_with_equal_shares(tmp_path):
    table = make_table(tmp_path, 20)
    per_rank = [[c for batch in epoch_captions(loader_for(table, batch_size=2, num_workers=2, rank=rank, world_size=3))
                 for c in batch] for rank in range(3)]
    everything = [caption for captions in per_rank for caption in captions]
    assert [len(captions) for captions in per_rank] == [6, 6, 6]
    assert len(set(everything)) == 18


def test_same_seed_and_epoch_give_the_same_batches(tmp_path):
    make_shards(tmp_path, 30, shard_size=4)
    first = epoch_captions(loader_for(tmp_path, num_workers=2, seed=3, epoch=1))
    again = epoch_captions(loader_for(tmp_path, num_workers=2, seed=3, epoch=1))
    assert first == again


def test_shard_shuffle_is_deterministic_per_seed_and_epoch_and_changes_with_the_epoch(tmp_path):
    make_shards(tmp_path, 16, shard_size=1)
    source = ShardSource(tmp_path)
    assert source.epoch_shards(7, 0) == source.epoch_shards(7, 0)
    assert source.epoch_shards(7, 0) != source.epoch_shards(7, 1)
    assert sorted(source.epoch_shards(7, 1)) == source.shards


def test_table_order_changes_with_the_epoch(tmp_path):
    table = make_table(tmp_path, 16)
    assert epoch_captions(loader_for(table, epoch=0)) != epoch_captions(loader_for(table, epoch=1))


def test_resampled_shards_yield_the_requested_number_of_samples(tmp_path):
    captions = make_shards(tmp_path, 10, shard_size=3)
    loader = loader_for(tmp_path, batch_size=4, num_workers=2, rank=1, world_size=2,
                        resampled=True, samples_per_epoch=50)
    drawn = [caption for batch in epoch_captions(loader) for caption in batch]
    assert len(drawn) == 25 and set(drawn) <= set(captions)


@pytest.mark.parametrize("counts", [[3, 1], [1, 3], [4, 4, 2], [0, 2, 5], [2, 0], [math.inf, math.inf, math.inf]])
def test_resume_plan_matches_a_loader_taking_batches_from_workers_in_turn(counts):
    order = []  # (worker, slot) in delivery order; endless streams are cut at 20 slots
    remaining = [min(count, 20) for count in counts]
    while any(remaining):
        for worker, left in enumerate(remaining):
            if left:
                order.append(worker)
                remaining[worker] -= 1
    for batches in range(len(order)):
        taken, next_worker = resume_plan(counts, batches)
        assert taken == [order[:batches].count(worker) for worker in range(len(counts))]
        assert next_worker == order[batches]


def test_rank_and_world_size_come_from_torch_distributed_unless_given(monkeypatch):
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
    assert distributed_rank() == (3, 4)
    assert distributed_rank(0, 2) == (0, 2)


# --- batches -----------------------------------------------------------------------------------

def test_batches_are_float_images_and_int64_tokens(tmp_path):
    make_shards(tmp_path, 6, shard_size=6)
    images, tokens = next(iter(loader_for(tmp_path, batch_size=4)))
    assert (images.shape, images.dtype, tokens.shape, tokens.dtype) == (
        (4, 3, 8, 8), torch.float32, (4, 32), torch.int64)


def test_random_caption_choice_draws_from_the_metadata_list_anew_each_epoch(tmp_path):
    alternatives = [f"variant {v}" for v in range(6)]
    make_shards(tmp_path, 12, shard_size=12, meta=lambda i: {"captions": alternatives})

    def drawn(epoch, choice="random"):
        loader = loader_for(tmp_path, batch_size=12, epoch=epoch, caption_choice=choice)
        return [caption for batch in epoch_captions(loader) for caption in batch]

    assert set(drawn(0)) <= set(alternatives) and len(set(drawn(0))) > 1
    assert drawn(0) == drawn(0) and drawn(0) != drawn(1)
    assert set(drawn(0, "txt")) == {f"caption {i}" for i in range(12)}


def test_augmented_batches_depend_on_seed_epoch_and_key_but_not_on_the_worker_split(tmp_path):
    make_shards(tmp_path, 16, shard_size=4)
    augment = TrainAugment(crop_scale=0.3, grayscale=0.5)

    def images_by_caption(epoch, workers, augmentation=augment):
        loader = loader_for(tmp_path, batch_size=4, epoch=epoch, num_workers=workers, augment=augmentation)
        return {caption: image for images, tokens in loader
                for caption, image in zip(CharTokenizer.decode(tokens), images)}

    one_worker, two_workers = images_by_caption(0, 0), images_by_caption(0, 2)
    assert all(torch.equal(one_worker[c], two_workers[c]) for c in one_worker) and len(one_worker) == 16
    next_epoch, plain = images_by_caption(1, 0), images_by_caption(0, 0, None)
    assert sum(not torch.equal(one_worker[c], next_epoch[c]) for c in one_worker) > 8
    assert sum(not torch.equal(one_worker[c], plain[c]) for c in one_worker) > 8


def test_train_augment_crops_within_bounds_and_grays(tmp_path):
    import random

    image = noise_image(40, 20, seed=3)
    crops = [TrainAugment(crop_scale=0.25, grayscale=0)(image, random.Random(i)) for i in range(50)]
    area_fractions = [c.width * c.height / (40 * 20) for c in crops]
    assert all(0.2 <= f <= 1 for f in area_fractions) and min(area_fractions) < 0.5
    assert len({c.size for c in crops}) > 10
    gray = np.asarray(TrainAugment(crop_scale=1, grayscale=1)(image, random.Random(0)))
    assert gray.shape == (20, 40, 3) and (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    assert TrainAugment(1, 0).is_identity and not TrainAugment(0.9, 0).is_identity
    with pytest.raises(ValueError, match="crop_scale"):
        TrainAugment(crop_scale=0)


@pytest.mark.parametrize("kind", ["table with missing images", "unevenly split shards"])
def test_skip_batches_resumes_with_exactly_the_rest_of_the_epoch(tmp_path, kind):
    if kind == "table with missing images":
        source, batch_size = make_table(tmp_path, 23, missing=(2, 9, 15)), 4
    else:  # three shards: one worker has 6 batches, the other 3, so the last batches all come from one
        make_shards(tmp_path, 18, shard_size=6)
        source, batch_size = tmp_path, 2
    full_loader = loader_for(source, batch_size=batch_size, num_workers=2, seed=5, epoch=1)
    full = epoch_captions(full_loader)
    assert full_loader.position == len(full)
    for skip in (1, 3, len(full) - 2, len(full)):
        resumed = loader_for(source, batch_size=batch_size, num_workers=2, seed=5, epoch=1, skip_batches=skip)
        assert epoch_captions(resumed) == full[skip:], f"skip_batches={skip}"


# --- writing shards ----------------------------------------------------------------------------

def write_mixed_table(folder: Path) -> tuple[Path, dict[str, Image.Image]]:
    """A CSV over PNG and JPEG images of several sizes; returns it and the images by caption."""
    images = {f"picture {i}": noise_image(10 + 7 * i, 30 - 4 * i, seed=i) for i in range(5)}
    rows = [("image", "caption", "source")]
    for i, (caption, image) in enumerate(images.items()):
        name = f"{i}.jpg" if i == 4 else f"{i}.png"
        image.save(folder / name, quality=90)
        rows.append((name, caption, f"camera {i}"))
    with open(folder / "pairs.csv", "w", newline="") as file:
        csv.writer(file).writerows(rows)
    return folder / "pairs.csv", images


def test_write_shards_round_trip_keeps_captions_metadata_and_png_pixels(tmp_path):
    table, images = write_mixed_table(tmp_path)
    report = write_shards(table, tmp_path / "out", shard_size=2)
    assert (report.written, len(report.shards), report.skips.total) == (5, 3, 0)
    samples = [check_sample(raw) for raw in open_source(tmp_path / "out")]
    assert [s.caption for s in samples] == list(images)
    assert samples[1].meta == {"source_key": "1.png", "source": "camera 1"}
    for sample in samples[:4]:
        assert np.array_equal(np.asarray(sample.image), np.asarray(images[sample.caption]))


def test_write_shards_shrinks_images_to_max_side_and_keeps_jpeg_as_jpeg(tmp_path):
    table, images = write_mixed_table(tmp_path)
    write_shards(table, tmp_path / "out", max_side=16)
    with tarfile.open(tmp_path / "out" / "shard-000000.tar") as tar:
        extensions = [name.split(".")[1] for name in tar.getnames() if not name.endswith((".txt", ".json"))]
    sizes = {s.caption: s.image.size for s in map(check_sample, open_source(tmp_path / "out"))}
    assert extensions == ["png", "png", "png", "png", "jpg"]
    for caption, image in images.items():
        scale = min(1, 16 / max(image.size))
        expected = tuple(round(side * scale) for side in image.size)
        assert sizes[caption] == expected and max(sizes[caption]) <= 16


def test_shard_streams_are_shuffled_across_shards_by_the_buffer(tmp_path):
    make_shards(tmp_path, 40, shard_size=10)
    split = Split(0, 0, 0, 1, 0, 1, 8)
    shuffled_keys = [pending().key for pending in ShardSource(tmp_path, shuffle_buffer=40).partition(split)]
    plain_keys = [pending().key for pending in ShardSource(tmp_path, shuffle_buffer=1).partition(split)]
    assert sorted(shuffled_keys) == sorted(plain_keys) == [f"{i:06d}" for i in range(40)]
    first_batch_shards = {int(key) // 10 for key in shuffled_keys[:8]}
    assert len(first_batch_shards) > 1 and shuffled_keys != plain_keys
    again = [pending().key for pending in ShardSource(tmp_path, shuffle_buffer=40).partition(split)]
    assert again == shuffled_keys
