"""``facetrust report <kind>``: figures, tables and per-paper reports (one Snakemake rule each).

:func:`add_report_parsers` registers these kinds on the ``report`` subcommand's sub-parsers
(``table`` stays in ``facetrust.cli``):

=====================  ======================================================================
kind                   writes
=====================  ======================================================================
verification-table     ``results/verification_table.csv`` from pair-set metrics files
quality                Spearman table: uncertainty against the known degradation, per method
roc                    ROC figure, one line per ROC file (log FAR axis)
reject-plot            reject-verification figure, one line per method, one panel per FAR
histograms             uncertainty histograms (genuine/impostor; by quality bin)
edc                    ``results/edc_table.csv`` and the EDC figure
paper NAME             a paper's report (:mod:`facetrust.report.papers`: sphereface, scf, scaleface,
                       xcos, explanations, inversion; ``report NAME`` is the same command)
=====================  ======================================================================

Lists given per file (``--label``, ``--method``, …) are parallel to the files; a missing label
defaults to the file's folder name (``results/roc/<model>/<testset>.csv`` → ``<model>``).
Heavy modules are imported inside the handlers so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from facetrust import options
from facetrust.errors import InputError


_fars = options.rates


def labelled(paths: Sequence[str], labels: Sequence[str] | None, flag: str) -> dict[str, str]:
    """``{label: path}`` in the order given; labels default to each file's folder name, must be unique."""
    if labels is not None and len(labels) != len(paths):
        raise InputError(f"report: {flag} has {len(labels)} values for {len(paths)} files")
    names = list(labels) if labels is not None else [Path(p).parent.name for p in paths]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise InputError(f"report: labels {duplicated} repeat; give one distinct {flag} per file")
    return dict(zip(names, paths))


def add_ijb_convention_arguments(parser) -> None:
    """The IJB 1:1 convention's flags (N, D, F and the TAR reading), from the settings groups that
    own them and their defaults (:mod:`facetrust.evaluate.settings`)."""
    from facetrust.evaluate.settings import IJBConvention, VerificationSettings

    IJBConvention.add_arguments(parser)
    VerificationSettings.add_arguments(parser, only=("tar_method",))


def ijb_convention(args) -> dict:
    """The convention of :func:`add_ijb_convention_arguments`'s flags as a dict."""
    from facetrust.evaluate.settings import IJBConvention, VerificationSettings

    return {**IJBConvention.from_args(args).kwargs(), "tar_method": VerificationSettings.from_args(args).tar_method}


# --------------------------------------------------------------------------- handlers


def cmd_verification_table(args) -> None:
    from facetrust.report.verification import write_verification_table

    table = write_verification_table(args.metrics, Path(args.out), methods=args.method, backbones=args.backbone,
                                     train_sets=args.train_set, test_set=args.test_set, embeddings=args.embeddings,
                                     quality_csv=args.quality)
    print(table.to_string(index=False))


def cmd_quality_split(args) -> None:
    from facetrust.report.quality_split import write_quality_split

    table = write_quality_split(labelled(args.embeddings, args.method, "--method"), args.protocol, args.name,
                                args.quality, Path(args.out), fars=args.fars, convention=ijb_convention(args))
    print(table.to_string(index=False))


def cmd_quality(args) -> None:
    from facetrust.report.quality import uncertainty_quality_table

    table = uncertainty_quality_table(labelled(args.embeddings, args.method, "--method"), args.quality, Path(args.out),
                                      set_name=args.set)
    print(table.to_string(index=False))


def cmd_roc(args) -> None:
    from facetrust.report.figures import plot_roc

    print(plot_roc(labelled(args.roc, args.label, "--label"), Path(args.out), title=args.title or "ROC"))


def cmd_verification_plot(args) -> None:
    from facetrust.report.figures import plot_verification_accuracy

    print(plot_verification_accuracy(args.verification_table, Path(args.out), margin_methods=args.margin_methods,
                                     title=args.title))


def cmd_reject_plot(args) -> None:
    from facetrust.report.figures import plot_reject_curves

    print(plot_reject_curves(labelled(args.reject, args.label, "--label"), args.fars, Path(args.out),
                             title=args.title or "Reject verification"))


def cmd_histograms(args) -> None:
    from facetrust.report.uncertainty_figures import plot_uncertainty_histograms

    print(plot_uncertainty_histograms(args.embeddings, args.quality, args.protocol, Path(args.out), name=args.name,
                                      title=args.title))


def cmd_edc(args) -> None:
    from facetrust.report.edc import write_edc_outputs

    table = write_edc_outputs(labelled(args.edc, args.label, "--label"), Path(args.out),
                              Path(args.figure) if args.figure else None, title=args.title or "EDC")
    print(table.to_string(index=False))


# --------------------------------------------------------------------------- parsers


def cmd_dvc_metrics(args) -> None:
    from facetrust.report.dvc_metrics import write_dvc_view

    for path in write_dvc_view(args.metrics, args.roc, args.reject, args.out):
        print(path)


def add_report_parsers(report_subparsers) -> None:
    """Register the report kinds above on ``report_subparsers`` (``p.add_subparsers(dest="kind")``)."""
    from facetrust.report.dvc_metrics import add_arguments as add_dvc_metrics_arguments

    sub = report_subparsers
    p = sub.add_parser("dvc-metrics", help="flat per-variant metrics and plot data that `dvc metrics/plots` read")
    add_dvc_metrics_arguments(p)
    p.set_defaults(func=cmd_dvc_metrics)

    p = sub.add_parser("verification-table", help="pair-set verification table (10-fold accuracy, AFS, VAL)")
    p.add_argument("--metrics", nargs="+", required=True, help="pair-set metrics JSON files, one per row")
    p.add_argument("--method", nargs="+", help="method per row")
    p.add_argument("--backbone", nargs="+", help="backbone per row")
    p.add_argument("--train-set", nargs="+", help="training set per row")
    p.add_argument("--test-set", help="test set name (default: each metrics file's)")
    p.add_argument("--embeddings", nargs="+", help="embeddings .npz per row: angular Fisher score when the metrics lack it")
    p.add_argument("--quality", help="quality.csv (identities for the angular Fisher score)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=cmd_verification_table)

    p = sub.add_parser("quality-split", help="TAR@FAR over IJB pairs split by known quality (low/middle/high third)")
    p.add_argument("--embeddings", nargs="+", required=True, help="IJB embeddings .npz, one per method")
    p.add_argument("--method", nargs="+", help="method per file (default: the file's folder name)")
    p.add_argument("--protocol", required=True, help="IJB directory")
    p.add_argument("--name", required=True, help="IJB protocol name")
    p.add_argument("--quality", required=True, help="data/synth/quality.csv")
    p.add_argument("--fars", type=_fars, default=[1e-4, 1e-3, 1e-2, 1e-1])
    add_ijb_convention_arguments(p)
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=cmd_quality_split)

    p = sub.add_parser("quality", help="Spearman table: uncertainty against the known degradation")
    p.add_argument("--embeddings", nargs="+", required=True, help="embeddings .npz with 'uncertainty', one per method")
    p.add_argument("--method", nargs="+", help="method per file (default: the file's folder name)")
    p.add_argument("--quality", required=True, help="data/synth/quality.csv")
    p.add_argument("--set", help="quality.csv set of the images (default: inferred)")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=cmd_quality)

    p = sub.add_parser("roc", help="ROC figure, one line per ROC file")
    p.add_argument("--roc", nargs="+", required=True, help="ROC files (.csv or .npz of evaluate --roc)")
    p.add_argument("--label", nargs="+", help="label per file (default: the file's folder name)")
    p.add_argument("--title")
    p.add_argument("--out", required=True, help="figure (.png, .pdf or .svg)")
    p.set_defaults(func=cmd_roc)

    p = sub.add_parser("verification-plot", help="10-fold accuracy with its interval per model, grouped by backbone")
    p.add_argument("--verification-table", required=True, help="results/verification_table.csv")
    p.add_argument("--margin-methods", nargs="+", required=True, help="methods drawn as margins (the rest: controls)")
    p.add_argument("--title")
    p.add_argument("--out", required=True, help="figure (.png, .pdf or .svg)")
    p.set_defaults(func=cmd_verification_plot)

    p = sub.add_parser("reject-plot", help="reject-verification curves, one line per method, one panel per FAR")
    p.add_argument("--reject", nargs="+", required=True, help="reject JSON files of `evaluate reject`")
    p.add_argument("--label", nargs="+", help="label per file (default: the file's folder name)")
    p.add_argument("--fars", type=_fars, help="FARs to plot, comma-separated (default: all in the first file)")
    p.add_argument("--title")
    p.add_argument("--out", required=True, help="figure (.png, .pdf or .svg)")
    p.set_defaults(func=cmd_reject_plot)

    p = sub.add_parser("histograms", help="uncertainty histograms by pair label and by known quality")
    p.add_argument("--embeddings", required=True, help="embeddings .npz with 'uncertainty'")
    p.add_argument("--quality", help="quality.csv (adds the by-quality panel)")
    p.add_argument("--protocol", help="IJB directory (default: a pair set with 'issame')")
    p.add_argument("--name", help="IJB protocol name (meta/<name>_*.txt)")
    p.add_argument("--title")
    p.add_argument("--out", required=True, help="figure (.png, .pdf or .svg)")
    p.set_defaults(func=cmd_histograms)

    p = sub.add_parser("edc", help="results/edc_table.csv and the EDC figure from `evaluate edc` files")
    p.add_argument("--edc", nargs="+", required=True, help="EDC JSON files, one per method")
    p.add_argument("--label", nargs="+", help="label per file (default: the file's folder name)")
    p.add_argument("--figure", help="EDC figure to write (.png, .pdf or .svg)")
    p.add_argument("--title")
    p.add_argument("--out", required=True, help="CSV to write")
    p.set_defaults(func=cmd_edc)

    from facetrust.report.papers import add_paper_parsers

    add_paper_parsers(sub)
