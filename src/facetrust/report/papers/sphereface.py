"""SphereFace (Liu et al., CVPR 2017): angular margins against softmax controls on one backbone,
depth, and the paper's own 10-fold protocol (``results/reports/sphereface.md``)."""

from __future__ import annotations

from pathlib import Path

from facetrust.report import published
from facetrust.report.papers import Paper


def add_arguments(p) -> None:
    p.add_argument("--verification-table", required=True, help="results/verification_table.csv")
    p.add_argument("--figure", nargs="+", help="figures to link (paths; linked relative to the report)")
    p.add_argument("--baseline", default="Softmax", help="method name of the plain-softmax rows (one per backbone)")
    p.add_argument("--normalised-baseline", default="NormFace",
                   help="method name of the normalised-softmax rows (one per backbone; '' for none)")
    p.add_argument("--margin-methods", nargs="+", default=None,
                   help="method names counted as angular margins (default: the report's DEFAULT_MARGIN_METHODS)")
    p.add_argument("--depth-method", default="A-Softmax", help="method of the depth pair")
    p.add_argument("--depth-backbones", nargs=2, default=["sphere4", "sphere20"], metavar=("SHALLOW", "DEEP"))
    p.add_argument("--paper-protocol", nargs="+", help="metrics of `evaluate pairs --pairs-protocol sphereface` (rows "
                                                       "computed the paper's way)")
    p.add_argument("--paper-protocol-label", nargs="+", help="label per --paper-protocol file")
    p.add_argument("--out", required=True, help="Markdown report to write")


def write(args):
    from facetrust.report.cli import labelled
    from facetrust.report.sphereface_report import write_sphereface_report

    paper = labelled(args.paper_protocol, args.paper_protocol_label, "--paper-protocol-label") if args.paper_protocol else None
    return write_sphereface_report(args.verification_table, Path(args.out), figures=args.figure or [],
                                   baseline_method=args.baseline, margin_methods=args.margin_methods,
                                   depth_method=args.depth_method, depth_backbones=tuple(args.depth_backbones),
                                   paper_protocol=paper, normalised_method=args.normalised_baseline or None)


PAPER = Paper("sphereface", "SphereFace: angular margins, depth and the paper's LFW protocol",
              add_arguments, write, published.sphereface_rows)
