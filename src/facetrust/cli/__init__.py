"""The ``facetrust`` command: one subcommand per pipeline stage (docs/ARCHITECTURE.md "CLI").

Every Snakemake rule calls exactly one of these, so each stage can be run, tested and debugged
without Snakemake. Exit codes: 0 success, 1 a failed run, 2 bad input or usage; the message names
the file and the record or key. Heavy modules are imported inside each command so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from facetrust import options
from facetrust.errors import ConfigError, InputError, RunError
from facetrust.float_path import pin_environment
from facetrust.registry import LazyChoices

# Before numpy or torch loads (nothing above imports them): their CPU kernels read these when they
# load, and they fix the floating-point path of the run (facetrust.float_path).
pin_environment()

# CLI choices come from the registries (facetrust.registry), like the params schema's enums.
MARGIN_CHOICES = LazyChoices("facetrust.models.margins:MARGINS")
UNCERTAINTY_HEAD_CHOICES = LazyChoices("facetrust.models.uncertainty.methods:UNCERTAINTY_HEADS")
MODEL_UNCERTAINTY_CHOICES = LazyChoices("none", "facetrust.models.uncertainty.methods:MODEL_UNCERTAINTIES")
POOLING_CHOICES = LazyChoices("facetrust.evaluate.poolings:POOLINGS")
PAIR_DISTANCE_CHOICES = LazyChoices("facetrust.evaluate.pairs:PAIR_DISTANCES")
BACKBONE_CHOICES = LazyChoices("facetrust.models.registry:BACKBONES")
TAR_METHOD_CHOICES = LazyChoices("facetrust.formats:TAR_METHODS", "kth_impostor")
SCORE_CHOICES = LazyChoices("facetrust.evaluate.scores:SCORES")
MAP_METHOD_CHOICES = LazyChoices("facetrust.explain.defaults:MAP_METHODS")

log = logging.getLogger("facetrust")

FORCE_HELP = ("write into a non-empty --out that is not a previous output of this command (files of the "
              "names it writes are replaced; synth replaces the whole directory)")


_size = options.size
_fars = options.rates


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:40]!r}: expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: expected a positive integer")
    return value


def _set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


# --------------------------------------------------------------------------- commands


def cmd_synth(args) -> None:
    from facetrust.config import load_params
    from facetrust.data.synthetic import SynthConfig, synthesize

    params = load_params(args.params) if args.params else {"synth": {}, "seed": 2026}
    overrides = dict(params.get("synth", {}))
    for item in args.set or []:
        key, equals, value = item.partition("=")
        if not key or not equals:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value) if value[:1] in "[{0123456789-tf" else value
        except json.JSONDecodeError as error:
            raise ConfigError(f"--set {item!r}: synth.{key}: value is not valid JSON: {error}") from None
    config = SynthConfig.from_dict(overrides)
    seed = args.seed if args.seed is not None else params.get("seed", 2026)
    args.seed = seed  # recorded in the provenance sidecar
    summary = synthesize(Path(args.out), config, seed=seed)
    print(json.dumps(summary, indent=2, default=str))


def cmd_data(args) -> None:
    from facetrust.data import inspect as data_inspect

    if args.action == "inspect":
        print(json.dumps(data_inspect.inspect_path(args.path), indent=2, default=str))
    elif args.action == "dump":
        data_inspect.dump_jsonl(args.path, sys.stdout)
    elif args.action == "verify":
        from facetrust.data.verify import verify_dataset

        summary = verify_dataset(args.path, args.out, on_bad_image=args.on_bad_image)
        print(json.dumps(summary, indent=2, default=str))


def cmd_data_pack(args) -> None:
    faces = dict(align=args.align, on_bad_image=args.on_bad_image, min_score=args.min_score, threads=args.threads)
    if args.kind == "rec":
        from facetrust.pack.rec import pack_rec

        report = pack_rec(args.images, args.out, size=args.size, encoding=args.encoding, **faces)
    elif args.kind == "bin":
        from facetrust.pack.pairs import pack_bin

        report = pack_bin(args.pairs, args.out, images=args.images, fmt=args.format, ext=args.ext, size=args.size,
                          encoding=args.encoding, **faces)
    else:
        from facetrust.pack.ijb import pack_ijb

        report = pack_ijb(args.images, args.subjects, args.out, name=args.name,
                          templates_per_subject=args.templates_per_subject, impostor_pairs=args.impostor_pairs,
                          seed=args.seed, **faces)
    summary = {k: v for k, v in report.items() if k not in ("skipped_images", "skipped_pairs", "loose_crop_sources",
                                                             "classes", "images_per_class", "skipped_examples")}
    print(json.dumps(summary, indent=2, default=str))


def cmd_align(args) -> None:
    from facetrust.align.stage import run_align

    summary = run_align(
        Path(args.ijb), args.name, Path(args.out), output_size=args.size,
        method=args.detector, threads=args.threads, on_bad_image=args.on_bad_image, no_face=args.no_face,
        min_score=args.min_score, allow_external_links=args.allow_external_links,
    )
    print(json.dumps(summary, indent=2, default=str))


def cmd_train(args) -> None:
    from facetrust.config import load_params, model_params
    from facetrust.train.trainer import run_train

    params = load_params(args.params)
    model_params(params, args.model)  # names the configured models if absent
    _set_threads(args.threads or params.get("threads"))
    checkpoint = run_train(params, args.model, Path(args.out), resume=args.resume, rec_dir=args.train_data)
    if main_process():  # under torchrun or srun every rank returns; one prints
        print(checkpoint)


def cmd_train_xcos(args) -> None:
    from facetrust.config import load_params, xcos_params
    from facetrust.train.xcos import XCosConfig, train_xcos

    params = load_params(args.params)
    entry = xcos_params(params, args.name)
    threads = args.threads or params.get("threads")
    _set_threads(threads)
    config = XCosConfig.from_entry(entry, seed=params["seed"], threads=threads)
    train_set = Path(args.train_data or params["datasets"]["train"])
    validation = Path(args.validation) if args.validation else None
    print(train_xcos(config, train_set, Path(args.out), validation=validation, log=log.info))


def cmd_fit_head(args) -> None:
    from facetrust.config import load_params, model_params, path_of
    from facetrust.errors import ConfigError
    from facetrust.train.fit_head import fit_head

    params = load_params(args.params)
    model_params(params, args.model)
    if args.head not in params["heads"]:
        raise ConfigError(f"{args.params}: heads.{args.head}: no such head; configured: "
                          f"{', '.join(sorted(params['heads'])) or 'none'}")
    head = dict(params["heads"][args.head])
    method = head.pop("method")
    _set_threads(args.threads or params.get("threads"))
    model_dir = Path(args.backbone or path_of("model_dir", model=args.model))
    train_set = Path(args.train_data or params["datasets"]["train"])
    print(fit_head(method, model_dir, train_set, Path(args.out), {**head, "seed": params["seed"]}))


def cmd_embed(args) -> None:
    from facetrust.embed import run_embed

    _set_threads(args.threads)
    summary = run_embed(Path(args.model), Path(args.testset), Path(args.out), batch_size=args.batch_size,
                        flip=not args.no_flip, head_dir=Path(args.head) if args.head else None,
                        uncertainty=args.uncertainty, max_decoded_pixels=args.max_decoded_pixels)
    print(json.dumps(summary, indent=2, default=str))


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


def _bootstrap_settings(args):
    """Bootstrap settings of ``evaluate`` (None when ``--bootstrap 0``)."""
    if not args.bootstrap:
        return None
    from facetrust.evaluate.bootstrap import BootstrapSettings

    return BootstrapSettings(args.bootstrap, args.seed, args.ci_level, Path(args.replicates) if args.replicates else None,
                             args.bootstrap_within)


def cmd_evaluate(args) -> None:
    if (args.embeddings is None) == (args.scores is None) or (args.scores and args.protocol_kind != "pairs"):
        raise InputError("evaluate: give --embeddings, or --scores with the pairs protocol")
    if args.protocol_kind == "ijb":
        from facetrust.evaluate.ijb import run_evaluate_ijb

        metrics = run_evaluate_ijb(
            Path(args.embeddings), Path(args.protocol), args.name, Path(args.out),
            roc_out=Path(args.roc) if args.roc else None, fars=args.fars,
            normalize_images=args.normalize_images, use_detector_score=not args.no_detector_score,
            flip=not args.no_flip, pooling=args.pooling, tar_method=args.tar_method, score=args.score,
            constant_uncertainty=args.constant_uncertainty, bootstrap=_bootstrap_settings(args),
            failed_images=args.failed_images, failed_templates=args.failed_templates, pfe_sigma=args.pfe_sigma,
            duplicate_pairs=args.duplicate_pairs,
        )
    elif args.protocol_kind == "pairs" and args.scores:
        from facetrust.evaluate.precomputed_scores import run_evaluate_pair_scores

        metrics = run_evaluate_pair_scores(Path(args.scores), Path(args.out), score=args.score_key,
                                           references=args.reference_key or (),
                                           roc_out=Path(args.roc) if args.roc else None)
    elif args.protocol_kind == "pairs":
        from facetrust.evaluate.pairs import run_evaluate_pairs

        metrics = run_evaluate_pairs(Path(args.embeddings), Path(args.out),
                                     roc_out=Path(args.roc) if args.roc else None,
                                     flip=not args.no_flip, metric=args.metric, protocol=args.pairs_protocol,
                                     score=args.score, identities_csv=args.identities,
                                     bootstrap=_bootstrap_settings(args), pfe_sigma=args.pfe_sigma)
    elif args.protocol_kind == "edc":
        from facetrust.evaluate.edc_protocol import run_evaluate_edc

        flags = {"normalize_images": args.normalize_images, "use_detector_score": not args.no_detector_score,
                 "flip": not args.no_flip}
        metrics = run_evaluate_edc(
            Path(args.embeddings), Path(args.out), ijb_dir=Path(args.protocol) if args.protocol else None,
            name=args.name, quality_csv=args.quality, template_how=args.template_how, space=args.space,
            pooling=args.pooling, flags=flags, starting_error=args.starting_error, discard_limit=args.discard_limit,
            random_draws=args.random_draws, crfiqa_fmrs=args.crfiqa_fmrs, seed=args.seed,
            bootstrap=_bootstrap_settings(args), failed_images=args.failed_images, identities_csv=args.identities)
    else:
        from facetrust.evaluate.reject import run_evaluate_reject

        import numpy as np

        fractions = np.round(np.arange(0.0, args.max_fraction + 1e-9, args.fraction_step), 10)
        metrics = run_evaluate_reject(
            Path(args.embeddings), Path(args.out), ijb_dir=Path(args.protocol) if args.protocol else None,
            name=args.name, csv_out=Path(args.csv) if args.csv else None, how=args.how, space=args.space,
            template_how=args.template_how, fars=args.fars, fractions=fractions, flip=not args.no_flip,
            normalize_images=args.normalize_images,
            use_detector_score=not args.no_detector_score, pooling=args.pooling, tar_method=args.tar_method,
            score=args.score, bootstrap=_bootstrap_settings(args), failed_images=args.failed_images,
            identities_csv=args.identities, probe_templates=args.probe_templates, pfe_sigma=args.pfe_sigma,
        )
    print(json.dumps({k: v for k, v in metrics.items()
                      if k in ("tar_at_far", "tar_at_far_ci", "accuracy", "accuracy_ci", "auc", "n_pairs", "pauc",
                               "pauc_ci", "unresolved_fars")}, indent=2))


def cmd_import_model(args) -> None:
    from facetrust.models.artifacts import import_pretrained

    if not args.path and not (args.params and args.model):
        raise InputError("import-model: give --path FILE, or --model NAME with --params FILE")
    if args.params:
        from facetrust.config import load_params, model_params
        from facetrust.errors import ConfigError

        settings = dict(model_params(load_params(args.params), args.model))
        if settings.get("source") != "pretrained":
            raise ConfigError(f"{args.params}: models.{args.model}.source: not 'pretrained' (a model trained here "
                              f"needs no import)")
        path = args.path or settings["path"]
    else:
        settings = {key: value for key, value in (("input_size", args.input_size),) if value}
        path = args.path
    if args.channels or args.mean is not None or args.std is not None:
        settings["input"] = {**settings.get("input", {}), **{k: v for k, v in (
            ("channels", args.channels), ("mean", args.mean), ("std", args.std)) if v is not None}}
    descriptor = import_pretrained(Path(path), Path(args.out), settings)
    print(json.dumps(descriptor, indent=2))


def cmd_export(args) -> None:
    from facetrust.models.export import run_export_onnx

    _set_threads(args.threads)
    summary = run_export_onnx(Path(args.model), Path(args.out), feature_map=args.feature_map, opset=args.opset,
                              tolerance=args.tolerance)
    print(json.dumps(summary, indent=2))


# What `facetrust methods` lists: every registry of the package (tests/test_architecture.py finds them all)
METHOD_KINDS = {
    "backbones": BACKBONE_CHOICES, "margins": MARGIN_CHOICES, "uncertainty heads (fit-head)": UNCERTAINTY_HEAD_CHOICES,
    "model uncertainties (embed --uncertainty)": MODEL_UNCERTAINTY_CHOICES, "template poolings": POOLING_CHOICES,
    "comparison scores (evaluate ijb --score)": SCORE_CHOICES, "pair distances": PAIR_DISTANCE_CHOICES,
    "TAR readings": TAR_METHOD_CHOICES, "explanation maps (explain map --method)": MAP_METHOD_CHOICES,
}


def cmd_methods(args) -> None:
    """Print every registry: what `--model`/params names each kind of method can take."""
    for kind, choices in METHOD_KINDS.items():
        print(f"{kind}: {', '.join(choices)}")


def cmd_report(args) -> None:
    from facetrust.report import tables

    if args.kind == "table":
        table = tables.write_tar_table(args.metrics, Path(args.out), methods=args.method,
                                       backbones=args.backbone, train_sets=args.train_set,
                                       test_set=args.test_set, variants=args.variant, models=args.model)
        print(table.to_string(index=False))


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facetrust", description="facetrust: explainable, uncertainty-aware face verification pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="generate the embedded synthetic benchmark in the real formats")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--params", help="params.yaml whose `synth` section and seed are used")
    p.add_argument("--seed", type=options.seed, help="overrides params seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one synth size option")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("methods", help="list the registered methods of every kind (backbones, margins, ...)")
    p.set_defaults(func=cmd_methods)

    from facetrust.data.fetch import add_fetch_parser

    add_fetch_parser(sub)

    data = sub.add_parser("data", help="inspect, dump, verify or pack (.rec/.idx, .bin, IJB directory)")
    data_actions = data.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("inspect", "summary of a .rec/.idx directory, .bin pair set or IJB directory"),
                         ("dump", "one JSON object per record of a .rec/.idx directory"),
                         ("verify", "decode every record of a training set; write a manifest")):
        p = data_actions.add_parser(action, help=text)
        p.add_argument("path")
        if action == "dump":
            p.add_argument("--jsonl", action="store_true", help="one JSON object per record (the only format)")
        if action == "verify":
            p.add_argument("--out", help="manifest JSON to write")
            p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                           help="stop at the first bad record (fail) or count, log and skip it")
        p.set_defaults(func=cmd_data)
    pack = data_actions.add_parser("pack", help="your images -> a training set (rec), a pair set (bin) or an "
                                                "IJB-style set (ijb); see docs/FORMATS.md 'Packing'")
    pack_kinds = pack.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (("rec", "ImageFolder tree (one subfolder per identity) -> train.rec/.idx/property + "
                               "train.lst, as im2rec / face2rec2"),
                       ("bin", "LFW pairs.txt or CSV path1,path2,label -> InsightFace .bin pair set, as lfw2pack"),
                       ("ijb", "images + CSV image,subject[,media] -> IJB-style directory with templates and "
                               "1:1 pairs")):
        p = pack_kinds.add_parser(kind, help=text)
        if kind == "bin":
            p.add_argument("pairs", help="the pair list (pairs.txt or .csv)")
            p.add_argument("--images", help="folder the pair list's paths are relative to (default: its folder)")
            p.add_argument("--format", choices=["auto", "lfw", "csv"], default="auto",
                           help="pair list format (auto: csv for a .csv file, else LFW pairs.txt)")
            p.add_argument("--ext", default="jpg", help="LFW: image file extension (name/name_0001.EXT)")
            p.add_argument("--out", required=True, help="the .bin file (its report: <out stem>.pack.json)")
        else:
            p.add_argument("images", help="the image folder" + (" (one subfolder per identity, any depth below)"
                                                                if kind == "rec" else ""))
            p.add_argument("--out", required=True, help="output directory (replaced as a whole)")
        if kind == "ijb":
            p.add_argument("--subjects", required=True, help="CSV with header image,subject[,media]; image paths "
                                                             "relative to the folder")
            p.add_argument("--name", required=True, help="protocol name: meta/<name>_*.txt")
            p.add_argument("--templates-per-subject", type=int, default=2,
                           help="a subject's media are dealt into this many templates")
            p.add_argument("--impostor-pairs", type=int, help="impostor template pairs sampled (default: 10 per "
                                                              "genuine pair, at most all)")
            p.add_argument("--seed", type=int, default=0, help="seed of the impostor sample")
        else:
            p.add_argument("--size", type=_size, default=(112, 112), help="stored crop H,W (default 112,112)")
            p.add_argument("--encoding", choices=["jpg", "png"], default="jpg",
                           help="stored images: JPEG quality 95 (face2rec2's default) or lossless PNG")
        p.add_argument("--align", choices=["none", "mtcnn"], default="none",
                       help="mtcnn: detect the face and warp its 5 points onto the ArcFace template (InsightFace "
                            "norm_crop); none: the images are crops already (other sizes: centre crop + resize)"
                       + ("; ijb: none needs aligned crops (template landmarks)" if kind == "ijb" else ""))
        p.add_argument("--min-score", type=float, default=0.9,
                       help="mtcnn: faces this confident are subject candidates (the one nearest the centre wins)")
        p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                       help="a file that does not decode or has no face: stop (fail) or leave it out, listed in "
                            "the report (skip)")
        p.add_argument("--threads", type=int, default=1, help="torch threads of the detector")
        p.set_defaults(func=cmd_data_pack)

    p = sub.add_parser("align", help="5-point alignment of IJB-style loose crops onto the ArcFace template")
    p.add_argument("--in", dest="ijb", required=True, help="IJB-style directory (loose_crop/, meta/)")
    p.add_argument("--name", required=True, help="protocol name: meta/<name>_*.txt")
    p.add_argument("--out", required=True, help="output directory (aligned.rec/.idx, index.csv)")
    p.add_argument("--size", type=_size, default=(112, 112), help="output H,W (112,112 or 112,96 or scaled)")
    p.add_argument("--detector", choices=["landmarks", "mtcnn"], default="landmarks",
                   help="landmarks: the set's own 5-point file; mtcnn: re-detect with MTCNN "
                        "(falls back to the set's points where no face is found)")
    p.add_argument("--no-face", choices=["landmarks", "error"], default="landmarks",
                   help="mtcnn: where no face is found, use the set's own points (landmarks) or stop (error)")
    p.add_argument("--min-score", type=options.probability, default=0.9,
                   help="mtcnn: faces this confident are subject candidates (the one nearest the centre wins)")
    p.add_argument("--threads", type=options.threads, default=1)
    p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                   help="a bad loose crop, landmark row or detector score: stop (fail) or leave the "
                        "image out, counted and logged in manifest.json (skip)")
    p.add_argument("--allow-external-links", action="store_true",
                   help="follow loose crops that are symlinks out of the set's loose_crop/ (refused by default)")
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_align)

    p = sub.add_parser("train", help="train a backbone with its margin head (DDP-aware under torchrun)")
    p.add_argument("--model", required=True, help="name under `models:` in params")
    p.add_argument("--params", required=True)
    p.add_argument("--train-data", "--train-set", dest="train_data",
                   help="training RecordIO directory (default: params datasets.train; --train-set is the old name)")
    p.add_argument("--out", required=True, help="model directory")
    p.add_argument("--resume", action="store_true", help="continue from the last epoch checkpoint in --out")
    p.add_argument("--threads", type=options.threads)
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("train-xcos", help="train an xCos model (grid feature + attention) on a trained backbone")
    p.add_argument("--name", required=True, help="name under `xcos:` in params (init_from, standard, settings)")
    p.add_argument("--params", required=True)
    p.add_argument("--train-data", dest="train_data",
                   help="training RecordIO directory (default: params datasets.train)")
    p.add_argument("--out", required=True, help="xCos model directory (xcos.pt, config.json, fit_log.csv)")
    p.add_argument("--validation", help="validation .bin pair set: the `select` choices and validation.json "
                                        "(never a reported test set)")
    p.add_argument("--threads", type=options.threads)
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_train_xcos)

    p = sub.add_parser("fit-head", help="fit an uncertainty head (PFE, SCF, SCF-G) on a frozen backbone")
    p.add_argument("--model", required=True, help="name under `models:` whose frozen backbone the head reads")
    p.add_argument("--head", required=True, help="name under `heads:` in params (method and settings)")
    p.add_argument("--backbone", help="trained model directory (default models/<model>)")
    p.add_argument("--train-data", "--train-set", dest="train_data",
                   help="training RecordIO directory (default: params datasets.train; --train-set is the old name)")
    p.add_argument("--params", required=True)
    p.add_argument("--out", required=True, help="head directory (head.pt, config.json, fit_log.csv)")
    p.add_argument("--threads", type=options.threads)
    p.add_argument("--force", action="store_true", help=FORCE_HELP)
    p.set_defaults(func=cmd_fit_head)

    p = sub.add_parser("embed", help="embed a test set (flip kept separately), with optional uncertainty")
    p.add_argument("--model", required=True,
                   help="model directory (trained or imported), arcface_torch backbone.pth or .onnx file")
    p.add_argument("--test-set", "--testset", dest="testset", required=True,
                   help=".bin pair set or aligned directory (--testset is the old name)")
    p.add_argument("--out", required=True, help="embeddings .npz")
    p.add_argument("--head", help="fitted uncertainty head directory (fit-head output)")
    p.add_argument("--uncertainty", choices=MODEL_UNCERTAINTY_CHOICES, metavar="KIND",
                   help="the model's own uncertainty (when no --head): %(choices)s")
    p.add_argument("--batch-size", type=options.integer(1, 65536), default=256)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--threads", type=options.threads)
    p.add_argument("--max-decoded-pixels", type=_positive_int, default=1 << 33, metavar="N",
                   help="most pixels the set's images may declare in all, checked from their headers before "
                        "decoding (default 2^33; a .bin can name one large image many times)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("import-model", help="check a model trained elsewhere (arcface_torch backbone.pth, .onnx) "
                                            "and record it as a model directory")
    p.add_argument("--model", help="name under `models:` in --params (source: pretrained)")
    p.add_argument("--params", help="params.yaml giving the model's path, input_size and input convention")
    p.add_argument("--path", help="the model file (default: models.<model>.path)")
    p.add_argument("--input-size", type=_size, help="H,W the model takes (default: 112,112; ONNX: its input shape)")
    p.add_argument("--channels", choices=["rgb", "bgr"], help="channel order the model expects (default rgb)")
    p.add_argument("--mean", type=options.number(), help="pixel mean the model subtracts (default 127.5)")
    p.add_argument("--std", type=options.number(0.0, low_open=True), help="pixel std the model divides by (default 127.5)")
    p.add_argument("--out", required=True, help="model directory: pretrained.json is written there")
    p.set_defaults(func=cmd_import_model)

    export = sub.add_parser("export", help="export a model to another format (onnx)")
    export_kinds = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    p = export_kinds.add_parser("onnx", help="ONNX with a dynamic batch axis, checked against PyTorch")
    p.add_argument("--model", required=True, help="model directory, checkpoint or arcface_torch backbone.pth")
    p.add_argument("--out", required=True, help="the .onnx file")
    p.add_argument("--feature-map", action="store_true",
                   help="also output the last feature map (what PFE, SCF, ScaleFace and xCos read)")
    p.add_argument("--opset", type=options.integer(7, 30), default=17)
    p.add_argument("--tolerance", type=options.number(0.0), default=1e-4,
                   help="largest accepted |onnx - torch| / max|torch| (the file is not written above it)")
    p.add_argument("--threads", type=options.threads)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("evaluate", help="evaluate embeddings: pairs (10-fold), ijb (1:1), reject (curves), "
                                        "edc (EDC, pAUC)")
    p.add_argument("protocol_kind", choices=["pairs", "ijb", "reject", "edc"])
    p.add_argument("--embeddings", help="embeddings .npz (every protocol)")
    p.add_argument("--scores", help="pairs: a pair scores file (e.g. xCos, 'facetrust explain score') instead "
                                    "of embeddings")
    p.add_argument("--score-key", default="xcos", help="pairs --scores: the score evaluated")
    p.add_argument("--reference-key", nargs="+", help="pairs --scores: scores of the same file to compare with "
                                                      "fold by fold (paired accuracy difference)")
    p.add_argument("--protocol", help="IJB directory (ijb, reject)")
    p.add_argument("--name", help="IJB protocol name (meta/<name>_*.txt)")
    p.add_argument("--out", required=True, help="metrics JSON")
    p.add_argument("--roc", help="ROC points file")
    p.add_argument("--fars", type=_fars, default=[1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1])
    p.add_argument("--normalize-images", action="store_true", help="N0: L2-normalise image features")
    p.add_argument("--no-detector-score", action="store_true", help="D0: ignore detector scores")
    p.add_argument("--no-flip", action="store_true", help="F0: original images only")
    p.add_argument("--pooling", default="mean", choices=POOLING_CHOICES, metavar="POOLING",
                   help="IJB template pooling: %(choices)s")
    p.add_argument("--tar-method", default="nearest", choices=TAR_METHOD_CHOICES, metavar="METHOD",
                   help="how TAR is read: %(choices)s (kth_impostor: ScaleFace's threshold at the "
                        "round(n*FAR)-th impostor; reject only)")
    p.add_argument("--metric", default="cosine", choices=PAIR_DISTANCE_CHOICES, metavar="DISTANCE",
                   help="pairs: pair distance for the 10-fold accuracy: %(choices)s")
    p.add_argument("--score", default="cosine", choices=SCORE_CHOICES, metavar="SCORE",
                   help="comparison score: %(choices)s (scf_vmf needs pooling kappa/kappa_media, pfe_mls pooling pfe)")
    p.add_argument("--constant-uncertainty", type=_constant, metavar="VALUE",
                   help="ijb: control row, one kappa / sigma^2 for every image (a number, or 'mean' = the file's "
                        "geometric mean)")
    p.add_argument("--pfe-sigma", default="per_dimension", choices=["per_dimension", "isotropic"],
                   help="pooling pfe / score pfe_mls: PFE's per-dimension sigma^2 (uncertainty_per_dim) or the "
                        "isotropic ablation (one sigma^2 per image)")
    p.add_argument("--failed-images", metavar="FILE",
                   help="ijb, reject, edc (IJB): images that failed alignment (the aligned set's manifest.json, key "
                        "skipped_images, or one name per line); the embeddings may lack exactly these (reject and "
                        "edc leave out the pairs of templates left without images)")
    p.add_argument("--failed-templates", default="reject", choices=["reject", "drop"],
                   help="ijb: pairs of a template left without images: reject (score below every other pair; "
                        "the generalised FNMR) or drop (left out)")
    p.add_argument("--duplicate-pairs", default="error", choices=["error", "drop"],
                   help="ijb: a pair listed twice is an error, or its repeats are left out and "
                        "counted in the metrics (duplicate_pairs)")
    p.add_argument("--pairs-protocol", default="insightface", choices=["insightface", "sphereface"],
                   help="pairs: InsightFace verification.py, or SphereFace's evaluation.m")
    p.add_argument("--identities", help="pairs, reject, edc on a pair set: CSV with columns image, identity (the "
                                        "synthetic quality.csv) for the bootstrap subjects; without it every pair "
                                        "is its own cluster")
    p.add_argument("--probe-templates", default="all_images", choices=["all_images", "first_image"],
                   help="reject (IJB): pool every template (ScaleFace 'full'), or ScaleFace's single-image probes "
                        "(the second template of each pair is its first image)")
    p.add_argument("--bootstrap", type=options.integer(0, 1_000_000), default=0, metavar="N",
                   help="bootstrap replicates over subjects (0: none)")
    p.add_argument("--bootstrap-within", action="store_true",
                   help="also resample templates within subjects (two-stage, conservative)")
    p.add_argument("--seed", type=options.seed, default=0, help="seed of the bootstrap (and EDC random rankings)")
    p.add_argument("--ci-level", type=options.level, default=0.95, help="bootstrap percentile interval level")
    p.add_argument("--replicates", help="bootstrap replicates .npz to write (paired comparisons in reports)")
    p.add_argument("--how", default="mean", choices=["mean", "max", "min", "harmonic", "product"],
                   help="reject: pair uncertainty from its two members'")
    p.add_argument("--space", default="uncertainty", choices=["uncertainty", "confidence", "method"],
                   help="reject, edc: combine and aggregate uncertainties u, confidences 1/u (ScaleFace scales, "
                        "SCF kappa), or each method's own space")
    p.add_argument("--template-how", default="mean", choices=["mean", "min", "harmonic"],
                   help="reject, edc (IJB): template uncertainty from its images', in the chosen space")
    p.add_argument("--quality", help="edc: quality.csv (the oracle ranking by the known quality)")
    p.add_argument("--starting-error", type=options.level, default=0.05, help="edc: error that fixes the threshold")
    p.add_argument("--discard-limit", type=options.number(0.0, 1.0, low_open=True), default=0.2, help="edc: pAUC up to this discarded fraction")
    p.add_argument("--random-draws", type=options.integer(1, 100_000), default=10, help="edc: random rankings averaged")
    p.add_argument("--crfiqa-fmrs", type=_fars, default=[1e-3, 1e-4], help="edc: FMRs of the CR-FIQA ERC variant")
    p.add_argument("--csv", help="reject: also write the curve as CSV")
    p.add_argument("--fraction-step", type=options.number(0.0, 1.0, low_open=True), default=0.01,
                   help="reject: step between rejected fractions")
    p.add_argument("--max-fraction", type=options.probability, default=0.5,
                   help="reject: largest rejected fraction")
    p.set_defaults(func=cmd_evaluate)

    from facetrust.verify.cli import add_verify_parser

    add_verify_parser(sub, MODEL_UNCERTAINTY_CHOICES)

    from facetrust.cli.explain import add_explain_parsers

    add_explain_parsers(sub)

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
    return parser


# Output options beyond --out, per command (facetrust.outputs guards them all); every other path
# option is an input.  Options that are names, not paths, are never taken for inputs.
EXTRA_OUTPUTS = {
    "evaluate": ("roc", "csv", "replicates"),
    "explain faithfulness": ("examples",),
    "explain invert": ("results", "images"),
    "report edc": ("figure",),
    "report xcos": ("table", "figure"),
    "report explanations": ("table", "curves", "maps"),
    "report inversion": ("table", "figure"),
}
NOT_PATHS = {
    "train": ("model",), "fit-head": ("model", "head"), "import-model": ("model",), "train-xcos": ("name",),
    "align": ("name",), "evaluate": ("name", "score_key", "reference_key"),
    "report": ("method", "label", "title", "backbone", "train_set", "test_set", "variant", "model", "variants",
               "baseline", "margin_methods", "depth_method", "depth_backbones", "paper_protocol_label", "name"),
}
# Inputs that are model directories: an output may live inside them (models/<model>/heads/<head>).
MODEL_DIRECTORY_INPUTS = ("model", "backbone", "standard", "verifier")
_BOOKKEEPING = ("command", "func", "kind", "format", "explain_command", "action", "protocol_kind", "verbose")


def command_name(args) -> str:
    """``evaluate``, ``report xcos``, ``explain invert``, ``export onnx`` …"""
    sub = next((getattr(args, key) for key in ("kind", "explain_command", "format") if getattr(args, key, None)), None)
    return f"{args.command} {sub}" if sub and args.command in ("report", "explain", "export") else args.command


def output_paths(args) -> dict[str, Path]:
    """Option -> path of every output the command was given (``out`` first)."""
    name = command_name(args)
    if args.command == "fetch":  # downloads into a directory of other files; keeps its .part files to resume
        return {}  # (its --out still gets its provenance record)
    options_out = ("out", *EXTRA_OUTPUTS.get(name, EXTRA_OUTPUTS.get(args.command, ())))
    return {option: Path(getattr(args, option)) for option in options_out if getattr(args, option, None)}


def input_paths(args, outputs: dict[str, Path]) -> list[tuple[str, Path]]:
    from facetrust.outputs import option_paths

    skip = {*_BOOKKEEPING, *outputs, *NOT_PATHS.get(args.command, ())}
    return option_paths(vars(args), skip=tuple(skip))


def _provenance_text(args, argv: list[str]) -> str:
    """The sidecar record of what made ``--out`` (facetrust.provenance)."""
    from facetrust.provenance import record_text

    seed = getattr(args, "seed", None)
    if seed is None and getattr(args, "params", None):
        from facetrust.config import load_yaml

        try:
            seed = (load_yaml(args.params) or {}).get("seed")
        except (InputError, AttributeError):
            seed = None
    return record_text(argv, seed)


def option_flags(parser: argparse.ArgumentParser, args) -> dict[str, str]:
    """dest -> the option as typed (``testset`` -> ``--test-set``; a positional: its name) of the
    subcommand ``args`` ran."""
    flags: dict[str, str] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None) or "")
            if chosen is not None:
                flags.update(option_flags(chosen, args))
        elif action.option_strings:
            flags.setdefault(action.dest, next((o for o in action.option_strings if o.startswith("--")),
                                               action.option_strings[0]))
        else:
            flags.setdefault(action.dest, action.dest)
    return flags


def main_process(environ=os.environ) -> bool:
    """Whether this is rank 0: of torchrun (``RANK``), or of a multi-task ``srun`` step
    (``SLURM_PROCID``, which facetrust.train.distributed turns into ``RANK`` only later), or the
    only process.  Rank 0 alone locks, marks and records the outputs."""
    if "RANK" in environ:
        return environ["RANK"] == "0"
    tasks = environ.get("SLURM_STEP_NUM_TASKS", "1")
    if tasks.isdigit() and int(tasks) > 1 and "SLURM_PROCID" in environ:
        return environ["SLURM_PROCID"] == "0"
    return True


def _run(args, argv: list[str], flags: dict[str, str]) -> None:
    """The command inside its output transaction (facetrust.outputs)."""
    from facetrust import outputs

    out_paths = output_paths(args)
    outputs.check_outputs_against_inputs(out_paths, input_paths(args, out_paths),
                                         directory=args.command in outputs.DIRECTORY_COMMANDS,
                                         nested_ok=MODEL_DIRECTORY_INPUTS, flags=flags)
    out = getattr(args, "out", None)
    with outputs.transaction(args.command, out_paths, force=getattr(args, "force", False),
                             main_process=main_process(),
                             provenance=lambda: _provenance_text(args, argv), record_of=Path(out) if out else None):
        args.func(args)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    name = args.command
    try:
        _run(args, argv if argv is not None else sys.argv[1:], option_flags(parser, args))
    except InputError as error:
        print(f"facetrust {name}: error: {error}", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 2
    except KeyboardInterrupt:
        print(f"facetrust {name}: interrupted", file=sys.stderr)
        return 1
    except RunError as error:  # a failed run that one line explains (a lock held, a diverged training)
        print(f"facetrust {name}: error: {error}", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except OSError as error:  # the machine, not the input: a read-only or full disk, a missing device
        # a failed write() names no file: the stage's output is the place to look
        where = error.filename or getattr(args, "out", None)
        where = f" {where}" if where else ""
        print(f"facetrust {name}: error: cannot write or read{where}: {error.strerror or error}",
              file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except MemoryError:
        print(f"facetrust {name}: error: out of memory", file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    except Exception as error:  # a bug: one line, the traceback with -v
        text = " ".join(str(error).split())[:300]
        print(f"facetrust {name}: error: unexpected {type(error).__name__}: {text} (run with -v for the traceback)",
              file=sys.stderr)
        log.debug("facetrust %s failed", name, exc_info=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
