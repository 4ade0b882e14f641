"""The Markdown toolkit of every report: verdicts from outcomes, numbers, tables, figure links and the
inputs section. Each paper's report (``report/*_report.py``) writes its Markdown with these.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from facetrust.report.claims import HELD, NOT_CHECKED, NOT_HELD, PARTLY
from facetrust.report.claims import finite as _finite


def verdict_of(outcomes: Sequence[bool]) -> str:
    """``held`` when every outcome is True, ``did not hold`` when none is, else ``partly held``."""
    if not outcomes:
        return NOT_CHECKED
    if all(outcomes):
        return HELD
    return NOT_HELD if not any(outcomes) else PARTLY


def normalise_method(name: str) -> str:
    """Method names compared without case, spaces, hyphens or underscores (A-Softmax = a_softmax)."""
    return re.sub(r"[\s\-_]+", "", str(name)).lower()


def number(value, digits: int = 3) -> str:
    return f"{float(value):.{digits}f}" if _finite(value) else "—"


def points(delta: float) -> str:
    """A difference of fractions in percentage points with its sign."""
    return f"{100.0 * delta:+.2f} points"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def our_source(test_set: str) -> str:
    """``ours (synthetic synth_lfw)`` for the embedded benchmark, ``ours (<set>)`` for configured data."""
    return f"ours (synthetic {test_set})" if str(test_set).startswith("synth") else f"ours ({test_set})"


def figure_links(figures: Sequence[str | Path], out_md: str | Path) -> str:
    """Markdown image links to ``figures``, relative to the report's folder."""
    if not figures:
        return "_No figures were given._"
    base = Path(out_md).resolve().parent
    links = []
    for figure in figures:
        relative = Path(os.path.relpath(Path(figure).resolve(), base)).as_posix()
        links.append(f"![{Path(figure).stem}]({relative})")
    return "\n\n".join(links)


def inputs_section(paths: Iterable[str | Path]) -> str:
    return "## Inputs\n\n" + "\n".join(f"- `{Path(p).as_posix()}`" for p in paths)


def rows_of(table, method: str):
    """The rows of ``table`` whose method is ``method`` (compared by :func:`normalise_method`)."""
    return table[table["method"].map(normalise_method) == normalise_method(method)]
