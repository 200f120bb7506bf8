import math
import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from clipforge.training.loss import contrastive_loss, sigmoid_loss
from clipforge.training.optim import cosine_lr, parameter_groups
from clipforge.models import create_model


def test_contrastive_loss_matches_a_hand_computed_example():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    # logits = [[1, 0.6], [0, 0.8]] with scale 1
    image_to_text = (-math.log(math.e / (math.e + math.exp(0.6))) - math.log(math.exp(0.8) / (1 + math.exp(0.8)))) / 2
    text_to_image = (-math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))) / 2
    loss = contrastive_loss(images, texts, torch.tensor(1.0))
    assert loss.item() == pytest.approx((image_to_text + text_to_image) / 2, abs=1e-6)
    assert contrastive_loss(images, texts, torch.tensor(1.0), local_loss=True).item() == pytest.approx(loss.item())


def test_sigmoid_loss_matches_a_hand_computed_example():
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    scale, bias = torch.tensor(2.0), torch.tensor(-1.0)
    logits = [[2 * 1 - 1, 2 * 0.6 - 1], [2 * 0 - 1, 2 * 0.8 - 1]]
    expected = -sum(math.log(1 / (1 + math.exp(-(1 if i == j else -1) * logits[i][j])))
                    for i in range(2) for j in range(2)) / 2
    assert sigmoid_loss(images, texts, scale, bias).item() == pytest.approx(expected, abs=1e-6)


def test_lower_temperature_sharpens_a_correct_ranking():
    images = F.normalize(torch.eye(4) + 0.1, dim=-1)
    assert contrastive_loss(images, images, torch.tensor(50.0)) < contrastive_loss(images, images, torch.tensor(1.0))


def _distributed_worker(rank: int, world_size: int, init_file: str, mode: str, queue) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 16, generator=generator)
    texts = torch.randn(8, 16, generator=generator)
    local = slice(rank * 4, (rank + 1) * 4)
    image_part = images[local].clone().requires_grad_(True)
    text_part = texts[local].clone().requires_grad_(True)
    scale = torch.tensor(3.0, requires_grad=True)
    a, b = F.normalize(image_part, dim=-1), F.normalize(text_part, dim=-1)
    if mode == "siglip":
        loss = sigmoid_loss(a, b, scale, torch.tensor(-2.0))
    else:
        loss = contrastive_loss(a, b, scale, local_loss=mode == "local")
    loss.backward()
    # DDP averages parameter gradients over ranks; do the same for the shared temperature.
    dist.all_reduce(scale.grad)
    queue.put((rank, loss.item(), image_part.grad.tolist(), text_part.grad.tolist(), (scale.grad / world_size).item()))
    dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["global", "local", "siglip"])
def test_gathered_loss_gradients_equal_the_single_process_loss(mode):
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        init_file = os.path.join(folder, "init")
        processes = [context.Process(target=_distributed_worker, args=(rank, 2, init_file, mode, queue))
                     for rank in range(2)]
        for process in processes:
            process.start()
        results = sorted(queue.get(timeout=120) for _ in processes)
        for process in processes:
            process.join(timeout=60)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(8, 16, generator=generator).requires_grad_(True)
    texts = torch.randn(8, 16, generator=generator).requires_grad_(True)
    scale = torch.tensor(3.0, requires_grad=True)
    a, b = F.normalize(images, dim=-1), F.normalize(texts, dim=-1)
    loss = sigmoid_loss(a, b, scale, torch.tensor(-2.0)) if mode == "siglip" else contrastive_loss(a, b, scale)
    loss.backward()
    # Each rank's parameter gradient is averaged over ranks by DDP, so a rank's share of the
    # full-batch gradient is its rows' gradient divided by world size.
    image_grads = torch.tensor([row for r in results for row in r[2]]) / 2
    text_grads = torch.tensor([row for r in results for row in r[3]]) / 2
    torch.testing.assert_close(image_grads, images.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(text_grads, texts.grad, atol=1e-6, rtol=1e-5)
    assert results[0][4] == pytest.approx(scale.grad.item(), abs=1e-6)
    if mode != "local":
        assert sum(r[1] for r in results) / 2 == pytest.approx(loss.item(), abs=1e-5)


def test_no_weight_decay_on_gains_biases_embeddings_and_temperature():
    model = create_model("tiny-vit")
    decay, exempt = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt_names = {names[id(p)] for p in exempt["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"logit_scale", "text.token_embedding.weight", "text.positional_embedding", "visual.class_embedding",
            "visual.positional_embedding", "text.ln_final.weight",
            "visual.transformer.resblocks.0.attn.in_proj_bias"} <= exempt_names
    assert {"visual.conv1.weight", "text.transformer.resblocks.0.attn.in_proj_weight", "text.text_projection",
            "visual.proj"} <= decay_names
    assert len(exempt_names) + len(decay_names) == len(names)
    assert exempt["weight_decay"] == 0.0 and decay["weight_decay"] == 0.1


def test_cosine_schedule_warms_up_linearly_then_decays_to_the_floor():
    lrs = [cosine_lr(step, 1.0, warmup_steps=10, total_steps=110, min_ratio=0.1) for step in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0) and lrs[60] == pytest.approx(0.55)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert cosine_lr(110, 1.0, 10, 110, 0.1) == pytest.approx(0.1)
