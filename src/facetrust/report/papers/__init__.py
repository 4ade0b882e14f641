"""The per-paper reports: one module per paper, one registry, one command, one rule helper.

A paper module here declares ``PAPER``, a :class:`Paper`: its name (``facetrust report paper
NAME``, the Snakemake rule ``report_NAME`` and, by convention, ``results/reports/NAME.md``), its
title, the published numbers it sets beside ours (a function of :mod:`facetrust.report.published`,
or None), the inputs it reads (``add_arguments``: its flags) and ``write(args)``, which writes the
report and returns its claims.  The claims and the Markdown live in the paper's report module
(``facetrust.report.<name>_report``; the shared Markdown helpers in :mod:`facetrust.report.markdown`),
imported only when the paper is written, so ``--help`` stays fast.

Adding a paper: a module here and its name in :data:`PAPER_MODULES`; the command, ``facetrust
methods`` and the Snakemake helper ``paper_command`` (workflow/rules/common.smk) pick it up.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

#: The paper modules of this package, in the order ``facetrust report paper --help`` lists them.
PAPER_MODULES = ("sphereface", "scf", "scaleface", "xcos", "explanations", "inversion")


@dataclass(frozen=True)
class Paper:
    """One paper's report (see the module docstring)."""

    name: str
    title: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    write: Callable[[argparse.Namespace], Sequence]  # -> the report's claims
    published: Callable[[], list] | None = None  # its published rows (facetrust.report.published)


@lru_cache(maxsize=None)
def papers() -> dict[str, Paper]:
    """``{name: Paper}`` of every module in :data:`PAPER_MODULES`."""
    found = {}
    for module in PAPER_MODULES:
        paper = importlib.import_module(f"{__name__}.{module}").PAPER
        found[paper.name] = paper
    return found


def print_claims(claims) -> None:
    for claim in claims or ():
        print(f"[{claim.verdict}] {claim.text}")


def _run(paper: Paper):
    def run(args) -> None:
        print_claims(paper.write(args))

    return run


def add_paper_parsers(report_subparsers) -> None:
    """``report paper NAME`` for every paper, each with its own inputs; ``report NAME`` stays as
    the same command under its short name."""
    paper_parser = report_subparsers.add_parser("paper", help="a paper's report: " + ", ".join(papers()))
    names = paper_parser.add_subparsers(dest="paper", required=True, metavar="NAME")
    for paper in papers().values():
        for parent, help_text in ((names, paper.title), (report_subparsers, f"= report paper {paper.name}")):
            p = parent.add_parser(paper.name, help=help_text, description=paper.title)
            paper.add_arguments(p)
            p.set_defaults(func=_run(paper))
