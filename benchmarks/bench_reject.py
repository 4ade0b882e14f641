"""Benchmark: reject-verification curve vs. one TAR@FAR and vs. the naive per-fraction recompute.

Prints, for P random pairs (default 5,000,000, 0.5 % genuine):
- the time of one TAR@FAR computation (``sklearn.metrics.roc_curve`` + nearest point),
- the naive curve (``roc_curve`` on the kept pairs for every fraction), measured on a few
  fractions and extrapolated to all of them (clearly labelled), unless ``--naive-all``,
- the fast curve (:func:`facetrust.evaluate.reject.reject_curve`), and the ratio fast / single,
- a check that fast and naive agree exactly on the fractions measured.

Times are the best of ``--repeat`` runs of process CPU time (the machine may be shared; CPU time is
less disturbed by other load than wall time, which is reported too).  Results go to
``results/reject_curve.json``; ``--quick`` runs 20,000 pairs and only checks agreement.
Usage: ``python benchmarks/bench_reject.py [--pairs 5000000] [--fractions 101] [--repeat 3] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facetrust.evaluate.reject import REJECT_FARS, reject_curve, reject_curve_naive
from facetrust.evaluate.roc import tar_at_far
from harness import add_common_arguments, results_dir, write_result


def make_pairs(n_pairs: int, genuine_rate: float, seed: int):
    """Random scores where genuine pairs score higher and uncertain pairs are noisier."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_pairs) < genuine_rate).astype(np.int8)
    uncertainty = rng.gamma(2.0, 0.5, n_pairs)
    scores = (0.1 + 0.5 * labels + 0.1 * (1 + uncertainty) * rng.standard_normal(n_pairs)).astype(np.float32)
    return scores, labels, uncertainty


def timed(function, *args, repeat: int = 1, **kwargs):
    """(value, best CPU time, best wall time) over ``repeat`` runs: minima are the least disturbed."""
    best_cpu = best_wall = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = function(*args, **kwargs)
        best_cpu = min(best_cpu, time.process_time() - start_cpu)
        best_wall = min(best_wall, time.perf_counter() - start)
    return value, best_cpu, best_wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--genuine-rate", type=float, default=0.005)
    parser.add_argument("--fractions", type=int, default=101, help="fractions 0 … 0.5, evenly spaced")
    parser.add_argument("--naive-sample", type=int, default=3, help="fractions the naive loop really runs")
    parser.add_argument("--naive-all", action="store_true", help="run the naive loop on every fraction")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.pairs, args.repeat, args.naive_all = 20_000, 1, True

    scores, labels, uncertainty = make_pairs(args.pairs, args.genuine_rate, args.seed)
    fractions = np.linspace(0.0, 0.5, args.fractions)
    print(f"pairs {args.pairs:,}  genuine {int(labels.sum()):,}  fractions {fractions.size}  FARs {REJECT_FARS}")

    from sklearn.metrics import roc_curve

    def single():  # the reference: one sklearn ROC and the nearest points
        fpr, tpr, _ = roc_curve(labels, scores)
        return tar_at_far(fpr, tpr, REJECT_FARS)

    _, single_cpu, single_wall = timed(single, repeat=args.repeat)
    print(f"one TAR@FAR (sklearn roc_curve + nearest):          {single_cpu:8.2f} s CPU  {single_wall:8.2f} s wall")
    curve, fast_cpu, fast_wall = timed(reject_curve, scores, labels, uncertainty, REJECT_FARS, fractions,
                                       repeat=args.repeat)
    print(f"fast reject curve, {fractions.size} fractions:                {fast_cpu:8.2f} s CPU  {fast_wall:8.2f} s wall")

    sample = fractions if args.naive_all else fractions[np.linspace(0, fractions.size - 1, args.naive_sample).astype(int)]
    naive, naive_cpu, _ = timed(reject_curve_naive, scores, labels, uncertainty, REJECT_FARS, sample)
    naive_total = naive_cpu / sample.size * fractions.size
    label = "measured" if args.naive_all else f"EXTRAPOLATED from {sample.size}"
    print(f"naive loop, {fractions.size} fractions ({label}): {naive_total:8.2f} s CPU")
    rows = np.searchsorted(fractions, sample)
    same = bool(np.array_equal(curve.tar[rows], naive, equal_nan=True))
    print(f"fast == naive on the measured fractions: {same}")
    print(f"ratio fast / single TAR@FAR: {fast_cpu / single_cpu:.2f}x CPU ({fast_wall / single_wall:.2f}x wall)   "
          f"naive / fast: {naive_total / fast_cpu:.1f}x")
    result = {"pairs": args.pairs, "genuine": int(labels.sum()), "fractions": int(fractions.size), "repeat": args.repeat,
              "single_tar_at_far_cpu_s": single_cpu, "single_tar_at_far_wall_s": single_wall,
              "fast_curve_cpu_s": fast_cpu, "fast_curve_wall_s": fast_wall, "naive_curve_cpu_s": naive_total,
              "naive_extrapolated": not args.naive_all, "ratio_fast_over_single_cpu": fast_cpu / single_cpu,
              "ratio_fast_over_single_wall": fast_wall / single_wall, "identical_to_naive": same,
              "ratio": fast_cpu / single_cpu}  # headline: the whole curve in units of one TAR@FAR (goal <= 1)
    if not args.quick:
        print(f"wrote {write_result('reject_curve', result, results_dir(args))}")
    if not same:
        raise SystemExit("fast and naive curves differ")


if __name__ == "__main__":
    main()
