import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints import CheckpointError, DownloadError, infer_config, loading, read_weights
from clipforge.checkpoints.keys import from_file_keys, to_file_keys
from clipforge.core.download import sha256_of
from clipforge.models import create_model, get_config, list_models
from clipforge.text import Tokenizer, train_bpe
from conftest import random_text_tokens

CAPTIONS = [f"a {c} {s} on a {b} background" for c in ("red", "green", "blue", "yellow")
            for s in ("circle", "square", "triangle") for b in ("white", "black")] * 5


def outputs(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, model.image_size, model.image_size, generator=generator)
    text = random_text_tokens(3, model.context_length, model.vocab_size, [3, 8, model.context_length])
    with torch.no_grad():
        return model(images, text)


def assert_same_outputs(a, b, atol: float = 0.0):
    for x, y in zip(outputs(a), outputs(b)):
        torch.testing.assert_close(x, y, atol=atol, rtol=0 if atol == 0 else 1e-5)


class OpenAILayout(torch.nn.Module):
    """The model's parameters registered as OpenAI's CLIP class holds them (the text tower's at the
    top level, beside `visual` and `logit_scale`); its forward is the model's."""

    def __init__(self, model):
        super().__init__()
        self.visual = model.visual
        for name, child in model.text.named_children():
            self.add_module(name, child)
        for name, parameter in model.text.named_parameters(recurse=False):
            self.register_parameter(name, parameter)
        self.logit_scale = model.logit_scale
        object.__setattr__(self, "clip", model)  # not registered: its parameters are the ones above

    def forward(self, image, text):
        return self.clip(image, text)


def save_torchscript(model, path: Path, half: bool = True) -> None:
    """An archive laid out like OpenAI's release: a traced CLIP, weights stored in fp16."""
    images = torch.randn(1, 3, model.image_size, model.image_size)
    text = random_text_tokens(1, model.context_length, model.vocab_size, [5])
    traced = torch.jit.trace(OpenAILayout(model), (images, text), strict=False, check_trace=False)
    assert set(traced.state_dict()) == set(to_file_keys(model.state_dict()))
    (traced.half() if half else traced).save(str(path))


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_native_folder_round_trip_gives_identical_outputs(name, tmp_path):
    model = create_model(name)
    clipforge.save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded, preprocess = clipforge.load(tmp_path / "m")
    assert loaded.config == model.config
    assert preprocess.image_size == model.image_size
    assert_same_outputs(model, loaded)


def bundled_model():
    """tiny-vit with its own BPE vocabulary, learnt from CAPTIONS, attached."""
    tokenizer = train_bpe(CAPTIONS, vocab_size=600)
    config = get_config("tiny-vit")
    config.text.vocab_size, config.text.tokenizer = tokenizer.vocab_size, "bundled"
    model = create_model(config)
    model.tokenizer = tokenizer
    return model


def test_a_bundled_vocabulary_is_saved_and_reloaded_with_identical_ids(tmp_path):
    model = bundled_model()
    clipforge.save_model(model, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "merges.txt", "model.safetensors",
                                                                 "vocab.json"]
    loaded, _ = clipforge.load(tmp_path / "m")
    assert loaded.config.text.tokenizer == "bundled"
    assert loaded.tokenizer.vocab == model.tokenizer.vocab and loaded.tokenizer.merges == model.tokenizer.merges
    ids = model.tokenize(CAPTIONS[:4])
    assert torch.equal(loaded.tokenize(CAPTIONS[:4]), ids)
    assert torch.equal(clipforge.get_tokenizer(tmp_path / "m")(CAPTIONS[:4], context_length=32), ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)


def test_a_model_with_its_own_vocabulary_but_no_tokenizer_attached_is_not_saved_as_complete(tmp_path):
    config = get_config("tiny-vit")
    config.text.vocab_size, config.text.tokenizer = 600, "bundled"
    with pytest.raises(ValueError, match="own vocabulary"):
        clipforge.save_model(create_model(config), tmp_path / "x")
    assert not (tmp_path / "x" / "config.json").exists() and not (tmp_path / "x" / "vocab.json").exists()


def test_a_folder_whose_vocabulary_does_not_fit_its_model_is_refused(tmp_path):
    clipforge.save_model(bundled_model(), tmp_path / "m")
    Tokenizer.openai().save(tmp_path / "m")  # 49408 tokens for a 600-row embedding table
    with pytest.raises(CheckpointError, match="tokenizer does not fit"):
        clipforge.load(tmp_path / "m")


def test_a_folder_of_a_model_with_its_own_vocabulary_needs_its_vocabulary_files(tmp_path):
    clipforge.save_model(bundled_model(), tmp_path / "m")
    (tmp_path / "m" / "merges.txt").unlink()
    with pytest.raises(CheckpointError, match="vocab.json or merges.txt"):
        clipforge.load(tmp_path / "m")


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn", "forge-cnn-ngram"])
def test_saved_weights_keep_openais_key_layout(name, tmp_path):
    model = create_model(name)
    clipforge.save_model(model, tmp_path / "m")
    keys = set(read_weights(tmp_path / "m" / "model.safetensors")[0])
    assert "token_embedding.weight" in keys and "ln_final.weight" in keys and "text_projection" in keys
    assert not any(key.startswith("text.") for key in keys)
    assert keys == set(to_file_keys(model.state_dict()))
    assert {key.split(".")[0] for key in keys if "." in key} - {"visual", "transformer"} == {
        "token_embedding", "ln_final"}


@pytest.mark.parametrize("name", ["tiny-vit", "forge-cnn-ngram"])
def test_the_key_map_moves_only_the_text_tower(name):
    state = create_model(name).state_dict()
    files = to_file_keys(state)
    assert files["token_embedding.weight"] is state["text.token_embedding.weight"]
    assert files["logit_scale"] is state["logit_scale"]
    assert {k for k in files if k.startswith("visual.")} == {k for k in state if k.startswith("visual.")}
    assert list(from_file_keys(files)) == list(state)


@pytest.mark.parametrize("layout", ["pt-wrapped", "bin-plain", "safetensors-compiled"])
def test_openclip_files_load_with_their_wrappers(layout, tmp_path):
    model = create_model("tiny-vit")
    state = to_file_keys(model.state_dict())
    if layout == "pt-wrapped":
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "name": "run", "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif layout == "bin-plain":
        path = tmp_path / "open_clip_pytorch_model.bin"
        torch.save(state, path)
    else:
        path = tmp_path / "open_clip_model.safetensors"
        save_file({f"_orig_mod.{k}": v.contiguous() for k, v in state.items()}, str(path))
    loaded, _ = clipforge.load(path, config="tiny-vit")
    assert_same_outputs(model, loaded)


def test_bare_weights_need_an_activation_or_a_config(tmp_path):
    model = create_model("tiny-vit")
    torch.save(to_file_keys(model.state_dict()), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="activation='quick_gelu'"):
        clipforge.load(tmp_path / "w.pt")


@pytest.mark.parametrize("name", ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                  "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"])
def test_architecture_is_read_back_from_state_dict_shapes(name):
    with torch.device("meta"):
        state = {k: v for k, v in to_file_keys(create_model(name).state_dict()).items() if k != "logit_scale"}
    inferred, expected = infer_config(state, "quick_gelu"), get_config(name)
    for field in ("image_size", "width", "layers", "patch_size", "num_heads", "mlp_ratio"):
        assert getattr(inferred.vision, field) == getattr(expected.vision, field), field
    for field in ("context_length", "vocab_size", "width", "layers", "num_heads", "mlp_ratio"):
        assert getattr(inferred.text, field) == getattr(expected.text, field), field
    assert inferred.embed_dim == expected.embed_dim


@pytest.mark.parametrize("name", ["tiny-vit", "tiny-rn"])
def test_openai_torchscript_archive_loads_without_a_config(name, tmp_path):
    config = get_config(name).to_dict()
    config["vision"]["heads"] = config["text"]["heads"] = None  # OpenAI's one-head-per-64-channels rule
    config["activation"] = "quick_gelu"
    model = create_model(config)
    save_torchscript(model, tmp_path / "model.pt")
    state, kind = read_weights(tmp_path / "model.pt")
    assert kind == "torchscript" and state["logit_scale"].dtype == torch.float16
    loaded, _ = clipforge.load(tmp_path / "model.pt")
    assert loaded.config.activation == "quick_gelu" and loaded.logit_scale.dtype == torch.float32
    reference = create_model(config)
    reference.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in model.state_dict().items()})
    assert_same_outputs(reference, loaded)


def test_pickles_load_with_weights_only_so_no_code_runs(tmp_path):
    torch.save({"state_dict": to_file_keys(create_model("tiny-vit").state_dict()), "hook": functools.partial(print, "pwned")},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        clipforge.load(tmp_path / "evil.pt", config="tiny-vit")


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    state = to_file_keys(create_model("tiny-vit").state_dict())
    state["visual.proj"] = torch.zeros(64, 32)
    del state["ln_final.bias"]
    state["visual.extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as error:
        clipforge.load(tmp_path / "w.pt", config="tiny-vit")
    message = str(error.value)
    assert "missing keys: ln_final.bias" in message and "unexpected keys: visual.extra" in message
    assert "visual.proj (checkpoint (64, 32), model (64, 64))" in message
    with pytest.raises(CheckpointError, match="missing keys: .*visual.attnpool"):
        clipforge.load(tmp_path / "w.pt", config="tiny-rn")


def test_corrupt_or_missing_files_fail_clearly(tmp_path):
    (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="broken.pt"):
        clipforge.load(tmp_path / "broken.pt", config="tiny-vit")
    with pytest.raises(FileNotFoundError, match="published model"):
        clipforge.load(tmp_path / "nothing-here.pt")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(tmp_path):
    """An HTTP server on 127.0.0.1 serving `tmp_path/served`."""
    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def register(monkeypatch, name: str, url: str, sha256: str, config: str) -> None:
    registry = loading.pretrained_registry()
    registry[name] = loading.PretrainedWeights(url=url, sha256=sha256, config=config)
    monkeypatch.setattr(loading, "pretrained_registry", lambda: registry)


def test_published_name_downloads_verifies_and_then_loads_from_cache(local_server, monkeypatch, offline_cache):
    served, base = local_server
    model = create_model("tiny-vit")
    save_torchscript(model, served / "tiny.pt", half=False)
    register(monkeypatch, "tiny-published", f"{base}/tiny.pt", sha256_of(served / "tiny.pt"), "tiny-vit")
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    loaded, _ = clipforge.load("tiny-published")
    assert (offline_cache / "tiny-published.pt").is_file()
    assert_same_outputs(model, loaded)
    (served / "tiny.pt").unlink()  # the second load must come from the cache
    monkeypatch.setenv("CLIPFORGE_OFFLINE", "1")
    assert_same_outputs(model, clipforge.load("tiny-published")[0])


def test_download_with_wrong_checksum_leaves_nothing_in_the_cache(local_server, monkeypatch, offline_cache):
    served, base = local_server
    (served / "bad.pt").write_bytes(b"tampered")
    register(monkeypatch, "tiny-bad", f"{base}/bad.pt", "0" * 64, "tiny-vit")
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    with pytest.raises(DownloadError, match="SHA-256"):
        clipforge.load("tiny-bad")
    assert list(offline_cache.iterdir()) == []


def test_offline_with_empty_cache_says_what_to_download_and_where(offline_cache):
    with pytest.raises(DownloadError) as error:
        clipforge.load("ViT-B/32")
    message = str(error.value)
    assert "https://openaipublic.azureedge.net/clip/models/" in message and "ViT-B-32.pt" in message
    assert str(offline_cache / "ViT-B-32.pt") in message


def test_unreachable_server_says_what_to_download_and_where(monkeypatch, offline_cache):
    register(monkeypatch, "tiny-gone", "http://127.0.0.1:9/tiny.pt", "0" * 64, "tiny-vit")
    monkeypatch.delenv("CLIPFORGE_OFFLINE")
    with pytest.raises(DownloadError, match=f"save it as {offline_cache / 'tiny-gone.pt'}"):
        clipforge.load("tiny-gone")


def test_every_published_name_has_a_config():
    assert set(clipforge.list_pretrained()) <= set(list_models())
