"""Data-parallel training on the CPU (gloo): synchronised BatchNorm and a 2-process torchrun run.

Tolerance: a 2-process run computes the same function as one process on the same global batch
(the same samples per step: DistributedSampler shards the permutation the single-process sampler
uses; BatchNorm statistics are synchronised; DDP averages the gradients of two half-batch mean
losses = the gradient of the global mean loss).  Only the order of float32 additions differs
(per-process partial sums, all-reduce), which moves values by a few ulps per operation; after
3 SGD steps we observed max |Δ| ≈ 2e-5 on values of order 10, so we allow 1e-4 absolute.
Without synchronised BN the half-batch statistics alone change the result by far more (checked
below on the BN layer itself).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from train_helpers import make_tiny_rec, tiny_config

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sync_bn_worker(rank: int, world_size: int, port: int, x: torch.Tensor, out_dir: str) -> None:
    import torch.distributed as dist

    from facetrust.train.distributed import GlooSyncBatchNorm

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        bn = GlooSyncBatchNorm(x.shape[1])
        with torch.no_grad():
            bn.weight.copy_(torch.linspace(0.5, 1.5, x.shape[1]))
            bn.bias.copy_(torch.linspace(-1, 1, x.shape[1]))
        part = x.chunk(world_size)[rank].clone().requires_grad_(True)
        out = bn(part)
        # the loss of the global batch is the sum of the per-process parts
        (out * torch.arange(out.numel()).reshape(out.shape).float()).sum().backward()
        torch.save({"out": out.detach(), "grad_x": part.grad, "grad_w": bn.weight.grad,
                    "running_mean": bn.running_mean, "running_var": bn.running_var},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_gloo_sync_batchnorm_in_a_group_of_one_is_exactly_batchnorm(tmp_path):
    import torch.distributed as dist

    from facetrust.train.distributed import DistInfo, GlooSyncBatchNorm, convert_sync_batchnorm

    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1)) * 2 + 0.5
    reference = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    synced = convert_sync_batchnorm(
        nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)), DistInfo(world_size=2))
    synced.load_state_dict(reference.state_dict())
    assert isinstance(synced[1], GlooSyncBatchNorm) and synced.state_dict().keys() == reference.state_dict().keys()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        out_ref, out_sync = reference(x), synced(x)
        (out_ref * x).sum().backward()
        (out_sync * x).sum().backward()
    finally:
        dist.destroy_process_group()
    assert torch.allclose(out_sync, out_ref, atol=1e-5)
    assert torch.allclose(synced[0].weight.grad, reference[0].weight.grad, atol=1e-4)
    assert torch.allclose(synced[1].weight.grad, reference[1].weight.grad, atol=1e-4)
    assert torch.allclose(synced[1].running_var, reference[1].running_var, atol=1e-6)
    assert torch.allclose(synced[1].running_mean, reference[1].running_mean, atol=1e-6)


@pytest.mark.slow
def test_gloo_sync_batchnorm_matches_batchnorm_on_the_whole_batch(tmp_path):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 4, 4, generator=generator) * 3 + 1
    mp.spawn(_sync_bn_worker, args=(2, _free_port(), x, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]

    reference = nn.BatchNorm2d(3)
    with torch.no_grad():
        reference.weight.copy_(torch.linspace(0.5, 1.5, 3))
        reference.bias.copy_(torch.linspace(-1, 1, 3))
    xr = x.clone().requires_grad_(True)
    outs = reference(xr)
    # same per-element weights as the workers applied to their halves
    half = x.shape[0] // 2
    weights = torch.cat([torch.arange(half * 48).reshape(half, 3, 4, 4).float()] * 2)
    (outs * weights).sum().backward()

    assert torch.allclose(torch.cat([p["out"] for p in parts]), outs.detach(), atol=1e-5)
    assert torch.allclose(torch.cat([p["grad_x"] for p in parts]), xr.grad, atol=1e-4)
    assert torch.allclose(parts[0]["grad_w"] + parts[1]["grad_w"], reference.weight.grad, rtol=1e-5, atol=1e-3)
    for p in parts:
        assert torch.allclose(p["running_mean"], reference.running_mean, atol=1e-6)
        assert torch.allclose(p["running_var"], reference.running_var, atol=1e-5)
    # plain BN on one half would see different statistics: the synchronisation matters
    assert not torch.allclose(nn.BatchNorm2d(3)(x[:half]).detach(), outs.detach()[:half], atol=1e-2)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    import json

    rec = make_tiny_rec(tmp_path / "rec")
    config = tiny_config(epochs=1, max_steps=3, warmup_epochs=0, log_every=1)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
               f"--master_port={_free_port()}", "-m", "facetrust.train.trainer",
               "--config", str(config_path), "--rec", str(rec), "--out", str(tmp_path / "ddp"), "--device", "cpu"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]

    from facetrust.train.trainer import train

    train(config, rec, tmp_path / "single", device="cpu")
    ddp = torch.load(tmp_path / "ddp" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["step"] == single["step"] == 3
    for part in ("backbone", "head"):
        assert ddp[part].keys() == single[part].keys()
        for key, value in single[part].items():
            assert torch.allclose(ddp[part][key].float(), value.float(), atol=1e-4, rtol=0), (part, key)
    # the logs agree too, and only rank 0 wrote one
    ddp_log = (tmp_path / "ddp" / "train_log.csv").read_text().splitlines()
    single_log = (tmp_path / "single" / "train_log.csv").read_text().splitlines()
    assert len(ddp_log) == len(single_log) == 4
    for a, b in zip(ddp_log[1:], single_log[1:]):
        assert abs(float(a.split(",")[2]) - float(b.split(",")[2])) < 1e-3


@pytest.mark.slow
def test_two_srun_tasks_on_two_nodes_train_like_one_process(tmp_path):
    """The environment srun gives two tasks of a two-node step (each the only task on its node:
    SLURM_LOCALID 0): the trainer finds rank, world size and the rendezvous host in it."""
    import json

    rec = make_tiny_rec(tmp_path / "rec")
    config = tiny_config(epochs=1, max_steps=3, warmup_epochs=0, log_every=1)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in
             ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    step = {"SLURM_JOB_ID": "77", "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_LOCALID": "0",
            "SLURM_STEP_NODELIST": "localhost,node-b", "MASTER_PORT": str(_free_port()), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "facetrust.train.trainer", "--config", str(config_path), "--rec", str(rec),
               "--out", str(tmp_path / "srun"), "--device", "cpu"]
    tasks = [subprocess.Popen(command, cwd=REPO, env={**clean, **step, "SLURM_PROCID": str(rank)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    outputs = [task.communicate(timeout=180)[0] for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]

    from facetrust.train.trainer import train

    train(config, rec, tmp_path / "single", device="cpu")
    srun = torch.load(tmp_path / "srun" / "checkpoint.pt", weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert srun["step"] == single["step"] == 3
    for part in ("backbone", "head"):
        for key, value in single[part].items():
            assert torch.allclose(srun[part][key].float(), value.float(), atol=1e-4, rtol=0), (part, key)
    # one group of two, its rendezvous on the step's first node (rank 0 logs it)
    assert "data-parallel: 2 processes (gloo), rendezvous localhost:" in outputs[0]
    assert "data-parallel" not in outputs[1]
