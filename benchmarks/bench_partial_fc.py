"""Benchmark: the classifier's memory per process and its step time, Partial FC vs the full FC.

    python benchmarks/bench_partial_fc.py [--classes 200000] [--dim 512] [--batch 128] [--quick]

Two parts, written to ``results/partial_fc.json``:

1. **Computed** per-process bytes of the classification layer for 1M and 2M identities × 512-d,
   K = 1 and 8 processes, sample rates 1.0 and 0.1, 128 images per process: float32 weight +
   SGD momentum + weight gradient (the shard: C/K rows; dense, see facetrust.train.partial_fc) +
   one (global batch × sampled centres) logit matrix.  The reference is the full FC under DDP as
   the trainer runs it without Partial FC: every process holds all C rows and its own
   (128 × C) logits.
2. **Measured** on this machine, one process each in a fresh subprocess: the full FC
   (``MarginHead`` + ``F.cross_entropy``, the reference) vs ``PartialFC`` at sample rates 1.0 and
   0.1, and one rank of K = 8 (a ``PartialFC`` over C/8 classes fed the global batch: the tensors
   a rank of 8 holds, without the collectives' buffers), each a training step of forward,
   backward and SGD with momentum.  Memory = peak RSS of the step minus the RSS before the head
   was built; time = best of ``--repeat`` steps after a warm-up.  The sample-rate-1.0 loss must
   equal the full FC's (the script exits 1 otherwise).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

from harness import add_common_arguments, child_env, results_dir, run_measured, table, write_result

GIB = 2**30
MIB = 2**20


def computed_bytes(classes: int, dim: int, world_size: int, rate: float | None, per_process_batch: int) -> dict:
    """Per-process bytes: weight, momentum, gradient (rows held) and logits; ``rate`` None = full FC under DDP."""
    if rate is None:  # full FC: all rows on every process, logits of its own batch
        rows, logit_rows, columns = classes, per_process_batch, classes
    else:
        rows = classes // world_size + int(classes % world_size > 0)  # the largest shard
        logit_rows, columns = per_process_batch * world_size, min(rows, math.ceil(rate * rows))
    parameter_bytes = rows * dim * 4
    figures = {"weight": parameter_bytes, "momentum": parameter_bytes, "gradient": parameter_bytes,
               "logits": logit_rows * columns * 4}
    figures["total"] = sum(figures.values())
    return figures


def computed_table(dim: int, per_process_batch: int) -> list[dict]:
    rows = []
    for classes in (1_000_000, 2_000_000):
        for world_size in (1, 8):
            reference = computed_bytes(classes, dim, world_size, None, per_process_batch)
            for rate in (1.0, 0.1):
                ours = computed_bytes(classes, dim, world_size, rate, per_process_batch)
                rows.append({"classes": classes, "dim": dim, "world_size": world_size, "sample_rate": rate,
                             "per_process_batch": per_process_batch, "partial_fc_bytes": ours,
                             "full_fc_bytes": reference, "ratio_full_over_partial": reference["total"] / ours["total"]})
    return rows


# ------------------------------------------------------------------------------------- measured


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def measure_child(setting: str, classes: int, dim: int, batch: int, repeat: int) -> dict:
    """One setting in this (fresh) process: ``full``, ``partial-1.0``, ``partial-0.1`` or
    ``rank-of-8-0.1``; returns loss, best step seconds and the step's peak memory above the
    RSS before the head existed."""
    import torch
    import torch.nn.functional as F

    from facetrust.models.margins import build_head
    from facetrust.train.partial_fc import PartialFC

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(batch, dim, generator=generator)
    labels = torch.randint(0, classes, (batch,), generator=generator)
    head_classes = classes // 8 if setting.startswith("rank-of-8") else classes

    def training_step(classes_held: int):
        head = build_head("arcface", dim, classes_held, seed=1, s=64.0, m=0.5)
        step_labels = labels % classes_held
        if setting == "full":
            return head, lambda x, step: F.cross_entropy(head(x, step_labels), step_labels)
        module = PartialFC(head, float(setting.rsplit("-", 1)[1]), seed=0)
        return module, lambda x, step: module(x, step_labels, step)[0]

    # A first step on a tiny head pages in the kernels, autograd and BLAS buffers (~150 MiB that
    # every run pays once); the baseline is taken after it.
    times, losses = _steps(*training_step(64), embeddings, 1)
    baseline = _rss_bytes()
    times, losses = _steps(*training_step(head_classes), embeddings, repeat + 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"setting": setting, "classes": head_classes, "first_loss": losses[0], "step_s": min(times[1:]),
            "peak_above_baseline_mib": (peak - baseline) / MIB}


def _steps(module, loss_of, embeddings, count: int) -> tuple[list[float], list[float]]:
    """``count`` SGD steps (momentum 0.9, weight decay 5e-4); their seconds and losses."""
    import torch

    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    times, losses = [], []
    for step in range(count):  # the first step creates the momentum: the warm-up
        x = embeddings.clone().requires_grad_(True)
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(x, step)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return times, losses


def measured(classes: int, dim: int, batch: int, repeat: int, settings: tuple[str, ...]) -> list[dict]:
    results = []
    for setting in settings:
        run = run_measured([sys.executable, __file__, "--child", setting, "--classes", str(classes), "--dim", str(dim),
                            "--batch", str(batch), "--repeat", str(repeat)], env=child_env())
        results.append(json.loads(run["stdout"].strip().splitlines()[-1]))
    return results


def report(computed: list[dict], measurements: list[dict], dim: int) -> str:
    rows = [[f"{r['classes'] // 10**6}M x {dim}", r["world_size"], r["sample_rate"],
             f"{r['partial_fc_bytes']['total'] / GIB:.2f}", f"{r['full_fc_bytes']['total'] / GIB:.2f}",
             f"{r['ratio_full_over_partial']:.1f}x"] for r in computed]
    text = [table(rows, ["classes x dim", "processes", "sample rate", "Partial FC GiB/process",
                         "full FC (DDP) GiB/process", "full / partial"])]
    full = next(m for m in measurements if m["setting"] == "full")
    rows = [[m["setting"], f"{m['classes']:,}", f"{m['peak_above_baseline_mib']:.0f}",
             f"{full['peak_above_baseline_mib'] / max(m['peak_above_baseline_mib'], 1e-9):.1f}x",
             f"{m['step_s'] * 1e3:.0f}", f"{full['step_s'] / m['step_s']:.1f}x", f"{m['first_loss']:.4f}"]
            for m in measurements]
    text.append(table(rows, ["measured (1 CPU thread)", "classes held", "peak MiB above baseline",
                             "full / this", "step ms", "full / this", "first loss"]))
    return "\n\n".join(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--classes", type=int, default=200_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_child(args.child, args.classes, args.dim, args.batch, args.repeat)))
        return
    if args.quick:  # the agreement check only
        args.classes, args.dim, args.batch, args.repeat = 4_000, 64, 32, 1
    computed = computed_table(512, 128)
    settings = ("full", "partial-1.0") if args.quick else ("full", "partial-1.0", "partial-0.1", "rank-of-8-0.1")
    measurements = measured(args.classes, args.dim, args.batch, args.repeat, settings)
    print(report(computed, measurements, 512))
    full, same = (next(m for m in measurements if m["setting"] == name) for name in ("full", "partial-1.0"))
    agree = math.isclose(full["first_loss"], same["first_loss"], rel_tol=1e-5)
    print(f"sample rate 1.0 loss {same['first_loss']:.6f} vs full FC {full['first_loss']:.6f}: "
          f"{'agree' if agree else 'DISAGREE'}")
    if not agree:
        raise SystemExit(1)
    if not args.quick:
        partial = next((m for m in measurements if m["setting"] == "partial-0.1"), same)
        result = {"computed": computed, "measured": measurements,
                  # Headline: peak memory of the full FC over Partial FC at sample rate 0.1 (measured).
                  "ratio": full["peak_above_baseline_mib"] / partial["peak_above_baseline_mib"],
                  "measured_sizes": {"classes": args.classes, "dim": args.dim, "batch": args.batch,
                                     "repeat": args.repeat}}
        print(f"wrote {write_result('partial_fc', result, results_dir(args))}")


if __name__ == "__main__":
    main()
