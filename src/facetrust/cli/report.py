"""``facetrust report``: the TAR table here, every other report from :mod:`facetrust.report.cli`."""

from __future__ import annotations

from pathlib import Path


def add_parsers(sub) -> None:
    from facetrust.report.cli import add_report_parsers

    report = sub.add_parser("report", help="tables, figures and per-paper reports")
    report_kinds = report.add_subparsers(dest="kind", required=True, metavar="KIND")
    p = report_kinds.add_parser("table", help="TAR@FAR table (ijbc_table.csv layout), one row per metrics file")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics JSON files, one per row")
    p.add_argument("--method", nargs="+", help="method name per row")
    p.add_argument("--backbone", nargs="+", help="backbone per row")
    p.add_argument("--train-set", nargs="+", help="training set per row")
    p.add_argument("--test-set", help="test set name")
    p.add_argument("--variant", nargs="+", help="variant per row (detail column)")
    p.add_argument("--model", nargs="+", help="trained model per row (detail column: pairs a row with its control)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_report)
    add_report_parsers(report_kinds)


def cmd_report(args) -> None:
    from facetrust.report import tables

    if args.kind == "table":
        table = tables.write_tar_table(args.metrics, Path(args.out), methods=args.method,
                                       backbones=args.backbone, train_sets=args.train_set,
                                       test_set=args.test_set, variants=args.variant, models=args.model)
        print(table.to_string(index=False))
