"""Vision towers, the text tower, shared layers, the CLIP module, JSON configs and the factory."""

from .clip import CLIP, CLIPOutput, similarity
from .config import CLIPConfig, TextConfig, VisionConfig
from .factory import create_model, get_config, list_models
from .modified_resnet import ModifiedResNet
from .text_transformer import TextTransformer
from .vision_transformer import VisionTransformer

__all__ = ["CLIP", "CLIPOutput", "CLIPConfig", "ModifiedResNet", "TextConfig", "TextTransformer",
           "VisionConfig", "VisionTransformer", "create_model", "get_config", "list_models", "similarity"]
