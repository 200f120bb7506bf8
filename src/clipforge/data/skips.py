"""Why a sample is skipped, and the tally a job keeps of its skips.

A bad sample never stops a job: whoever reads it raises `SampleError` with one of the `SkipReason`
strings, whoever drives the job catches it and adds the sample's key to a `SkipReport`. Reports from
several workers or ranks `merge` into one with exact counts.
"""

from __future__ import annotations

from typing import Any


class SkipReason:
    """The reasons a sample is skipped; plain strings, so reports read and serialise as they are."""

    IMAGE_MISSING = "image missing"  # no file on disk, or a caption without an image in a shard
    IMAGE_EMPTY = "image empty"  # zero bytes
    NOT_AN_IMAGE = "not an image"  # no decoder recognises the bytes
    IMAGE_CORRUPT = "image corrupt"  # recognised, but decoding fails: truncated or damaged data
    IMAGE_TOO_LARGE = "image too large"  # more pixels than the job allows; never decoded
    CAPTION_MISSING = "caption missing"
    CAPTION_EMPTY = "caption empty"  # empty or whitespace only
    CAPTION_NOT_UTF8 = "caption not utf-8"
    METADATA_CORRUPT = "metadata corrupt"  # a `.json` that is not a JSON object
    FILE_UNREADABLE = "file unreadable"  # it exists but reading it fails (permissions, I/O error)
    ROW_MALFORMED = "row malformed"  # a table line that does not parse
    SHARD_UNREADABLE = "shard unreadable"  # a tar that cannot be opened, or a member that cannot be read


class SampleError(ValueError):
    """A sample that cannot be used; `reason` is a `SkipReason` string."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class SkipReport:
    """Skipped samples counted by reason, with the first `max_keys` keys of each reason in the order met."""

    def __init__(self, max_keys: int = 5) -> None:
        self.max_keys = max_keys
        self.counts: dict[str, int] = {}
        self.first_keys: dict[str, list[str]] = {}

    def add(self, reason: str, key: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        keys = self.first_keys.setdefault(reason, [])
        if len(keys) < self.max_keys:
            keys.append(key)

    def merge(self, other: SkipReport) -> SkipReport:
        """Add `other`'s counts and, while there is room, its first keys after ours; returns self."""
        for reason, count in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + count
            keys = self.first_keys.setdefault(reason, [])
            keys.extend(other.first_keys.get(reason, [])[: self.max_keys - len(keys)])
        return self

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, Any]:
        """`{"total": n, "reasons": {reason: {"count": c, "first_keys": [...]}}}`, reasons by count."""
        return {
            "total": self.total,
            "reasons": {reason: {"count": count, "first_keys": list(self.first_keys[reason])}
                        for reason, count in self._by_count()},
        }

    def summary(self) -> str:
        """A few lines for the end of a job: one per reason, most frequent first, with example keys."""
        if not self.counts:
            return "no samples skipped"
        width = max(map(len, self.counts))
        lines = [f"skipped {self.total} sample{'s' * (self.total != 1)}:"]
        for reason, count in self._by_count():
            lines.append(f"  {reason:<{width}}  {count:>7}  e.g. {', '.join(self.first_keys[reason])}")
        return "\n".join(lines)

    def _by_count(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))

    def __repr__(self) -> str:
        return f"SkipReport({self.counts})"
