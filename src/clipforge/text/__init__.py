"""CLIP's byte-level BPE tokenizer and training of new vocabularies in the same format."""

from .bpe_training import train_bpe
from .tokenizer import Tokenizer, tokenize

__all__ = ["Tokenizer", "tokenize", "train_bpe"]
