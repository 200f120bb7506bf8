"""How an epoch's samples are ordered and dealt to distributed ranks and DataLoader workers.

Every (rank, worker) pair gets a disjoint stream of samples, which the dataset cuts into batch slots of
`batch_size` samples (the last may be shorter). Streams hold read-later samples: a zero-argument call
returns the `RawSample` (call it before asking the stream for more), so passing over a sample (when
resuming) reads none of its files.

A DataLoader takes one batch from each worker in turn, starting with worker 0, and passes over
workers that have run dry; `resume_plan` inverts that, turning "the first N batches of the epoch" into
the number of slots each worker must pass over and the worker whose batch comes next, which is what
makes `skip_batches` exact.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from clipforge.data.samples import RawSample

PendingSample = Callable[[], RawSample]


@dataclass(frozen=True)
class Split:
    """One share of one epoch: `rank` of `world_size` processes, `worker` of its `num_workers`
    DataLoader workers, read in slots of `batch_size` samples."""

    seed: int
    epoch: int
    rank: int
    world_size: int
    worker: int
    num_workers: int
    batch_size: int


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The same order of `range(n)` on every process for one (seed, epoch), a new one each epoch."""
    return np.random.default_rng((seed, epoch)).permutation(n)


def dealt_sizes(n: int, batch_size: int, num_workers: int) -> list[int]:
    """Samples per worker when `n` samples in slots of `batch_size` go slot j to worker j % num_workers."""
    slots = math.ceil(n / batch_size)
    sizes = [len(range(worker, slots, num_workers)) * batch_size for worker in range(num_workers)]
    if n % batch_size:
        sizes[(slots - 1) % num_workers] -= batch_size - n % batch_size
    return sizes


def resume_plan(slot_counts: Sequence[float], batches: int) -> tuple[list[int], int]:
    """`(slots passed per worker, next worker)` after a loader has delivered `batches` batches, taking one
    from each worker in turn and passing over workers that ran dry (`math.inf` for endless streams)."""
    taken = [0] * len(slot_counts)
    active = [worker for worker, count in enumerate(slot_counts) if count > 0]
    remaining = batches
    while remaining and active:
        # active workers have all delivered the same number; whole rounds until one runs dry
        rounds = min(min(slot_counts[w] for w in active) - taken[active[0]], remaining // len(active))
        if rounds == 0:
            for worker in active[:remaining]:
                taken[worker] += 1
            break
        for worker in active:
            taken[worker] += rounds
        remaining -= rounds * len(active)
        active = [worker for worker in active if taken[worker] < slot_counts[worker]]
    active = [worker for worker in active if taken[worker] < slot_counts[worker]]
    return taken, min(active, key=lambda worker: (taken[worker], worker), default=0)


class MapSource(ABC):
    """A source with random access (a table, a folder): subclasses give `__len__` and `__getitem__`.

    An epoch is a seeded permutation; rank r takes every `world_size`-th sample from position r, cut
    to the same length on every rank (so no rank waits for another at the end of an epoch; the at most
    `world_size - 1` samples left out change with the epoch), and slot j of a rank goes to worker
    j % num_workers, so a rank's batches come out in the same order whatever the number of workers.
    """

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __getitem__(self, index: int) -> RawSample: ...

    def __iter__(self) -> Iterator[RawSample]:
        """Every sample once, in the source's own order."""
        return map(self.__getitem__, range(len(self)))

    def partition(self, split: Split) -> Iterator[PendingSample]:
        per_rank = len(self) // split.world_size
        order = epoch_permutation(len(self), split.seed, split.epoch)[split.rank :: split.world_size][:per_rank]
        step = split.batch_size * split.num_workers
        for start in range(split.worker * split.batch_size, per_rank, step):
            for index in order[start : start + split.batch_size]:
                yield partial(self.__getitem__, int(index))

    def partition_sizes(self, split: Split) -> list[int]:
        """Samples in each worker's stream of `split.rank`."""
        return dealt_sizes(len(self) // split.world_size, split.batch_size, split.num_workers)
