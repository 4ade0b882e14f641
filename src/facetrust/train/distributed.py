"""Data-parallel training under ``torchrun`` or ``srun``: process group, samplers, synchronised BatchNorm.

Two launchers, one trainer:

* ``torchrun --nproc_per_node=K facetrust train …`` (or ``python -m facetrust.train.trainer``) sets
  ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
* ``srun --nodes=N --ntasks=K facetrust train …`` (SLURM, one task per process, across nodes) sets
  ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``, ``SLURM_LOCALID`` and ``SLURM_STEP_NODELIST``;
  :func:`slurm_rendezvous` turns them into the same variables: the rendezvous host is the first
  node of the step (where SLURM's block distribution puts task 0) and the port is derived from the
  job id (``MASTER_PORT`` overrides it), so every task computes the same address on its own.

:func:`init_distributed` reads them and joins the group with ``env://`` (NCCL on CUDA, Gloo on
CPU).  torchrun's variables win when both are present; a SLURM batch script or a one-task step
(``SLURM_STEP_NUM_TASKS`` 1 or absent) is one process.  Without any of them everything degrades
to one process.

BatchNorm: each process sees batch/K images, so plain BN would normalise with different
statistics than a single process on the whole batch.  We synchronise BN across processes so
that a K-process run computes the same function as one process on the global batch (up to the
order of float additions): ``nn.SyncBatchNorm`` on CUDA, and on the CPU, where PyTorch's
SyncBatchNorm refuses to run, :class:`GlooSyncBatchNorm` below.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def expand_hostlist(hostlist: str) -> list[str]:
    """SLURM's compressed host list (``"gpu[01-03,07],login1"``) as host names, in order.

    The syntax of ``scontrol show hostnames``: comma-separated entries, each a prefix with at
    most one bracket of comma-separated numbers or ranges ``a-b`` (zero padding kept, as
    ``01-03`` → ``01 02 03``), then an optional suffix."""
    hosts, entry, depth = [], "", 0
    for char in hostlist.strip() + ",":
        if char == "," and depth == 0:
            if entry:
                hosts.extend(_expand_entry(entry, hostlist))
            entry = ""
            continue
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth not in (0, 1):
            raise ValueError(f"SLURM host list {hostlist!r}: nested or unbalanced brackets")
        entry += char
    if depth:
        raise ValueError(f"SLURM host list {hostlist!r}: unbalanced brackets")
    return hosts


def _expand_entry(entry: str, hostlist: str) -> list[str]:
    match = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", entry)
    if match is None:
        if "[" in entry or "]" in entry:
            raise ValueError(f"SLURM host list {hostlist!r}: cannot read {entry!r}")
        return [entry]
    prefix, ranges, suffix = match.groups()
    names = []
    for part in ranges.split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or (high and not high.isdigit()) or (high and int(high) < int(low)):
            raise ValueError(f"SLURM host list {hostlist!r}: bad range {part!r}")
        width = len(low)
        names.extend(f"{prefix}{number:0{width}d}{suffix}" for number in range(int(low), int(high or low) + 1))
    return names


def slurm_rendezvous(environ: Mapping[str, str] = os.environ) -> dict[str, str] | None:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for a process
    that ``srun`` started as one task of a multi-task step; None when this is not such a process
    (torchrun's own variables present, no SLURM step, or a step of one task)."""
    if "RANK" in environ and "WORLD_SIZE" in environ:
        return None
    tasks = environ.get("SLURM_STEP_NUM_TASKS")
    if tasks is None or "SLURM_PROCID" not in environ or int(tasks) <= 1:
        return None
    nodelist = environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST")
    if not nodelist:
        raise RuntimeError("srun started this task without SLURM_STEP_NODELIST: cannot find the rendezvous host")
    job_id = int(environ.get("SLURM_JOB_ID", "0"))
    return {
        "RANK": environ["SLURM_PROCID"],
        "WORLD_SIZE": tasks,
        "LOCAL_RANK": environ.get("SLURM_LOCALID", "0"),
        "MASTER_ADDR": environ.get("MASTER_ADDR") or expand_hostlist(nodelist)[0],
        # one port per job, the same on every task; unprivileged and below the Linux ephemeral range
        "MASTER_PORT": environ.get("MASTER_PORT") or str(15000 + job_id % 20000),
    }


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group that torchrun or srun describes in the environment; else a
    single-process DistInfo.

    ``device``: "cpu" or "cuda" to force; default CUDA when available.  On CUDA each process takes
    GPU ``LOCAL_RANK`` among those it sees (modulo their number: SLURM may bind one GPU per task)."""
    slurm = slurm_rendezvous()
    if slurm is not None:
        os.environ.update(slurm)  # env:// reads them, and so does anything the trainer starts
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        index = local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", init_method="env://",
                                rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank, dev)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over processes (a detached copy); the value itself in one process."""
    value = value.detach().clone()
    if info.distributed:
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= info.world_size
    return value


def broadcast_object(obj, info: DistInfo):
    """Rank 0's ``obj`` on every process."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward sums the incoming gradients over processes too (the
    gradient of Σ_r x_r with respect to x_r, given every process's loss depends on the sum)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the whole global batch, on any backend.

    Two differentiable all-reduces (:class:`_AllReduceSum`, whose backward all-reduces the
    gradients): (count, Σx) per channel gives the global mean, then Σ(x − mean)² the global
    biased variance used to normalise (two passes: no E[x²] − mean² cancellation); the running
    variance gets the unbiased estimate, as ``nn.BatchNorm`` does.  Same state dict as
    BatchNorm{1,2}d.
    In eval mode, or outside a process group, it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {input.dim()}D")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        channels = input.shape[1]
        shape = [1, channels] + [1] * (input.dim() - 2)
        count = torch.tensor([float(input.numel() // channels)], dtype=input.dtype, device=input.device)
        sums = _AllReduceSum.apply(torch.cat([count, input.sum(dims)]))
        total = sums[0]
        mean = sums[1:] / total
        centred = input - mean.reshape(shape)
        var = _AllReduceSum.apply((centred * centred).sum(dims)) / total  # biased, for normalising
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        out = centred * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, info: DistInfo) -> nn.Module:
    """Replace every BatchNorm by its synchronised form when running distributed (in place; the
    state dict keys and values are unchanged)."""
    if not info.distributed:
        return module
    if info.device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _convert_gloo(module)


def _convert_gloo(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlooSyncBatchNorm):
        sync = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                 module.track_running_stats)
        if module.affine:  # keep the same Parameter objects (and their requires_grad)
            sync.weight, sync.bias = module.weight, module.bias
        if module.track_running_stats:
            sync.running_mean, sync.running_var = module.running_mean, module.running_var
            sync.num_batches_tracked = module.num_batches_tracked
        sync.train(module.training)
        return sync
    for name, child in module.named_children():
        module.add_module(name, _convert_gloo(child))
    return module


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """``DistributedDataParallel`` around ``module`` when running distributed, else ``module``."""
    if not info.distributed:
        return module
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


__all__ = [
    "DistInfo",
    "GlooSyncBatchNorm",
    "all_reduce_mean",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "convert_sync_batchnorm",
    "expand_hostlist",
    "init_distributed",
    "slurm_rendezvous",
    "wrap_ddp",
]

