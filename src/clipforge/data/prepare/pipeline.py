"""`prepare`: fetch each built-in set's package, convert it to WebDataset shards under `data_dir/<set>/`,
and record it in `data_dir/manifest.json`.

A set whose shards still match the manifest (same package version, same rules, same checksums) is
skipped; `force=True` rebuilds it. A set is built in a hidden folder and swapped in only when complete,
and a failing set is reported after the others are done, so no failure costs a finished set.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ...core.download import cache_dir
from ...core.errors import ClipforgeError
from ...core.extras import MissingExtraError, require
from ..shard_writer import ShardWriter
from . import fashion_mnist, iconify, manifest, mdi, noto, openmoji, openmoji_variants, tabler, twemoji
from .captions import CAPTION_RULES_VERSION
from .disjoint import evaluation_overlap
from .emoji_concepts import HELD_OUT_PERCENT, TRAINED_EMOJI_VERSION, emoji_package
from .obtain import obtain
from .pictures import BrokenPicture, encode_png
from .source import Source

DATA_ENV = "CLIPFORGE_DATA"
DOWNLOADS = "_downloads"
SHARD_SIZE = 1000
FETCH_THREADS = 8
SOURCES: dict[str, Source] = {source.name: source for source in (
    twemoji.SOURCE, noto.SOURCE, tabler.SOURCE, mdi.SOURCE, *iconify.SOURCES, openmoji.SOURCE, openmoji_variants.SOURCE,
    fashion_mnist.SOURCE)}
RULES = {"captions": CAPTION_RULES_VERSION,
         "held_out": f"sha256 below {HELD_OUT_PERCENT}%, trained up to Emoji {TRAINED_EMOJI_VERSION}"}
EXTRA_MODULES = ("emoji", "cairosvg")  # what drawing and naming the pictures needs: the data extra


class PrepareError(ClipforgeError, RuntimeError):
    """Some sets failed; the message names each with its error, and finished sets stay in the manifest."""


def default_data_dir() -> Path:
    """`$CLIPFORGE_DATA`, else the `data` folder of the clipforge cache."""
    return Path(os.environ[DATA_ENV]).expanduser() if os.environ.get(DATA_ENV) else cache_dir() / "data"


def prepare(data_dir: Path | None = None, sources: list[str] | None = None, force: bool = False,
            progress: bool = True, workers: int | None = None) -> dict[str, Any]:
    """Prepare the named sets (default: all of `SOURCES`) and return the manifest, whose `last_run`
    says which sets this call built, how long it took, and how many training pictures equal an
    evaluation picture (there must be none).

    Packages are fetched concurrently first; `workers` processes then draw the pictures (default: one
    per CPU; 1 draws in this process). Raises PrepareError after trying every set if any failed or the
    splits overlap, MissingExtraError before starting without the data extra.
    """
    started = time.monotonic()
    for module in EXTRA_MODULES:
        require(module, "data", "data preparation")
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    names = list(SOURCES) if sources is None else list(sources)
    if unknown := [name for name in names if name not in SOURCES]:
        raise ValueError(f"unknown sets {unknown}; the built-in sets are {list(SOURCES)}")
    data_dir.mkdir(parents=True, exist_ok=True)
    record = manifest.load(data_dir)
    stale = [name for name in names
             if force or not manifest.is_current(record["sets"].get(name), data_dir, provenance(SOURCES[name]))]
    if progress and (current := [name for name in names if name not in stale]):
        print(f"up to date: {', '.join(current)}", file=sys.stderr)
    fetched = _fetch_all([SOURCES[name] for name in stale], data_dir / DOWNLOADS, progress)
    failures: dict[str, Exception] = {}
    for name in stale:
        try:
            if isinstance(fetched[name], Exception):
                raise fetched[name]
            record["sets"][name] = build_set(SOURCES[name], data_dir, workers, progress, fetch_seconds=fetched[name])
        except Exception as error:  # any failure of one set must leave the other sets to finish
            failures[name] = error
            continue
        manifest.save(data_dir, record)
    overlap = evaluation_overlap(data_dir, record["sets"])
    record["last_run"] = {"built": [name for name in stale if name not in failures], "failed": sorted(failures),
                          "seconds": round(time.monotonic() - started, 1), "evaluation_overlap": len(overlap)}
    manifest.save(data_dir, record)
    if overlap:
        failures["evaluation overlap"] = ValueError(
            f"{len(overlap)} training pictures equal evaluation pictures, e.g. "
            + ", ".join(f"{train} = {evaluation}" for train, evaluation in overlap[:5]))
    if failures:
        raise PrepareError("could not prepare " + "; ".join(f"{name}: {error}" for name, error in failures.items()))
    return record


def _fetch_all(sources: list[Source], downloads: Path, progress: bool) -> dict[str, float | Exception]:
    """Fetch every set's package at once (fetching waits on the network, not the CPU): set name → the
    seconds its fetch took, or the error it raised."""
    def timed_fetch(source: Source) -> float | Exception:
        started = time.monotonic()
        try:
            obtain(source.package, downloads)
        except Exception as error:  # reported with its set, after the other sets are built
            return error
        return round(time.monotonic() - started, 1)

    packages = {source.package: source for source in sources}  # sets sharing a package fetch it once
    with ThreadPoolExecutor(max_workers=FETCH_THREADS) as pool:
        results = pool.map(timed_fetch, packages.values())
        fetched = dict(zip(packages, tqdm(results, total=len(packages), desc="fetch", unit="pkg",
                                          disable=not progress)))
    return {source.name: fetched[source.package] for source in sources}


def provenance(source: Source) -> dict[str, Any]:
    """The manifest fields that must match for a built set to count as current."""
    package = source.package
    return {"source": {"client": package.client, "package": package.name, "version": package.version},
            "rules": {**RULES, "emoji_names": f"emoji {emoji_package().__version__}"}}


def build_set(source: Source, data_dir: Path, workers: int | None = None, progress: bool = True,
              fetch_seconds: float | None = None) -> dict[str, Any]:
    """Fetch, list, draw and write one set; return its manifest entry. `fetch_seconds`: how long an
    earlier fetch of its package took, when it was fetched beforehand."""
    started = time.monotonic()
    root = obtain(source.package, data_dir / DOWNLOADS)
    fetched = time.monotonic()
    fetch_seconds = round(fetched - started, 1) if fetch_seconds is None else fetch_seconds
    listing = source.list_items(root)
    skipped = Counter(listing.skipped)
    building, final = data_dir / f".{source.name}.partial", data_dir / source.name
    shutil.rmtree(building, ignore_errors=True)
    try:
        with ShardWriter(building, SHARD_SIZE) as writer, _mapper(workers) as mapped:
            results = mapped(partial(_encode, source.draw), (item.picture for item in listing.items))
            for item, png in tqdm(zip(listing.items, results), total=len(listing.items), desc=source.name,
                                  unit="img", disable=not progress):
                if isinstance(png, str):
                    skipped[png] += 1
                else:
                    writer.write(item.key, png, "png", item.meta["captions"][0], item.meta)
        if writer.count == 0:
            raise ValueError(f"no {source.name} picture could be drawn from {root}")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(building, final)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    shards = manifest.shard_records(sorted(final.glob("shard-*.tar")), data_dir)
    return {**provenance(source), "licence": source.licence, "split": source.split, "samples": writer.count,
            "skipped": sum(skipped.values()), "skipped_reasons": dict(skipped),
            "held_out_concepts": len(listing.held_out), "bytes": sum(shard["bytes"] for shard in shards),
            "shards": shards,
            "seconds": {"fetch": fetch_seconds, "convert": round(time.monotonic() - fetched, 1)}}


def _encode(draw: Callable[[Any], Any], picture: Any) -> bytes | str:
    """PNG bytes, or the reason the picture was skipped: a broken picture is never fatal."""
    try:
        return encode_png(draw(picture))
    except BrokenPicture as error:
        return str(error)
    except MissingExtraError:  # not the picture's fault: every other one would fail the same way
        raise
    except Exception as error:  # whatever a malformed SVG, PNG or glyph raises, skip it and count why
        return f"unreadable ({type(error).__name__})"


@contextmanager
def _mapper(workers: int | None) -> Iterator[Callable[[Callable, Iterable], Iterator]]:
    """An order-keeping lazy map: in this process for one worker, else over a process pool."""
    if workers == 1:
        yield map
        return
    with multiprocessing.Pool(workers) as pool:
        yield lambda function, values: pool.imap(function, values, chunksize=16)
