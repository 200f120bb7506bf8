"""Reading and writing OpenAI, OpenCLIP, Hugging Face and native checkpoints; downloads."""

from ..core.download import DownloadError, cache_dir, fetch
from .huggingface import export_huggingface
from .hub import list_openclip_pretrained
from .loading import get_tokenizer, list_pretrained, load, load_model
from .native import save_model
from .state_dict import CheckpointError, infer_config, read_weights

__all__ = ["CheckpointError", "DownloadError", "cache_dir", "export_huggingface", "fetch", "get_tokenizer",
           "infer_config", "list_openclip_pretrained", "list_pretrained", "load", "load_model", "read_weights", "save_model"]
