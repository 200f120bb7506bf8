import pytest
import torch
import torch.nn.functional as F

import clipforge
from clipforge.evaluation.metrics import classification_metrics
from clipforge.evaluation.retrieval import retrieval_metrics, subset_retrieval_metrics
from clipforge.evaluation.features import EncodedSet, encode_images
from clipforge.evaluation.suite import retrieval_figures, zeroshot_figures
from clipforge.evaluation.templates import load_templates
from clipforge.evaluation.zeroshot import ZeroShotClassifier
from clipforge.models import create_model
from colour_model import COLOURS, colour_image


def test_retrieval_metrics_on_a_case_with_known_ranks():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    # caption 0 -> image 0 (rank 1); caption 1 -> image 1 (rank 1); caption 2 -> image 2, but image 0
    # scores higher for it (0.981 vs 0.832), so rank 2
    texts = torch.tensor([[1.0, 0.05], [0.0, 1.0], [1.0, 0.2]])
    metrics = retrieval_metrics(images, texts, torch.tensor([0, 1, 2]), ks=(1, 2))
    assert metrics["text_to_image_R@1"] == pytest.approx(200 / 3)
    assert metrics["text_to_image_R@2"] == pytest.approx(100.0)
    assert metrics["text_to_image_median_rank"] == 1.0
    assert metrics["text_to_image_mean_rank"] == pytest.approx(4 / 3)
    # every image's own caption is its best: image 0 scores 0.999 / 0 / 0.981, image 2 (0.7, 0.7)
    # scores 0.74 / 0.71 / 0.83 for captions 0, 1, 2
    assert metrics["image_to_text_R@1"] == pytest.approx(100.0)
    assert metrics["image_to_text_mean_rank"] == pytest.approx(1.0)


def test_retrieval_with_several_captions_per_image_counts_the_best_one():
    images = torch.eye(3)
    texts = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    owners = torch.tensor([0, 0, 2, 1])  # image 0 has a wrong-looking caption and a right one
    metrics = retrieval_metrics(images, texts, owners, ks=(1,))
    assert metrics["image_to_text_R@1"] == pytest.approx(100.0)
    assert metrics["text_to_image_R@1"] == pytest.approx(75.0)


def test_subset_retrieval_searches_only_the_kept_images_and_their_captions():
    images = torch.eye(3)
    # image 1 is left out: caption 3 (owned by image 2) matches image 1 best, so it ranks 2nd with
    # image 1 in the gallery and 1st without it
    texts = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.5]])
    owners = torch.tensor([0, 1, 2, 2])
    everything = retrieval_metrics(images, texts, owners, ks=(1,))
    kept = subset_retrieval_metrics(images, texts, owners, torch.tensor([True, False, True]), ks=(1,))
    assert everything["text_to_image_R@1"] == pytest.approx(75.0)
    assert kept["text_to_image_R@1"] == pytest.approx(100.0) and kept["image_to_text_R@1"] == pytest.approx(100.0)


def test_classification_metrics_on_a_tiny_case():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    target = torch.tensor([0, 1, 1, 2])
    metrics = classification_metrics(logits, target, 3)
    assert metrics["top1"] == pytest.approx(75.0)
    assert metrics["mean_per_class_recall"] == pytest.approx((100 + 50 + 100) / 3)
    assert "top5" not in metrics


class TokenByTemplate:
    """A stand-in tokenizer: a prompt becomes [sot, hash, eot] so the model embeds it; the test
    compares the classifier's class embeddings with the same arithmetic done by hand."""

    vocab_size = 600

    def __call__(self, texts, context_length, truncate=True):
        tokens = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in enumerate(texts):
            tokens[row, :3] = torch.tensor([598, 1 + sum(map(ord, text)) % 500, 599])
        return tokens


def test_prompt_ensemble_averages_normalized_template_embeddings_then_renormalizes():
    torch.manual_seed(0)
    model = create_model({"embed_dim": 16, "activation": "gelu",
                          "vision": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16},
                          "text": {"context_length": 8, "vocab_size": 600, "width": 32, "layers": 1,
                                   "tokenizer": "bundled"}})
    templates, classes = ["a {}.", "a photo of a {}.", "{}"], ["cat", "dog"]
    tokenizer = TokenByTemplate()
    model.tokenizer = tokenizer
    classifier = ZeroShotClassifier(model, classes, templates)
    with torch.no_grad():
        expected = []
        for name in classes:
            prompts = tokenizer([t.format(name) for t in templates], 8)
            embeddings = F.normalize(model.encode_text(prompts), dim=-1)
            expected.append(F.normalize(embeddings.mean(dim=0), dim=-1))
        torch.testing.assert_close(classifier.class_embeddings, torch.stack(expected))
        image_features = torch.randn(4, 16)
        probabilities = classifier.predict_proba(image_features)
        by_hand = (model.logit_scale.exp() * F.normalize(image_features, dim=-1) @ torch.stack(expected).t()).softmax(-1)
        torch.testing.assert_close(probabilities, by_hand)
        assert torch.equal(classifier.predict(image_features), by_hand.argmax(-1))


def colour_set(model, preprocess) -> EncodedSet:
    """One square of each colour, captioned "a <colour> square", with an alternative caption."""
    images = torch.stack([preprocess(colour_image(colour, 4)) for colour in COLOURS])
    return EncodedSet(encode_images(model, images), [[f"a {c} square", f"a square in {c}"] for c in COLOURS],
                      [{"colour": c} for c in COLOURS])


def test_suite_zeroshot_reads_templates_from_a_set_name_or_file(colour_model, tmp_path):
    model, preprocess = clipforge.load(colour_model)
    (tmp_path / "square.txt").write_text("a {} square\n")
    encoded = colour_set(model, preprocess)
    from_file = zeroshot_figures(model, encoded, {"label": "colour", "templates": str(tmp_path / "square.txt")})
    assert from_file["top1"] == 100.0 and from_file["n_templates"] == 1
    from_set = zeroshot_figures(model, encoded, {"label": "colour", "templates": "shapes"})
    assert 0.0 <= from_set["top1"] <= 100.0 and from_set["n_templates"] == len(load_templates("shapes"))


def test_retrieval_protocols_differ_in_the_captions_they_search(colour_model):
    model, preprocess = clipforge.load(colour_model)
    encoded = colour_set(model, preprocess)
    one = retrieval_figures(model, encoded, "one_caption")
    every = retrieval_figures(model, encoded, "all_captions")
    assert (one["images"], one["captions"]) == (4, 4) and (every["images"], every["captions"]) == (4, 8)
    assert one["image_to_text_R@1"] == 100.0
    with pytest.raises(ValueError, match="one_caption"):
        retrieval_figures(model, encoded, "best_caption")
