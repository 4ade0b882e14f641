"""Benchmark: log C_d(kappa) + gradient on device (facetrust) vs the SCF official path (scipy ive on
the CPU each step, tensor copied out and back).

    python benchmarks/bench_bessel.py [--d 512] [--batch 1024] [--repeats 50]

Prints the time per call of forward+backward for each path and device, the ratio to the scipy
path, and the largest disagreement of log I between them where ive does not underflow.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.special import ive

from facetrust.maths.bessel import log_iv, log_vmf_normalizer


def scipy_path(d: int, kappa: torch.Tensor) -> torch.Tensor:
    """What the official SCF code does: ive on the CPU in numpy, log, back to the tensor's device.
    (It floors ive at 1e-6 and has no gradient through ive; here only the cost is measured.)"""
    nu = d / 2 - 1
    values = ive(nu, kappa.detach().cpu().double().numpy())
    log_iv_values = torch.from_numpy(np.log(1e-6 + values)).to(kappa.device, kappa.dtype) + kappa
    return nu * torch.log(kappa) - (d / 2) * math.log(2 * math.pi) - log_iv_values


def time_call(fn, kappa: torch.Tensor, repeats: int) -> float:
    def once():
        k = kappa.detach().requires_grad_(True)
        fn(k).sum().backward()

    once()  # warm up
    if kappa.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        once()
    if kappa.is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    kappa = torch.exp(
        torch.empty(args.batch, dtype=torch.float64).uniform_(math.log(10), math.log(2e4), generator=generator)
    )
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float32, torch.float64):
            k = kappa.to(device, dtype)
            ours = time_call(lambda x: log_vmf_normalizer(args.d, x), k, args.repeats)
            ref = time_call(lambda x: scipy_path(args.d, x), k, args.repeats)
            print(
                f"d={args.d} batch={args.batch} {device} {str(dtype).split('.')[-1]}: "
                f"facetrust {ours * 1e3:.3f} ms/call, scipy path {ref * 1e3:.3f} ms/call, "
                f"ratio scipy/facetrust {ref / ours:.2f}"
            )
    nu = args.d / 2 - 1
    scaled = ive(nu, kappa.numpy())
    ok = scaled > 1e-280
    diff = np.abs(log_iv(nu, kappa).numpy()[ok] - (np.log(scaled[ok]) + kappa.numpy()[ok]))
    rel = diff / np.abs(np.log(scaled[ok]) + kappa.numpy()[ok])
    print(f"max relative difference of log I_{nu:g} vs scipy over {ok.sum()} kappas: {rel.max():.2e}")


if __name__ == "__main__":
    main()
