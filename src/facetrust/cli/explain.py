"""``facetrust explain xcos|score|map|faithfulness|invert``: explanations of trained models (loaded
through :mod:`facetrust.models.artifacts`).

========================  ===================================================================
command                   what it writes
========================  ===================================================================
xcos IMG1 IMG2            the xCos picture of one pair (faces with the grid, cosine map, attention)
score                     the pair scores file of a ``.bin`` set: xCos, cosine, standard cosine
map IMG1 IMG2             an xSSAB, integrated-gradients or perturbation map of any model
thresholds                every threshold of the explain stages, fitted on a validation split
sanity                    cascading model-randomisation checks and seed agreement (JSON)
faithfulness              deletion/insertion and known-truth localisation of every method (JSON)
invert                    ArcFace model inversion: a figure, or the stage's JSON + images
========================  ===================================================================

``--params`` (the merged params.yaml) supplies the ``explain`` / ``inversion`` settings and the
``synth`` section; a command-line value, when given, wins.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from facetrust import options
from facetrust.cli.common import MAP_METHOD_CHOICES
from facetrust.errors import InputError
from facetrust.explain.defaults import MapSettings


def _load_pair(args: argparse.Namespace, input_size):
    """IMG1 and IMG2 as the model's input tensors (3, H, W): detected and aligned unless they are
    aligned crops of the input size or ``--aligned`` (:mod:`facetrust.align.photo`); what was done
    to a photograph is said on stderr, one line each."""
    import sys

    from facetrust.align.photo import prepare_files
    from facetrust.data.transforms import to_tensor

    faces = prepare_files([args.img1, args.img2], input_size, aligned=args.aligned, no_face=args.no_face,
                          min_score=args.min_score)
    for face in faces:
        if face.note:
            print(face.note, file=sys.stderr)
    return to_tensor(faces[0].pixels), to_tensor(faces[1].pixels)


def _params(path: Path | None) -> dict:
    if path is None:
        return {}
    from facetrust.config import load_params

    return load_params(path)


def load_embedder(model_dir: Path):
    """``(embed function, input size)`` of a training output or an xCos model directory (its grid
    feature is the xCos network's embedding)."""
    from facetrust.models.artifacts import is_xcos_model, load_model

    if is_xcos_model(model_dir):
        from facetrust.models.xcos import load_xcos

        model, config, _ = load_xcos(model_dir)
        return model.embedding, tuple(config["input_size"])
    backbone, config, _ = load_model(model_dir)
    return backbone, tuple(config["input_size"])


def run_xcos(args: argparse.Namespace) -> Path:
    """The xCos picture of IMG1 against IMG2 (decision at ``--threshold`` or the mean 10-fold
    threshold of an xCos metrics file ``--metrics``)."""
    from facetrust.report.explain_figures import plot_xcos_pairs
    from facetrust.models.xcos import explain_pair, load_xcos
    from facetrust.formats import read_metrics

    if (args.threshold is None) == (args.metrics is None):
        raise InputError("explain xcos: give --threshold or --metrics (an xCos metrics file), one of them")
    threshold = args.threshold
    if threshold is None:
        folds = read_metrics(args.metrics).get("fold_thresholds") or []
        if not folds:
            raise InputError(f"{args.metrics}: no 'fold_thresholds' (an 'evaluate pairs --scores' metrics file)")
        threshold = sum(folds) / len(folds)
    model, config, _ = load_xcos(args.model)
    size = tuple(config["input_size"])
    image1, image2 = _load_pair(args, size)
    pair = {"image1": image1, "image2": image2, **explain_pair(model, image1, image2),
            "title": f"{args.img1.name} vs {args.img2.name}"}
    return plot_xcos_pairs([pair], threshold, args.out)


def run_score(args: argparse.Namespace) -> dict:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.explain.scores import run_xcos_scores

    reuse_freed_memory()  # every batch of pairs, for each replicate, frees and allocates its maps again
    return run_xcos_scores(args.model, args.standard, args.test_set, args.out, batch_pairs=args.batch_pairs,
                           replicates=args.replicates or ())


def run_map(args: argparse.Namespace) -> Path:
    """Draw a gradient or perturbation map of face IMG1 against IMG2 to ``--out``."""
    import torch

    from facetrust.explain.maps import method_map
    from facetrust.report.explain_figures import plot_pair_map

    torch.manual_seed(args.seed)
    embed, size = load_embedder(args.model)
    image1, image2 = _load_pair(args, size)
    settings = MapSettings.from_args(args, seed=args.seed)
    result = method_map(args.method, embed, image1, image2, settings, threshold=args.threshold, seed=args.seed)
    return plot_pair_map(image1, image2, result.similarity, result.dissimilarity, args.out,
                         cosine=result.cosine, method=args.method)


def run_thresholds_command(args: argparse.Namespace) -> dict:
    from facetrust.explain.faithfulness_stage import FaithfulnessSettings
    from facetrust.explain.thresholds import fit_thresholds

    params = _params(args.params)
    settings = FaithfulnessSettings.from_section(params.get("explain") or {}, int(params.get("seed", 0)))
    result = fit_thresholds(args.model, args.validation, args.occluders, args.twins, args.out,
                            threshold_fmr=settings.threshold_fmr, delta_fraction=settings.delta_fraction)
    return {"split": result["split"], "delta_cos": result["delta_cos"], "out": str(args.out)}


def run_faithfulness_command(args: argparse.Namespace) -> dict:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.explain.faithfulness_stage import FaithfulnessSettings, run_faithfulness

    reuse_freed_memory()  # every perturbed batch frees and allocates its activations again
    params = _params(args.params)
    settings = FaithfulnessSettings.from_section(params.get("explain") or {}, int(params.get("seed", args.seed)))
    result = run_faithfulness(args.model, args.test_set, args.occluders, args.out, args.examples, settings,
                              twins_npz=args.twins, thresholds_json=args.thresholds, validation_set=args.validation)
    known = result["known_truth"]
    return {"pairs": result["pairs"], "occluded_pairs": known["occluded_pairs"], "qualifying": known["qualifying"],
            "out": str(args.out)}


def run_sanity_command(args: argparse.Namespace) -> dict:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.explain.sanity_stage import SanitySettings, run_sanity

    reuse_freed_memory()  # every randomised network's batches free and allocate their activations again
    params = _params(args.params)
    settings = SanitySettings.from_section(params.get("explain") or {}, int(params.get("seed", args.seed)))
    result = run_sanity(args.model, args.test_set, args.validation, args.thresholds, args.out, args.examples,
                        settings)
    return {"passes": result["passes"], "out": str(args.out)}


def _inversion_config(args: argparse.Namespace, section: dict):
    """InversionConfig from the params ``inversion`` section, command-line values winning."""
    from facetrust.explain.inversion import InversionConfig

    fields = {f for f in InversionConfig.__dataclass_fields__}
    values = {k: (tuple(v) if k == "betas" else v) for k, v in section.items() if k in fields}
    overrides = {"iterations": args.iterations, "images_per_class": args.per_class, "bn_weight": args.bn_weight,
                 "seed": args.seed}
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("seed", 0)
    return InversionConfig(**values)


def _clean_renderings(classes, params: dict, synth_seed):
    """Each class's clean synthetic rendering, from the params ``synth`` section and ``seed``."""
    from facetrust.data.synthetic import SynthConfig
    from facetrust.data.synthetic.images import render_clean

    seed = synth_seed if synth_seed is not None else params.get("seed")
    if seed is None or (params and (params.get("datasets") or {}).get("source", "synth") != "synth"):
        return {}
    config = SynthConfig.from_dict(params.get("synth") or {})
    return {int(c): render_clean(int(seed), int(c), config) for c in classes}


def _selected(args: argparse.Namespace, section: dict) -> dict:
    """The TV weight and step count chosen on the validation classes (``--selection``, written by
    ``explain invert-select``), over the params section's values."""
    if args.selection is None:
        return section
    from facetrust.io import read_json

    record = read_json(args.selection, "inversion selection")
    if "chosen" not in record:
        raise InputError(f"{args.selection}: no 'chosen' key (an 'explain invert-select' output)")
    overlap = sorted(set(record.get("classes", [])) & set(section.get("classes") or []))
    if overlap:
        raise InputError(f"{args.selection}: chosen on classes {overlap} that are also reported; "
                         "validation classes must differ from inversion.classes")
    return {**section, **record["chosen"]}


def _load_verifier(path: Path, train_data: Path, classes, per_class: int):
    from facetrust.explain.inversion_stage import real_class_images
    from facetrust.models.artifacts import load_margin, load_model

    backbone, config, extras = load_model(path)
    head, _ = load_margin(config, extras)
    size = tuple(config["input_size"])
    return (backbone, head, size), real_class_images(train_data, classes, per_class, size)


def run_invert(args: argparse.Namespace) -> dict:
    """Invert classes of a trained model: a figure (``--out``), and with ``--verifier`` the stage's
    JSON (``--results``) and images (``--images``), with ablations when ``--ablation``."""
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.report.inversion_figures import plot_inversion_grid
    from facetrust.explain.inversion import invert
    from facetrust.explain.inversion_stage import run_inversion, write_inversion
    from facetrust.models.artifacts import load_margin, load_model

    reuse_freed_memory()  # every optimisation step frees and allocates its activations and gradients again
    params = _params(args.params)
    section = dict(params.get("inversion") or {})
    section.setdefault("seed", params.get("seed", 0))
    section = _selected(args, section)
    classes = args.classes or section.get("classes")
    if not classes:
        raise InputError("explain invert: no classes (--classes, or inversion.classes in --params)")
    config = _inversion_config(args, section)
    backbone, model_config, extras = load_model(args.model)
    head, _ = load_margin(model_config, extras)
    size = tuple(model_config["input_size"])
    clean = _clean_renderings(classes, params, args.synth_seed)
    written = {}
    if args.verifier is not None:
        if args.train_data is None or args.results is None or args.images is None:
            raise InputError("explain invert --verifier: also give --train-data, --results and --images")
        per_class = int(section.get("real_per_class", 8))
        verifiers, real = {}, {}
        for path in [args.verifier, *(args.secondary or [])]:
            verifiers[path.name], real[path.name] = _load_verifier(path, args.train_data, classes, per_class)
        summary, images = run_inversion((backbone, head, size), verifiers, real, classes, config, clean=clean,
                                        ablation=args.ablation, n_boot=int(section.get("bootstrap", 1000)))
        summary.update(model=str(args.model), verifier=str(args.verifier),
                       secondary_verifiers=[str(p) for p in args.secondary or []],
                       selection=str(args.selection) if args.selection else None)
        write_inversion(summary, images, clean, args.results, args.images)
        written.update(results=str(args.results), images=str(args.images))
        result_images, labels = images["full"], images["labels"]
    else:
        run = invert(backbone, head, classes, size, config)
        result_images, labels = run["images"].numpy(), run["labels"].numpy()
    if args.out is not None:
        grouped = {int(c): [img for img, label in zip(result_images, labels.tolist()) if label == c] for c in classes}
        written["figure"] = str(plot_inversion_grid(grouped, clean, args.out))
    return written


def run_invert_select(args: argparse.Namespace) -> dict:
    """Choose the TV weight and the step count on validation classes (``inversion.select``)."""
    import dataclasses

    from facetrust.cli.common import reuse_freed_memory
    from facetrust.explain.inversion_stage import select_settings
    from facetrust.io import write_json_atomic
    from facetrust.models.artifacts import load_margin, load_model

    reuse_freed_memory()  # as `explain invert`: every optimisation step allocates its tensors again
    params = _params(args.params)
    section = dict(params.get("inversion") or {})
    section.setdefault("seed", params.get("seed", 0))
    select = dict(section.get("select") or {})
    classes = select.pop("classes", None)
    if not classes:
        raise InputError(f"{args.params}: inversion.select.classes: no validation classes")
    overlap = sorted(set(classes) & set(section.get("classes") or []))
    if overlap:
        raise InputError(f"{args.params}: inversion.select.classes {overlap} are also reported (inversion.classes)")
    per_class = int(select.pop("images_per_class", section.get("images_per_class", 4)))
    grid = {k: list(v) for k, v in select.items()}
    if not grid:
        raise InputError(f"{args.params}: inversion.select: no candidate values")
    config = dataclasses.replace(_inversion_config(args, section), images_per_class=per_class, gradient_checks=0)
    clean = _clean_renderings(classes, params, args.synth_seed)
    if not clean:
        raise InputError("explain invert-select: needs the synthetic benchmark's clean renderings (datasets.source synth)")
    backbone, model_config, extras = load_model(args.model)
    head, _ = load_margin(model_config, extras)
    record = select_settings((backbone, head, tuple(model_config["input_size"])), classes, clean, config, grid)
    record["model"] = str(args.model)
    write_json_atomic(args.out, record)
    return {"out": str(args.out), "chosen": record["chosen"]}


def add_explain_parsers(subparsers) -> argparse.ArgumentParser:
    """Add ``explain`` with its subcommands; each sets ``func``."""
    from facetrust.align.photo import add_photo_options

    explain = subparsers.add_parser("explain", help="explanations: xCos, similarity maps, faithfulness, inversion")
    commands = explain.add_subparsers(dest="explain_command", required=True)

    p = commands.add_parser("xcos", help="the xCos picture of a pair: grid, cosine map, attention, decision")
    p.add_argument("img1", type=Path, help="first face (photograph or aligned crop)")
    p.add_argument("img2", type=Path, help="second face (photograph or aligned crop)")
    p.add_argument("--model", type=Path, required=True, help="xCos model directory (facetrust train-xcos)")
    p.add_argument("--threshold", type=options.number(-1.0, 1.0), help="decision threshold on xCos (the cosine map's palette centre)")
    p.add_argument("--metrics", type=Path, help="an xCos metrics file: its mean 10-fold threshold")
    p.add_argument("--out", type=Path, required=True, help="figure (.png)")
    add_photo_options(p)
    p.set_defaults(func=_printing(run_xcos))

    p = commands.add_parser("score", help="xCos, cosine of the same network and of a standard model, per pair")
    p.add_argument("--model", type=Path, required=True, help="xCos model directory")
    p.add_argument("--standard", type=Path, required=True, help="standard model directory (its cosine is a score)")
    p.add_argument("--test-set", type=Path, required=True, help=".bin pair set")
    p.add_argument("--batch-pairs", type=options.integer(1, 65536), default=128)
    p.add_argument("--replicates", type=Path, nargs="*",
                   help="other training seeds of the model (their xCos scores as xcos_replicate1, ...)")
    p.add_argument("--out", type=Path, required=True, help="pair scores file (.npz)")
    p.set_defaults(func=_printing(run_score))

    p = commands.add_parser("map", help="gradient or perturbation similarity map of a pair")
    p.add_argument("img1", type=Path, help="the face explained (photograph or aligned crop)")
    p.add_argument("img2", type=Path, help="the face it is compared with")
    p.add_argument("--model", type=Path, required=True, help="trained model or xCos model directory")
    p.add_argument("--method", choices=MAP_METHOD_CHOICES, metavar="METHOD", default="perturbation",
                   help="a map of `facetrust methods` (default perturbation)")
    MapSettings.add_arguments(p)
    p.add_argument("--threshold", type=options.number(-1.0, 1.0), help="xssab: the decision threshold (split at thr/d)")
    p.add_argument("--seed", type=options.seed, default=0)
    p.add_argument("--out", type=Path, required=True, help="figure (.png)")
    add_photo_options(p)
    p.set_defaults(func=_printing(run_map))

    p = commands.add_parser("thresholds", help="fit every threshold of the explain stages on a validation split")
    p.add_argument("--model", type=Path, required=True, help="xCos model directory")
    p.add_argument("--validation", type=Path, required=True, help=".bin validation pair set (never a test set)")
    p.add_argument("--occluders", type=Path, required=True, help="occluders.csv of the synthetic benchmark")
    p.add_argument("--twins", type=Path, required=True, help="the validation set's clean twins (.twins.npz)")
    p.add_argument("--params", type=Path, help="params file: its `explain` section")
    p.add_argument("--out", type=Path, required=True, help="thresholds (.json)")
    p.set_defaults(func=_printing(run_thresholds_command))

    p = commands.add_parser("sanity", help="cascading model-randomisation sanity checks of every map method")
    p.add_argument("--model", type=Path, required=True, help="xCos model directory")
    p.add_argument("--test-set", type=Path, required=True, help=".bin pair set whose pairs are explained")
    p.add_argument("--validation", type=Path, required=True,
                   help=".bin validation pair set: BatchNorm recalibration images of the randomised networks")
    p.add_argument("--thresholds", type=Path, required=True, help="thresholds JSON (explain thresholds)")
    p.add_argument("--params", type=Path, help="params file: its `explain` section and seed")
    p.add_argument("--seed", type=options.seed, default=0, help="without --params")
    p.add_argument("--out", type=Path, required=True, help="results (.json)")
    p.add_argument("--examples", type=Path, required=True, help="one pair's maps at every cascade level (.npz)")
    p.set_defaults(func=_printing(run_sanity_command))

    p = commands.add_parser("faithfulness", help="deletion/insertion and known-truth localisation of every method")
    p.add_argument("--model", type=Path, required=True, help="xCos model directory (every map explains its network)")
    p.add_argument("--test-set", type=Path, required=True, help=".bin pair set")
    p.add_argument("--occluders", type=Path, required=True, help="occluders.csv of the synthetic benchmark")
    p.add_argument("--twins", type=Path, required=True, help="the test set's clean twins (.twins.npz)")
    p.add_argument("--thresholds", type=Path, required=True, help="thresholds JSON (explain thresholds)")
    p.add_argument("--validation", type=Path, required=True,
                   help=".bin validation pair set: BatchNorm recalibration images of the randomised control network")
    p.add_argument("--params", type=Path, help="params file: its `explain` section and seed")
    p.add_argument("--seed", type=options.seed, default=0, help="without --params")
    p.add_argument("--out", type=Path, required=True, help="results (.json)")
    p.add_argument("--examples", type=Path, required=True, help="example maps for the report figure (.npz)")
    p.set_defaults(func=_printing(run_faithfulness_command))

    p = commands.add_parser("invert", help="ArcFace model inversion of chosen classes (with verifier checks)")
    p.add_argument("--model", type=Path, required=True, help="trained model directory (with its margin head)")
    p.add_argument("--classes", type=options.non_negative, nargs="+", help="class labels to invert (default: inversion.classes)")
    p.add_argument("--params", type=Path, help="params file: its `inversion` section, `synth` section and seed")
    p.add_argument("--iterations", type=options.integer(1, 10_000_000))
    p.add_argument("--per-class", type=options.integer(1, 100_000), help="images per class")
    p.add_argument("--bn-weight", type=options.number(0.0), help="λ of the BN statistics term (0: ablation)")
    p.add_argument("--seed", type=options.seed)
    p.add_argument("--synth-seed", type=options.seed, default=None,
                   help="seed of the synthetic benchmark, to draw each class's clean rendering (default: params seed)")
    p.add_argument("--verifier", type=Path, help="an independently trained model (another architecture, seed and "
                                                 "data order) that checks the images")
    p.add_argument("--secondary", type=Path, nargs="*", help="further verifiers, reported as secondary rows (e.g. the "
                                                             "inverted model's twin)")
    p.add_argument("--selection", type=Path, help="TV weight and step count chosen on validation classes "
                                                  "(explain invert-select)")
    p.add_argument("--train-data", type=Path, help="training RecordIO directory (the classes' real images)")
    p.add_argument("--ablation", action="store_true", help="also invert without the BN term and without the class term")
    p.add_argument("--results", type=Path, help="with --verifier: the checks (.json)")
    p.add_argument("--images", type=Path, help="with --verifier: the images (.npz)")
    p.add_argument("--out", type=Path, help="figure (.png)")
    p.set_defaults(func=_printing(run_invert))

    p = commands.add_parser("invert-select", help="choose the inversion's TV weight and step count on validation classes")
    p.add_argument("--model", type=Path, required=True, help="trained model directory (with its margin head)")
    p.add_argument("--params", type=Path, required=True, help="params file: inversion.select (classes, candidates)")
    p.add_argument("--iterations", type=options.integer(1, 1_000_000))
    p.add_argument("--per-class", type=options.integer(1, 10_000))
    p.add_argument("--bn-weight", type=options.number(0.0))
    p.add_argument("--seed", type=options.seed)
    p.add_argument("--synth-seed", type=options.seed, default=None, help="seed of the synthetic benchmark (default: params seed)")
    p.add_argument("--out", type=Path, required=True, help="selection (.json)")
    p.set_defaults(func=_printing(run_invert_select))
    return explain


def _printing(command):
    """``command`` whose result is printed for the log (a summary dict as JSON, or the path)."""
    def run(args: argparse.Namespace) -> None:
        value = command(args)
        print(json.dumps(value, indent=2, default=str) if isinstance(value, dict) else value)

    return run


add_parsers = add_explain_parsers  # what facetrust.cli.build_parser calls
