"""clipforge: a complete, fast, hackable CLIP."""

from .checkpoints import export_huggingface, get_tokenizer, list_pretrained, load, load_model, save_model
from .images import ImageTransform
from .models import CLIP, CLIPConfig, create_model, list_models, similarity
from .text import Tokenizer, tokenize

__version__ = "0.1.0"
__all__ = ["CLIP", "CLIPConfig", "ImageTransform", "Tokenizer", "create_model", "export_huggingface",
           "get_tokenizer", "list_models", "list_pretrained", "load", "load_model", "save_model", "similarity",
           "tokenize"]
