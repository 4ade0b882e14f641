"""ArcFace model inversion (BatchNorm statistics and class weights, DeepInversion's priors), judged
by independent verifiers and each identity's clean rendering (``results/reports/inversion.md``,
``results/inversion_table.csv``, the grid)."""

from __future__ import annotations

from pathlib import Path

from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--results", required=True, help="inversion JSON (facetrust explain invert --results)")
    p.add_argument("--images", required=True, help="its images (.npz)")
    p.add_argument("--selection", help="the validation selection of the TV weight and step count (.json)")
    p.add_argument("--table", required=True, help="CSV to write")
    p.add_argument("--figure", required=True, help="grid to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.inversion_report import write_inversion_report

    return write_inversion_report(args.results, args.images, Path(args.out), table_csv=Path(args.table),
                                  figure_png=Path(args.figure), selection_json=args.selection)


PAPER = Paper("inversion", "Model inversion: what the trained model sees, judged by independent verifiers",
              add_arguments, write)
