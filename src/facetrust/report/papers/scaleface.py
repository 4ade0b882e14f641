"""ScaleFace (Kail et al., 2022): the learnable scale as uncertainty, judged by reject-verification
and EDC against the other uncertainty methods (``results/reports/scaleface.md``)."""

from __future__ import annotations

from pathlib import Path

from facetrust import options
from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--reject", nargs="+", required=True, help="reject JSON files, one per method")
    p.add_argument("--label", nargs="+", help="label per file (default: the file's folder name)")
    p.add_argument("--quality-table", help="Spearman table of `report quality`")
    p.add_argument("--figure", nargs="+", help="figures to link")
    p.add_argument("--fraction", type=options.probability, default=0.5, help="rejected fraction compared with none")
    p.add_argument("--alpha", type=options.level, default=0.05, help="significance for 'uncertainty tracks quality'")
    p.add_argument("--edc-table", help="results/edc_table.csv (pAUC with bootstrap intervals)")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.cli import labelled
    from facetrust.report.scaleface_report import write_scaleface_report

    return write_scaleface_report(labelled(args.reject, args.label, "--label"), Path(args.out),
                                  quality_table=args.quality_table, figures=args.figure or [],
                                  fraction=args.fraction, alpha=args.alpha, edc_table=args.edc_table)


PAPER = Paper("scaleface", "ScaleFace: the learnable scale as uncertainty (reject-verification, EDC)",
              add_arguments, write)
