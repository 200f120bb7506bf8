"""Image-text pairs listed in a CSV, TSV or JSONL file, one row each: an image-path column and a
caption column (found by name), the other columns kept as the sample's metadata.

Relative image paths are relative to the table's folder. Files are read as UTF-8 with
`surrogateescape`, so one caption with a stray byte is skipped as not UTF-8 instead of failing the
file; a row that does not parse becomes a sample with a `ROW_MALFORMED` problem, counted like any
other bad sample. TSV has no quoting (a caption may start with a quote mark).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from clipforge.data.partition import MapSource
from clipforge.data.samples import RawSample
from clipforge.data.skips import SkipReason

TABLE_SUFFIXES = (".csv", ".tsv", ".jsonl")
IMAGE_COLUMNS = ("image", "filepath", "image_path", "file", "path", "filename")
CAPTION_COLUMNS = ("caption", "text", "title")


class TableSource(MapSource):
    """The rows of `path`; `image_column` / `caption_column` default to the first of `IMAGE_COLUMNS` /
    `CAPTION_COLUMNS` the table has."""

    def __init__(
        self, path: str | os.PathLike, image_column: str | None = None, caption_column: str | None = None
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in TABLE_SUFFIXES:
            raise ValueError(f"{self.path} is not a table: expected one of {TABLE_SUFFIXES}")
        columns, rows = _read_csv(self.path) if self.path.suffix.lower() != ".jsonl" else _read_jsonl(self.path)
        self.image_column = _pick_column(self.path, "image", image_column, IMAGE_COLUMNS, columns)
        self.caption_column = _pick_column(self.path, "caption", caption_column, CAPTION_COLUMNS, columns)
        self.samples = [self._sample(line, row) for line, row in rows]

    def _sample(self, line: int, row: dict[str, Any] | None) -> RawSample:
        if row is None:
            return RawSample(f"line {line}", problem=SkipReason.ROW_MALFORMED)
        image = row.get(self.image_column)
        caption = row.get(self.caption_column)
        meta = {name: value for name, value in row.items()
                if name not in (self.image_column, self.caption_column, None)}
        has_image = isinstance(image, str) and image != ""
        return RawSample(
            key=image if has_image else f"line {line}",
            image=self.path.parent / image if has_image else None,
            caption=caption if isinstance(caption, str) else None,
            meta=meta,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> RawSample:
        return self.samples[index]

    def __repr__(self) -> str:
        return f"TableSource({str(self.path)!r}, {len(self)} rows)"


Rows = list[tuple[int, dict[str, Any] | None]]


def _read_csv(path: Path) -> tuple[Sequence[str] | None, Rows]:
    """The header and `(line, row)` pairs; a row the csv module rejects is `None`."""
    tsv = path.suffix.lower() == ".tsv"
    with open(path, encoding="utf-8", errors="surrogateescape", newline="") as file:
        dialect = {"delimiter": "\t", "quoting": csv.QUOTE_NONE} if tsv else {}
        reader = csv.DictReader(file, **dialect)
        rows: Rows = []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return reader.fieldnames, rows
            except csv.Error:
                row = None
            rows.append((reader.line_num, row))


def _read_jsonl(path: Path) -> tuple[Sequence[str] | None, Rows]:
    """The first object's keys and `(line, object)` pairs; a line that is not a JSON object is `None`."""
    rows: Rows = []
    with open(path, encoding="utf-8", errors="surrogateescape") as file:
        for line, text in enumerate(file, start=1):
            if not text.strip():
                continue
            try:
                record = json.loads(text)
            except (ValueError, RecursionError):
                record = None
            rows.append((line, record if isinstance(record, dict) else None))
    first = next((row for _, row in rows if row is not None), None)
    return (list(first) if first is not None else None), rows


def _pick_column(
    path: Path, what: str, given: str | None, candidates: Sequence[str], columns: Sequence[str] | None
) -> str:
    if columns is None:  # an empty table: any name will do
        return given or candidates[0]
    if given is not None:
        if given not in columns:
            raise ValueError(f"{path} has no {what} column {given!r}; its columns are {list(columns)}")
        return given
    for name in candidates:
        if name in columns:
            return name
    raise ValueError(f"{path} has none of the {what} columns {list(candidates)} (its columns are "
                     f"{list(columns)}); name one with {what}_column=")
