"""``facetrust evaluate pairs|ijb|reject|edc``: one sub-command per protocol, each with only the
flags it reads.  The flags of a settings group (:mod:`facetrust.evaluate.settings`) come from the
group, so a default is written once; the sub-command turns them back into the group and calls the
protocol's ``run_evaluate_*``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facetrust.registry import LazyChoices

POOLING_CHOICES = LazyChoices("facetrust.evaluate.poolings:POOLINGS")
SCORE_CHOICES = LazyChoices("facetrust.evaluate.scores:SCORES")

#: What the command prints of a metrics file beside the summary metrics (``evaluate.metrics``) and
#: their intervals: the pair count, the FARs it cannot resolve, and the EDC's partial areas.
RECORD_SUMMARY_KEYS = ("n_pairs", "unresolved_fars", "pauc", "pauc_ci")


def _constant(text: str):
    """``--constant-uncertainty``: a positive number or ``mean``."""
    if text == "mean":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"constant uncertainty {text!r}: expected 'mean' or a positive number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"constant uncertainty {text!r} must be positive")
    return value


def add_parsers(sub) -> None:
    """``evaluate`` and its four protocol sub-commands."""
    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.settings import (EDCSettings, IJBConvention, PairsSettings, RejectSettings,
                                             VerificationSettings)

    evaluate = sub.add_parser("evaluate", help="evaluate embeddings: pairs (10-fold), ijb (1:1), reject (curves), "
                                               "edc (EDC, pAUC)")
    protocols = evaluate.add_subparsers(dest="protocol_kind", required=True, metavar="PROTOCOL")

    p = protocols.add_parser("pairs", help="10-fold accuracy and TAR@FAR of a pair set (.bin embeddings, or a "
                                           "pair scores file)")
    p.add_argument("--embeddings", help="embeddings .npz of the pair set")
    p.add_argument("--scores", help="a pair scores file (e.g. xCos, 'facetrust explain score') instead of embeddings")
    p.add_argument("--score-key", default="xcos", help="--scores: the score evaluated")
    p.add_argument("--reference-key", nargs="+", help="--scores: scores of the same file to compare with fold by "
                                                      "fold (paired accuracy difference)")
    _outputs(p, roc=True)
    PairsSettings.add_arguments(p)
    p.add_argument("--pairs-protocol", default="insightface", choices=["insightface", "sphereface"],
                   help="InsightFace verification.py, or SphereFace's evaluation.m")
    IJBConvention.add_arguments(p, only=("flip",))
    _score(p)
    _identities(p)
    BootstrapSettings.add_arguments(p)
    p.set_defaults(func=cmd_evaluate_pairs)

    p = protocols.add_parser("ijb", help="IJB-B/C 1:1 verification: TAR@FAR of template pairs")
    _embeddings_and_protocol(p)
    _outputs(p, roc=True)
    VerificationSettings.add_arguments(p)
    IJBConvention.add_arguments(p)
    _pooling(p)
    _score(p)
    p.add_argument("--constant-uncertainty", type=_constant, metavar="VALUE",
                   help="control row: one kappa / sigma^2 for every image (a number, or 'mean' = the file's "
                        "geometric mean)")
    p.add_argument("--duplicate-pairs", default="error", choices=["error", "drop"],
                   help="a pair listed twice is an error, or its repeats are left out and counted in the metrics "
                        "(duplicate_pairs)")
    _failed_images(p)
    BootstrapSettings.add_arguments(p)
    p.set_defaults(func=cmd_evaluate_ijb)

    p = protocols.add_parser("reject", help="reject verification: TAR@FAR as the most uncertain pairs are removed")
    _embeddings_and_protocol(p, required=False)
    _outputs(p)
    p.add_argument("--csv", help="also write the curve as CSV")
    RejectSettings.add_arguments(p)
    IJBConvention.add_arguments(p)
    _pooling(p)
    _score(p)
    _failed_images(p)
    _identities(p)
    BootstrapSettings.add_arguments(p)
    p.set_defaults(func=cmd_evaluate_reject)

    p = protocols.add_parser("edc", help="Error-versus-Discard Characteristic of the uncertainty (pAUC), "
                                         "with the known-quality and oracle rankings")
    _embeddings_and_protocol(p, required=False)
    _outputs(p)
    p.add_argument("--quality", help="quality.csv (the oracle ranking by the known quality)")
    EDCSettings.add_arguments(p)
    RejectSettings.add_arguments(p, only=("space", "template_how"))
    IJBConvention.add_arguments(p)
    _pooling(p)
    _failed_images(p)
    _identities(p)
    BootstrapSettings.add_arguments(p)
    p.set_defaults(func=cmd_evaluate_edc)


def _embeddings_and_protocol(p, required: bool = True) -> None:
    p.add_argument("--embeddings", required=True, help="embeddings .npz")
    where = "IJB directory" if required else "IJB directory (without it: the embeddings' pair set)"
    p.add_argument("--protocol", required=required, help=where)
    p.add_argument("--name", required=required, help="IJB protocol name (meta/<name>_*.txt)")


def _outputs(p, roc: bool = False) -> None:
    p.add_argument("--out", required=True, help="metrics JSON")
    if roc:
        p.add_argument("--roc", type=_roc_path, help="ROC points file (.npz or .csv)")


def _roc_path(text: str) -> str:
    """``--roc``'s type: its suffix checked at parse time, before the evaluation runs."""
    if not text.endswith((".npz", ".csv")):
        raise argparse.ArgumentTypeError(f"{text!r} must end in .npz or .csv")
    return text


def _pooling(p) -> None:
    p.add_argument("--pooling", default="mean", choices=POOLING_CHOICES, metavar="POOLING",
                   help="IJB template pooling: %(choices)s")


def _score(p) -> None:
    p.add_argument("--score", default="cosine", choices=SCORE_CHOICES, metavar="SCORE",
                   help="comparison score: %(choices)s (scf_vmf needs pooling kappa/kappa_media, pfe_mls pooling pfe)")
    p.add_argument("--pfe-sigma", default="per_dimension", choices=["per_dimension", "isotropic"],
                   help="pooling pfe / score pfe_mls: PFE's per-dimension sigma^2 (uncertainty_per_dim) or the "
                        "isotropic ablation (one sigma^2 per image)")


def _identities(p) -> None:
    p.add_argument("--identities", help="a pair set: CSV with columns image, identity (the synthetic quality.csv) "
                                        "for the bootstrap subjects; without it every pair is its own cluster")


def _failed_images(p) -> None:
    p.add_argument("--failed-images", metavar="FILE",
                   help="IJB: images that failed alignment (the aligned set's manifest.json, key skipped_images, "
                        "or one name per line); the embeddings may lack exactly these")


def _path(value) -> Path | None:
    return Path(value) if value else None


def _print_summary(metrics: dict) -> None:
    from facetrust.evaluate.metrics import summary_keys

    keys = summary_keys().union(RECORD_SUMMARY_KEYS)
    print(json.dumps({k: v for k, v in metrics.items() if k in keys}, indent=2))


def cmd_evaluate_pairs(args) -> None:
    from facetrust.errors import InputError
    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.settings import IJBConvention, PairsSettings

    if (args.embeddings is None) == (args.scores is None):
        raise InputError("evaluate pairs: give --embeddings, or --scores")
    if args.scores:
        from facetrust.evaluate.precomputed_scores import run_evaluate_pair_scores

        metrics = run_evaluate_pair_scores(Path(args.scores), Path(args.out), score=args.score_key,
                                           references=args.reference_key or (), roc_out=_path(args.roc))
    else:
        from facetrust.evaluate.pairs import run_evaluate_pairs

        metrics = run_evaluate_pairs(Path(args.embeddings), Path(args.out), roc_out=_path(args.roc),
                                     flip=IJBConvention.from_args(args).flip, metric=PairsSettings.from_args(args).metric,
                                     protocol=args.pairs_protocol, score=args.score, identities_csv=args.identities,
                                     bootstrap=BootstrapSettings.requested(args), pfe_sigma=args.pfe_sigma)
    _print_summary(metrics)


def cmd_evaluate_ijb(args) -> None:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.ijb import run_evaluate_ijb
    from facetrust.evaluate.settings import IJBConvention, VerificationSettings

    reuse_freed_memory()
    reading = VerificationSettings.from_args(args)
    metrics = run_evaluate_ijb(
        Path(args.embeddings), Path(args.protocol), args.name, Path(args.out), roc_out=_path(args.roc),
        fars=list(reading.fars), tar_method=reading.tar_method, failed_templates=reading.failed_templates,
        **IJBConvention.from_args(args).kwargs(), pooling=args.pooling, score=args.score,
        constant_uncertainty=args.constant_uncertainty, bootstrap=BootstrapSettings.requested(args),
        failed_images=args.failed_images, pfe_sigma=args.pfe_sigma, duplicate_pairs=args.duplicate_pairs)
    _print_summary(metrics)


def cmd_evaluate_reject(args) -> None:
    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.reject import run_evaluate_reject
    from facetrust.evaluate.settings import IJBConvention, RejectSettings

    reject = RejectSettings.from_args(args)
    metrics = run_evaluate_reject(
        Path(args.embeddings), Path(args.out), ijb_dir=_path(args.protocol), name=args.name, csv_out=_path(args.csv),
        how=reject.how, space=reject.space, template_how=reject.template_how, fars=list(reject.fars),
        fractions=reject.fractions(), tar_method=reject.tar_method, probe_templates=reject.probe_templates,
        **IJBConvention.from_args(args).kwargs(), pooling=args.pooling, score=args.score,
        bootstrap=BootstrapSettings.requested(args), failed_images=args.failed_images,
        identities_csv=args.identities, pfe_sigma=args.pfe_sigma)
    _print_summary(metrics)


def cmd_evaluate_edc(args) -> None:
    from facetrust.evaluate.bootstrap import BootstrapSettings
    from facetrust.evaluate.edc_protocol import run_evaluate_edc
    from facetrust.evaluate.settings import EDCSettings, IJBConvention, RejectSettings

    edc, aggregation = EDCSettings.from_args(args), RejectSettings.from_args(args)
    metrics = run_evaluate_edc(
        Path(args.embeddings), Path(args.out), ijb_dir=_path(args.protocol), name=args.name, quality_csv=args.quality,
        template_how=aggregation.template_how, space=aggregation.space, pooling=args.pooling,
        flags=IJBConvention.from_args(args).kwargs(), starting_error=edc.starting_error,
        discard_limit=edc.discard_limit, random_draws=edc.random_draws, crfiqa_fmrs=list(edc.crfiqa_fmrs),
        seed=args.seed, bootstrap=BootstrapSettings.requested(args), failed_images=args.failed_images,
        identities_csv=args.identities)
    _print_summary(metrics)
