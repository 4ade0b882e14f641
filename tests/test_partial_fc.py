"""Partial FC (sharded, sampled class centres): equal to the full FC at sample rate 1, the sampling
rules below it, its config errors, and its training runs (deterministic, resumable, loadable).

The 2-process tests compare against one process on the same global batch with the tolerance of
tests/test_ddp.py (1e-4 absolute; only the order of float additions differs)."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from facetrust.errors import ConfigError
from facetrust.models.margins import build_head
from facetrust.train.config import TrainConfig
from facetrust.train.partial_fc import PartialFC
from train_helpers import assert_same_tree, make_tiny_rec, tiny_config

REPO = Path(__file__).resolve().parents[1]
HEADS = [("arcface", {"s": 16.0, "m": 0.4}), ("cosface", {"s": 16.0, "m": 0.35}),
         ("combined", {"s": 16.0, "m1": 1.0, "m2": 0.3, "m3": 0.2}), ("normface", {"s": 16.0})]


def _close(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-5) -> bool:
    """Equal to float rounding: the largest difference within ``rel`` of the largest magnitude
    (weight gradients are large, ~1/‖w‖ with ‖w‖ ≈ 0.03, so a fixed atol would not fit all sizes)."""
    return bool((a - b).abs().max() <= rel * b.abs().max())


def _batch(num_classes: int, n: int = 12, d: int = 8, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    embeddings = torch.randn(n, d, generator=generator) * 3
    labels = torch.randint(0, num_classes, (n,), generator=generator)
    return embeddings, labels


def _full_and_partial(kind: str, options: dict, num_classes: int, d: int = 8, rate: float = 1.0, seed: int = 0):
    full = build_head(kind, d, num_classes, seed=5, **options)
    return full, PartialFC(copy.deepcopy(full), rate, seed)


@pytest.mark.parametrize("kind,options", HEADS)
def test_sample_rate_one_in_one_process_equals_the_full_fc(kind, options):
    full, partial = _full_and_partial(kind, options, num_classes=20)
    embeddings, labels = _batch(20)
    x_full, x_partial = embeddings.clone().requires_grad_(True), embeddings.clone().requires_grad_(True)
    loss_full = F.cross_entropy(full(x_full, labels), labels)
    loss_partial, correct = partial(x_partial, labels, step=0)
    loss_full.backward()
    loss_partial.backward()
    assert partial.last_index is None and partial.weight.shape == full.weight.shape
    assert torch.allclose(loss_partial, loss_full, rtol=1e-6, atol=1e-6)
    assert _close(x_partial.grad, x_full.grad)
    assert _close(partial.weight.grad, full.weight.grad)
    accuracy = (full(embeddings, labels).argmax(1) == labels).float().mean()
    assert correct == accuracy


def test_sgd_steps_at_sample_rate_one_give_the_full_fc_weights():
    full, partial = _full_and_partial("arcface", {"s": 16.0, "m": 0.5}, num_classes=30)
    optimisers = [torch.optim.SGD(head.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
                  for head in (full, partial)]
    for step in range(4):
        embeddings, labels = _batch(30, seed=step)
        losses = (F.cross_entropy(full(embeddings, labels), labels), partial(embeddings, labels, step)[0])
        for loss, optimiser in zip(losses, optimisers):
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    assert not torch.allclose(full.weight, build_head("arcface", 8, 30, seed=5, s=16.0, m=0.5).weight)  # it moved
    assert _close(partial.weight, full.weight)


def test_sampled_centres_hold_every_positive_and_the_right_count():
    num_classes, rate = 100, 0.1  # ceil(0.1 * 100) = 10 centres per step
    full, partial = _full_and_partial("cosface", {"s": 16.0}, num_classes, rate=rate, seed=7)
    embeddings, _ = _batch(num_classes)
    labels = torch.tensor([3, 3, 17, 42, 42, 42, 99, 3, 17, 0, 0, 99])
    x = embeddings.clone().requires_grad_(True)
    loss, _ = partial(x, labels, step=0)
    loss.backward()
    index = partial.last_index
    assert index.numel() == 10 and index.unique().numel() == 10 and torch.equal(index, index.sort().values)
    assert set(labels.tolist()) <= set(index.tolist())
    rows_with_gradient = set(partial.weight.grad.abs().sum(1).nonzero()[:, 0].tolist())
    assert rows_with_gradient == set(index.tolist())  # unsampled rows: exactly zero gradient
    # the loss is the full FC's cross entropy restricted to the sampled classes
    restricted = full(embeddings, labels)[:, index]
    targets = torch.searchsorted(index, labels)
    assert torch.allclose(loss, F.cross_entropy(restricted, targets), rtol=1e-6, atol=1e-6)


def test_negatives_are_seeded_per_step_and_positives_alone_when_they_exceed_the_rate():
    def sampled(seed: int, step: int, labels=torch.tensor([1, 5, 5, 9])) -> list[int]:
        partial = PartialFC(build_head("arcface", 8, 200, seed=1), 0.05, seed)  # 10 of 200
        partial(_batch(200, n=labels.numel())[0], labels, step)
        return partial.last_index.tolist()

    assert sampled(3, 4) == sampled(3, 4)
    assert sampled(3, 4) != sampled(3, 5)  # another step, other negatives
    assert sampled(3, 4) != sampled(4, 4)
    many = torch.arange(0, 200, 10)  # 20 positives > 10
    assert sampled(3, 4, many) == many.tolist()


@pytest.mark.parametrize("partial_fc,key", [
    ({"sample_rate": 0}, "partial_fc.sample_rate"),
    ({"sample_rate": 1.5}, "partial_fc.sample_rate"),
    ({"sample_rate": "0.1"}, "partial_fc.sample_rate"),
    ({"sample_rate": True}, "partial_fc.sample_rate"),
    ({"rate": 0.1}, "partial_fc.rate"),
    (0.1, "partial_fc"),
])
def test_bad_partial_fc_values_are_config_errors_naming_the_key(partial_fc, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        TrainConfig.from_dict(tiny_config(partial_fc=partial_fc))


@pytest.mark.parametrize("head", [{"kind": "softmax"}, {"kind": "sphereface"}, {"kind": "magface"},
                                  {"kind": "scaleface", "m": 0.5}])
def test_partial_fc_refuses_heads_it_cannot_shard(head):
    with pytest.raises(ConfigError, match=f"'partial_fc'.*'head.kind' '{head['kind']}'"):
        TrainConfig.from_dict(tiny_config(head=head, partial_fc={"sample_rate": 0.5}))


def test_partial_fc_comes_from_the_model_train_block_and_stays_out_of_plain_configs():
    params = {"seed": 1, "models": {"m": {"backbone": "iresnet", "head": {"kind": "arcface"},
                                          "train": {"partial_fc": {"sample_rate": 0.2}}}}}
    assert TrainConfig.from_params(params, "m").partial_fc == {"sample_rate": 0.2}
    assert "partial_fc" not in TrainConfig.from_dict(tiny_config()).to_dict()
    with pytest.raises(ConfigError, match="'freeze_head'"):
        TrainConfig.from_dict(tiny_config(partial_fc={"sample_rate": 0.5}, init_from="x", freeze_head=True))


def _load(path):
    return torch.load(path, weights_only=True)


def test_training_at_sample_rate_one_equals_the_full_fc_and_loads_like_it(tmp_path):
    from facetrust.models.artifacts import load_margin, load_model
    from facetrust.train.trainer import train

    rec = make_tiny_rec(tmp_path / "rec")
    full = _load(train(tiny_config(max_steps=3), rec, tmp_path / "full"))
    partial = _load(train(tiny_config(max_steps=3, partial_fc={"sample_rate": 1.0}), rec, tmp_path / "pfc"))
    for part in ("backbone", "head"):
        assert partial[part].keys() == full[part].keys()
        for key, value in full[part].items():
            assert torch.allclose(partial[part][key].float(), value.float(), rtol=0, atol=1e-5), (part, key)
    assert partial["optimizer"]["state"].keys() == full["optimizer"]["state"].keys()
    backbone, config, extras = load_model(tmp_path / "pfc")
    margin, _ = load_margin(config, extras)
    assert margin.weight.shape == (4, 16) and torch.equal(margin.weight, partial["head"]["weight"])


def test_sampled_training_is_deterministic_and_resumes_bit_identically(tmp_path):
    from facetrust.train.trainer import train

    rec = make_tiny_rec(tmp_path / "rec", num_classes=16, per_class=2)  # batches of 8 hold < 16 classes
    config = tiny_config(epochs=2, partial_fc={"sample_rate": 0.75})
    first = train(config, rec, tmp_path / "a")
    assert first.read_bytes() == train(config, rec, tmp_path / "b").read_bytes()
    train(dict(config, max_steps=3), rec, tmp_path / "resumed")
    resumed = train(config, rec, tmp_path / "resumed", resume=True)
    assert_same_tree(_load(first), _load(resumed))
    sampled_full = _load(train(dict(config, partial_fc={"sample_rate": 1.0}), rec, tmp_path / "rate1"))
    assert not torch.allclose(_load(first)["head"]["weight"], sampled_full["head"]["weight"])  # sampling mattered


def test_resuming_a_partial_fc_run_without_it_is_refused(tmp_path):
    from facetrust.train.trainer import train

    rec = make_tiny_rec(tmp_path / "rec")
    train(tiny_config(max_steps=2, partial_fc={"sample_rate": 1.0}), rec, tmp_path / "run")
    with pytest.raises(ConfigError, match="partial_fc"):
        train(tiny_config(), rec, tmp_path / "run", resume=True)


# ------------------------------------------------------------------------------- two processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sharded_worker(rank: int, world_size: int, port: int, embeddings, labels, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        results = {}
        for rate in (1.0, 0.25):
            head = build_head("arcface", embeddings.shape[1], 21, seed=5, s=16.0, m=0.4)
            partial = PartialFC(head, rate, seed=3, rank=rank, world_size=world_size)
            part = embeddings.chunk(world_size)[rank].clone().requires_grad_(True)
            loss, correct = partial(part, labels.chunk(world_size)[rank], step=0)
            loss.backward()
            results[rate] = {"loss": loss.detach(), "correct": correct, "grad_x": part.grad,
                             "grad_w": partial.weight.grad, "start": partial.class_start,
                             "index": partial.last_index if partial.last_index is not None else torch.empty(0)}
            state = partial.full_state_dict()
            if rank == 0:
                results[rate]["full_weight"] = state["weight"]
        torch.save({str(k): v for k, v in results.items()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_shards_equal_one_process_full_fc_and_sample_their_own_positives(tmp_path):
    embeddings, labels = _batch(21, n=12)
    mp.spawn(_sharded_worker, args=(2, _free_port(), embeddings, labels, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    full = build_head("arcface", 8, 21, seed=5, s=16.0, m=0.4)
    x = embeddings.clone().requires_grad_(True)
    logits = full(x, labels)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    one = [r["1.0"] for r in ranks]
    assert [r["start"] for r in one] == [0, 11]  # 21 classes: 11 + 10
    for r in one:
        assert torch.allclose(r["loss"], loss, atol=1e-4, rtol=0)
        assert r["correct"] == (logits.argmax(1) == labels).float().mean()
    assert torch.allclose(torch.cat([r["grad_w"] for r in one]), full.weight.grad, atol=1e-4, rtol=0)
    # each process gets the gradient of its own half, times 2: DDP then averages the backbone's
    assert torch.allclose(torch.cat([r["grad_x"] for r in one]) / 2, x.grad, atol=1e-4, rtol=0)
    assert torch.equal(one[0]["full_weight"], full.weight.detach())  # the checkpoint gathers the shards
    for rank, r in enumerate(ranks):
        sampled = r["0.25"]
        start, size = sampled["start"], 11 - rank
        positives = {int(c) - start for c in labels if start <= c < start + size}
        assert set(sampled["index"].tolist()) >= positives
        assert sampled["index"].numel() == max(len(positives), -(-size // 4))  # ceil(0.25 * size)
        assert torch.isfinite(sampled["loss"]) and torch.allclose(sampled["loss"], ranks[0]["0.25"]["loss"])


@pytest.mark.slow
def test_two_process_partial_fc_training_matches_one_process_full_fc(tmp_path):
    rec = make_tiny_rec(tmp_path / "rec")
    config = tiny_config(epochs=1, max_steps=3, warmup_epochs=0, log_every=1)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(dict(config, partial_fc={"sample_rate": 1.0})))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={_free_port()}", "-m", "facetrust.train.trainer",
               "--config", str(config_path), "--rec", str(rec), "--out", str(tmp_path / "pfc"), "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]

    from facetrust.train.trainer import train

    train(config, rec, tmp_path / "single", device="cpu")
    sharded, single = _load(tmp_path / "pfc" / "checkpoint.pt"), _load(tmp_path / "single" / "checkpoint.pt")
    assert sharded["step"] == single["step"] == 3
    for part in ("backbone", "head"):
        assert sharded[part].keys() == single[part].keys()
        for key, value in single[part].items():
            assert sharded[part][key].shape == value.shape
            assert torch.allclose(sharded[part][key].float(), value.float(), atol=1e-4, rtol=0), (part, key)
    head_index = max(single["optimizer"]["state"])  # the head's weight is the last parameter
    assert torch.allclose(sharded["optimizer"]["state"][head_index]["momentum_buffer"],
                          single["optimizer"]["state"][head_index]["momentum_buffer"], atol=1e-4, rtol=0)
    sharded_log = (tmp_path / "pfc" / "train_log.csv").read_text().splitlines()
    single_log = (tmp_path / "single" / "train_log.csv").read_text().splitlines()
    assert len(sharded_log) == len(single_log) == 4
    for a, b in zip(sharded_log[1:], single_log[1:]):
        assert abs(float(a.split(",")[2]) - float(b.split(",")[2])) < 1e-3
