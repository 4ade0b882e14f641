"""Numeric command-line options checked at parse time (argparse ``type=`` helpers).

A value outside its range stops the command before any work with exit code 2 and argparse's
one-line ``argument --OPTION: …`` naming the option and the allowed range (never a traceback
later, never a silently odd result such as ``--bootstrap -5`` giving metrics without intervals).
"""

from __future__ import annotations

import argparse
import math

#: Seeds: what numpy's and torch's generators both take, and what the params schema allows.
SEED_MAX = 2**63 - 1
#: Threads of one process (``--threads``, params ``threads``): each reserves its stack, and
#: ``threads: 100000`` exhausted the address space (the next shared library failed to map).
THREADS_MAX = 1024
# Longer numerals are not numbers anyone means (and int() of 5,000 digits raises).
_MAX_DIGITS = 40


def _number_text(text: str) -> str:
    text = text.strip()
    if len(text) > _MAX_DIGITS:
        raise argparse.ArgumentTypeError(f"{text[:20]}… ({len(text)} characters) is not a number we accept")
    return text


def _range(low, high, low_open: bool = False, high_open: bool = False) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    low_text = "-inf" if low is None else f"{low:g}" if isinstance(low, float) else str(low)
    high_text = "inf" if high is None else f"{high:g}" if isinstance(high, float) else str(high)
    return f"{left}{low_text}, {high_text}{right}"


def integer(low: int | None = None, high: int | None = None):
    """``type=`` for an integer in [low, high] (None: unbounded)."""
    allowed = _range(low, high)

    def parse(text: str) -> int:
        try:
            value = int(_number_text(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not an integer in {allowed}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is outside the allowed range {allowed}")
        return value

    parse.__name__ = "integer"
    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False, high_open: bool = False):
    """``type=`` for a finite number in the interval (open ends as given)."""
    allowed = _range(low, high, low_open, high_open)

    def parse(text: str) -> float:
        try:
            value = float(_number_text(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number in {allowed}") from None
        if not math.isfinite(value) or not _within(value, low, high, low_open, high_open):
            raise argparse.ArgumentTypeError(f"{text[:40]} is outside the allowed range {allowed}")
        return value

    parse.__name__ = "number"
    return parse


def _within(value: float, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    if high is not None and (value >= high if high_open else value > high):
        return False
    return True


def rates(text: str) -> list[float]:
    """``--fars 1e-4,1e-3``: comma-separated false accept (match) rates, each in (0, 1]."""
    parse = number(0.0, 1.0, low_open=True)
    values = []
    for item in text.split(","):
        if item.strip():
            try:
                values.append(parse(item))
            except argparse.ArgumentTypeError as error:
                raise argparse.ArgumentTypeError(f"rate list {text[:60]!r}: {error}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"rate list {text[:60]!r}: expected comma-separated rates in (0, 1]")
    return values


def size(text: str) -> tuple[int, int]:
    """``--size 112,112`` (or 112x96, or 112): height and width in pixels, each in [1, 4096]."""
    parts = text.lower().replace("x", ",").split(",")
    parse = integer(1, 4096)
    try:
        if len(parts) > 2:
            raise argparse.ArgumentTypeError(f"{len(parts)} numbers")
        height, width = (parse(p) for p in parts) if len(parts) == 2 else (parse(parts[0]),) * 2
    except argparse.ArgumentTypeError as error:
        raise argparse.ArgumentTypeError(f"size {text[:40]!r}: expected H,W or HxW or N with each in [1, 4096] "
                                         f"({error})") from None
    return height, width


seed = integer(0, SEED_MAX)
positive = integer(1)
non_negative = integer(0)
threads = integer(1, THREADS_MAX)
probability = number(0.0, 1.0)
level = number(0.0, 1.0, low_open=True, high_open=True)
