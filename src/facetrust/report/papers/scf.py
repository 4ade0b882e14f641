"""Spherical Confidence Face (Li et al., ICCV 2021): κ-aware similarity and aggregation against
their base models on the IJB-style set (``results/reports/scf.md``)."""

from __future__ import annotations

from pathlib import Path

from facetrust.report import published
from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--table", nargs="+", required=True, help="TAR tables (results/ijbc_table.csv, …)")
    p.add_argument("--figure", nargs="+", help="figures to link")
    p.add_argument("--variants", nargs="+", default=["SCF", "SCF-G", "PFE"],
                   help="'<base> + <variant>' methods to check against their base (first = headline)")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.scf_report import write_scf_report

    return write_scf_report(args.table, Path(args.out), figures=args.figure or [], variants=args.variants)


PAPER = Paper("scf", "SCF: vMF confidence in 1:1 similarity and template aggregation (IJB TAR@FAR)",
              add_arguments, write, published.scf_rows)
