"""CLIP's byte-level BPE tokenizer, training of new vocabularies in the same format, and the
hashed n-gram tokenizer of the bag-of-n-grams text tower."""

from .bpe_training import train_bpe
from .ngram_tokenizer import NgramTokenizer
from .tokenizer import Tokenizer, tokenize

__all__ = ["NgramTokenizer", "Tokenizer", "tokenize", "train_bpe"]
