import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import clipforge
from clipforge.checkpoints import CheckpointError, DownloadError, infer_config, loading, read_weights
from clipforge.checkpoints.download import sha256_of
from clipforge.models import create_model, get_config, list_models
from conftest import random_text_tokens


def outputs(model, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, model.image_size, model.image_size, generator=generator)
    text = random_text_tokens(3, model.context_length, model.vocab_size, [3, 8, model.context_length])
    with torch.no_grad():
        return model(images, text)


def assert_same_outputs(a, b, atol: float = 0.0):
    for x, y in zip(outputs(a), outputs(b)):
        torch.testing.assert_close(x, y, atol=atol, rtol=0 if atol == 0 else 1e-5)


def save_torchscript(model, path: Path, half: bool = True) -> None:
    """An archive laid out like OpenAI's release: a traced CLIP, weights stored in fp16."""
    images = torch.randn(1, 3, model.image_size, model.image_size)
    text = random_text_tokens(1, model.context_length, model.vocab_size, [5])
    traced = torch.jit.trace(model, (images, text), strict=False, check_trace=False)
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


def test_native_folder_keeps_a_bundled_vocabulary(tmp_path):
    from clipforge.text import train_bpe

    captions = [f"a {c} {s} on a {b} background" for c in ("red", "green", "blue", "yellow")
                for s in ("circle", "square", "triangle") for b in ("white", "black")] * 5
    tokenizer = train_bpe(captions, vocab_size=600)
    config = get_config("tiny-vit").to_dict()
    config["text"]["vocab_size"] = tokenizer.vocab_size
    model = create_model(config)
    with pytest.raises(ValueError, match="tokenizer"):
        clipforge.save_model(create_model(config | {"text": config["text"] | {"tokenizer": "bundled"}}), tmp_path / "x")
    clipforge.save_model(model, tmp_path / "m", tokenizer=tokenizer)
    loaded, _ = clipforge.load(tmp_path / "m")
    assert loaded.config.text.tokenizer == "bundled"
    reloaded = clipforge.get_tokenizer(tmp_path / "m")
    ids = tokenizer(captions[:4], context_length=32)
    assert torch.equal(reloaded(captions[:4], context_length=32), ids)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids), rtol=0, atol=0)


@pytest.mark.parametrize("layout", ["pt-wrapped", "bin-plain", "safetensors-compiled"])
def test_openclip_files_load_with_their_wrappers(layout, tmp_path):
    model = create_model("tiny-vit")
    state = model.state_dict()
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
    torch.save(model.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="activation='quick_gelu'"):
        clipforge.load(tmp_path / "w.pt")


@pytest.mark.parametrize("name", ["RN50", "RN101", "RN50x4", "RN50x16", "RN50x64",
                                  "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336"])
def test_architecture_is_read_back_from_state_dict_shapes(name):
    with torch.device("meta"):
        state = {k: v for k, v in create_model(name).state_dict().items() if k != "logit_scale"}
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
    torch.save({"state_dict": create_model("tiny-vit").state_dict(), "hook": functools.partial(print, "pwned")},
               tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="cannot read"):
        clipforge.load(tmp_path / "evil.pt", config="tiny-vit")


def test_mismatched_checkpoint_names_the_keys(tmp_path):
    state = create_model("tiny-vit").state_dict()
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
