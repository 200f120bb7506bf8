"""CLIP's byte-level BPE tokenizer: the OpenAI reference's ids, several times faster.

Text is cleaned (ftfy, HTML unescape twice, whitespace collapsed, lower-cased), split into words
by CLIP's pattern, each word's UTF-8 bytes mapped to printable symbols, and the symbols merged by
BPE with `</w>` on the last one. Two shortcuts keep the ids identical: printable ASCII without '&'
skips ftfy and unescaping (they cannot change it), and whitespace-separated chunks are cached
chunk → ids, so a cache hit costs no regex and no BPE. Misses are merged by the Rust `tokenizers`
BPE, which applies the same lowest-rank-first merges as the reference loop.

OpenAI's merges ship with the package (`vocab/`, under OpenAI's MIT licence in `vocab/LICENSE`), so
`Tokenizer.openai()` needs no network and no cache.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
import json
import os
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch
from tokenizers.models import BPE

OPENAI_MERGES = importlib.resources.files(__package__) / "vocab" / "bpe_simple_vocab_16e6.txt.gz"
OPENAI_MERGE_COUNT = 49152 - 256 - 2  # the reference reads merges from lines 2 .. 48895 only

START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
END_OF_WORD = "</w>"

WORD_PATTERN = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
)
_WHITESPACE_RUN = regex.compile(r"\s+")
_PLAIN_ASCII_CONTROLS = str.maketrans("", "", "\t\n\r")
_CHUNK_CACHE_SIZE = 1 << 17  # about 30 MB of chunk → ids entries


def _byte_symbols() -> dict[int, str]:
    """Byte → printable stand-in, in CLIP's vocabulary order (GPT-2's `bytes_to_unicode`).

    Printable Latin-1 bytes stand for themselves and come first; the other 68 bytes take U+0100
    onwards, so no symbol is whitespace or a control character.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    others = [b for b in range(256) if b not in printable]
    return {b: chr(b) for b in printable} | {b: chr(0x100 + i) for i, b in enumerate(others)}


BYTE_SYMBOLS = _byte_symbols()
_LATIN1_TO_SYMBOL = str.maketrans({chr(b): symbol for b, symbol in BYTE_SYMBOLS.items()})
_SYMBOL_TO_LATIN1 = str.maketrans({symbol: chr(b) for b, symbol in BYTE_SYMBOLS.items()})


def clean_text(text: str) -> str:
    """The reference clean-up: ftfy, HTML unescape twice, whitespace runs → one space, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return _WHITESPACE_RUN.sub(" ", text).strip().lower()


def is_plain_ascii(text: str) -> bool:
    """True when `clean_text` reduces to whitespace collapsing and lower-casing.

    ftfy and HTML unescaping leave printable ASCII (plus tab and line breaks) alone unless it
    contains '&'; this is checked against the full path by the tests.
    """
    if not text.isascii() or "&" in text:
        return False
    return text.isprintable() or text.translate(_PLAIN_ASCII_CONTROLS).isprintable()


def split_chunks(text: str) -> list[str]:
    """The whitespace-free chunks of the cleaned text; CLIP's word pattern never crosses a space."""
    if is_plain_ascii(text):
        return text.lower().split()
    cleaned = clean_text(text)
    return cleaned.split(" ") if cleaned else []


def to_byte_symbols(word: str) -> str:
    """`word`'s UTF-8 bytes spelt in byte symbols, the alphabet that BPE merges."""
    return word.encode("utf-8").decode("latin-1").translate(_LATIN1_TO_SYMBOL)


def _decoded_bytes(token: str) -> bytes:
    """What a non-special token decodes to: its bytes, then a space if it ends a word."""
    if token.endswith(END_OF_WORD):
        return _decoded_bytes(token[: -len(END_OF_WORD)]) + b" "
    return token.translate(_SYMBOL_TO_LATIN1).encode("latin-1")


def base_vocabulary() -> list[str]:
    """The 512 tokens every CLIP vocabulary starts with: each byte symbol, then each with `</w>`."""
    symbols = list(BYTE_SYMBOLS.values())
    return symbols + [symbol + END_OF_WORD for symbol in symbols]


def vocabulary_from_merges(merges: Iterable[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary order: byte symbols, byte symbols with `</w>`, one token per merge, sot, eot.

    A merge whose product is already a token adds nothing (the OpenAI merges have none).
    """
    tokens = dict.fromkeys(base_vocabulary())
    tokens.update(dict.fromkeys(first + second for first, second in merges))
    tokens.update(dict.fromkeys([START_OF_TEXT, END_OF_TEXT]))
    return {token: i for i, token in enumerate(tokens)}


def _parse_merges(lines: Iterable[str]) -> list[tuple[str, str]]:
    merges = []
    for line in lines:
        if not line.strip():
            continue
        pair = tuple(line.split())
        if len(pair) != 2:
            raise ValueError(f"a merges line must hold two symbols, got {line!r}")
        merges.append(pair)
    return merges


class _ChunkCache(dict):
    """chunk → tuple of ids; a miss computes and stores. Emptied when full, which bounds memory
    while frequent chunks return after a few texts; hits stay at C speed through `__getitem__`."""

    def __init__(self, compute: Callable[[str], tuple[int, ...]], capacity: int) -> None:
        super().__init__()
        self.compute = compute
        self.capacity = capacity

    def __missing__(self, chunk: str) -> tuple[int, ...]:
        if len(self) >= self.capacity:
            self.clear()
        ids = self[chunk] = self.compute(chunk)
        return ids


class Tokenizer:
    """Byte-level BPE with CLIP's clean-up and word rules; sot and eot are the last two ids."""

    def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]]) -> None:
        tokens = sorted(vocab, key=vocab.__getitem__)
        if [vocab[token] for token in tokens] != list(range(len(tokens))):
            raise ValueError("vocabulary ids must run from 0 to len(vocab) - 1 without gaps")
        if tokens[-2:] != [START_OF_TEXT, END_OF_TEXT]:
            raise ValueError(f"the last two ids must be {START_OF_TEXT} and {END_OF_TEXT}, got {tokens[-2:]}")
        missing = [token for token in base_vocabulary() if token not in vocab]
        if missing:
            raise ValueError(f"the vocabulary lacks {len(missing)} byte symbols, e.g. {missing[:3]}")
        self.merges = [tuple(pair) for pair in merges]
        unknown = [pair for pair in self.merges if pair[0] + pair[1] not in vocab]
        if unknown:
            raise ValueError(f"{len(unknown)} merges make tokens missing from the vocabulary, e.g. {unknown[:3]}")
        self.vocab = dict(vocab)
        self.vocab_size = len(tokens)
        self.sot_token_id = self.vocab_size - 2
        self.eot_token_id = self.vocab_size - 1
        self._bpe = BPE(self.vocab, self.merges, end_of_word_suffix=END_OF_WORD)
        self._special_ids = {START_OF_TEXT: self.sot_token_id, END_OF_TEXT: self.eot_token_id}
        self._token_bytes = [_decoded_bytes(token) for token in tokens[:-2]] + [b"", b""]
        self._chunk_ids = _ChunkCache(self._encode_chunk, _CHUNK_CACHE_SIZE).__getitem__

    def _encode_chunk(self, chunk: str) -> tuple[int, ...]:
        ids: list[int] = []
        for word in WORD_PATTERN.findall(chunk):
            if word in self._special_ids:
                ids.append(self._special_ids[word])
            else:
                ids.extend(token.id for token in self._bpe.tokenize(to_byte_symbols(word)))
        return tuple(ids)

    @classmethod
    def from_openai_merges(cls, path: str | os.PathLike | importlib.resources.abc.Traversable) -> Tokenizer:
        """Build from OpenAI's `bpe_simple_vocab_16e6.txt.gz` (gzipped or plain text): a path, or a
        package resource such as `OPENAI_MERGES`."""
        data = (path if hasattr(path, "read_bytes") else Path(path)).read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        lines = data.decode("utf-8").split("\n")[1 : 1 + OPENAI_MERGE_COUNT]
        merges = _parse_merges(lines)
        return cls(vocabulary_from_merges(merges), merges)

    @classmethod
    def from_files(
        cls, folder_or_vocab_json: str | os.PathLike, merges_txt: str | os.PathLike | None = None
    ) -> Tokenizer:
        """Build from Hugging Face's `vocab.json` and `merges.txt`: a folder holding both, or their paths."""
        vocab_json = Path(folder_or_vocab_json)
        if vocab_json.is_dir():
            vocab_json = vocab_json / "vocab.json"
        merges_txt = Path(merges_txt) if merges_txt is not None else vocab_json.with_name("merges.txt")
        vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
        lines = merges_txt.read_text(encoding="utf-8").split("\n")
        if lines and lines[0].startswith("#version"):
            lines = lines[1:]
        return cls(vocab, _parse_merges(lines))

    @classmethod
    def openai(cls, path: str | os.PathLike | None = None) -> Tokenizer:
        """CLIP's published tokenizer from the merges shipped with the package, or from another
        merges file at `path`; built once per process (per path)."""
        return _load_openai(os.path.abspath(path) if path else None)

    def save(self, folder: str | os.PathLike) -> None:
        """Write `vocab.json` and `merges.txt` as Hugging Face's CLIP tokenizer lays them out."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False), encoding="utf-8")
        lines = ["#version: 0.2", *(f"{first} {second}" for first, second in self.merges)]
        (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def encode(self, text: str) -> list[int]:
        """The token ids of `text`, without start or end tokens."""
        if not isinstance(text, str):
            raise TypeError(f"expected str, got {type(text).__name__}")
        return list(chain.from_iterable(map(self._chunk_ids, split_chunks(text))))

    def decode(self, ids: Sequence[int] | np.ndarray | torch.Tensor) -> str:
        """Text back from one sequence of ids: specials and the padding after the last eot are dropped,
        every word end becomes a space, bytes are read as UTF-8 (invalid ones replaced)."""
        if getattr(ids, "ndim", 1) != 1:
            raise ValueError(f"decode takes one sequence of ids, got shape {tuple(ids.shape)}")
        ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
        if self.eot_token_id in ids:
            ids = ids[: len(ids) - ids[::-1].index(self.eot_token_id)]
        return b"".join(map(self._token_bytes.__getitem__, ids)).decode("utf-8", errors="replace").strip()

    def __call__(
        self, texts: str | Sequence[str], context_length: int = 77, truncate: bool = False
    ) -> torch.LongTensor:
        """Rows `[sot, ids..., eot, 0, ...]` of shape [len(texts), context_length], int64.

        A text longer than `context_length - 2` ids raises ValueError, or with `truncate` keeps its
        first ids and ends with eot, as the reference does.
        """
        if isinstance(texts, str):
            texts = [texts]
        elif isinstance(texts, (bytes, bytearray)) or not isinstance(texts, Iterable):
            raise TypeError(f"texts must be a str or a sequence of str, got {type(texts).__name__}")
        else:
            texts = list(texts)
        room = context_length - 2
        if room < 0:
            raise ValueError(f"context_length must leave room for start and end tokens, got {context_length}")
        rows = [self.encode(text) for text in texts]
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        too_long = np.flatnonzero(lengths > room)
        if too_long.size and not truncate:
            i = too_long[0]
            raise ValueError(
                f"text {i} ({_shorten(texts[i])!r}) has {lengths[i]} tokens plus start and end, more than "
                f"context_length={context_length} holds ({room} + 2); pass truncate=True to cut it"
            )
        for i in too_long:
            rows[i] = rows[i][:room]
        lengths = np.minimum(lengths, room)
        out = np.zeros((len(rows), context_length), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        positions = np.arange(context_length)
        filled = (positions >= 1) & (positions <= lengths[:, None])
        out[filled] = np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        out[np.arange(len(rows)), lengths + 1] = self.eot_token_id
        return torch.from_numpy(out)


def _shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


@functools.lru_cache(maxsize=4)
def _load_openai(path: str | None) -> Tokenizer:
    return Tokenizer.from_openai_merges(OPENAI_MERGES if path is None else path)


def tokenize(
    texts: str | Sequence[str], context_length: int = 77, truncate: bool = False
) -> torch.LongTensor:
    """`Tokenizer.openai()(texts, ...)`: [len(texts), context_length] int64 for CLIP's text tower."""
    return Tokenizer.openai()(texts, context_length, truncate)
