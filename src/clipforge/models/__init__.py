"""Vision towers, text towers, shared layers, the CLIP modules, JSON configs and the factory."""

from .clip import CLIP, CLIPOutput, check_tokenizer_fits, similarity
from .config import CLIPConfig, TextConfig, VisionConfig
from .convnet import ConvNet
from .factory import create_model, get_config, list_models
from .modified_resnet import ModifiedResNet
from .ngram_text import NgramBagText
from .text_transformer import TextTransformer
from .vision_transformer import VisionTransformer

__all__ = ["CLIP", "CLIPOutput", "CLIPConfig", "ConvNet", "ModifiedResNet", "NgramBagText", "TextConfig",
           "TextTransformer", "VisionConfig", "VisionTransformer", "check_tokenizer_fits", "create_model",
           "get_config", "list_models", "similarity"]
