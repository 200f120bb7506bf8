"""Hashed n-grams for the bag-of-n-grams text tower: each word, each pair of neighbouring words and
each character trigram of a word is hashed into one of `buckets` ids.

Why hashing: the vocabulary needs no training and has no unknown words. A word never seen in
training still shares trigrams with words that were ("sunflower" with "sun" and "flower"), which is
what lets a model trained on one set of captions read another's.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from .tokenizer import split_chunks

WORD = re.compile(r"[^\W_]+")
PAD_ID = 0  # ids run from 1; 0 fills the row after its last n-gram


class NgramTokenizer:
    """Text -> the hashed ids of its words, word bigrams and character trigrams. Ids are stable
    across processes and machines (CRC-32, not Python's salted `hash`)."""

    def __init__(self, buckets: int, word_bigrams: bool = True, char_trigrams: bool = True) -> None:
        if buckets < 2:
            raise ValueError(f"an n-gram tokenizer needs at least 2 buckets, got {buckets}")
        self.vocab_size = buckets
        self.word_bigrams, self.char_trigrams = word_bigrams, char_trigrams

    def ngrams(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        words = WORD.findall(" ".join(split_chunks(text)))  # CLIP's clean-up, with its plain-ASCII fast path
        grams = [f"w {word}" for word in words]
        if self.word_bigrams:
            grams += [f"b {first} {second}" for first, second in zip(words, words[1:])]
        if self.char_trigrams:
            for word in words:
                marked = f"<{word}>"
                grams += [f"c {marked[i:i + 3]}" for i in range(len(marked) - 2)]
        return grams

    def encode(self, text: str) -> list[int]:
        return [1 + zlib.crc32(gram.encode("utf-8")) % (self.vocab_size - 1) for gram in self.ngrams(text)]

    def __call__(self, texts: str | Sequence[str], context_length: int = 96, truncate: bool = False) -> torch.LongTensor:
        """Rows of ids [len(texts), context_length], padded with 0. A text with more n-grams than
        `context_length` raises ValueError, or with `truncate` keeps its first ones (words first,
        then bigrams, then trigrams)."""
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        rows = [self.encode(text) for text in texts]
        out = np.full((len(rows), context_length), PAD_ID, dtype=np.int64)
        for i, row in enumerate(rows):
            if len(row) > context_length and not truncate:
                raise ValueError(f"text {i} has {len(row)} n-grams, more than context_length={context_length}; "
                                 f"pass truncate=True to cut it")
            row = row[:context_length]
            out[i, :len(row)] = row
        return torch.from_numpy(out)
