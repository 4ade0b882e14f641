"""``facetrust report xcos|explanations|inversion``: the explain line's reports, tables and figures
(registered on ``facetrust report`` by :func:`add_explain_report_parsers`)."""

from __future__ import annotations

from pathlib import Path

from facetrust import options


def _print_claims(claims) -> None:
    for claim in claims:
        print(f"[{claim.verdict}] {claim.text}")


def cmd_xcos(args) -> None:
    from facetrust.report.xcos_report import draw_xcos_examples, write_xcos_report

    figures = []
    if args.scores:
        xcos_metrics = [m for m in args.metrics if Path(m).name.endswith(".xcos.json")
                        and Path(m).parent.name == Path(args.scores).parent.name]
        if not xcos_metrics or not args.figure or not args.test_set:
            from facetrust.errors import InputError

            raise InputError("report xcos --scores: also give --test-set, --figure and the xCos metrics file of "
                             "that model among --metrics")
        figures.append(draw_xcos_examples(args.scores, args.test_set, xcos_metrics[0], args.figure,
                                          per_kind=args.pairs_per_kind))
    labels = dict(zip(args.model or [], args.label or []))
    _print_claims(write_xcos_report(args.metrics, Path(args.out), table_csv=Path(args.table), labels=labels,
                                    figures=figures, margin=args.margin))


def cmd_explanations(args) -> None:
    from facetrust.report.explanations_report import write_explanations_report

    _print_claims(write_explanations_report(args.results, args.examples, Path(args.out), table_csv=Path(args.table),
                                            curves_png=Path(args.curves), maps_png=Path(args.maps)))


def cmd_inversion(args) -> None:
    from facetrust.report.inversion_report import write_inversion_report

    _print_claims(write_inversion_report(args.results, args.images, Path(args.out), table_csv=Path(args.table),
                                         figure_png=Path(args.figure)))


def add_explain_report_parsers(sub) -> None:
    p = sub.add_parser("xcos", help="results/reports/xcos.md, the xCos accuracy table and the pair figure")
    p.add_argument("--metrics", nargs="+", required=True,
                   help="xCos metrics files (results/explain/metrics/<xcos>/<set>.<score>.json)")
    p.add_argument("--model", nargs="+", help="xCos model names (folders), parallel to --label")
    p.add_argument("--label", nargs="+", help="row name of each --model")
    p.add_argument("--scores", help="pair scores file of the model drawn in the figure")
    p.add_argument("--test-set", help=".bin pair set of --scores (the faces)")
    p.add_argument("--pairs-per-kind", type=options.integer(1, 1000), default=2)
    p.add_argument("--margin", type=options.number(0.0, 1.0), default=0.01, help="non-inferiority margin of the accuracy claim")
    p.add_argument("--table", required=True, help="CSV to write")
    p.add_argument("--figure", help="xCos pair figure to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")
    p.set_defaults(func=cmd_xcos)

    p = sub.add_parser("explanations", help="results/reports/explanations.md, explain_table.csv, curves and maps")
    p.add_argument("--results", required=True, help="faithfulness JSON (facetrust explain faithfulness)")
    p.add_argument("--examples", required=True, help="its example maps (.npz)")
    p.add_argument("--table", required=True, help="CSV to write (results/explain_table.csv)")
    p.add_argument("--curves", required=True, help="deletion/insertion figure to write (.png)")
    p.add_argument("--maps", required=True, help="example maps figure to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")
    p.set_defaults(func=cmd_explanations)

    p = sub.add_parser("inversion", help="results/reports/inversion.md, the verifier table and the grid")
    p.add_argument("--results", required=True, help="inversion JSON (facetrust explain invert --results)")
    p.add_argument("--images", required=True, help="its images (.npz)")
    p.add_argument("--table", required=True, help="CSV to write")
    p.add_argument("--figure", required=True, help="grid to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")
    p.set_defaults(func=cmd_inversion)
