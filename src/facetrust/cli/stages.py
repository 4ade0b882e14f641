"""``facetrust train``, ``train-xcos``, ``fit-head``, ``embed``, ``import-model`` and ``export
onnx``: the model stages' sub-commands."""

from __future__ import annotations

import json
from pathlib import Path

from facetrust import options
from facetrust.cli.common import FORCE_HELP, MODEL_UNCERTAINTY_CHOICES, log, main_process, positive_int, set_threads, size
from facetrust.errors import InputError


def add_parsers(sub) -> None:
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
    p.add_argument("--max-decoded-pixels", type=positive_int, default=1 << 33, metavar="N",
                   help="most pixels the set's images may declare in all, checked from their headers before "
                        "decoding (default 2^33; a .bin can name one large image many times)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("import-model", help="check a model trained elsewhere (arcface_torch backbone.pth, .onnx) "
                                            "and record it as a model directory")
    p.add_argument("--model", help="name under `models:` in --params (source: pretrained)")
    p.add_argument("--params", help="params.yaml giving the model's path, input_size and input convention")
    p.add_argument("--path", help="the model file (default: models.<model>.path)")
    p.add_argument("--input-size", type=size, help="H,W the model takes (default: 112,112; ONNX: its input shape)")
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


def _check_model_size(params: dict, args) -> None:
    """A model too large to build, refused naming ``params.yaml: models.<name>`` before any data is
    read (after the settings :class:`TrainConfig` checks, as the trainer reads them)."""
    from facetrust.errors import ConfigError
    from facetrust.models.registry import backbone_plan
    from facetrust.train.config import TrainConfig

    config = TrainConfig.from_params(params, args.model)
    if getattr(config, "source", None) == "pretrained":
        return
    try:
        backbone_plan(config.backbone, embedding_size=int(config.embedding_size), input_size=tuple(config.input_size),
                      **dict(config.backbone_options or {}))
    except ConfigError as error:
        raise ConfigError(f"{args.params}: models.{args.model}: {error}") from None


def cmd_train(args) -> None:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.config import load_params, model_params
    from facetrust.train.trainer import run_train

    reuse_freed_memory()  # every step frees and allocates its activations again
    params = load_params(args.params)
    model_params(params, args.model)  # names the configured models if absent
    _check_model_size(params, args)
    set_threads(args.threads or params.get("threads"))
    checkpoint = run_train(params, args.model, Path(args.out), resume=args.resume, rec_dir=args.train_data)
    if main_process():  # under torchrun or srun every rank returns; one prints
        print(checkpoint)


def cmd_train_xcos(args) -> None:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.config import load_params, xcos_params
    from facetrust.train.xcos import XCosConfig, train_xcos

    reuse_freed_memory()  # every step of every candidate and seed frees and allocates its tensors again

    params = load_params(args.params)
    entry = xcos_params(params, args.name)
    threads = args.threads or params.get("threads")
    set_threads(threads)
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
    set_threads(args.threads or params.get("threads"))
    model_dir = Path(args.backbone or path_of("model_dir", model=args.model))
    train_set = Path(args.train_data or params["datasets"]["train"])
    print(fit_head(method, model_dir, train_set, Path(args.out), {**head, "seed": params["seed"]}))


def cmd_embed(args) -> None:
    from facetrust.cli.common import reuse_freed_memory
    from facetrust.embed import run_embed

    reuse_freed_memory()  # every batch frees and allocates its activations again
    set_threads(args.threads)
    summary = run_embed(Path(args.model), Path(args.testset), Path(args.out), batch_size=args.batch_size,
                        flip=not args.no_flip, head_dir=Path(args.head) if args.head else None,
                        uncertainty=args.uncertainty, max_decoded_pixels=args.max_decoded_pixels)
    print(json.dumps(summary, indent=2, default=str))


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

    set_threads(args.threads)
    summary = run_export_onnx(Path(args.model), Path(args.out), feature_map=args.feature_map, opset=args.opset,
                              tolerance=args.tolerance)
    print(json.dumps(summary, indent=2))
