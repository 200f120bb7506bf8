"""Training: a tiny end-to-end run, exact resume (also after SIGKILL), gradient accumulation with
cached features, and 2 processes x batch B equal to 1 process x batch 2B."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import clipforge
from clipforge.core.distributed import DistributedContext
from clipforge.data import open_source
from clipforge.data.builtin import resolve_training_source
from clipforge.data.shapes import generate, write_shapes_shards
from clipforge.text import Tokenizer
from clipforge.training.config import TrainConfig
from clipforge.training.trainer import _model, _train_step, train
from clipforge.training.optim import make_optimizer

TINY_MODEL = {"embed_dim": 32, "activation": "gelu",
              "vision": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "heads": 2},
              "text": {"context_length": 24, "vocab_size": 600, "width": 32, "layers": 2, "heads": 2}}


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_shapes_shards(root / "train", 256, seed=0, shard_size=64, image_size=32)
    write_shapes_shards(root / "heldout", 48, seed=0, split="heldout", shard_size=48, image_size=32)
    images = root / "images"
    images.mkdir()
    with open(root / "pairs.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        for i, (image, scene) in enumerate(generate(64, seed=1, image_size=32)):
            image.save(images / f"{i}.png")
            writer.writerow([f"images/{i}.png", scene.caption])
    (root / "model.json").write_text(json.dumps(TINY_MODEL))
    return root


def tiny_config(shapes_data: Path, output: Path, **overrides) -> TrainConfig:
    options = dict(model=str(shapes_data / "model.json"), vocab_size=600, train_data=[str(shapes_data / "train")],
                   eval_data=[str(shapes_data / "heldout")], steps=12, batch_size=32, lr=2e-3, warmup_steps=2,
                   workers=0, output_dir=str(output), checkpoint_every=4, keep_checkpoints=10, eval_every=6,
                   log_every=2, progress=False, precision="fp32")
    options.update(overrides)
    return TrainConfig(**options)


def losses(run: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


def test_tiny_run_lowers_the_loss_and_saves_a_loadable_model(shapes_data, tmp_path):
    result = train(tiny_config(shapes_data, tmp_path / "run", steps=24, eval_every=12))
    curve = [r["loss"] for r in result.history]
    assert len(curve) == 24 and sum(curve[-4:]) / 4 < sum(curve[:4]) / 4
    for protocol in ("one_caption", "all_captions"):
        assert f"heldout_{protocol}_image_to_text_R@1" in result.metrics
        assert f"heldout_{protocol}_text_to_image_R@10" in result.metrics
    assert "heldout_image_to_text_R@1" not in result.metrics  # the names `clipforge eval` prints, and only those
    model, preprocess = clipforge.load(result.model_dir)
    assert model.config.text.tokenizer == "bundled" and isinstance(model.tokenizer, Tokenizer)
    assert model.tokenizer.vocab_size == model.vocab_size == len(json.loads((result.model_dir / "vocab.json").read_text()))
    assert model.tokenizer.vocab == Tokenizer.from_files(tmp_path / "run" / "tokenizer").vocab
    image, scene = next(generate(1, seed=5, image_size=32))
    with torch.no_grad():
        out = model(preprocess(image)[None], model.tokenize([scene.caption, "a cat"]))
    assert out.logits_per_image.shape == (1, 2)
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0 and "final loss" in result.report.read_text()


def test_resume_from_a_checkpoint_repeats_the_uninterrupted_losses(shapes_data, tmp_path):
    train(tiny_config(shapes_data, tmp_path / "full"))
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoints").mkdir()
    (resumed_dir / "tokenizer").mkdir()
    for name in ("vocab.json", "merges.txt"):
        (resumed_dir / "tokenizer" / name).write_bytes((tmp_path / "full" / "tokenizer" / name).read_bytes())
    checkpoint = tmp_path / "full" / "checkpoints" / "step-0000004.pt"
    (resumed_dir / "checkpoints" / checkpoint.name).write_bytes(checkpoint.read_bytes())
    train(tiny_config(shapes_data, resumed_dir), resume="latest")
    expected, got = losses(tmp_path / "full"), losses(resumed_dir)
    assert sorted(got) == list(range(5, 13))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_a_run_killed_with_sigkill_resumes_to_the_same_curve(shapes_data, tmp_path):
    options = dict(steps=16, checkpoint_every=2, eval_data=[], augment_shift=2)  # shifts are drawn per step
    config = tiny_config(shapes_data, tmp_path / "killed", **options)
    reference = train(tiny_config(shapes_data, tmp_path / "reference", **options))
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "clipforge.cli", "train", "--config", str(tmp_path / "config.json")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list((tmp_path / "killed" / "checkpoints").glob("step-000000[4-9].pt")) and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed" / "model").exists()
    subprocess.run(command + ["--resume", "latest"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    expected, got = {r["step"]: r["loss"] for r in reference.history}, losses(tmp_path / "killed")
    assert sorted(got) == list(range(1, 17))
    for step in got:
        assert got[step] == pytest.approx(expected[step], rel=1e-5, abs=1e-6), step


def test_gradient_accumulation_with_cached_features_equals_the_full_batch():
    torch.manual_seed(0)
    first = clipforge.create_model(TINY_MODEL)
    second = clipforge.create_model(TINY_MODEL)
    second.load_state_dict(first.state_dict())
    images = torch.randn(16, 3, 32, 32)
    tokens = torch.randint(1, 598, (16, 24))
    tokens[:, 10] = 599
    results = []
    for model, accum in ((first, 1), (second, 4)):
        config = TrainConfig(accum_freq=accum, batch_size=16, grad_clip=None, precision="fp32")
        optimizer = make_optimizer(model, 1e-3, 0.1, (0.9, 0.98), 1e-6)
        loss = _train_step(model, model, optimizer, images, tokens, config, torch.autocast("cpu", enabled=False))
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters()}))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_locked_image_tower_does_not_change(shapes_data, tmp_path):
    result = train(tiny_config(shapes_data, tmp_path / "lit", steps=3, lock_image=True, eval_data=[]))
    torch.manual_seed(0)  # the trainer's seed: the same initial weights
    start = clipforge.create_model({**TINY_MODEL, "text": {**TINY_MODEL["text"], "vocab_size": 600}})
    trained = clipforge.load_model(result.model_dir)
    for name, value in trained.visual.state_dict().items():
        torch.testing.assert_close(value, start.visual.state_dict()[name], msg=name)
    assert not torch.equal(trained.text.text_projection, start.text.text_projection)


def test_locked_text_tower_does_not_change(shapes_data, tmp_path):
    result = train(tiny_config(shapes_data, tmp_path / "locked-text", steps=3, lock_text=True, eval_data=[]))
    torch.manual_seed(0)  # the trainer's seed: the same initial weights
    start = clipforge.create_model(TINY_MODEL)
    trained = clipforge.load_model(result.model_dir)
    for name, value in trained.text.state_dict().items():
        torch.testing.assert_close(value, start.text.state_dict()[name], msg=name)
    assert not torch.equal(trained.visual.proj, start.visual.proj)


@pytest.mark.parametrize("lock", ["lock_image", "lock_text"])
def test_the_trainer_sets_locks_and_gradient_checkpointing_on_the_models_towers(lock, shapes_data, tmp_path):
    config = tiny_config(shapes_data, tmp_path, grad_checkpointing=True, **{lock: True})
    source = open_source(resolve_training_source(config.train_data))
    model = _model(config, tmp_path, source, DistributedContext())
    assert model.text.transformer.grad_checkpointing and model.visual.transformer.grad_checkpointing
    locked, free = (model.visual, model.text) if lock == "lock_image" else (model.text, model.visual)
    assert not any(p.requires_grad for p in locked.parameters())
    assert all(p.requires_grad for p in free.parameters()) and model.logit_scale.requires_grad


def test_gradient_checkpointing_leaves_the_training_losses_unchanged(shapes_data, tmp_path):
    plain = train(tiny_config(shapes_data, tmp_path / "plain", steps=3, eval_data=[]))
    (tmp_path / "checkpointed" / "tokenizer").mkdir(parents=True)  # the same vocabulary, without learning it again
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "checkpointed" / "tokenizer" / name).write_bytes((tmp_path / "plain" / "tokenizer" / name).read_bytes())
    checkpointed = train(tiny_config(shapes_data, tmp_path / "checkpointed", steps=3, eval_data=[],
                                     grad_checkpointing=True))
    assert [r["loss"] for r in checkpointed.history] == pytest.approx([r["loss"] for r in plain.history], rel=1e-5)


def test_two_processes_with_batch_b_match_one_process_with_batch_2b(shapes_data, tmp_path):
    base = dict(train_data=[str(shapes_data / "pairs.csv")], eval_data=[], steps=4, caption_choice="txt",
                checkpoint_every=100, log_every=1, augment_shift=2)
    single = train(tiny_config(shapes_data, tmp_path / "single", batch_size=16, **base))
    config = tiny_config(shapes_data, tmp_path / "double", batch_size=8, **base)
    (tmp_path / "double.json").write_text(json.dumps(config.to_dict()))
    # both runs must learn the same vocabulary: give the second the first's
    (tmp_path / "double" / "tokenizer").mkdir(parents=True)
    for name in ("vocab.json", "merges.txt"):
        (tmp_path / "double" / "tokenizer" / name).write_bytes((tmp_path / "single" / "tokenizer" / name).read_bytes())
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                    "-m", "clipforge.cli", "train", "--config", str(tmp_path / "double.json")],
                   check=True, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    expected, got = {r["step"]: r["loss"] for r in single.history}, losses(tmp_path / "double")
    for step in expected:
        assert got[step] == pytest.approx(expected[step], rel=1e-4), step
    one, two = clipforge.load_model(single.model_dir), clipforge.load_model(tmp_path / "double" / "model")
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=name)


def test_a_new_run_refuses_to_mix_with_an_earlier_runs_checkpoints(shapes_data, tmp_path):
    train(tiny_config(shapes_data, tmp_path / "run", steps=2, eval_data=[]))
    with pytest.raises(FileExistsError, match="--resume latest"):
        train(tiny_config(shapes_data, tmp_path / "run", steps=2, eval_data=[]))


def test_fine_tuning_keeps_the_pretrained_models_own_vocabulary(shapes_data, tmp_path):
    """The default `tokenizer: learn` applies to fresh models only: a pretrained one comes with its own."""
    pretrained = train(tiny_config(shapes_data, tmp_path / "first", steps=4, eval_data=[])).model_dir
    tuned = train(tiny_config(shapes_data, tmp_path / "tuned", steps=2, eval_data=[], vocab_size=300,
                              pretrained=str(pretrained))).model_dir
    assert not (tmp_path / "tuned" / "tokenizer").exists()
    before, after = clipforge.load_model(pretrained).tokenizer, clipforge.load_model(tuned).tokenizer
    assert after.vocab == before.vocab and after.merges == before.merges
