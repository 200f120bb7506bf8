"""Image-text data: tables, image folders and WebDataset shards as one kind of source, training
batches from any of them, and conversion to shards; bad samples are skipped and counted, never fatal."""

from clipforge.data.convert import ConversionReport, write_shards
from clipforge.data.folder import FolderSource
from clipforge.data.loader import Batch, ImageTextDataset, ImageTextLoader, distributed_rank, make_loader
from clipforge.data.samples import DEFAULT_MAX_PIXELS, RawSample, Sample, check_sample
from clipforge.data.shard_writer import ShardWriter
from clipforge.data.shards import ShardSource
from clipforge.data.skips import SampleError, SkipReason, SkipReport
from clipforge.data.sources import Source, open_source
from clipforge.data.table import TableSource

__all__ = [
    "DEFAULT_MAX_PIXELS", "Batch", "ConversionReport", "FolderSource", "ImageTextDataset", "ImageTextLoader",
    "RawSample", "Sample", "SampleError", "ShardSource", "ShardWriter", "SkipReason", "SkipReport", "Source",
    "TableSource", "check_sample", "distributed_rank", "make_loader", "open_source", "write_shards",
]
