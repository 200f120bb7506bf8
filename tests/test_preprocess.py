"""clipforge.images: parity with HF CLIPImageProcessor, torchvision arithmetic, PIL modes, loading."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from clipforge.images import CLIP_MEAN, CLIP_STD, ImageLoadError, ImageTransform, load_image, to_rgb
from clipforge.images.transform import center_crop_box, resize_size

SIZES = [(37, 53), (224, 224), (300, 199), (3, 250), (500, 333), (227, 224)]
MODES = ["RGB", "L", "LA", "P", "P+transparency", "RGBA", "CMYK"]


def noisy_gradient(width: int, height: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """uint8 [height, width, channels]: gradients plus seeded noise, so resampling differences show."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    u, v = x / max(width - 1, 1), y / max(height - 1, 1)
    base = np.stack([u, v, (u + v) / 2, 1 - u][:channels], axis=-1) * 255
    return np.clip(0.6 * base + 0.4 * rng.integers(0, 256, base.shape), 0, 255).astype(np.uint8)


@functools.cache
def make_image(mode: str, width: int, height: int) -> Image.Image:
    rgb = Image.fromarray(noisy_gradient(width, height))
    alpha = Image.fromarray(noisy_gradient(width, height, channels=1, seed=1)[..., 0])
    if mode in ("RGB", "L"):
        return rgb.convert(mode)
    if mode == "LA":
        return Image.merge("LA", (rgb.convert("L"), alpha))
    if mode == "RGBA":
        return Image.merge("RGBA", (*rgb.split(), alpha))
    if mode == "CMYK":
        return Image.frombytes("CMYK", (width, height), noisy_gradient(width, height, channels=4).tobytes())
    palette = rgb.convert("P")  # web palette with dithering: fast, and full of edges
    if mode == "P+transparency":
        palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    return palette


@pytest.mark.reference
@pytest.mark.parametrize("image_size", [224, 64])
@pytest.mark.parametrize("mode", MODES)
def test_matches_hugging_face_clip_image_processor(mode, image_size):
    pytest.importorskip("transformers")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    transform = ImageTransform(image_size)
    for width, height in SIZES:
        image = make_image(mode, width, height)
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
        actual = transform(image)
        assert actual.dtype == torch.float32 and actual.shape == (3, image_size, image_size)
        assert (actual - expected).abs().max().item() < 1e-5, (mode, width, height)


@pytest.mark.reference
@pytest.mark.parametrize("width, height, image_size", [(640, 480, 64), (1200, 1600, 224)])
def test_a_lazily_opened_jpeg_matches_hugging_face_clip_image_processor(tmp_path, width, height, image_size):
    """Sizes past twice the output, where libjpeg's draft decoding would shrink the JPEG."""
    pytest.importorskip("transformers")
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    path = tmp_path / "photo.jpg"
    Image.fromarray(noisy_gradient(width, height, seed=4)).save(path, quality=90)
    with Image.open(path) as image:
        expected = processor(images=image, return_tensors="pt")["pixel_values"][0]
    with Image.open(path) as image:
        actual = ImageTransform(image_size)(image)
        assert image.size == (width, height)  # decoded in full, not drafted
    assert (actual - expected).abs().max().item() < 1e-5


# (width, height, n) -> torchvision Resize(n) size and CenterCrop(n) offsets, computed by hand:
# long = int(n * long / short); offset = int(round((long - n) / 2.0)) with round half to even.
TORCHVISION_TABLE = [
    # width, height, n, resized (w, h), torchvision (left, top)
    (640, 480, 224, (298, 224), (37, 0)),
    (500, 333, 224, (336, 224), (56, 0)),
    (300, 199, 224, (337, 224), (56, 0)),  # 113 / 2 = 56.5 -> 56 (even)
    (199, 300, 224, (224, 337), (0, 56)),
    (37, 53, 224, (224, 320), (0, 48)),
    (37, 53, 64, (64, 91), (0, 14)),  # 27 / 2 = 13.5 -> 14 (even)
    (53, 37, 64, (91, 64), (14, 0)),
    (224, 224, 224, (224, 224), (0, 0)),
    (225, 224, 224, (225, 224), (0, 0)),  # 0.5 -> 0
    (227, 224, 224, (227, 224), (2, 0)),  # 1.5 -> 2
    (229, 224, 224, (229, 224), (2, 0)),  # 2.5 -> 2
    (231, 224, 224, (231, 224), (4, 0)),  # 3.5 -> 4
    (2, 300, 224, (224, 33600), (0, 16688)),
    (1000, 10, 64, (6400, 64), (3168, 0)),
    (333, 500, 64, (64, 96), (0, 16)),
]


@pytest.mark.parametrize("width, height, n, resized, torchvision_offset", TORCHVISION_TABLE)
def test_resize_size_matches_torchvision(width, height, n, resized, torchvision_offset):
    assert resize_size(width, height, n) == resized


@pytest.mark.parametrize("width, height, n, resized, torchvision_offset", TORCHVISION_TABLE)
def test_crop_offset_is_one_less_than_torchvision_only_when_excess_is_3_mod_4(
    width, height, n, resized, torchvision_offset
):
    left, top, right, bottom = center_crop_box(*resized, n)
    assert (right - left, bottom - top) == (n, n)
    for ours, theirs, excess in zip((left, top), torchvision_offset, (resized[0] - n, resized[1] - n)):
        assert ours == excess // 2
        assert ours == theirs - (excess % 4 == 3)


def test_center_crop_box_floors_like_hugging_face():
    assert [center_crop_box(224 + excess, 224, 224)[0] for excess in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_matches_plain_pil_and_numpy_computation():
    image = Image.fromarray(noisy_gradient(300, 199, seed=3))
    resized = image.resize((337, 224), Image.BICUBIC)  # 224 * 300 / 199 = 337.69
    cropped = np.asarray(resized.crop((56, 0, 280, 224))).astype(np.float32) / 255.0  # (337 - 224) // 2
    expected = (cropped - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    actual = ImageTransform(224)(image)
    np.testing.assert_allclose(actual.numpy(), expected.transpose(2, 0, 1), atol=1e-5, rtol=0)


def pixel(image: Image.Image) -> tuple[int, ...]:
    return tuple(int(v) for v in to_rgb(image).getpixel((0, 0)))


def test_fully_transparent_rgba_becomes_white():
    assert pixel(Image.new("RGBA", (2, 2), (10, 20, 30, 0))) == (255, 255, 255)


def test_half_transparent_rgba_blends_with_white():
    assert pixel(Image.new("RGBA", (2, 2), (0, 0, 0, 128))) == (127, 127, 127)


def test_la_composites_on_white():
    assert pixel(Image.new("LA", (2, 2), (0, 0))) == (255, 255, 255)
    assert pixel(Image.new("LA", (2, 2), (40, 255))) == (40, 40, 40)


def test_premultiplied_la_converts():
    assert pixel(Image.new("La", (2, 2), (40, 255))) == (40, 40, 40)


def test_palette_transparency_index_becomes_white():
    image = Image.new("P", (2, 1))
    image.putpalette([200, 0, 0, 0, 0, 200] + [0] * 762)
    image.putpixel((1, 0), 1)
    image.info["transparency"] = 0
    assert np.asarray(to_rgb(image)).tolist() == [[[255, 255, 255], [0, 0, 200]]]


def test_palette_with_alpha_composites_on_white():
    image = Image.new("P", (2, 2))
    image.putpalette([255, 0, 0, 0] * 256, "RGBA")
    assert pixel(image) == (255, 255, 255)


def test_cmyk_cyan_is_rgb_cyan():
    assert pixel(Image.new("CMYK", (2, 2), (255, 0, 0, 0))) == (0, 255, 255)


def test_bilevel_is_black_and_white():
    assert pixel(Image.new("1", (2, 2), 1)) == (255, 255, 255)
    assert pixel(Image.new("1", (2, 2), 0)) == (0, 0, 0)


SIXTEEN_BIT_VALUES = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)


@pytest.mark.parametrize(
    "image",
    [
        Image.fromarray(SIXTEEN_BIT_VALUES),
        Image.frombytes("I;16B", (4, 1), SIXTEEN_BIT_VALUES.astype(">u2").tobytes()),
        Image.fromarray(SIXTEEN_BIT_VALUES.astype(np.int32)),
    ],
    ids=["I;16", "I;16B", "I"],
)
def test_sixteen_bit_values_scale_by_257(image):
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 1, 128, 255]


def test_sixteen_bit_transparency_key_becomes_white():
    image = Image.fromarray(np.array([[1000, 65535]], dtype=np.uint16))
    image.info["transparency"] = 1000
    assert np.asarray(to_rgb(image)).tolist() == [[[255, 255, 255], [255, 255, 255]]]
    image.info["transparency"] = 65535
    assert np.asarray(to_rgb(image)).tolist() == [[[4, 4, 4], [255, 255, 255]]]


def test_float_images_read_as_zero_to_one():
    image = Image.fromarray(np.array([[-1.0, 0.0, 0.5, 1.0, 7.0]], dtype=np.float32))
    assert np.asarray(to_rgb(image))[0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_every_mode_converts_to_rgb():
    for mode in ["1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV",
                 "I", "F", "I;16", "I;16L", "I;16B", "I;16N"]:
        assert to_rgb(Image.new(mode, (3, 2))).mode == "RGB", mode


def test_batch_of_paths_and_images_equals_single_calls(tmp_path):
    png, jpeg = tmp_path / "a.png", tmp_path / "b.jpg"
    make_image("RGBA", 50, 70).save(png)
    make_image("RGB", 90, 40).save(jpeg, quality=90)
    in_memory = [make_image("L", 64, 64), make_image("P", 30, 80)]
    items = [png, in_memory[0], str(jpeg), in_memory[1]]
    transform = ImageTransform(32)
    expected = torch.stack([transform(load_image(png)), transform(in_memory[0]),
                            transform(load_image(jpeg)), transform(in_memory[1])])
    batch = transform.batch(items)
    assert batch.shape == (4, 3, 32, 32)
    assert torch.equal(batch, expected)


def test_load_image_returns_fully_decoded_image(tmp_path):
    path = tmp_path / "ok.png"
    make_image("RGB", 20, 10).save(path)
    image = load_image(path)
    assert image.size == (20, 10) and np.asarray(image).shape == (10, 20, 3)


def write_truncated_jpeg(path):
    make_image("RGB", 128, 128).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    "name, write",
    [
        ("empty.png", lambda path: path.write_bytes(b"")),
        ("truncated.jpg", write_truncated_jpeg),
        ("notes.jpg", lambda path: path.write_text("not an image at all\n")),
    ],
)
def test_load_image_rejects_broken_files_naming_them(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    with pytest.raises(ImageLoadError, match=name):
        load_image(path)


def test_load_image_rejects_missing_file(tmp_path):
    with pytest.raises(ImageLoadError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_load_image_rejects_decompression_bomb(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    make_image("RGB", 64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow errors above twice this
    with pytest.raises(ImageLoadError, match="bomb.png"):
        load_image(path)


def test_batch_reports_the_broken_path(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty.jpg"):
        ImageTransform(32).batch([Image.new("RGB", (40, 40)), path])


def test_rejects_non_positive_image_size():
    with pytest.raises(ValueError):
        ImageTransform(0)


def test_rejects_mean_without_three_channels():
    with pytest.raises(ValueError):
        ImageTransform(224, mean=(0.5,))
