"""Hub names ("hf-hub:ORG/NAME[@REVISION]") and open_clip's pretrained tags, offline: each test lays out
a Hugging Face cache exactly as `huggingface_hub` stores downloads (models--ORG--NAME/refs/REF,
snapshots/COMMIT/FILE linked to blobs/HASH) and loads from it with HF_HUB_OFFLINE=1."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
import torch
from PIL import Image

import clipforge
from clipforge.checkpoints import CheckpointError, DownloadError, export_huggingface
from clipforge.checkpoints.hub import find_openclip_tag, list_openclip_pretrained, openclip_registry
from clipforge.checkpoints.keys import to_file_keys
from clipforge.checkpoints.loading import pretrained_registry
from clipforge.core.extras import MissingExtraError
from clipforge.images import CLIP_MEAN, CLIP_STD, ImageTransform
from clipforge.models import create_model, list_models

ROOT = Path(__file__).parents[1]
# A ViT whose head counts follow OpenAI's one-per-64-channels rule, so its architecture reads back
# from the weights' shapes alone (the open_clip-tag path); OpenAI's 49408-token vocabulary.
TINY = {"embed_dim": 32, "vision": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text": {"context_length": 16, "vocab_size": 49408, "width": 64, "layers": 1}}
BUILT = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336", "RN50", "RN101", "RN50x4", "RN50x16", "RN50x64")


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline; huggingface_hub reads its settings at import, so its
    constants are set along with the environment."""
    home, cache = tmp_path / "hf", tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    for name, value in (("HF_HOME", str(home)), ("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", True)):
        monkeypatch.setenv(name, "1" if value is True else value)
        monkeypatch.setattr(huggingface_hub.constants, name, value)
    return cache


def add_snapshot(cache: Path, repo_id: str, files: dict[str, bytes], ref: str = "main") -> str:
    """Store `files` as one commit of `repo_id`, the way `hf_hub_download` leaves them; returns the commit."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(b"".join(sorted(name.encode() + data for name, data in files.items()))).hexdigest()
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(commit)
    return commit


def tiny_model(activation: str, seed: int):
    torch.manual_seed(seed)
    return create_model({**TINY, "activation": activation})


def openclip_files(model, quick_gelu: bool, preprocess_cfg: dict | None = None,
                   weights: str = "open_clip_model.safetensors") -> dict[str, bytes]:
    """open_clip_config.json + the weights in OpenCLIP's key layout, as open_clip's push_to_hf_hub writes them."""
    config = model.config
    model_cfg = {"embed_dim": config.embed_dim,
                 "vision_cfg": {"image_size": config.vision.image_size, "layers": config.vision.layers,
                                "width": config.vision.width, "patch_size": config.vision.patch_size},
                 "text_cfg": {"context_length": config.text.context_length, "vocab_size": config.text.vocab_size,
                              "width": config.text.width, "heads": config.text.num_heads, "layers": config.text.layers}}
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    document = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    return {"open_clip_config.json": json.dumps(document).encode(), weights: weight_bytes(model, weights)}


def weight_bytes(model, filename: str) -> bytes:
    state = to_file_keys({key: value.contiguous() for key, value in model.state_dict().items()})
    if filename.endswith(".safetensors"):
        from safetensors.torch import save
        return save(state)
    import io
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def transformers_files(model, tmp_path: Path, processor: dict | None = None) -> dict[str, bytes]:
    folder = export_huggingface(model, tmp_path / "export")
    files = {path.name: path.read_bytes() for path in folder.iterdir()}
    if processor is not None:
        files["preprocessor_config.json"] = json.dumps(processor).encode()
    return files


def assert_same_outputs(expected, loaded):
    images = torch.randn(2, 3, expected.image_size, expected.image_size, generator=torch.Generator().manual_seed(1))
    tokens = expected.tokenize(["a photo of a cat", "a red square"])
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), expected.encode_image(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded.encode_text(tokens), expected.encode_text(tokens), atol=1e-5, rtol=1e-5)


def test_an_open_clip_repo_loads_with_its_activation_and_preprocessing(hub_cache):
    model = tiny_model("quick_gelu", seed=1)
    preprocess_cfg = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "interpolation": "bilinear",
                      "resize_mode": "squash"}
    add_snapshot(hub_cache, "org/tiny-openclip", openclip_files(model, quick_gelu=True, preprocess_cfg=preprocess_cfg))
    loaded, preprocess = clipforge.load("hf-hub:org/tiny-openclip")
    assert loaded.config.activation == "quick_gelu"
    assert_same_outputs(model, loaded)
    assert (preprocess.image_size, preprocess.mean, preprocess.std) == (32, (0.5,) * 3, (0.25,) * 3)
    assert (preprocess.interpolation, preprocess.resize_mode) == ("bilinear", "squash")


def test_an_open_clip_repo_without_quick_gelu_is_gelu_and_reads_the_pickled_weights(hub_cache):
    model = tiny_model("gelu", seed=2)
    add_snapshot(hub_cache, "org/tiny-bin", openclip_files(model, quick_gelu=False, weights="open_clip_pytorch_model.bin"))
    loaded, preprocess = clipforge.load("hf-hub:org/tiny-bin")
    assert loaded.config.activation == "gelu"
    assert_same_outputs(model, loaded)
    assert (preprocess.mean, preprocess.std, preprocess.interpolation) == (CLIP_MEAN, CLIP_STD, "bicubic")


def test_a_transformers_repo_loads_with_its_hidden_act_and_image_processor(hub_cache, tmp_path):
    model = tiny_model("gelu", seed=3)  # transformers' default hidden_act is quick_gelu: gelu proves it is read
    processor = {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": 32},
                 "resample": 2, "do_center_crop": True, "crop_size": {"height": 32, "width": 32},
                 "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.3, 0.4]}
    add_snapshot(hub_cache, "org/tiny-transformers", transformers_files(model, tmp_path, processor))
    loaded, preprocess = clipforge.load("hf-hub:org/tiny-transformers")
    assert loaded.config.activation == "gelu"
    assert_same_outputs(model, loaded)
    assert (preprocess.mean, preprocess.std, preprocess.interpolation) == ((0.4, 0.5, 0.6), (0.2, 0.3, 0.4), "bilinear")
    assert preprocess.resize_mode == "shortest"


def test_a_revision_other_than_main_loads_by_name_by_argument_and_by_commit(hub_cache):
    main, tagged = tiny_model("gelu", seed=4), tiny_model("gelu", seed=5)
    add_snapshot(hub_cache, "org/tiny-revisions", openclip_files(main, quick_gelu=False))
    commit = add_snapshot(hub_cache, "org/tiny-revisions", openclip_files(tagged, quick_gelu=False), ref="v1")
    assert_same_outputs(main, clipforge.load_model("hf-hub:org/tiny-revisions"))
    assert_same_outputs(tagged, clipforge.load_model("hf-hub:org/tiny-revisions@v1"))
    assert_same_outputs(tagged, clipforge.load_model("hf-hub:org/tiny-revisions", revision="v1"))
    assert_same_outputs(tagged, clipforge.load_model(f"hf-hub:org/tiny-revisions@{commit}"))
    with pytest.raises(ValueError, match="pins revision"):
        clipforge.load_model("hf-hub:org/tiny-revisions@v1", revision="main")


def test_offline_a_repo_or_revision_missing_from_the_cache_says_how_to_get_it(hub_cache):
    with pytest.raises(DownloadError, match="hf download org/absent --revision v2"):
        clipforge.load("hf-hub:org/absent@v2")
    add_snapshot(hub_cache, "org/tiny-main-only", openclip_files(tiny_model("gelu", seed=6), quick_gelu=False))
    with pytest.raises(DownloadError, match="not in the Hugging Face cache"):
        clipforge.load("hf-hub:org/tiny-main-only@v9")


def test_huggingface_hub_offline_variable_alone_keeps_loading_off_the_network(tmp_path):
    """A fresh interpreter sees only the environment (no CLIPFORGE_OFFLINE), as a user's shell would."""
    cache = tmp_path / "hub"
    model = tiny_model("quick_gelu", seed=7)
    add_snapshot(cache, "org/tiny-env", openclip_files(model, quick_gelu=True))
    torch.save(model.state_dict(), tmp_path / "expected.pt")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "CLIPFORGE_OFFLINE"))}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path))
    code = textwrap.dedent(f"""
        import torch, clipforge
        model = clipforge.load_model("hf-hub:org/tiny-env")
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items()), "weights differ"
        print(model.config.activation)
    """)
    result = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "quick_gelu"


def test_an_open_clip_tag_loads_its_hub_repo_with_the_tables_activation_and_preprocessing(hub_cache):
    entry = find_openclip_tag("ViT-B-32", "laion2b_s34b_b79k")
    assert entry.hf_hub == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K" and entry.activation == "gelu"
    model = tiny_model("gelu", seed=8)
    add_snapshot(hub_cache, entry.hf_hub, {"open_clip_model.safetensors": weight_bytes(model, ".safetensors")})
    for loaded, preprocess in (clipforge.load("ViT-B-32", pretrained="laion2b_s34b_b79k"),
                               clipforge.load("ViT-B/32", pretrained="LAION2B-s34b-b79k"),
                               clipforge.load("ViT-B-32:laion2b_s34b_b79k")):
        assert loaded.config.activation == "gelu"
        assert_same_outputs(model, loaded)
        assert (preprocess.mean, preprocess.std, preprocess.interpolation) == (CLIP_MEAN, CLIP_STD, "bicubic")


def test_a_tag_with_its_own_mean_and_std_gets_them(hub_cache):
    entry = find_openclip_tag("ViT-L-14", "laion2b_s32b_b82k")
    add_snapshot(hub_cache, entry.hf_hub, {"open_clip_model.safetensors": weight_bytes(tiny_model("gelu", 9), ".safetensors")})
    _, preprocess = clipforge.load("ViT-L-14", pretrained="laion2b_s32b_b82k")
    assert (preprocess.mean, preprocess.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def test_a_quickgelu_tag_gets_quick_gelu_under_either_architecture_name(hub_cache):
    entry = find_openclip_tag("ViT-B-32-quickgelu", "metaclip_400m")
    assert entry.hf_hub == "timm/vit_base_patch32_clip_224.metaclip_400m"
    model = tiny_model("quick_gelu", seed=10)
    add_snapshot(hub_cache, entry.hf_hub, {"open_clip_pytorch_model.bin": weight_bytes(model, ".bin")})
    for name in ("ViT-B-32-quickgelu:metaclip_400m", "ViT-B-32:metaclip_400m"):
        loaded = clipforge.load_model(name)
        assert loaded.config.activation == "quick_gelu"
        assert_same_outputs(model, loaded)


def test_a_tag_published_with_its_sha256_resolves_to_that_url(hub_cache, offline_cache):
    """OpenAI's tags come from OpenAI's release URL, checked against the published SHA-256."""
    with pytest.raises(DownloadError) as error:
        clipforge.load("RN50", pretrained="openai")
    assert pretrained_registry()["RN50"].url in str(error.value)
    assert str(offline_cache / "RN50.pt") in str(error.value)


def test_the_cli_reads_a_tagged_model_name(hub_cache, capsys):
    entry = find_openclip_tag("ViT-B-16", "laion2b_s34b_b88k")
    add_snapshot(hub_cache, entry.hf_hub, {"open_clip_model.safetensors": weight_bytes(tiny_model("gelu", 11), ".safetensors")})
    from clipforge.cli import main
    assert main(["tokenize", "--model", "ViT-B-16:laion2b_s34b_b88k", "a cat"]) in (0, None)
    row = json.loads(capsys.readouterr().out)
    assert row["text"] == "a cat" and len(row["ids"]) >= 3
    assert main(["models"]) in (0, None)
    assert "ViT-B-32:laion2b_s34b_b79k" in capsys.readouterr().out


def test_unknown_tags_and_misused_arguments_are_refused_with_what_exists():
    with pytest.raises(CheckpointError, match="laion2b_s34b_b79k"):
        clipforge.load("ViT-B-32", pretrained="no_such_tag")
    with pytest.raises(CheckpointError, match="architectures with tags are"):
        clipforge.load("tiny-vit", pretrained="openai")
    with pytest.raises(CheckpointError, match="ViT-B-32-quickgelu has no open_clip pretrained tag"):
        clipforge.load("ViT-B-32-quickgelu", pretrained="laion2b_s34b_b79k")  # a GELU tag: no quickgelu variant
    with pytest.raises(ValueError, match="drop activation="):
        clipforge.load("ViT-B-32:laion2b_s34b_b79k", activation="quick_gelu")
    with pytest.raises(ValueError, match="not a Hub name"):
        clipforge.load("hf-hub:no-slash")


def test_hub_loading_without_huggingface_hub_names_the_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # an import of it now fails as if not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'clipforge\[hub\]'"):
        clipforge.load("hf-hub:org/anything")


def test_the_table_covers_every_built_architecture_and_their_quickgelu_variants():
    pairs = list_openclip_pretrained()
    architectures = {architecture for architecture, _ in pairs}
    assert architectures == set(BUILT) | {f"{name}-quickgelu" for name in BUILT}
    assert {name.removesuffix("-quickgelu") for name in architectures} <= set(list_models())
    assert len([pair for pair in pairs if not pair[0].endswith("-quickgelu")]) == 58
    registry = openclip_registry()
    for (architecture, tag), entry in registry.items():
        assert entry.hf_hub or entry.url, entry.name
        assert entry.activation in ("gelu", "quick_gelu")
        if architecture.endswith("-quickgelu"):
            assert entry.activation == "quick_gelu"
        elif entry.activation == "quick_gelu":
            assert (architecture + "-quickgelu", tag) in registry
    for name in ("RN50", "RN101", "RN50x4", "RN50x16", "RN50x64", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"):
        openai, published = registry[name, "openai"], pretrained_registry()[name]
        assert (openai.url, openai.sha256, openai.activation) == (published.url, published.sha256, "quick_gelu")
    assert registry["ViT-B-32", "laion400m_e31"].sha256_prefix == "d867053b"
    listed = clipforge.list_pretrained(tags=True)
    assert clipforge.list_pretrained() == listed[:9] and "ViT-B-32:laion2b_s34b_b79k" in listed


def test_image_transform_squash_and_bilinear_follow_pil():
    image = Image.effect_noise((60, 40), 60).convert("RGB")
    squash = ImageTransform(32, resize_mode="squash", interpolation="bilinear")(image)
    pixels = torch.from_numpy(np.asarray(image.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32))
    expected = (pixels.permute(2, 0, 1) / 255 - torch.tensor(CLIP_MEAN)[:, None, None]) \
        / torch.tensor(CLIP_STD)[:, None, None]
    torch.testing.assert_close(squash, expected, atol=1e-5, rtol=0)
    assert not torch.equal(ImageTransform(32)(image), squash)
    with pytest.raises(ValueError, match="resize_mode"):
        ImageTransform(32, resize_mode="longest")
