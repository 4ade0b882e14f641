"""xCos (Lin et al., 2021): the explainable cosine against its frozen CosFace target, with the
published numbers beside the official repository's cosine baselines (``results/reports/xcos.md``,
``results/xcos_table.csv``, the pair and fit figures)."""

from __future__ import annotations

from pathlib import Path

from facetrust import options
from facetrust.errors import InputError
from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--metrics", nargs="+", required=True,
                   help="xCos metrics files (results/explain/metrics/<xcos>/<set>.<score>.json)")
    p.add_argument("--model", nargs="+", help="xCos model names (folders), parallel to --label")
    p.add_argument("--validation-record", nargs="*", help="validation records of the training stage (models/<xcos>/validation.json)")
    p.add_argument("--fit-figure", help="xCos against the target cosine (.png)")
    p.add_argument("--label", nargs="+", help="row name of each --model")
    p.add_argument("--scores", help="pair scores file of the model drawn in the figure")
    p.add_argument("--test-set", help=".bin pair set of --scores (the faces)")
    p.add_argument("--pairs-per-kind", type=options.integer(1, 1000), default=2)
    p.add_argument("--margin", type=options.number(0.0, 1.0), default=0.01, help="non-inferiority margin of the accuracy claim")
    p.add_argument("--table", required=True, help="CSV to write")
    p.add_argument("--figure", help="xCos pair figure to write (.png)")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.xcos_report import draw_xcos_examples, write_xcos_report

    figures = []
    if args.scores:
        xcos_metrics = [m for m in args.metrics if Path(m).name.endswith(".xcos.json")
                        and Path(m).parent.name == Path(args.scores).parent.name]
        if not xcos_metrics or not args.figure or not args.test_set:
            raise InputError("report xcos --scores: also give --test-set, --figure and the xCos metrics file of "
                             "that model among --metrics")
        figures.append(draw_xcos_examples(args.scores, args.test_set, xcos_metrics[0], args.figure,
                                          per_kind=args.pairs_per_kind))
    labels = dict(zip(args.model or [], args.label or []))
    return write_xcos_report(args.metrics, Path(args.out), table_csv=Path(args.table), labels=labels,
                             figures=figures, margin=args.margin, scores=args.scores,
                             validation=args.validation_record or (), fit_png=args.fit_figure)


def _published():
    from facetrust.report.xcos_report import PUBLISHED

    return list(PUBLISHED)


PAPER = Paper("xcos", "xCos: the explainable cosine judged against its frozen target (accuracy, fit)",
              add_arguments, write, _published)
