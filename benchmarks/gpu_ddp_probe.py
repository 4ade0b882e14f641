"""NCCL DDP probe, run by ``gpu_check.sh`` under ``torchrun --nproc_per_node=<GPU count>`` (even 1).

Each process joins the group (NCCL on GPUs, gloo in ``--smoke`` mode on the CPU), all-reduces a
256 MiB buffer (bus bandwidth, as nccl-tests defines it: 2(n-1)/n · bytes / time), then trains a
small iResNet wrapped in DistributedDataParallel for a few steps on its own shard of a seeded
batch.  DDP averages the gradients, so every process must end with the same weights: rank 0
checks that each process's parameter checksum equals its own and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="gloo on the CPU, tiny sizes")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F

    from facetrust.models import build_backbone

    rank, world, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    if args.smoke:
        device, backend, megabytes = torch.device("cpu"), "gloo", 4
    else:
        torch.cuda.set_device(local % torch.cuda.device_count())
        device, backend, megabytes = torch.device("cuda", torch.cuda.current_device()), "nccl", 256
    dist.init_process_group(backend)
    try:
        buffer = torch.ones(megabytes * 2**20 // 4, device=device)
        dist.all_reduce(buffer)  # warm-up: the communicators are set up here
        synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        synchronize()
        start = time.perf_counter()
        for _ in range(5):
            dist.all_reduce(buffer)
        synchronize()
        seconds = (time.perf_counter() - start) / 5
        bus = 2 * (world - 1) / world * buffer.numel() * 4 / seconds / 1e9 if world > 1 else float("nan")
        correct = bool(torch.all(buffer == world ** 6))

        torch.manual_seed(0)
        model = build_backbone("iresnet", embedding_size=32, input_size=(32, 32),
                               layers=[1, 1, 1, 1], width=8).to(device)
        ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(8 * world, 3, 32, 32, generator=generator)[rank::world].to(device)
        targets = torch.randn(8 * world, 32, generator=generator)[rank::world].to(device)
        for _ in range(args.steps):
            loss = F.mse_loss(ddp(images), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum().reshape(1)
        sums = [torch.zeros_like(checksum) for _ in range(world)]
        dist.all_gather(sums, checksum)
        same = all(bool(torch.equal(s, sums[0])) for s in sums)
        if rank == 0:
            print(f"DDP probe: {world} process(es), backend {dist.get_backend()}, all-reduce of {megabytes} MiB "
                  f"correct: {correct}, {seconds * 1e3:.1f} ms, bus bandwidth "
                  f"{'n/a (one process)' if world == 1 else f'{bus:.0f} GB/s'}; "
                  f"weights equal on every process after {args.steps} DDP steps: {same}", flush=True)
        return 0 if (same and correct) else 1
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
