"""``facetrust verify IMG1 IMG2 --model M`` (or ``--pairs CSV``): see :mod:`facetrust.verify.run`."""

from __future__ import annotations

import argparse
from pathlib import Path

from facetrust import options
from facetrust.align.photo import add_photo_options
from facetrust.errors import InputError
from facetrust.explain.defaults import DEFAULT_IG_STEPS, DEFAULT_MASKS, VERIFY_EXPLAIN_METHODS


def run(args: argparse.Namespace) -> None:
    from facetrust.verify.run import VerifySettings, read_pairs_csv, run_verify

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.pairs is not None:
        if args.img1 is not None:
            raise InputError("verify: give IMG1 IMG2 or --pairs CSV, not both")
        pairs = read_pairs_csv(args.pairs)
    elif args.img1 is None or args.img2 is None:
        raise InputError("verify: give two images (IMG1 IMG2) or --pairs CSV")
    else:
        pairs = [(str(args.img1), str(args.img2), None)]
    settings = VerifySettings(far=args.far, metrics=args.metrics, threshold=args.threshold, score=args.score,
                              explain=args.explain, steps=args.steps, masks=args.masks, seed=args.seed,
                              aligned=args.aligned, no_face=args.no_face, min_score=args.min_score,
                              batch_size=args.batch_size, benchmark_embeddings=args.benchmark_embeddings,
                              on_bad_image=args.on_bad_image)
    result = run_verify(args.model, pairs, args.out, settings, head_dir=args.head, uncertainty=args.uncertainty)
    skipped = f", {result['skipped_pairs']} skipped (verify.json skipped_images)" if result["skipped_pairs"] else ""
    print(f"{len(result['pairs'])} pair(s){skipped}: {Path(args.out) / 'verify.json'} and one page per verified pair "
          f"in {args.out}")


def add_parsers(subparsers) -> None:
    """``facetrust verify`` (its ``--uncertainty`` choices: the models' own uncertainties)."""
    from facetrust.registry import LazyChoices

    add_verify_parser(subparsers, LazyChoices("none", "facetrust.models.uncertainty.methods:MODEL_UNCERTAINTIES"))


def add_verify_parser(subparsers, uncertainty_choices) -> argparse.ArgumentParser:
    p = subparsers.add_parser("verify", help="verify two photographs (or a CSV of pairs): detection, alignment, "
                                             "score, decision at a FAR, uncertainties, explanation map")
    p.add_argument("img1", nargs="?", type=Path, help="first photograph")
    p.add_argument("img2", nargs="?", type=Path, help="second photograph")
    p.add_argument("--pairs", type=Path, help="CSV with header image1,image2[,label] (paths relative to the CSV)")
    p.add_argument("--model", type=Path, required=True,
                   help="model directory (trained, imported or xCos), arcface_torch backbone.pth or .onnx file")
    p.add_argument("--head", type=Path, help="fitted uncertainty head directory (fit-head output), as embed")
    p.add_argument("--uncertainty", choices=uncertainty_choices, metavar="KIND",
                   help="the model's own uncertainty (when no --head): %(choices)s (default: the model's own "
                        "for ScaleFace and MagFace models)")
    p.add_argument("--metrics", type=Path, help="metrics file of this model on a benchmark (its threshold_at_far, "
                                                "its score and flip; its embeddings file for the uncertainties)")
    p.add_argument("--far", type=options.number(0.0, 1.0, low_open=True), help="with --metrics: the operating point's FAR (one it was evaluated at)")
    p.add_argument("--threshold", type=options.number(), help="a decision threshold on the score instead of --far/--metrics")
    p.add_argument("--score", choices=["cosine", "scf_vmf", "pfe_mls", "xcos"],
                   help="comparison score (default: the metrics file's, else cosine; xcos for an xCos model)")
    p.add_argument("--benchmark-embeddings", type=Path,
                   help="embeddings file whose uncertainties place each face's (default: the metrics file's)")
    p.add_argument("--explain", choices=list(VERIFY_EXPLAIN_METHODS), default="gradient",
                   help="explanation map of face 1 against face 2 (gradient = integrated gradients; xcos: an "
                        "xCos model's maps)")
    p.add_argument("--steps", type=options.integer(1, 100_000), default=DEFAULT_IG_STEPS,
                   help="gradient: integrated-gradient steps")
    p.add_argument("--masks", type=options.integer(2, 10_000_000), default=DEFAULT_MASKS,
                   help="perturbation: random masks")
    p.add_argument("--seed", type=options.seed, default=0, help="perturbation masks")
    add_photo_options(p)
    p.add_argument("--batch-size", type=options.integer(1, 65536), default=16, help="pairs detected and embedded together")
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                   help="a photograph that cannot be read or has no face (under --no-face error): stop with exit 2 "
                        "(fail), or record its pairs as skipped with the reason and verify the others (skip)")
    p.add_argument("--threads", type=options.threads)
    p.add_argument("--out", type=Path, required=True, help="output directory: verify.json and pair_NNNN.png")
    p.set_defaults(func=run)
    return p
