"""Learning a new CLIP-format BPE vocabulary from a corpus.

Words are cleaned, lower-cased and split exactly as `Tokenizer.encode` does, mapped to byte
symbols, and handed to the Rust `tokenizers` BpeTrainer; only its merges are kept, and the vocabulary
is rebuilt in CLIP's order so the result loads and saves like OpenAI's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator

from tokenizers import Tokenizer as RustTokenizer
from tokenizers import models, pre_tokenizers, trainers

from .tokenizer import (
    BYTE_SYMBOLS,
    END_OF_TEXT,
    END_OF_WORD,
    START_OF_TEXT,
    WORD_PATTERN,
    Tokenizer,
    base_vocabulary,
    split_chunks,
    to_byte_symbols,
    vocabulary_from_merges,
)

_FIXED_TOKENS = len(base_vocabulary()) + 2  # 512 byte tokens, sot and eot


def train_bpe(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> Tokenizer:
    """A tokenizer of exactly `vocab_size` tokens (512 byte tokens, merges, sot, eot) learnt from `texts`.

    Merging stops early, leaving a smaller vocabulary, when no pair of symbols occurs
    `min_frequency` times any more: a small corpus cannot fill a large vocabulary.
    """
    if vocab_size < _FIXED_TOKENS:
        raise ValueError(f"vocab_size must be at least {_FIXED_TOKENS} (bytes, sot, eot), got {vocab_size}")
    wanted = vocab_size - _FIXED_TOKENS
    trainer = trainers.BpeTrainer(
        # The trainer also counts its alphabet and the word-end symbols it has seen (at most 512),
        # so this bound lets it learn at least `wanted` new tokens.
        vocab_size=wanted + _FIXED_TOKENS,
        min_frequency=min_frequency,
        initial_alphabet=list(BYTE_SYMBOLS.values()),
        end_of_word_suffix=END_OF_WORD,
        show_progress=False,
    )
    learner = RustTokenizer(models.BPE(end_of_word_suffix=END_OF_WORD))
    learner.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    learner.train_from_iterator(_symbol_words(texts), trainer)
    merges = _first_merges(learner, wanted)
    return Tokenizer(vocabulary_from_merges(merges), merges)


def _symbol_words(texts: Iterable[str]) -> Iterator[str]:
    """Each text as its words in byte symbols, space separated (no byte symbol is a space)."""
    specials = {START_OF_TEXT, END_OF_TEXT}
    for text in texts:
        words = (word for chunk in split_chunks(text) for word in WORD_PATTERN.findall(chunk))
        yield " ".join(to_byte_symbols(word) for word in words if word not in specials)


def _first_merges(learner: RustTokenizer, wanted: int) -> list[tuple[str, str]]:
    """The learnt merges in order, up to the one that makes the `wanted`-th new token.

    Serialised merges are `[first, second]` pairs, or "first second" strings before tokenizers 0.20.
    """
    merges, products = [], set()
    for pair in json.loads(learner.to_str())["model"]["merges"]:
        if len(products) == wanted:
            break
        first, second = pair if isinstance(pair, list) else pair.split(" ")
        merges.append((first, second))
        products.add(first + second)
    return merges
