"""The CLIP tokenizer: reference ids, the plain-ASCII shortcut, tensor layout, file formats, the
packaged OpenAI vocabulary, training."""

from __future__ import annotations

import hashlib
import json
import pickle
import random

import pytest
import torch

from clipforge.text import Tokenizer, tokenize, train_bpe
from clipforge.text import tokenizer as tokenizer_module
from clipforge.text.tokenizer import OPENAI_MERGES, clean_text, is_plain_ascii, split_chunks, to_byte_symbols
from conftest import TEST_DATA

CASES = TEST_DATA / "tokenizer_cases.jsonl"
OPENAI_MERGES_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"  # as published
SENTENCES = [
    "a photo of a dog",
    "two cats sleeping on a red sofa",
    "the quick brown fox jumps over the lazy dog",
    "an aerial view of a city at night",
    "a bowl of soup with bread on a wooden table",
]


@pytest.fixture(scope="module")
def clip() -> Tokenizer:
    return Tokenizer.openai()


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    return [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]


def textbook_bpe(tokenizer: Tokenizer, ranks: dict[tuple[str, str], int], word: str) -> list[int]:
    """The reference algorithm, slowly: merge the lowest-ranked adjacent pair everywhere, repeat."""
    symbols = list(to_byte_symbols(word))
    symbols[-1] += "</w>"
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, len(ranks)))
        if best not in ranks:
            break
        merged, i = [], 0
        while i < len(symbols):
            if tuple(symbols[i : i + 2]) == best:
                merged.append(best[0] + best[1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return [tokenizer.vocab[symbol] for symbol in symbols]


@pytest.mark.reference
def test_encode_matches_reference_ids_on_every_case(clip, cases):
    mismatches = [case["text"] for case in cases if clip.encode(case["text"]) != case["ids"]]
    assert len(cases) == 2837
    assert mismatches == []


@pytest.mark.reference
def test_bpe_merges_like_the_reference_loop_on_random_words(clip):
    rng = random.Random(0)
    ranks = {pair: rank for rank, pair in enumerate(clip.merges)}
    alphabets = ["abcdefghijklmnopqrstuvwxyz", "aabbeellnnoss", "!?.,:;-_()*#@$%'\"/<>", "éüñßø東京語😀ыж"]
    for _ in range(1500):
        alphabet = rng.choice(alphabets)
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 16)))
        words = tokenizer_module.WORD_PATTERN.findall(text)
        expected = [i for word in words for i in textbook_bpe(clip, ranks, word)]
        assert clip.encode(text) == expected, text


def test_plain_ascii_shortcut_equals_full_cleanup_on_random_text():
    rng = random.Random(0)
    pieces = [chr(c) for c in range(0x20, 0x7F) if chr(c) != "&"]
    pieces += ["\t", "\n", "\r", "\r\n", "   ", "'s", "'LL", "<|endoftext|>", "<b>", "--", "A.", "42"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        assert is_plain_ascii(text)
        assert split_chunks(text) == [chunk for chunk in clean_text(text).split(" ") if chunk], repr(text)


@pytest.mark.parametrize(
    "text", ["&amp;amp;", "fish &amp; chips", "café", "CafÃ©", "a\x0bb", "x\x1cy", "\x1b[31mred", "a\x7f"]
)
def test_ampersands_non_ascii_and_control_characters_take_the_full_cleanup(text):
    assert not is_plain_ascii(text)
    assert split_chunks(text) == clean_text(text).split(" ")


def test_full_cleanup_unescapes_twice_fixes_mojibake_and_drops_controls(clip):
    assert clip.encode("&amp;amp;") == clip.encode("&")
    assert clip.encode("fish &amp; chips") == clip.encode("fish & chips")
    assert clip.encode("CafÃ© au lait") == clip.encode("café au lait")
    assert clip.encode("a\x0bb \x1b[31mred") == clip.encode("ab red")


def test_special_token_text_maps_to_special_ids(clip):
    ids = clip.encode("<|startoftext|>hi<|ENDOFTEXT|>")
    assert ids == [clip.sot_token_id, *clip.encode("hi"), clip.eot_token_id]


@pytest.mark.reference
def test_ids_stay_exact_when_the_bounded_chunk_cache_overflows(cases, monkeypatch):
    monkeypatch.setattr(tokenizer_module, "_CHUNK_CACHE_SIZE", 8)
    small_cache = Tokenizer.from_openai_merges(OPENAI_MERGES)
    assert all(small_cache.encode(case["text"]) == case["ids"] for case in cases[::7])
    assert len(small_cache._chunk_ids.__self__) <= 8


def test_tokenizer_pickles_for_data_loader_workers(clip):
    clip.encode("warm the cache")
    copy = pickle.loads(pickle.dumps(clip))
    assert torch.equal(copy(SENTENCES + ["café"]), clip(SENTENCES + ["café"]))


def test_special_ids_are_the_last_two(clip):
    assert (clip.vocab_size, clip.sot_token_id, clip.eot_token_id) == (49408, 49406, 49407)


def test_call_lays_out_sot_ids_eot_and_zero_padding(clip):
    ids = clip.encode("a photo of a dog")
    row = clip("a photo of a dog", context_length=10)
    assert row.dtype == torch.int64 and row.shape == (1, 10)
    expected = [clip.sot_token_id, *ids, clip.eot_token_id]
    assert row[0].tolist() == expected + [0] * (10 - len(expected))


def test_empty_caption_is_sot_then_eot(clip):
    assert clip("")[0, :3].tolist() == [clip.sot_token_id, clip.eot_token_id, 0]
    assert clip.encode("  \n ") == []


def test_batch_rows_equal_single_texts(clip, cases):
    texts = [case["text"] for case in cases[::20]]
    batch = clip(texts, truncate=True)
    assert batch.shape == (len(texts), 77)
    assert all(torch.equal(batch[i], clip(text, truncate=True)[0]) for i, text in enumerate(texts))


def test_truncation_keeps_eot_last(clip):
    text = "one two three four five six seven"
    row = clip(text, context_length=5, truncate=True)[0].tolist()
    assert row == [clip.sot_token_id, *clip.encode(text)[:3], clip.eot_token_id]


def test_over_long_text_raises_value_error_naming_text_and_lengths(clip):
    text = "word " * 100
    with pytest.raises(ValueError, match=r"word word.*\.\.\..*100 tokens.*context_length=77"):
        clip(["fine", text])


def test_non_str_input_raises_type_error(clip):
    with pytest.raises(TypeError):
        clip.encode(b"bytes")
    with pytest.raises(TypeError):
        clip(["ok", 3])
    with pytest.raises(TypeError):
        clip(b"bytes")


def test_decode_inverts_encode_on_lowercase_sentences(clip):
    for sentence in SENTENCES + ["naïve café owners in zürich"]:
        assert clip.decode(clip.encode(sentence)) == sentence


def test_decode_drops_special_tokens_and_padding(clip):
    assert clip.decode(clip("a photo of a dog")[0]) == "a photo of a dog"
    assert clip.decode(clip.encode("wow!")) == "wow !"  # punctuation is a word of its own


@pytest.mark.reference
def test_saved_files_load_back_with_identical_ids(clip, cases, tmp_path):
    clip.save(tmp_path)
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").startswith("#version")
    loaded = Tokenizer.from_files(tmp_path)
    assert loaded.vocab == clip.vocab and loaded.merges == clip.merges
    assert all(loaded.encode(case["text"]) == case["ids"] for case in cases[::10])
    assert Tokenizer.from_files(tmp_path / "vocab.json", tmp_path / "merges.txt").merges == clip.merges


@pytest.mark.reference
def test_transformers_clip_tokenizer_reads_saved_files(clip, cases, tmp_path):
    # Hugging Face's CLIP tokenizer skips ftfy and HTML unescaping (it differs on '&amp;', mojibake,
    # ligatures and full-width letters), so compare on texts our shortcut deems plain ASCII.
    transformers = pytest.importorskip("transformers")
    clip.save(tmp_path)
    hf = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    texts = [case["text"] for case in cases if is_plain_ascii(case["text"])][::40]
    assert len(texts) > 50
    hf_ids = [hf(text, add_special_tokens=False)["input_ids"] for text in texts]
    assert hf_ids == [clip.encode(text) for text in texts]
    assert hf("a dog")["input_ids"] == clip("a dog")[0, :4].tolist()


def test_openai_works_offline_with_an_empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPFORGE_CACHE", str(tmp_path))
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    tokenizer_module._load_openai.cache_clear()
    tokenizer = Tokenizer.openai()
    assert tokenizer.encode("a photo of a dog") == [320, 1125, 539, 320, 1929]
    assert Tokenizer.openai() is tokenizer
    assert list(tmp_path.iterdir()) == []


def test_packaged_merges_are_the_published_file():
    assert hashlib.sha256(OPENAI_MERGES.read_bytes()).hexdigest() == OPENAI_MERGES_SHA256


def test_openai_reads_another_merges_file_when_given_a_path(clip, tmp_path):
    merges = tmp_path / "merges.txt.gz"
    merges.write_bytes(OPENAI_MERGES.read_bytes())
    other = Tokenizer.openai(merges)
    assert other is not clip and other.merges == clip.merges
    assert Tokenizer.openai(str(merges)) is other


def test_tokenize_uses_the_openai_tokenizer(clip):
    assert torch.equal(tokenize(["a photo of a dog", "a cat"]), clip(["a photo of a dog", "a cat"]))


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    rng = random.Random(0)
    words = (
        "the a dog cat runs sleeps on under red blue big small table field park river happy old young "
        "bicycle mountain kitchen window garden breakfast umbrella sunset beach children playing "
        "grandmother photograph orange yellow purple beautiful wooden station airplane elephant "
        "giraffe computer keyboard restaurant waterfall lighthouse snowboard"
    ).split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 10))) for _ in range(400)]


def test_trained_vocabulary_has_the_requested_size_and_special_ids_last(corpus):
    trained = train_bpe(corpus, vocab_size=600)
    assert trained.vocab_size == 600
    assert (trained.sot_token_id, trained.eot_token_id) == (598, 599)
    assert len(trained.merges) >= 600 - 514


def test_trained_tokenizer_round_trips_corpus_sentences(corpus):
    trained = train_bpe(corpus, vocab_size=600)
    assert all(trained.decode(trained.encode(text)) == text for text in corpus)
    assert len(trained.encode("the dog")) == 2  # frequent words became single tokens


def test_trained_tokenizer_saves_and_loads_with_identical_ids(corpus, tmp_path):
    trained = train_bpe(corpus, vocab_size=600)
    trained.save(tmp_path)
    loaded = Tokenizer.from_files(tmp_path)
    assert all(loaded.encode(text) == trained.encode(text) for text in corpus[:50] + ["unseen words & café"])


def test_training_stops_early_when_the_corpus_runs_out():
    trained = train_bpe(["tiny corpus", "tiny corpus again"], vocab_size=5000)
    assert 514 < trained.vocab_size < 5000
    assert trained.decode(trained.encode("tiny corpus")) == "tiny corpus"
