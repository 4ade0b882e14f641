"""Explanation maps judged with known truth: sanity checks (Adebayo et al., 2018), occluder
localisation against controls on clean twins, deletion/insertion and restoration curves
(``results/reports/explanations.md``, ``results/explain_table.csv`` and four figures)."""

from __future__ import annotations

from pathlib import Path

from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--results", required=True, help="faithfulness JSON (facetrust explain faithfulness)")
    p.add_argument("--examples", required=True, help="its example maps (.npz)")
    p.add_argument("--table", required=True, help="CSV to write (results/explain_table.csv)")
    p.add_argument("--curves", required=True, help="deletion/insertion figure to write (.png)")
    p.add_argument("--maps", required=True, help="example maps figure to write (.png)")
    p.add_argument("--sanity", required=True, help="sanity JSON (facetrust explain sanity)")
    p.add_argument("--sanity-examples", required=True, help="its cascade maps (.npz)")
    p.add_argument("--cascade", required=True, help="cascade figure to write (.png)")
    p.add_argument("--restoration", required=True, help="restoration-curve figure to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.explanations_report import write_explanations_report

    return write_explanations_report(args.results, args.examples, Path(args.out), sanity_json=args.sanity,
                                     sanity_examples=args.sanity_examples, table_csv=Path(args.table),
                                     curves_png=Path(args.curves), maps_png=Path(args.maps),
                                     cascade_png=Path(args.cascade), restoration_png=Path(args.restoration))


PAPER = Paper("explanations", "Explanation maps: sanity checks, occluder localisation with controls, curves",
              add_arguments, write)
