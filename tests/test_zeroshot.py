"""Zero-shot classification: the prompt-ensemble arithmetic, the class-embedding cache, template
and class-name files, and `clipforge classify`."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipforge.cli import main
from clipforge.evaluation.cache import ClassEmbeddingCache
from clipforge.evaluation.templates import (
    load_classnames, load_templates, parse_labels, template_set_names,
)
from clipforge.evaluation.zeroshot import ZeroShotClassifier
from clipforge.models import create_model
from colour_model import COLOURS, colour_image
from conftest import TEST_DATA

IMAGENET = TEST_DATA / "imagenet_zeroshot.json"


class PromptTable:
    """A stand-in tokenizer: each prompt becomes one token, its row in a fixed table of embeddings."""

    def __init__(self, prompts):
        self.ids = {prompt: number for number, prompt in enumerate(prompts)}

    def __call__(self, texts, context_length, truncate=True):
        return torch.tensor([[self.ids[text]] for text in texts])


class FixedTextModel(nn.Module):
    """A stand-in model that tokenizes with a PromptTable, whose text features are the table's rows
    and whose temperature is 1/10."""

    context_length = 1

    def __init__(self, prompts, rows):
        super().__init__()
        self.tokenizer = PromptTable(prompts)
        self.rows = torch.tensor(rows)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.batches = 0

    def tokenize(self, texts, truncate=False):
        return self.tokenizer(texts, self.context_length, truncate)

    def encode_text(self, tokens, normalize=False):
        self.batches += 1
        features = self.rows[tokens[:, 0]]
        return F.normalize(features, dim=-1) if normalize else features

    def logit_scale_exp(self):
        return self.logit_scale.exp()


def hand_example():
    prompts = ["a cat", "the cat", "a dog", "the dog"]
    # "the cat" is twice as long as "a cat": normalising first makes the two count equally
    return FixedTextModel(prompts, [[1.0, 0.0], [0.0, 2.0], [0.0, -1.0], [0.0, -3.0]])


def test_ensemble_of_a_hand_computed_example():
    model = hand_example()
    classifier = ZeroShotClassifier(model, ["cat", "dog"], ["a {}", "the {}"])
    # cat: mean of (1, 0) and (0, 1) = (0.5, 0.5) -> (0.7071, 0.7071); dog: (0, -1) and (0, -1) -> (0, -1)
    torch.testing.assert_close(classifier.class_embeddings, torch.tensor([[0.5 ** 0.5, 0.5 ** 0.5], [0.0, -1.0]]))
    image = torch.tensor([[3.0, 3.0]])  # cosine 1 with cat, -0.7071 with dog; exp(logit_scale) = 10
    torch.testing.assert_close(classifier.logits(image), torch.tensor([[10.0, -10 * 0.5 ** 0.5]]))
    p_cat = 1 / (1 + math.exp(-10 - 10 * 0.5 ** 0.5))
    torch.testing.assert_close(classifier.predict_proba(image), torch.tensor([[p_cat, 1 - p_cat]]))
    assert classifier.predict(torch.tensor([[3.0, 3.0], [0.1, -2.0]])).tolist() == [0, 1]


def test_top_classes_are_named_and_sorted_by_probability():
    classifier = ZeroShotClassifier(hand_example(), ["cat", "dog"], ["a {}", "the {}"])
    [[first, second]] = classifier.top_classes(torch.tensor([[0.0, -1.0]]), k=5)
    assert first[0] == "dog" and second[0] == "cat"
    assert first[1] > second[1] and first[1] + second[1] == pytest.approx(1.0)


def test_class_embeddings_are_encoded_in_batches():
    model = hand_example()
    ZeroShotClassifier(model, ["cat", "dog"], ["a {}", "the {}"], batch_size=3)
    assert model.batches == 2


class CharacterTokenizer:
    """Each character one id below 600, between sot (598) and eot (599)."""

    vocab_size = 600

    def __call__(self, texts, context_length, truncate=True):
        tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [598, *(1 + ord(c) % 500 for c in text[: context_length - 2]), 599]
            tokens[row, : len(ids)] = torch.tensor(ids)
        return tokens


def tiny_model():
    """A real CLIP of 600 text ids that reads prompts with the CharacterTokenizer."""
    torch.manual_seed(0)
    model = create_model({"embed_dim": 16, "activation": "gelu",
                          "vision": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
                          "text": {"context_length": 8, "vocab_size": 600, "width": 32, "layers": 1,
                                   "tokenizer": "bundled"}}).eval()
    model.tokenizer = CharacterTokenizer()
    return model


def test_the_classifier_tokenizes_with_the_models_tokenizer():
    model = tiny_model()
    classifier = ZeroShotClassifier(model, ["cat", "dog"], ["a {}."])
    with torch.no_grad():
        expected = F.normalize(model.encode_text(CharacterTokenizer()(["a cat.", "a dog."], 8)), dim=-1)
    torch.testing.assert_close(classifier.class_embeddings, expected)


def test_cache_serves_the_same_embeddings_without_encoding_again(tmp_path):
    model, cache = tiny_model(), ClassEmbeddingCache(tmp_path)
    first = ZeroShotClassifier(model, ["cat", "dog"], ["a {}.", "the {}"], cache=cache)
    model.encode_text = None  # a second classifier must not need the text tower
    second = ZeroShotClassifier(model, ["cat", "dog"], ["a {}.", "the {}"], cache=cache)
    assert torch.equal(first.class_embeddings, second.class_embeddings)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1


def test_cache_is_invalidated_when_the_text_weights_change(tmp_path):
    model, cache = tiny_model(), ClassEmbeddingCache(tmp_path)
    before = ZeroShotClassifier(model, ["cat", "dog"], ["a {}."], cache=cache).class_embeddings
    with torch.no_grad():
        model.text.text_projection.mul_(-1.0)
    after = ZeroShotClassifier(model, ["cat", "dog"], ["a {}."], cache=cache).class_embeddings
    fresh = ZeroShotClassifier(model, ["cat", "dog"], ["a {}."]).class_embeddings
    torch.testing.assert_close(after, fresh)
    torch.testing.assert_close(after, -before)
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_cache_key_follows_classes_and_templates_but_not_the_image_tower():
    model, cache = tiny_model(), ClassEmbeddingCache()

    def key(classes, templates):
        return cache.key(model, model.tokenize([t.format(c) for c in classes for t in templates]), len(classes))

    base = key(["cat", "dog"], ["a {}."])
    assert base != key(["cat", "cow"], ["a {}."]) and base != key(["cat", "dog"], ["the {}."])
    with torch.no_grad():
        next(model.visual.parameters()).add_(1.0)
    assert key(["cat", "dog"], ["a {}."]) == base


def test_a_damaged_cache_file_is_recomputed(tmp_path):
    model, cache = tiny_model(), ClassEmbeddingCache(tmp_path)
    expected = ZeroShotClassifier(model, ["cat"], ["a {}."], cache=cache).class_embeddings
    (stored,) = tmp_path.glob("*.safetensors")
    stored.write_bytes(b"not a safetensors file")
    again = ZeroShotClassifier(model, ["cat"], ["a {}."], cache=cache).class_embeddings
    torch.testing.assert_close(again, expected)


def test_project_template_sets_hold_well_formed_templates():
    assert {"general", "emoji", "icons", "products", "shapes"} <= set(template_set_names())
    for name in template_set_names():
        templates = load_templates(name)
        assert len(set(templates)) == len(templates) and all(t.count("{}") == 1 for t in templates)
    assert len(load_templates("general")) >= 40


def test_openai_reference_lists_are_read_where_they_lie():
    assert len(load_templates(IMAGENET)) == 80
    classes = load_classnames(IMAGENET)
    assert len(classes) == 1000 and classes[0] == "tench"


def test_template_and_class_files_in_text_and_json(tmp_path):
    (tmp_path / "t.txt").write_text("a {} square\n\n  a photo of a {}.  \n")
    (tmp_path / "t.json").write_text(json.dumps(["{} emoji"]))
    (tmp_path / "c.txt").write_text("red\ngreen\n")
    assert load_templates(tmp_path / "t.txt") == ["a {} square", "a photo of a {}."]
    assert load_templates(str(tmp_path / "t.json")) == ["{} emoji"]
    assert load_classnames(tmp_path / "c.txt") == ["red", "green"]
    assert parse_labels(" cat, dog,,car ") == ["cat", "dog", "car"]


@pytest.mark.parametrize("templates", [["a photo"], ["{} and {}"], ["a {name}"], []])
def test_templates_without_exactly_one_placeholder_are_refused(tmp_path, templates):
    (tmp_path / "bad.json").write_text(json.dumps({"templates": templates}))
    with pytest.raises(ValueError):
        load_templates(tmp_path / "bad.json")


def test_unknown_template_set_names_the_sets():
    with pytest.raises(FileNotFoundError, match="general"):
        load_templates("no-such-set")


def test_repeated_labels_are_refused():
    with pytest.raises(ValueError, match="cat"):
        parse_labels("cat,dog,cat")


@pytest.fixture
def square_templates(tmp_path):
    path = tmp_path / "square.txt"
    path.write_text("a {} square\n")
    return path


def test_classify_puts_the_drawn_colour_first(colour_model, tmp_path, square_templates, capsys):
    images = []
    for colour in COLOURS:
        images.append(tmp_path / f"{colour}.png")
        colour_image(colour, 3).save(images[-1])
    code = main(["classify", *map(str, images), "--labels", ",".join(COLOURS), "--templates", str(square_templates),
                 "--model", str(colour_model), "--json", "--top", "2"])
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["image"] for row in rows] == list(map(str, images))
    for colour, row in zip(COLOURS, rows):
        assert len(row["top"]) == 2 and row["top"][0]["label"] == colour
        assert row["top"][0]["probability"] > row["top"][1]["probability"]


def test_classify_prints_labels_with_percentages(colour_model, tmp_path, square_templates, capsys):
    colour_image("blue", 1).save(tmp_path / "blue.png")
    assert main(["classify", str(tmp_path / "blue.png"), "--labels", "red, blue", "--templates", str(square_templates),
                 "--model", str(colour_model)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "blue.png")
    assert lines[1].split()[0] == "blue" and lines[1].endswith("%") and len(lines) == 3


def test_classify_reports_unreadable_images_and_still_classifies_the_rest(colour_model, tmp_path, square_templates,
                                                                           capsys):
    colour_image("green", 0).save(tmp_path / "green.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    code = main(["classify", str(tmp_path / "broken.png"), str(tmp_path / "green.png"), "--labels", "red,green",
                 "--templates", str(square_templates), "--model", str(colour_model)])
    captured = capsys.readouterr()
    assert code == 1
    assert "green" in captured.out.splitlines()[1] and "broken.png" not in captured.out
    assert "broken.png" in captured.err and "1 of 2 images" in captured.err


def test_classify_without_a_model_says_how_to_get_one(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["classify", "x.png", "--labels", "a,b"]) == 1
    assert "clipforge train" in capsys.readouterr().err
