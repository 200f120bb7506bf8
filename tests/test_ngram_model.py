"""The bag-of-n-grams text tower, its hashing tokenizer and the plain ConvNet image tower: ids,
invariances, config checks, save/load, and a tiny training run through the real trainer."""

import json
import random
import zlib

import pytest
import torch

import clipforge
from clipforge.checkpoints import CheckpointError, export_huggingface
from clipforge.data.shapes import generate, write_shapes_shards
from clipforge.images import random_shift
from clipforge.models import CLIP, CLIPConfig, ConvNet, NgramBagText, create_model
from clipforge.text import NgramTokenizer, Tokenizer
from clipforge.training.config import TrainConfig
from clipforge.training.trainer import train

NGRAM_MODEL = {"embed_dim": 32, "activation": "gelu", "vision": {"image_size": 32, "channels": [8, 16, 32, 32]},
               "text": {"kind": "ngram_bag", "tokenizer": "ngram", "context_length": 48, "vocab_size": 4096,
                        "width": 32}}


def test_ngrams_are_words_then_word_pairs_then_character_trigrams():
    assert NgramTokenizer(100).ngrams("Red  CAT!") == ["w red", "w cat", "b red cat", "c <re", "c red", "c ed>",
                                                        "c <ca", "c cat", "c at>"]
    assert NgramTokenizer(100, word_bigrams=False, char_trigrams=False).ngrams("a red cat") == ["w a", "w red", "w cat"]


def test_ids_are_crc32_buckets_from_one_stable_across_calls():
    tokenizer = NgramTokenizer(1000)
    assert tokenizer.encode("red") == [1 + zlib.crc32(g.encode()) % 999 for g in ["w red", "c <re", "c red", "c ed>"]]
    assert tokenizer.encode("a red square") == NgramTokenizer(1000).encode("a red square")
    assert min(tokenizer.encode("the quick brown fox jumps over the lazy dog")) >= 1


def test_an_unseen_word_shares_trigram_ids_with_its_parts():
    tokenizer = NgramTokenizer(1 << 16)
    sunflower, flower = set(tokenizer.encode("sunflower")), set(tokenizer.encode("flower"))
    assert len(sunflower & flower) == 5  # flo, low, owe, wer, er>: not <fl, nor the word itself


def test_rows_are_zero_padded_and_overlong_texts_raise_or_truncate():
    tokenizer = NgramTokenizer(1000)
    rows = tokenizer(["red", "", "a blue circle"], context_length=20)
    assert rows.shape == (3, 20) and rows.dtype == torch.int64
    assert (rows[0, 4:] == 0).all() and (rows[0, :4] > 0).all() and (rows[1] == 0).all()
    long_text = "word " * 30
    with pytest.raises(ValueError, match="n-grams, more than context_length=20"):
        tokenizer([long_text], context_length=20)
    assert tokenizer([long_text], context_length=20, truncate=True).shape == (1, 20)
    with pytest.raises(TypeError):
        tokenizer([b"bytes"])


def test_features_ignore_padding_and_the_order_of_the_bag():
    torch.manual_seed(0)
    model = create_model(NGRAM_MODEL)
    assert isinstance(model.text, NgramBagText)
    ids = NgramTokenizer(4096)(["a red square", "two blue circles"], context_length=24)
    wider = torch.cat([ids, torch.zeros(2, 24, dtype=torch.long)], dim=1)
    shuffled = ids[:, torch.randperm(24)]
    with torch.no_grad():
        features = model.encode_text(ids)
        assert torch.allclose(model.encode_text(wider), features, atol=1e-6)
        assert torch.allclose(model.encode_text(shuffled), features, atol=1e-6)
        assert not torch.allclose(features[0], features[1])
        with pytest.raises(ValueError, match="at most 48"):
            model.encode_text(torch.ones(1, 49, dtype=torch.long))


def test_padding_row_gets_no_gradient():
    model = create_model(NGRAM_MODEL).train()
    ids = NgramTokenizer(4096)(["a red square", "circle"], context_length=24)
    model.encode_text(ids).sum().backward()
    assert model.text.token_embedding.weight.grad[0].abs().sum() == 0
    assert model.text.token_embedding.weight.grad[ids[0, 0]].abs().sum() > 0


def test_convnet_tower_shapes_and_config_checks():
    tower = ConvNet([8, 16, 32], output_dim=24, image_size=32)
    tower.init_parameters()
    assert tower(torch.randn(2, 3, 32, 32)).shape == (2, 24)
    bad_visions = [{"image_size": 32, "channels": [8, 16], "layers": 2, "width": 8},
                   {"image_size": 30, "channels": [8, 16, 32]},
                   {"image_size": 32, "channels": []},
                   {"image_size": 32}]
    for vision in bad_visions:
        with pytest.raises(ValueError):
            CLIPConfig.from_dict({**NGRAM_MODEL, "vision": vision})


def test_text_kind_and_tokenizer_must_agree():
    for text in ({**NGRAM_MODEL["text"], "tokenizer": "openai"}, {"tokenizer": "ngram"},
                 {**NGRAM_MODEL["text"], "kind": "lstm"}):
        with pytest.raises(ValueError, match="tokenizer|kind"):
            CLIPConfig.from_dict({**NGRAM_MODEL, "text": text})


def test_save_load_round_trip_and_tokenizer_lookup(tmp_path):
    torch.manual_seed(0)
    model = create_model(NGRAM_MODEL)
    clipforge.save_model(model, tmp_path / "model")
    loaded = clipforge.load_model(tmp_path / "model")
    tokenizer = clipforge.get_tokenizer(tmp_path / "model")
    assert isinstance(loaded.text, NgramBagText) and isinstance(tokenizer, NgramTokenizer) and tokenizer.vocab_size == 4096
    assert isinstance(loaded.tokenizer, NgramTokenizer) and loaded.tokenizer.vocab_size == 4096
    assert not (tmp_path / "model" / "vocab.json").exists()
    images, ids = torch.randn(2, 3, 32, 32), tokenizer(["a red square", "a cat"], context_length=48)
    assert torch.equal(loaded.tokenize(["a red square", "a cat"]), ids)
    with torch.no_grad():
        assert torch.equal(model(images, ids).logits_per_image, loaded(images, ids).logits_per_image)
    with pytest.raises(CheckpointError, match="ConvNet"):
        export_huggingface(loaded, tmp_path / "hf")


def test_a_hashing_tokenizer_with_another_number_of_buckets_is_refused():
    model = create_model(NGRAM_MODEL)
    for buckets in (2048, 8192):
        with pytest.raises(ValueError, match=f"{buckets} buckets but the text tower has 4096 rows"):
            model.tokenizer = NgramTokenizer(buckets)
        with pytest.raises(ValueError, match="buckets"):
            CLIP(CLIPConfig.from_dict(NGRAM_MODEL), tokenizer=NgramTokenizer(buckets))
    assert model.tokenizer.vocab_size == 4096


def test_a_bpe_tokenizer_does_not_go_with_an_ngram_text_tower():
    model = create_model(NGRAM_MODEL)
    with pytest.raises(ValueError, match="does not go with"):
        model.tokenizer = Tokenizer.openai()
    assert isinstance(model.tokenizer, NgramTokenizer)


def test_an_ngram_model_tokenizes_with_its_hasher_at_its_context_length():
    model = create_model(NGRAM_MODEL)
    texts = ["a red square", "two blue circles"]
    assert torch.equal(model.tokenize(texts), NgramTokenizer(4096)(texts, context_length=48))
    with pytest.raises(ValueError, match="context_length=48"):
        model.tokenize(["word " * 30])
    assert model.tokenize(["word " * 30], truncate=True).shape == (1, 48)


def test_a_config_name_gives_its_tokenizer():
    tokenizer = clipforge.get_tokenizer("forge-cnn-ngram")
    assert isinstance(tokenizer, NgramTokenizer) and tokenizer.vocab_size == 32768
    model = create_model("forge-cnn-ngram")
    assert isinstance(model.text, NgramBagText) and isinstance(model.visual, ConvNet)
    assert isinstance(model.tokenizer, NgramTokenizer) and model.tokenizer.vocab_size == 32768


def test_tiny_ngram_convnet_run_lowers_the_loss_resumes_exactly_and_saves_a_loadable_model(tmp_path):
    write_shapes_shards(tmp_path / "train", 192, seed=0, shard_size=64, image_size=32)
    (tmp_path / "model.json").write_text(json.dumps({**NGRAM_MODEL, "text": {**NGRAM_MODEL["text"], "ngram_dropout": 0.3}}))
    options = dict(model=str(tmp_path / "model.json"), train_data=[str(tmp_path / "train")], eval_data=[], steps=24,
                   batch_size=32, lr=2e-3, warmup_steps=2, workers=0, checkpoint_every=12, log_every=4,
                   progress=False, precision="fp32", augment_shift=2)
    result = train(TrainConfig(output_dir=str(tmp_path / "run"), **options))
    curve = [r["loss"] for r in result.history]
    assert sum(curve[-4:]) / 4 < sum(curve[:4]) / 4
    assert not (tmp_path / "run" / "tokenizer").exists()  # nothing to learn for hashed n-grams

    (tmp_path / "resumed" / "checkpoints").mkdir(parents=True)
    checkpoint = tmp_path / "run" / "checkpoints" / "step-0000012.pt"
    (tmp_path / "resumed" / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
    resumed = train(TrainConfig(output_dir=str(tmp_path / "resumed"), **options), resume="latest")
    assert [r["step"] for r in resumed.history] == list(range(13, 25))
    assert [r["loss"] for r in resumed.history] == pytest.approx(curve[12:], rel=1e-5, abs=1e-6)

    tuned = train(TrainConfig(output_dir=str(tmp_path / "tuned"), **{**options, "steps": 4},
                              pretrained=str(result.model_dir)))  # fine-tuning keeps the hashing tokenizer
    assert len(tuned.history) == 4 and not (tmp_path / "tuned" / "tokenizer").exists()

    model, preprocess = clipforge.load(result.model_dir)
    image, scene = next(generate(1, seed=5, image_size=32))
    with torch.no_grad():
        out = model(preprocess(image)[None], model.tokenize([scene.caption, "a cat"], truncate=True))
    assert isinstance(model.tokenizer, NgramTokenizer) and out.logits_per_image.shape == (1, 2)
    assert isinstance(clipforge.get_tokenizer(result.model_dir), NgramTokenizer)


def test_ngram_dropout_acts_in_training_only_and_only_on_ngram_towers():
    torch.manual_seed(0)
    model = create_model({**NGRAM_MODEL, "text": {**NGRAM_MODEL["text"], "ngram_dropout": 0.5}})
    ids = NgramTokenizer(4096)(["a red square with two blue circles"], context_length=48)
    with torch.no_grad():
        assert torch.equal(model.eval().encode_text(ids), model.encode_text(ids))
        assert not torch.allclose(model.train().encode_text(ids), model.eval().encode_text(ids))
    with pytest.raises(ValueError, match="ngram_dropout"):
        CLIPConfig.from_dict({**NGRAM_MODEL, "text": {"ngram_dropout": 0.1}})


def test_random_shift_takes_a_window_of_the_edge_padded_image():
    image = torch.arange(3 * 8 * 8, dtype=torch.float32).view(3, 8, 8)
    assert torch.equal(random_shift(image, 0, random.Random(0)), image)
    padded = torch.nn.functional.pad(image[None], (2,) * 4, mode="replicate")[0]
    windows = [padded[:, top:top + 8, left:left + 8] for top in range(5) for left in range(5)]
    shifted = [random_shift(image, 2, random.Random(seed)) for seed in range(40)]
    assert all(any(torch.equal(s, w) for w in windows) for s in shifted)
    assert len({tuple(s.flatten().tolist()) for s in shifted}) > 10  # many framings, not one
    assert torch.equal(random_shift(image, 2, random.Random(3)), random_shift(image, 2, random.Random(3)))
