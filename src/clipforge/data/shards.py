"""WebDataset tar shards in the img2dataset layout (`key.jpg|png|webp`, `key.txt`, optional `key.json`),
streamed: members in file order, consecutive members with one key forming a sample.

Plain `tarfile` rather than webdataset's pipeline, for two reasons: every broken sample or shard
must be counted by reason and never stop the job (webdataset's handlers log, or re-raise), and
resuming mid-epoch needs each shard's sample count, which the same member walk gives from the tar
headers alone (`count_samples`), without reading any image. Shards are local files; webdataset only
expands brace patterns (`shards/shard-{000000..000099}.tar`).

Splitting: an epoch shuffles the shard list with (seed, epoch); rank r takes every `world_size`-th
shard from r, and its worker w every `num_workers`-th of those from w, so the streams are disjoint and
every shard is read once. Ranks with unequal shard counts get unequal streams; for that case
`resampled=True` draws shards with replacement, each (rank, worker) with its own seeded generator,
`samples_per_epoch` samples over all ranks (endless when None).

Shards are usually written in some order (by name, by source), so a batch cut from a plain stream
would hold near-duplicates; each stream therefore passes through a seeded shuffle buffer of
`shuffle_buffer` samples (their bytes, not decoded images), which keeps counts and resume exact.
"""

from __future__ import annotations

import math
import os
import tarfile
from collections.abc import Iterator, Sequence
from functools import partial
from itertools import chain, islice
from pathlib import Path
from typing import BinaryIO

import numpy as np
from webdataset.shardlists import expand_urls

from clipforge.data.partition import PendingSample, Split, dealt_sizes, epoch_permutation
from clipforge.data.samples import IMAGE_EXTENSIONS, RawSample
from clipforge.data.skips import SkipReason

ShardSpec = str | os.PathLike | Sequence[str | os.PathLike]


def expand_shards(shards: ShardSpec) -> list[Path]:
    """Shard paths from a folder (its `.tar` files, recursively, not hidden ones, sorted), a path or
    brace pattern, or a list of those."""
    if not isinstance(shards, (str, os.PathLike)):
        return [path for item in shards for path in expand_shards(item)]
    folder = Path(shards)
    if folder.is_dir():
        return sorted(path for path in folder.rglob("*.tar")
                      if not any(part.startswith(".") for part in path.relative_to(folder).parts))
    return [Path(path) for path in expand_urls(os.fspath(shards))]


# (key, image, txt, json) of each sample, each part an (offset, size) in the file or None.
Listing = list[tuple[str, tuple[tuple[int, int] | None, ...]]]

# The listing of every shard walked to its end without damage, by path, with the size and modification
# time it had then: parsing the tar headers again each epoch (twice, with the count that resuming
# needs) took a fifth of the 16 px default's whole run under AVX2 (8:19 against 6:31 without,
# docs/training.md). An entry holds about 370 bytes, so listings stop being kept at
# LISTED_SAMPLES_MAX samples (about 0.7 GB); shards beyond are parsed each time, as without them.
_LISTINGS: dict[str, tuple[tuple[int, int], Listing]] = {}
LISTED_SAMPLES_MAX = 2_000_000
_listed_samples = 0


def read_shard(path: Path) -> Iterator[PendingSample]:
    """The shard's samples, each read when called (which must happen before the next is asked for: the
    file closes behind the iteration). A shard that cannot be opened, or whose listing breaks, yields
    one sample with a `SHARD_UNREADABLE` problem, so it is counted like a bad sample. A shard listed
    before, unchanged since, is read by the offsets of that listing."""
    name, stamp = os.path.abspath(path), _stamp(path)
    kept = _LISTINGS.get(name)
    if kept is not None and kept[0] == stamp:
        yield from _read_listed(path, kept[1])
        return
    try:
        tar = tarfile.open(path, "r:")
    except (OSError, tarfile.TarError):
        yield partial(RawSample, path.name, problem=SkipReason.SHARD_UNREADABLE)
        return
    listing = []
    with tar:
        try:
            for key, members in _member_groups(tar):
                listing.append((key, _sample_parts(members)))
                yield partial(_read_sample, tar.fileobj, *listing[-1])
            broken = _ended_at_damage(tar)
        except (OSError, tarfile.TarError):
            broken = True
        if broken:
            yield partial(RawSample, path.name, problem=SkipReason.SHARD_UNREADABLE)
        elif stamp is not None:
            _keep_listing(name, stamp, listing)


def _keep_listing(name: str, stamp: tuple[int, int], listing: Listing) -> None:
    global _listed_samples
    if name in _LISTINGS:  # a rewritten shard's old listing
        _listed_samples -= len(_LISTINGS.pop(name)[1])
    if _listed_samples + len(listing) <= LISTED_SAMPLES_MAX:
        _LISTINGS[name] = stamp, listing
        _listed_samples += len(listing)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _read_listed(path: Path, listing: Listing) -> Iterator[PendingSample]:
    try:
        file = open(path, "rb")
    except OSError:
        yield partial(RawSample, path.name, problem=SkipReason.SHARD_UNREADABLE)
        return
    with file:
        for key, parts in listing:
            yield partial(_read_sample, file, key, parts)


def count_samples(path: Path) -> int:
    """The number of samples `read_shard` yields, from the tar headers alone."""
    return sum(1 for _ in read_shard(path))


def _ended_at_damage(tar: tarfile.TarFile) -> bool:
    """Whether the listing stopped at a damaged header, where tarfile ends as quietly as at the
    end-of-archive zeros."""
    tar.fileobj.seek(tar.offset)
    return any(tar.fileobj.read(tarfile.BLOCKSIZE))


def _member_groups(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """`(key, {extension: member})` for each run of members sharing a key (the name up to the first
    dot of its last part, as webdataset splits it)."""
    key, group = None, {}
    for member in tar:
        if not member.isfile():
            continue
        folder, _, name = member.name.rpartition("/")
        stem, _, extension = name.partition(".")
        member_key = f"{folder}/{stem}" if folder else stem
        if member_key != key and group:
            yield key, group
            group = {}
        key = member_key
        group.setdefault(extension.lower(), member)
    if group:
        yield key, group


def _sample_parts(members: dict[str, tarfile.TarInfo]) -> tuple[tuple[int, int] | None, ...]:
    image = next((members[extension] for extension in IMAGE_EXTENSIONS if extension in members), None)
    return tuple(None if member is None else (member.offset_data, member.size)
                 for member in (image, members.get("txt"), members.get("json")))


def _read_sample(file: BinaryIO, key: str, parts: tuple[tuple[int, int] | None, ...]) -> RawSample:
    try:
        return RawSample(key, *(None if part is None else _read_part(file, *part) for part in parts))
    except OSError:  # the disk failed to read a member, or the file was cut short since it was listed
        return RawSample(key, problem=SkipReason.SHARD_UNREADABLE)


def _read_part(file: BinaryIO, offset: int, size: int) -> bytes:
    file.seek(offset)
    data = file.read(size)
    if len(data) != size:
        raise OSError(f"member at {offset} ends {size - len(data)} bytes short")
    return data


def shuffled(stream: Iterator[PendingSample], buffer_size: int, generator: np.random.Generator
             ) -> Iterator[PendingSample]:
    """The stream's samples in a seeded random order, drawn from a buffer of `buffer_size` read samples."""
    if buffer_size <= 1:
        yield from stream
        return
    buffer: list[RawSample] = []
    for pending in stream:
        buffer.append(pending())
        if len(buffer) >= buffer_size:
            index = int(generator.integers(len(buffer)))
            buffer[index], buffer[-1] = buffer[-1], buffer[index]
            yield partial(_identity, buffer.pop())
    for index in generator.permutation(len(buffer)):
        yield partial(_identity, buffer[index])


def _identity(sample: RawSample) -> RawSample:
    return sample


class ShardSource:
    """Samples streamed from tar shards; see the module docstring for the split and resampling."""

    def __init__(self, shards: ShardSpec, resampled: bool = False, samples_per_epoch: int | None = None,
                 shuffle_buffer: int = 5000) -> None:
        self.shards = expand_shards(shards)
        if not self.shards:
            raise ValueError(f"no .tar shards in {shards!r}")
        missing = [path for path in self.shards if not path.exists()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} of {len(self.shards)} shards do not exist, e.g. {missing[0]}")
        if samples_per_epoch is not None and not resampled:
            raise ValueError("samples_per_epoch sets the length of a resampled epoch; pass resampled=True")
        self.resampled = resampled
        self.samples_per_epoch = samples_per_epoch
        self.shuffle_buffer = shuffle_buffer

    def __iter__(self) -> Iterator[RawSample]:
        """Every sample of every shard once, in the listed order."""
        return (pending() for pending in chain.from_iterable(map(read_shard, self.shards)))

    def epoch_shards(self, seed: int, epoch: int) -> list[Path]:
        return [self.shards[i] for i in epoch_permutation(len(self.shards), seed, epoch)]

    def partition(self, split: Split) -> Iterator[PendingSample]:
        if self.resampled:
            stream = islice(self._draws(split), self.partition_sizes(split)[split.worker])
        else:
            stream = chain.from_iterable(map(read_shard, self._worker_shards(split, split.worker)))
        generator = np.random.default_rng((split.seed, split.epoch, split.rank, split.worker, 1))
        return shuffled(stream, self.shuffle_buffer, generator)

    def partition_sizes(self, split: Split) -> list[float]:
        """Samples in each worker's stream of `split.rank` (`math.inf` for endless resampling); counting
        a plain epoch reads the rank's tar headers."""
        if self.resampled:
            if self.samples_per_epoch is None:
                return [math.inf] * split.num_workers
            return dealt_sizes(self.samples_per_epoch // split.world_size, split.batch_size, split.num_workers)
        return [sum(map(count_samples, self._worker_shards(split, worker))) for worker in range(split.num_workers)]

    def _worker_shards(self, split: Split, worker: int) -> list[Path]:
        return self.epoch_shards(split.seed, split.epoch)[split.rank :: split.world_size][worker :: split.num_workers]

    def _draws(self, split: Split) -> Iterator[PendingSample]:
        generator = np.random.default_rng((split.seed, split.epoch, split.rank, split.worker))
        while True:
            yield from read_shard(self.shards[generator.integers(len(self.shards))])

    def __repr__(self) -> str:
        mode = f", resampled, {self.samples_per_epoch} samples per epoch" if self.resampled else ""
        return f"ShardSource({len(self.shards)} shards{mode})"
