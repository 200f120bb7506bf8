"""Fast paths give the answers of the plain computation: length-grouped text encoding, int8
inference and JPEG draft decoding."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFilter

import clipforge
from clipforge.images import ImageTransform, load_image
from clipforge.models import create_model
from clipforge.models.quantization import quantize_int8
from clipforge.models.text_transformer import LENGTH_GROUP_SIZE
from colour_model import COLOURS, colour_image
from conftest import random_text_tokens


def full_context_text_features(model, text):
    """The plain computation over every position, padding included: what the fast path must equal."""
    tower = model.text
    x = tower.token_embedding(text) + tower.positional_embedding[: text.shape[-1]]
    x = tower.ln_final(tower.transformer(x, causal=True))
    return x[torch.arange(len(text)), text.argmax(dim=-1)] @ tower.text_projection


@pytest.fixture
def text_model():
    torch.manual_seed(0)
    return create_model("tiny-vit")


@pytest.fixture
def varied_tokens(text_model):
    """More rows than one length group, lengths 2..context in shuffled order."""
    rows = 2 * LENGTH_GROUP_SIZE + 22
    lengths = torch.randint(2, text_model.context_length + 1, (rows,), generator=torch.Generator().manual_seed(5))
    lengths[7] = 3  # one short row among long ones
    return random_text_tokens(rows, text_model.context_length, text_model.vocab_size, lengths.tolist())


def test_text_features_equal_the_full_context_computation(text_model, varied_tokens):
    with torch.no_grad():
        torch.testing.assert_close(text_model.encode_text(varied_tokens),
                                   full_context_text_features(text_model, varied_tokens), atol=1e-5, rtol=1e-5)


def test_short_captions_give_the_same_features_alone_and_padded_in_a_batch(text_model, varied_tokens):
    short = varied_tokens[7:8, :3]
    with torch.no_grad():
        torch.testing.assert_close(text_model.encode_text(short), text_model.encode_text(varied_tokens)[7:8],
                                   atol=1e-5, rtol=1e-5)


def test_text_gradients_equal_the_full_context_computation(text_model, varied_tokens):
    text_model.train()
    generator = torch.Generator().manual_seed(2)
    weights = torch.randn(len(varied_tokens), text_model.text.text_projection.shape[1], generator=generator)
    gradients = []
    for encode in (text_model.encode_text, lambda text: full_context_text_features(text_model, text)):
        text_model.zero_grad()
        (encode(varied_tokens) * weights).sum().backward()
        gradients.append({name: p.grad.clone() for name, p in text_model.named_parameters() if p.grad is not None})
    fast, plain = gradients
    assert fast.keys() == plain.keys() and "text.positional_embedding" in fast
    for name in fast:  # float rounding, relative to each gradient's largest entry
        torch.testing.assert_close(fast[name], plain[name], atol=1e-5 * plain[name].abs().max(), rtol=1e-4, msg=name)


def test_an_empty_text_batch_gives_no_features(text_model):
    features = text_model.encode_text(torch.zeros(0, text_model.context_length, dtype=torch.long))
    assert features.shape == (0, text_model.text.text_projection.shape[1])


def test_bfloat16_weights_and_autocast_keep_text_features(text_model, varied_tokens):
    with torch.no_grad():
        reference = text_model.encode_text(varied_tokens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = text_model.encode_text(varied_tokens)
        bf16 = text_model.to(torch.bfloat16).encode_text(varied_tokens)
    for features in (autocast, bf16):
        assert features.dtype == torch.bfloat16
        assert F.cosine_similarity(features.float(), reference).min() > 0.99


def test_int8_model_keeps_features_and_zero_shot_answers(colour_model):
    model, preprocess = clipforge.load(colour_model)
    tokens = model.tokenize([f"a {colour} square" for colour in COLOURS])
    images = torch.stack([preprocess(colour_image(colour, variant)) for colour in COLOURS for variant in (1, 4)])
    int8 = quantize_int8(model)
    with torch.no_grad():
        outputs = [(m.encode_image(images, normalize=True), m.encode_text(tokens, normalize=True))
                   for m in (model, int8)]
    (images_fp32, texts_fp32), (images_int8, texts_int8) = outputs
    assert F.cosine_similarity(images_int8, images_fp32).min() >= 0.99
    assert F.cosine_similarity(texts_int8, texts_fp32).min() >= 0.99
    assert torch.equal((images_int8 @ texts_int8.T).argmax(1), (images_fp32 @ texts_fp32.T).argmax(1))


def test_int8_quantizes_a_copy_and_leaves_the_model_float32(text_model):
    int8 = quantize_int8(text_model)
    assert type(text_model.text.transformer.resblocks[0].mlp.c_fc) is torch.nn.Linear
    assert type(int8.text.transformer.resblocks[0].mlp.c_fc) is not torch.nn.Linear
    assert not int8.training


def test_int8_refuses_weights_that_are_not_float32(text_model):
    with pytest.raises(ValueError, match="float32"):
        quantize_int8(text_model.to(torch.bfloat16))


@pytest.fixture(scope="module")
def large_jpeg(tmp_path_factory):
    """A 1600x1200 photo-like JPEG: gradients, shapes and grain, slightly blurred."""
    rng = np.random.default_rng(0)
    height, width = 1200, 1600
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x / width, y / height, (x + y) / (width + height)], axis=-1) * 255
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(80):
        left, top, size = rng.integers(0, width), rng.integers(0, height), rng.integers(10, 200)
        draw.ellipse([left, top, left + size, top + size], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    grain = np.asarray(image, dtype=np.float32) + rng.normal(0, 12, (height, width, 3))
    image = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.5))
    path = tmp_path_factory.mktemp("jpeg") / "photo.jpg"
    image.save(path, quality=90)
    return path


def test_draft_decoding_shrinks_a_large_jpeg_but_not_below_the_draft_size(large_jpeg):
    image = load_image(large_jpeg, draft_size=128)
    assert image.size == (200, 150)  # libjpeg's 1/8 scale: the largest that keeps both sides >= 128
    assert load_image(large_jpeg).size == (1600, 1200)


def test_draft_decoding_is_off_by_default():
    assert ImageTransform(64).draft_size is None
    assert ImageTransform(64, jpeg_draft=True).draft_size == 128


def test_the_default_transform_decodes_a_lazily_opened_jpeg_in_full(large_jpeg):
    transform = ImageTransform(64)
    with Image.open(large_jpeg) as image:
        pixels = transform(image)
        assert image.size == (1600, 1200)
    assert torch.equal(pixels, transform(load_image(large_jpeg)))


def test_the_default_batch_decodes_jpeg_paths_in_full(large_jpeg):
    transform = ImageTransform(64)
    assert torch.equal(transform.batch([large_jpeg])[0], transform(load_image(large_jpeg)))


def test_draft_decoded_jpeg_preprocesses_close_to_a_full_decode(large_jpeg):
    transform = ImageTransform(64, jpeg_draft=True)
    drafted = transform.batch([large_jpeg])[0]
    full = transform(load_image(large_jpeg))
    difference = (drafted - full).abs() * torch.tensor(transform.std).view(3, 1, 1) * 255  # in 0..255 levels
    assert difference.max() > 0  # it did draft
    assert difference.mean() < 0.6 and difference.max() < 8.5  # the photo promise in ImageTransform.draft_size


def test_a_lazily_opened_jpeg_is_decoded_at_the_draft_size(large_jpeg):
    transform = ImageTransform(64, jpeg_draft=True)
    with Image.open(large_jpeg) as image:
        drafted = transform(image)
        assert min(image.size) >= transform.draft_size and image.size < (1600, 1200)
    assert torch.equal(drafted, transform.batch([large_jpeg])[0])


def test_draft_decoding_leaves_other_formats_alone(tmp_path):
    path = tmp_path / "big.png"
    Image.new("RGB", (1600, 1200), (10, 200, 30)).save(path)
    assert load_image(path, draft_size=128).size == (1600, 1200)
