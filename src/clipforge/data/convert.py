"""`write_shards`: any source to WebDataset shards, every sample checked once, so that training reads
only good samples (and so gets only full batches).

Each good sample gets a new sequential key (`000000000`, ...), its caption, and its metadata with
`"source_key"`, the key it had in the first source it came from. Images keep their bytes when they are
JPEG, PNG or WebP and within `max_side`; other formats, and images that must shrink, are re-encoded
as 8-bit RGB (transparency on white): JPEG stays JPEG at quality 95, everything else becomes PNG.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from clipforge.data.samples import DEFAULT_MAX_PIXELS, Sample, check_sample
from clipforge.data.shard_writer import ShardWriter
from clipforge.data.shards import ShardSpec
from clipforge.data.skips import SampleError, SkipReport
from clipforge.data.sources import Source, open_source
from clipforge.images.transform import to_rgb

KEPT_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}  # PIL format -> shard extension


@dataclass
class ConversionReport:
    shards: list[Path]
    written: int
    skips: SkipReport

    def summary(self) -> str:
        return f"wrote {self.written} samples in {len(self.shards)} shards; {self.skips.summary()}"


def write_shards(
    source: ShardSpec | Source,
    out_dir: str | os.PathLike,
    shard_size: int = 1000,
    max_side: int | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    prefix: str = "shard",
    **source_options,
) -> ConversionReport:
    """Write `open_source(source, **source_options)` as `out_dir/<prefix>-NNNNNN.tar`, `shard_size`
    samples each, images shrunk to at most `max_side` pixels on their longer side; bad samples are
    skipped and counted in the report."""
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be positive, got {max_side}")
    skips = SkipReport()
    with ShardWriter(out_dir, shard_size, prefix) as writer:
        for raw in open_source(source, **source_options):
            try:
                sample = check_sample(raw, max_pixels)
            except SampleError as error:
                skips.add(error.reason, raw.key)
                continue
            image, extension = shard_image(sample, max_side)
            meta = {"source_key": raw.key, **sample.meta}
            writer.write(f"{writer.count:09d}", image, extension, sample.caption, meta)
    return ConversionReport(writer.shards, writer.count, skips)


def shard_image(sample: Sample, max_side: int | None) -> tuple[bytes, str]:
    """`(encoded image, extension)`: the original bytes when they can stay, else a re-encoding."""
    image = sample.image
    shrink = max_side is not None and max(image.size) > max_side
    if not shrink and image.format in KEPT_FORMATS:
        return sample.image_bytes, KEPT_FORMATS[image.format]
    rgb = to_rgb(image)
    if shrink:
        scale = max_side / max(image.size)
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        rgb = rgb.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if KEPT_FORMATS.get(image.format) == "jpg":
        rgb.save(buffer, "JPEG", quality=95)
        return buffer.getvalue(), "jpg"
    rgb.save(buffer, "PNG")
    return buffer.getvalue(), "png"
