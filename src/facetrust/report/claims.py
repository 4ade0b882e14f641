"""Deciding "A beats B" with error bars: paired bootstrap intervals of a difference.

A comparison *holds* only when the percentile interval of the paired replicate differences
(:func:`facetrust.evaluate.bootstrap.paired_difference`: same replicate index = same resampled
subjects) lies above 0, *does not hold* when it lies below 0, and is **not resolved** otherwise; a
FAR below 10/n_impostor is never resolved (too few impostor pairs decide it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from facetrust.evaluate.bootstrap import Replicates, check_paired, paired_difference, read_replicates

HELD, PARTLY, NOT_HELD, NOT_CHECKED = "held", "partly held", "did not hold", "not checked"
NOT_RESOLVED = "not resolved"


@dataclass(frozen=True)
class Claim:
    """One checked claim: the sentence and its verdict (held / partly held / did not hold /
    not resolved / not checked)."""

    text: str
    verdict: str

    def markdown(self) -> str:
        return f"- **{self.verdict}**: {self.text}"


def finite(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def percent(value, digits: int = 2) -> str:
    """A fraction as a percentage string; an em dash when missing."""
    return f"{100.0 * float(value):.{digits}f}" if finite(value) else "—"


@dataclass(frozen=True)
class Comparison:
    """One paired comparison: the point difference a − b, its interval and the verdict."""

    delta: float
    lo: float
    hi: float
    verdict: str
    reason: str = ""

    def interval_text(self, scale: float = 100.0, unit: str = " points") -> str:
        if math.isnan(self.lo):
            return "no interval"
        return f"{scale * self.delta:+.2f}{unit}, {self.level_text()}[{scale * self.lo:+.2f}, {scale * self.hi:+.2f}]"

    def level_text(self) -> str:
        return "95 % CI " if not self.reason else f"{self.reason}; CI "


def decide(delta: float, lo: float, hi: float, *, unresolved: bool = False) -> Comparison:
    """The verdict of a paired difference with interval [lo, hi] (see the module docstring)."""
    if unresolved:
        return Comparison(delta, lo, hi, NOT_RESOLVED, "FAR below 10/n_impostor")
    if math.isnan(lo) or math.isnan(hi):
        return Comparison(delta, lo, hi, NOT_CHECKED, "no bootstrap replicates")
    if lo > 0:
        return Comparison(delta, lo, hi, HELD)
    if hi < 0:
        return Comparison(delta, lo, hi, NOT_HELD)
    return Comparison(delta, lo, hi, NOT_RESOLVED)


def compare_replicates(a: Replicates, b: Replicates, far: str, point_a: float, point_b: float, *,
                       level: float | None = None, unresolved: bool = False) -> Comparison:
    """Paired comparison of two replicate files at FAR key ``far`` (point values given)."""
    check_paired(a, b)
    lo, hi = paired_difference(a.column(far), b.column(far), level or a.level)
    return decide(float(point_a) - float(point_b), lo, hi, unresolved=unresolved)


def summary_verdict(verdicts: Sequence[str]) -> str:
    """held when every comparison held; did not hold when none held and some did not; partly held
    when some held; not resolved when nothing was resolved either way."""
    resolved = [v for v in verdicts if v in (HELD, NOT_HELD)]
    if not verdicts:
        return NOT_CHECKED
    if not resolved:
        return NOT_RESOLVED
    if all(v == HELD for v in verdicts):
        return HELD
    if not any(v == HELD for v in verdicts):
        return NOT_HELD
    return PARTLY


def count_text(verdicts: Sequence[str]) -> str:
    """``3 held, 1 did not hold, 8 not resolved`` (only the kinds that occur)."""
    parts = []
    for kind in (HELD, NOT_HELD, NOT_RESOLVED, NOT_CHECKED):
        n = sum(v == kind for v in verdicts)
        if n:
            parts.append(f"{n} {kind}")
    return ", ".join(parts) or "none"


_CACHE: dict[str, Replicates] = {}


def replicates_of(path: str) -> Replicates | None:
    """A replicate file, read once per process; None for an empty path."""
    if not isinstance(path, str) or not path:
        return None
    if path not in _CACHE:
        _CACHE[path] = read_replicates(path)
    return _CACHE[path]
