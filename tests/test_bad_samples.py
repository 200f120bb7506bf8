"""Bad samples never stop a job: each kind is skipped, counted by reason (exactly, with any number of
DataLoader workers), and its first keys reported, while every good sample still arrives."""

from __future__ import annotations

import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from data_helpers import CharTokenizer, encode, noise_image, write_tar
from PIL import Image

from clipforge.data import SkipReason, SkipReport, check_sample, make_loader, write_shards
from clipforge.data.memo import ImageMemo
from clipforge.data.samples import RawSample
from clipforge.data.skips import SampleError
from clipforge.images import ImageTransform

MAX_PIXELS = 50_000  # small, so a 300 x 300 image plays the decompression bomb


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims `width` x `height` but holds a few bytes of pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))


def odd_mode_images() -> dict[str, bytes]:
    """Files in modes a loader must convert rather than skip, by file name."""
    base = noise_image(8, 8)
    gray16 = Image.fromarray(np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    floats = Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    return {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "palette_alpha.png": encode(base.convert("P"), "PNG", transparency=0),
        "gray_alpha.png": encode(base.convert("LA")),
        "gray16.png": encode(gray16),
        "bilevel.png": encode(base.convert("1")),
        "rgba.webp": encode(base.convert("RGBA"), "WEBP"),
        "gray.gif": encode(base.convert("L"), "GIF"),
        "rgb.bmp": encode(base, "BMP"),
        "cmyk_scan.tiff": encode(base.convert("CMYK"), "TIFF"),
        "float.tif": encode(floats, "TIFF"),
    }


def run_job(source, num_workers: int, **options) -> tuple[list[str], SkipReport]:
    """Every caption a loader delivers over one epoch, and its skip report."""
    loader = make_loader(source, ImageTransform(8), CharTokenizer(), 4, num_workers=num_workers,
                         context_length=40, max_pixels=MAX_PIXELS, **options)
    captions = [caption for _, tokens in loader for caption in CharTokenizer.decode(tokens)]
    return captions, loader.skips


def first_keys(report: SkipReport) -> dict[str, set[str]]:
    return {reason: set(keys) for reason, keys in report.first_keys.items()}


@pytest.fixture
def bad_folder(tmp_path: Path) -> Path:
    """A folder of 10 good odd-mode images and 13 bad samples, two or one of each kind below."""
    folder = tmp_path / "pictures"
    (folder / "odd").mkdir(parents=True)
    for name, data in odd_mode_images().items():
        (folder / "odd" / name).write_bytes(data)
        (folder / "odd" / name).with_suffix(".txt").write_text(f"odd {name}")
    png, jpeg = encode(noise_image(32, 32)), encode(noise_image(32, 32), "JPEG", quality=90)
    bad_images = {
        "zero.png": b"",
        "truncated.png": png[: len(png) * 6 // 10],
        "truncated.jpg": jpeg[: len(jpeg) * 6 // 10],
        "random.jpg": np.random.default_rng(0).bytes(600),
        "text.png": b"this is not a picture\n" * 20,
        "bomb.png": encode(noise_image(300, 300)),
        "huge_header.png": png_header(100_000, 100_000),
    }
    for name, data in bad_images.items():
        (folder / name).write_bytes(data)
        (folder / name).with_suffix(".txt").write_text("a caption")
    os.symlink(tmp_path / "nowhere.png", folder / "dangling.png")
    (folder / "dangling.txt").write_text("a caption")
    (folder / "orphan.txt").write_text("a caption without an image")
    for name, caption in {"empty": b"", "blank": b" \n\t ", "latin1": b"caf\xe9", "uncaptioned": None}.items():
        (folder / f"{name}.png").write_bytes(png)
        if caption is not None:
            (folder / f"{name}.txt").write_bytes(caption)
    return folder


FOLDER_SKIPS = {
    SkipReason.IMAGE_EMPTY: {"zero.png"},
    SkipReason.IMAGE_CORRUPT: {"truncated.png", "truncated.jpg"},
    SkipReason.NOT_AN_IMAGE: {"random.jpg", "text.png"},
    SkipReason.IMAGE_TOO_LARGE: {"bomb.png", "huge_header.png"},
    SkipReason.IMAGE_MISSING: {"dangling.png", "orphan.txt"},
    SkipReason.CAPTION_EMPTY: {"empty.png", "blank.png"},
    SkipReason.CAPTION_NOT_UTF8: {"latin1.png"},
    SkipReason.CAPTION_MISSING: {"uncaptioned.png"},
}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_images_and_captions_in_a_folder_are_counted_exactly_by_reason(bad_folder, num_workers):
    captions, skips = run_job(bad_folder, num_workers)
    assert skips.counts == {reason: len(keys) for reason, keys in FOLDER_SKIPS.items()}
    assert first_keys(skips) == FOLDER_SKIPS
    assert sorted(captions) == sorted(f"odd {name}" for name in odd_mode_images())


@pytest.fixture
def bad_shards(tmp_path: Path) -> Path:
    """Shards with incomplete samples and bad metadata, an unreadable and an empty file, a tar cut off
    in a member, and one with a damaged header in the middle."""
    png, txt = encode(noise_image(6, 6)), b"a caption"
    write_tar(tmp_path / "a.tar", [
        ("s0.png", png), ("s0.txt", b"good s0"), ("s0.json", b'{"id": 0}'),
        ("s1.png", png),
        ("s2.txt", txt),
        ("s3.png", png), ("s3.txt", txt), ("s3.json", b"{broken"),
        ("s4.png", png), ("s4.txt", txt), ("s4.json", b"[1, 2]"),
        ("s5.png", png), ("s5.txt", b"\xff\xfe not utf-8"),
        ("s6.jpg", b""), ("s6.txt", txt),
        ("s7.jpg", encode(noise_image(6, 6).convert("CMYK"), "JPEG")), ("s7.txt", b"good s7"),
        ("s8.webp", encode(noise_image(6, 6), "WEBP")), ("s8.txt", b"good s8"),
    ])
    (tmp_path / "b.tar").write_bytes(np.random.default_rng(1).bytes(3000))
    (tmp_path / "c.tar").write_bytes(b"")
    whole = write_tar(tmp_path / "whole.tar", [
        ("d0.png", png), ("d0.txt", b"good d0"), ("d1.png", png), ("d1.txt", b"good d1"),
        ("d2.png", encode(noise_image(40, 40))), ("d2.txt", txt)])
    with tarfile.open(whole) as tar:
        cut = tar.getmember("d2.png").offset_data + 100
    (tmp_path / "d.tar").write_bytes(whole.read_bytes()[:cut])
    with tarfile.open(whole) as tar:
        damaged = tar.getmember("d1.png").offset  # its header block
    data = bytearray(whole.read_bytes())
    data[damaged : damaged + 512] = np.random.default_rng(2).bytes(512)
    (tmp_path / "e.tar").write_bytes(bytes(data))
    whole.unlink()
    return tmp_path


SHARD_SKIPS = {
    SkipReason.CAPTION_MISSING: {"s1"},
    SkipReason.IMAGE_MISSING: {"s2"},
    SkipReason.METADATA_CORRUPT: {"s3", "s4"},
    SkipReason.CAPTION_NOT_UTF8: {"s5"},
    SkipReason.IMAGE_EMPTY: {"s6"},
    SkipReason.SHARD_UNREADABLE: {"b.tar", "c.tar", "d.tar", "e.tar"},
}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_broken_shards_and_incomplete_samples_are_counted_exactly_by_reason(bad_shards, num_workers):
    captions, skips = run_job(bad_shards, num_workers)
    assert skips.counts == {reason: len(keys) for reason, keys in SHARD_SKIPS.items()}
    assert first_keys(skips) == SHARD_SKIPS
    assert sorted(captions) == ["good d0", "good d0", "good d1", "good s0", "good s7", "good s8"]


@pytest.fixture
def bad_table(tmp_path: Path) -> Path:
    (tmp_path / "g.png").write_bytes(encode(noise_image(6, 6)))
    lines = [
        json.dumps({"image": "g.png", "caption": "good 1"}),
        "{not json",
        "[1, 2]",
        json.dumps({"image": "g.png"}),
        json.dumps({"image": "g.png", "caption": None}),
        json.dumps({"image": "absent.png", "caption": "x"}),
        json.dumps({"image": "", "caption": "x"}),
        "",
        json.dumps({"caption": "no image column"}),
        json.dumps({"image": "g.png", "caption": "good 2"}),
    ]
    (tmp_path / "pairs.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "pairs.jsonl"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_malformed_table_rows_are_counted_exactly_by_reason(bad_table, num_workers):
    captions, skips = run_job(bad_table, num_workers)
    assert first_keys(skips) == {
        SkipReason.ROW_MALFORMED: {"line 2", "line 3"},
        SkipReason.CAPTION_MISSING: {"g.png"},
        SkipReason.IMAGE_MISSING: {"absent.png", "line 7", "line 9"},
    }
    assert skips.counts[SkipReason.CAPTION_MISSING] == 2
    assert sorted(captions) == ["good 1", "good 2"]


def test_a_non_utf8_caption_in_a_csv_spoils_only_its_row(tmp_path):
    (tmp_path / "g.png").write_bytes(encode(noise_image(6, 6)))
    (tmp_path / "pairs.csv").write_bytes(b"image,caption\ng.png,caf\xe9\ng.png,fine\n")
    captions, skips = run_job(tmp_path / "pairs.csv", 0)
    assert (captions, skips.counts) == (["fine"], {SkipReason.CAPTION_NOT_UTF8: 1})


def test_odd_image_modes_become_finite_rgb_tensors(tmp_path):
    transform = ImageTransform(8)
    for name, data in odd_mode_images().items():
        pixels = transform(check_sample(RawSample(name, data, "a caption")).image)
        assert pixels.shape == (3, 8, 8) and torch.isfinite(pixels).all(), name


def test_an_image_over_the_pixel_limit_is_refused_from_its_header_without_decoding():
    garbage_pixels = png_header(5000, 5000)  # decoding it would fail as corrupt
    with pytest.raises(SampleError) as refused:
        check_sample(RawSample("big", garbage_pixels, "a caption"), max_pixels=MAX_PIXELS)
    assert refused.value.reason == SkipReason.IMAGE_TOO_LARGE


def test_a_slot_of_only_bad_samples_yields_no_batch_but_is_counted(tmp_path):
    write_tar(tmp_path / "a.tar", [(f"k{i}.png", b"") for i in range(4)] + [("k4.png", encode(noise_image(4, 4))),
                                                                          ("k4.txt", b"good")])
    loader = make_loader(tmp_path, ImageTransform(8), CharTokenizer(), 4, context_length=8)
    batches = list(loader)
    assert (len(batches), loader.position, loader.skips.counts) == (1, 2, {SkipReason.CAPTION_MISSING: 4})


def test_write_shards_skips_bad_samples_with_the_same_counts_as_training(bad_folder, tmp_path):
    report = write_shards(bad_folder, tmp_path / "out", shard_size=4, max_pixels=MAX_PIXELS)
    assert first_keys(report.skips) == FOLDER_SKIPS
    assert report.written == len(odd_mode_images())
    assert report.summary().startswith(f"wrote {len(odd_mode_images())} samples in 3 shards; skipped 13 samples:")


def test_skip_report_keeps_the_first_keys_of_each_reason_up_to_its_limit():
    early, late = SkipReport(max_keys=3), SkipReport(max_keys=3)
    for i in range(2):
        early.add(SkipReason.IMAGE_EMPTY, f"early {i}")
    for i in range(4):
        late.add(SkipReason.IMAGE_EMPTY, f"late {i}")
    late.add(SkipReason.CAPTION_EMPTY, "blank")
    early.merge(late)
    assert early.counts == {SkipReason.IMAGE_EMPTY: 6, SkipReason.CAPTION_EMPTY: 1}
    assert early.first_keys[SkipReason.IMAGE_EMPTY] == ["early 0", "early 1", "late 0"]
    assert early.total == 7


def test_skip_report_summarises_as_text_and_as_a_dict():
    report = SkipReport()
    report.add(SkipReason.CAPTION_EMPTY, "a")
    report.add(SkipReason.IMAGE_CORRUPT, "b")
    report.add(SkipReason.IMAGE_CORRUPT, "c")
    assert report.as_dict() == {"total": 3, "reasons": {
        "image corrupt": {"count": 2, "first_keys": ["b", "c"]},
        "caption empty": {"count": 1, "first_keys": ["a"]}}}
    assert report.summary().splitlines() == [
        "skipped 3 samples:", "  image corrupt        2  e.g. b, c", "  caption empty        1  e.g. a"]
    assert SkipReport().summary() == "no samples skipped"


def test_an_image_memo_gives_the_same_epochs_and_skips_without_decoding_again(bad_folder):
    memo = ImageMemo(max_bytes=1 << 20)
    plain = [run_job(bad_folder, 0, seed=3, epoch=epoch) for epoch in (0, 1)]
    remembered = [run_job(bad_folder, 0, seed=3, epoch=epoch, memo=memo) for epoch in (0, 1)]
    for (captions, skips), (memo_captions, memo_skips) in zip(plain, remembered):
        assert memo_captions == captions and first_keys(memo_skips) == first_keys(skips) == FOLDER_SKIPS
    assert len(memo) == 10 and memo.hits == 10  # every good image decoded once, then reused


def test_an_image_memo_batch_equals_a_decoded_one_and_stops_at_its_budget(bad_folder):
    def pixels(memo: ImageMemo | None) -> torch.Tensor:
        loader = make_loader(bad_folder, ImageTransform(8), CharTokenizer(), 32, context_length=40,
                             max_pixels=MAX_PIXELS, memo=memo)
        return torch.cat([images for images, _ in loader])
    small = ImageMemo(max_bytes=3 * 3 * 8 * 8 * 4)  # three 8-px float32 images
    decoded = pixels(None)
    assert torch.equal(pixels(small), decoded) and torch.equal(pixels(small), decoded)
    assert len(small) == 3 and small.hits == 3


def test_an_image_memo_is_refused_with_workers_and_unused_with_augmentation(bad_folder):
    with pytest.raises(ValueError, match="num_workers=0"):
        make_loader(bad_folder, ImageTransform(8), CharTokenizer(), 4, num_workers=1, memo=ImageMemo(1 << 20))
    memo = ImageMemo(1 << 20)
    run_job(bad_folder, 0, memo=memo, augment=lambda image, rng: image)
    assert len(memo) == 0
