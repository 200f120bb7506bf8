"""Training batches from any source, `(images [B, 3, S, S] float32, tokens [B, L] int64)`, with bad
samples counted exactly across DataLoader workers, and a way to resume mid-epoch.

Batches are made in the workers. Each worker cuts its stream (see `partition`) into slots of
`batch_size` samples and yields one `Batch` per slot: the slot's good samples, transformed and
tokenized, with a `SkipReport` of its bad ones. Every sample belongs to exactly one slot and every slot
reaches the main process, so `ImageTextLoader.skips` is exact with any number of workers, with no
shared state and no report files.

A batch is its slot minus the slot's bad samples: a slot that met a bad sample gives a shorter batch,
and one of only bad samples gives none. In exchange, where batch N starts is known without decoding
anything, so `skip_batches=N` passes over the first N slots without reading a single image (table and
folder sources read nothing; shards read tar headers only) and then yields exactly the batches that
followed. Converting with `write_shards` first drops bad samples once, and with them short batches.

Resuming: save `loader.position` (slots of this epoch consumed so far: the batches received, plus any
slot that came out empty) with the epoch, then `make_loader(..., epoch=epoch, skip_batches=position)`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from clipforge.data.partition import Split, resume_plan
from clipforge.data.memo import ImageMemo
from clipforge.data.samples import DEFAULT_MAX_PIXELS, RawSample, alternative_captions, check_fields, decode_image
from clipforge.data.shards import ShardSpec
from clipforge.data.skips import SampleError, SkipReport
from clipforge.data.sources import Source, open_source
from clipforge.images.augment import random_shift

CAPTION_CHOICES = ("txt", "random")


class Batch(NamedTuple):
    """What a worker sends for one slot; `images` and `tokens` are None when every sample was skipped."""

    images: torch.Tensor | None  # [b, 3, S, S] float32
    tokens: torch.Tensor | None  # [b, context_length] int64
    skips: SkipReport


def distributed_rank(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """`(rank, world_size)`: the values given, else torch.distributed's when initialised, else (0, 1)."""
    initialised = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialised else 1
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank={rank}, world_size={world_size}")
    return rank, world_size


class ImageTextDataset(IterableDataset):
    """One epoch of one rank's `Batch`es, split across the DataLoader's workers (use `batch_size=None`).

    `caption_choice="random"` draws each sample's caption from its metadata's `"captions"` list, seeded
    by (seed, epoch, key) so it changes with the epoch but not with the worker split; samples without
    that list keep their `.txt` caption. `augment(image, rng)` runs before `image_transform` with an RNG
    seeded the same way. With a `memo`, an image decoded once is not decoded again (not used with
    `augment`, whose output changes every epoch); `shift` moves each preprocessed image by up to that
    many pixels, also seeded the same way.
    """

    def __init__(
        self,
        source: Source,
        image_transform: Callable[[Image.Image], torch.Tensor],
        tokenizer: Callable[..., torch.Tensor],
        batch_size: int,
        *,
        seed: int = 0,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        caption_choice: str = "txt",
        context_length: int = 77,
        skip_batches: int = 0,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        augment: Callable[[Image.Image, random.Random], Image.Image] | None = None,
        memo: ImageMemo | None = None,
        shift: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if caption_choice not in CAPTION_CHOICES:
            raise ValueError(f"caption_choice must be one of {CAPTION_CHOICES}, got {caption_choice!r}")
        if skip_batches < 0:
            raise ValueError(f"skip_batches cannot be negative, got {skip_batches}")
        self.source = source
        self.image_transform = image_transform
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.seed, self.epoch, self.skip_batches = seed, epoch, skip_batches
        self.rank, self.world_size = distributed_rank(rank, world_size)
        self.caption_choice = caption_choice
        self.context_length = context_length
        self.max_pixels = max_pixels
        self.augment = augment
        self.memo = memo
        self.shift = shift

    def split(self, worker: int = 0, num_workers: int = 1) -> Split:
        return Split(self.seed, self.epoch, self.rank, self.world_size, worker, num_workers, self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        passed = 0
        if self.skip_batches:
            slot_counts = [size if math.isinf(size) else math.ceil(size / self.batch_size)
                           for size in self.source.partition_sizes(self.split(0, num_workers))]
            taken, first = resume_plan(slot_counts, self.skip_batches)
            worker = (worker + first) % num_workers  # the loader asks worker 0 first: it must give the next batch
            passed = taken[worker]
        stream = islice(self.source.partition(self.split(worker, num_workers)), passed * self.batch_size, None)
        while slot := [pending() for pending in islice(stream, self.batch_size)]:  # read before the stream moves on
            yield self._batch(slot)

    def _batch(self, slot: Sequence[RawSample]) -> Batch:
        skips = SkipReport()
        images, captions = [], []
        for raw in slot:
            try:
                caption, meta, data = check_fields(raw)
                pixels = self._pixels(raw.key, data)
            except SampleError as error:
                skips.add(error.reason, raw.key)
                continue
            if self.shift:
                pixels = random_shift(pixels, self.shift, random.Random(f"shift/{self.seed}/{self.epoch}/{raw.key}"))
            images.append(pixels)
            captions.append(self._caption(raw.key, caption, meta))
        if not images:
            return Batch(None, None, skips)
        return Batch(torch.stack(images), self.tokenizer(captions, self.context_length, truncate=True), skips)

    def _pixels(self, key: str, data: bytes) -> torch.Tensor:
        """The image file `data` decoded (and augmented) and transformed, or the memo's copy of that."""
        memo_key = self.memo.key(data) if self.memo is not None and self.augment is None else None
        if memo_key is not None and (cached := self.memo.get(memo_key)) is not None:
            return cached
        image = decode_image(data, self.max_pixels)
        if self.augment is not None:
            image = self.augment(image, random.Random(f"augment/{self.seed}/{self.epoch}/{key}"))
        pixels = self.image_transform(image)
        if memo_key is not None:
            self.memo.put(memo_key, pixels)
        return pixels

    def _caption(self, key: str, caption: str, meta: dict[str, Any]) -> str:
        alternatives = alternative_captions(meta) if self.caption_choice == "random" else []
        if not alternatives:
            return caption
        return random.Random(f"{self.seed}/{self.epoch}/{key}").choice(alternatives)


class ImageTextLoader:
    """Iterating gives one epoch of `(images [B, 3, S, S] float32, tokens [B, L] int64)`.

    `skips` is the `SkipReport` of the epoch being iterated (the slots passed over by `skip_batches`
    are not read, so not counted); `position` is the number of the epoch's slots consumed so far.
    """

    def __init__(self, dataset: ImageTextDataset, num_workers: int = 0, pin_memory: bool = False) -> None:
        self.dataset = dataset
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.skips = SkipReport()
        self.position = dataset.skip_batches

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        """The epoch the next iteration gives, starting after its first `skip_batches` slots."""
        self.dataset.epoch, self.dataset.skip_batches = epoch, skip_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        self.skips = SkipReport()
        self.position = self.dataset.skip_batches
        # Its own generator: a DataLoader draws a worker base seed when iterated, and drawing it from
        # the global RNG would shift every later random draw (dropout) after a mid-epoch resume.
        batches = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                             generator=torch.Generator().manual_seed(0))
        for batch in batches:
            self.position += 1
            self.skips.merge(batch.skips)
            if batch.images is not None:
                yield batch.images, batch.tokens


def make_loader(
    source: ShardSpec | Source,
    image_transform: Callable[[Image.Image], torch.Tensor],
    tokenizer: Callable[..., torch.Tensor],
    batch_size: int,
    *,
    num_workers: int = 0,
    seed: int = 0,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    caption_choice: str = "txt",
    context_length: int = 77,
    skip_batches: int = 0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    pin_memory: bool = False,
    augment: Callable[[Image.Image, random.Random], Image.Image] | None = None,
    memo: ImageMemo | None = None,
    shift: int = 0,
    **source_options,
) -> ImageTextLoader:
    """A loader over `open_source(source, **source_options)`; see `ImageTextDataset` for the options.

    `tokenizer(texts, context_length, truncate=True)` must return `[len(texts), context_length]` int64,
    as `clipforge.Tokenizer` does; `image_transform` maps a PIL image to `[3, S, S]` float32.
    A `memo` (kept across epochs by the caller) lives in this process, so it needs `num_workers=0`.
    """
    if memo is not None and num_workers:
        raise ValueError("an image memo is filled in this process: use it with num_workers=0")
    dataset = ImageTextDataset(
        open_source(source, **source_options), image_transform, tokenizer, batch_size, seed=seed, epoch=epoch,
        rank=rank, world_size=world_size, caption_choice=caption_choice, context_length=context_length,
        skip_batches=skip_batches, max_pixels=max_pixels, augment=augment, memo=memo, shift=shift,
    )
    return ImageTextLoader(dataset, num_workers, pin_memory)
