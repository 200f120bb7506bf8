"""Captions of realistic length for the benchmarks: the built-in corpus's (`clipforge data prepare`,
found through `CLIPFORGE_DATA`) when it is prepared, else generated COCO-like ones.

Text encoding cost follows caption length, so the benchmarks feed the models token ids whose lengths
are those of real captions under the OpenAI BPE; the ids themselves are random within each model's
vocabulary, which lets one caption set serve every vocabulary size.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import torch

from clipforge.text import Tokenizer
from clipforge.text.tokenizer import OPENAI_MERGES

SUBJECTS = ["dog", "cat", "woman", "man", "child", "bird", "horse", "car", "bicycle", "train", "boat",
            "group of people", "chef", "skateboarder", "giraffe", "elephant", "teddy bear", "laptop",
            "plate of food", "pizza", "surfer", "tennis player", "red double-decker bus", "kitten"]
ADJECTIVES = ["small", "large", "brown", "white", "black", "happy", "old", "young", "colorful", "wet",
              "fluffy", "shiny", "wooden", "vintage", "tiny", "muddy", "sleepy", "bright"]
ACTIONS = ["sitting on", "running across", "standing next to", "jumping over", "lying on", "looking at",
           "riding", "holding", "walking along", "parked beside", "flying above", "eating"]
PLACES = ["a grassy field", "the beach", "a busy street", "a wooden table", "the snow", "a kitchen counter",
          "an empty parking lot", "the river bank", "a city park", "a mountain trail", "the sidewalk"]
EXTRAS = ["at sunset", "in the rain", "on a sunny day", "at night", "during winter", "with friends",
          "in front of a building", "while people watch", "near the water"]
TEMPLATES = [
    "a photo of a {adj} {subj}.",
    "A {adj} {subj} {act} {place} {extra}.",
    "{subj} {act} {place}",
    "Two {subj}s {act} {place}, {extra}!",
    "there are {num} {adj} {subj}s {act} {place}",
    "Close-up of the {subj}'s face; it's {adj} and {adj2}.",
    "{Adj} {subj} {act} {place} -- taken {extra} (photo #{num}{num2})",
    "An image showing a {subj} {act} {place}. The {subj} looks {adj}.",
]


def generated_captions(n: int, seed: int = 0) -> list[str]:
    """Varied COCO-like captions, reproducible from `seed`."""
    rng = random.Random(seed)
    captions = []
    for _ in range(n):
        adj = rng.choice(ADJECTIVES)
        captions.append(rng.choice(TEMPLATES).format(
            adj=adj, Adj=adj.capitalize(), adj2=rng.choice(ADJECTIVES), subj=rng.choice(SUBJECTS),
            act=rng.choice(ACTIONS), place=rng.choice(PLACES), extra=rng.choice(EXTRAS),
            num=rng.randint(2, 12), num2=rng.randint(0, 99),
        ))
    return captions


def corpus_captions(n: int, seed: int = 0) -> list[str]:
    """`n` captions drawn from every shard of the prepared built-in training sets (shuffled with
    `seed`); raises FileNotFoundError when no corpus is prepared."""
    from clipforge.data.builtin import builtin_sets
    from clipforge.data.samples import read_caption
    from clipforge.data.shards import read_shard
    from clipforge.data.skips import SampleError

    shards = [path for paths in builtin_sets("builtin:train").values() for path in paths]
    per_shard = -(-n // len(shards))
    captions = []
    for shard in shards:
        for pending in itertools.islice(read_shard(shard), per_shard):
            try:
                captions.append(read_caption(pending().caption))
            except SampleError:
                continue
    random.Random(seed).shuffle(captions)
    return captions[:n]


def benchmark_captions(n: int, seed: int = 0) -> tuple[list[str], str]:
    """(captions, where they came from): the built-in corpus's when prepared, else generated."""
    try:
        captions = corpus_captions(n, seed)
    except FileNotFoundError:
        return generated_captions(n, seed), "generated"
    return (captions, "built-in corpus") if len(captions) == n else (generated_captions(n, seed), "generated")


def openai_merges() -> Path:
    """The path of OpenAI's BPE merges shipped with clipforge, for tokenizers that read a file."""
    return Path(OPENAI_MERGES)


def caption_tokens(n: int, context_length: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """Token ids [n, context_length] laid out like the tokenizer's (start, words, end = the highest id,
    zero padding) with the lengths of real captions under the OpenAI BPE, and a summary of them."""
    captions, source = benchmark_captions(n, seed)
    lengths = Tokenizer.openai()(captions, context_length=context_length, truncate=True).argmax(dim=-1) + 1
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, vocab_size - 2, (n, context_length), generator=generator)
    positions = torch.arange(context_length).expand(n, -1)
    tokens[:, 0] = vocab_size - 2
    tokens[positions == (lengths - 1)[:, None]] = vocab_size - 1
    tokens[positions >= lengths[:, None]] = 0
    summary = {"source": source, "mean_length": lengths.float().mean().item(), "max_length": int(lengths.max()),
               "context_length": context_length}
    return tokens, summary


def ngram_tokens(n: int, context_length: int, buckets: int, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """The hashed n-gram ids [n, context_length] of `n` benchmark captions, for bag-of-n-grams text
    towers (whose cost does not depend on which ids they are), and a summary of their counts."""
    from clipforge.text import NgramTokenizer

    captions, source = benchmark_captions(n, seed)
    tokens = NgramTokenizer(buckets)(captions, context_length=context_length, truncate=True)
    counts = (tokens > 0).sum(dim=-1)
    summary = {"source": source, "mean_length": counts.float().mean().item(), "max_length": int(counts.max()),
               "context_length": context_length}
    return tokens, summary
