"""Benchmark: reject-verification curve vs. one TAR@FAR and vs. the naive per-fraction recompute.

Prints, for P random pairs (default 5,000,000, 0.5 % genuine):
- the time of one TAR@FAR computation (``sklearn.metrics.roc_curve`` + nearest point),
- the naive curve (``roc_curve`` on the kept pairs for every fraction), measured on a few
  fractions and extrapolated to all of them (clearly labelled), unless ``--naive-all``,
- the fast curve (:func:`facetrust.evaluate.reject.reject_curve`), and the ratio fast / single,
- a check that fast and naive agree exactly on the fractions measured.

Times are the best of ``--repeat`` runs (the machine may be shared).
Usage: ``python benchmarks/bench_reject.py [--pairs 5000000] [--fractions 101] [--repeat 3] [--seed 0]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facetrust.evaluate.reject import REJECT_FARS, reject_curve, reject_curve_naive
from facetrust.evaluate.roc import roc_points, tar_at_far


def make_pairs(n_pairs: int, genuine_rate: float, seed: int):
    """Random scores where genuine pairs score higher and uncertain pairs are noisier."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n_pairs) < genuine_rate).astype(np.int8)
    uncertainty = rng.gamma(2.0, 0.5, n_pairs)
    scores = (0.1 + 0.5 * labels + 0.1 * (1 + uncertainty) * rng.standard_normal(n_pairs)).astype(np.float32)
    return scores, labels, uncertainty


def timed(function, *args, repeat: int = 1, **kwargs):
    """(value, best wall time over ``repeat`` runs): the minimum is the least disturbed by other load."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        value = function(*args, **kwargs)
        best = min(best, time.perf_counter() - start)
    return value, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--genuine-rate", type=float, default=0.005)
    parser.add_argument("--fractions", type=int, default=101, help="fractions 0 … 0.5, evenly spaced")
    parser.add_argument("--naive-sample", type=int, default=3, help="fractions the naive loop really runs")
    parser.add_argument("--naive-all", action="store_true", help="run the naive loop on every fraction")
    parser.add_argument("--repeat", type=int, default=3, help="time single and fast this often, keep the best")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    scores, labels, uncertainty = make_pairs(args.pairs, args.genuine_rate, args.seed)
    fractions = np.linspace(0.0, 0.5, args.fractions)
    print(f"pairs {args.pairs:,}  genuine {int(labels.sum()):,}  fractions {fractions.size}  FARs {REJECT_FARS}")

    def single():
        fpr, tpr, _ = roc_points(labels, scores)
        return tar_at_far(fpr, tpr, REJECT_FARS)

    _, single_s = timed(single, repeat=args.repeat)
    print(f"one TAR@FAR (sklearn roc_curve + nearest):          {single_s:8.2f} s")

    curve, fast_s = timed(reject_curve, scores, labels, uncertainty, REJECT_FARS, fractions, repeat=args.repeat)
    print(f"fast reject curve, {fractions.size} fractions:                {fast_s:8.2f} s")

    sample = fractions if args.naive_all else fractions[np.linspace(0, fractions.size - 1, args.naive_sample).astype(int)]
    naive, naive_s = timed(reject_curve_naive, scores, labels, uncertainty, REJECT_FARS, sample)
    if args.naive_all:
        print(f"naive loop, {fractions.size} fractions (measured):             {naive_s:8.2f} s")
        naive_total = naive_s
    else:
        naive_total = naive_s / sample.size * fractions.size
        print(f"naive loop, {fractions.size} fractions (EXTRAPOLATED from {sample.size}): {naive_total:8.2f} s")
    rows = np.searchsorted(fractions, sample)
    same = np.array_equal(curve.tar[rows], naive, equal_nan=True)
    print(f"fast == naive on the measured fractions: {same}")
    print(f"ratio fast / single TAR@FAR: {fast_s / single_s:.2f}x   naive / fast: {naive_total / fast_s:.1f}x")
    if not same:
        raise SystemExit("fast and naive curves differ")


if __name__ == "__main__":
    main()
