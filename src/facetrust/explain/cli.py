"""``facetrust explain map|invert``: explanations of any trained model (loaded through
:mod:`facetrust.models.artifacts`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facetrust.errors import InputError


def _load_image(path: Path, input_size):
    """An aligned face image file as the model's input tensor (3, H, W)."""
    import numpy as np
    from PIL import Image

    from facetrust.data.transforms import fit_to_size, to_tensor

    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable image ({error})") from None
    return to_tensor(fit_to_size(pixels, input_size))


def run_map(args: argparse.Namespace) -> Path:
    """Draw a gradient or perturbation map of face IMG1 against IMG2 to ``--out``."""
    from facetrust.explain.figures import plot_pair_map
    from facetrust.explain.maps import pair_map
    import torch

    from facetrust.models.artifacts import load_model

    torch.manual_seed(args.seed)
    backbone, config, _ = load_model(args.model)
    size = tuple(config["input_size"])
    image1, image2 = _load_image(args.img1, size), _load_image(args.img2, size)
    options = {"steps": args.steps} if args.method == "gradient" else {"num_masks": args.masks, "seed": args.seed}
    result = pair_map(args.method, backbone, image1, image2, **options)
    return plot_pair_map(image1, image2, result.similarity, result.dissimilarity, args.out,
                         cosine=result.cosine, method=args.method)


def run_invert(args: argparse.Namespace) -> Path:
    """Invert the classes ``--classes`` of a trained model and draw them (beside the clean
    synthetic rendering when ``--synth-seed`` is given)."""
    from facetrust.explain.figures import plot_inversion_grid
    from facetrust.explain.inversion import InversionConfig, invert
    from facetrust.models.artifacts import load_margin, load_model

    backbone, config, extras = load_model(args.model)
    head, _ = load_margin(config, extras)
    inversion = InversionConfig(iterations=args.iterations, images_per_class=args.per_class, seed=args.seed,
                                bn_weight=args.bn_weight)
    result = invert(backbone, head, args.classes, tuple(config["input_size"]), inversion)
    images = {c: [img for img, label in zip(result["images"], result["labels"].tolist()) if label == c]
              for c in args.classes}
    clean = {}
    if args.synth_seed is not None:
        from facetrust.data.synthetic import SynthConfig
        from facetrust.data.synthetic.images import render_clean

        clean = {c: render_clean(args.synth_seed, c, SynthConfig()) for c in args.classes}
    return plot_inversion_grid(images, clean, args.out)


def add_explain_parsers(subparsers) -> argparse.ArgumentParser:
    """Add ``explain`` with its ``map`` and ``invert`` subcommands; each sets ``func``."""
    explain = subparsers.add_parser("explain", help="explanations: similarity maps, model inversion")
    commands = explain.add_subparsers(dest="explain_command", required=True)

    maps = commands.add_parser("map", help="gradient or perturbation similarity map of a pair")
    maps.add_argument("img1", type=Path, help="the face explained (aligned crop)")
    maps.add_argument("img2", type=Path, help="the face it is compared with")
    maps.add_argument("--model", type=Path, required=True, help="trained model directory")
    maps.add_argument("--method", choices=("gradient", "perturbation"), default="gradient")
    maps.add_argument("--steps", type=int, default=16, help="integrated-gradient steps")
    maps.add_argument("--masks", type=int, default=1000, help="random masks of the perturbation map")
    maps.add_argument("--seed", type=int, default=0)
    maps.add_argument("--out", type=Path, required=True, help="figure (.png)")
    maps.set_defaults(func=run_map)

    inv = commands.add_parser("invert", help="ArcFace model inversion of chosen classes")
    inv.add_argument("--model", type=Path, required=True, help="trained model directory (with its margin head)")
    inv.add_argument("--classes", type=int, nargs="+", required=True, help="class labels to invert")
    inv.add_argument("--iterations", type=int, default=2000)
    inv.add_argument("--per-class", type=int, default=4, help="images per class")
    inv.add_argument("--bn-weight", type=float, default=0.05, help="λ of the BN statistics term (0: ablation)")
    inv.add_argument("--seed", type=int, default=0)
    inv.add_argument("--synth-seed", type=int, default=None,
                     help="seed of the synthetic benchmark, to draw each class's clean rendering beside it")
    inv.add_argument("--out", type=Path, required=True, help="figure (.png)")
    inv.set_defaults(func=run_invert)
    return explain
