"""``facetrust synth``, ``methods``, ``fetch``, ``data inspect|dump|verify|pack`` and ``align``:
the data stages' sub-commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from facetrust import options
from facetrust.cli.common import (BACKBONE_CHOICES, FORCE_HELP, MAP_METHOD_CHOICES, MARGIN_CHOICES, METRIC_CHOICES,
                                  MODEL_UNCERTAINTY_CHOICES, PAIR_DISTANCE_CHOICES, PAPER_CHOICES, POOLING_CHOICES,
                                  SCORE_CHOICES, TAR_METHOD_CHOICES, UNCERTAINTY_HEAD_CHOICES, size)
from facetrust.errors import ConfigError


def add_parsers(sub) -> None:
    p = sub.add_parser("synth", help="generate the embedded synthetic benchmark in the real formats")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--params", help="params.yaml whose `synth` section and seed are used")
    p.add_argument("--seed", type=options.seed, help="overrides params seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one synth size option")
    p.add_argument("--workers", type=options.threads, default=1,
                   help="processes that render (default 1); the files are the same for any number")
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
            p.add_argument("--templates-per-subject", type=options.positive, default=2,
                           help="a subject's media are dealt into this many templates")
            p.add_argument("--impostor-pairs", type=options.non_negative,
                           help="impostor template pairs sampled (default: 10 per genuine pair, at most all)")
            p.add_argument("--seed", type=options.seed, default=0, help="seed of the impostor sample")
        else:
            p.add_argument("--size", type=size, default=(112, 112), help="stored crop H,W (default 112,112)")
            p.add_argument("--encoding", choices=["jpg", "png"], default="jpg",
                           help="stored images: JPEG quality 95 (face2rec2's default) or lossless PNG")
        p.add_argument("--align", choices=["none", "mtcnn"], default="none",
                       help="mtcnn: detect the face and warp its 5 points onto the ArcFace template (InsightFace "
                            "norm_crop); none: the images are crops already (other sizes: centre crop + resize)"
                       + ("; ijb: none needs aligned crops (template landmarks)" if kind == "ijb" else ""))
        p.add_argument("--min-score", type=options.probability, default=0.9,
                       help="mtcnn: faces this confident are subject candidates (the one nearest the centre wins)")
        p.add_argument("--on-bad-image", choices=["fail", "skip"], default="fail",
                       help="a file that does not decode or has no face: stop (fail) or leave it out, listed in "
                            "the report (skip)")
        p.add_argument("--threads", type=options.threads, default=1, help="torch threads of the detector")
        if kind != "rec":
            p.add_argument("--training-faces", help="a training pack's faces.csv (data pack rec): report the test "
                                                    "images that are byte for byte training images")
        p.set_defaults(func=cmd_data_pack)

    p = sub.add_parser("align", help="5-point alignment of IJB-style loose crops onto the ArcFace template")
    p.add_argument("--in", dest="ijb", required=True, help="IJB-style directory (loose_crop/, meta/)")
    p.add_argument("--name", required=True, help="protocol name: meta/<name>_*.txt")
    p.add_argument("--out", required=True, help="output directory (aligned.rec/.idx, index.csv)")
    p.add_argument("--size", type=size, default=(112, 112), help="output H,W (112,112 or 112,96 or scaled)")
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
    summary = synthesize(Path(args.out), config, seed=seed, workers=args.workers)
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
                          encoding=args.encoding, training_faces=args.training_faces, **faces)
    else:
        from facetrust.pack.ijb import pack_ijb

        report = pack_ijb(args.images, args.subjects, args.out, name=args.name,
                          templates_per_subject=args.templates_per_subject, impostor_pairs=args.impostor_pairs,
                          seed=args.seed, training_faces=args.training_faces, **faces)
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


# What `facetrust methods` lists: every registry of the package (tests/test_architecture.py finds them all)
METHOD_KINDS = {
    "backbones": BACKBONE_CHOICES, "margins": MARGIN_CHOICES, "uncertainty heads (fit-head)": UNCERTAINTY_HEAD_CHOICES,
    "model uncertainties (embed --uncertainty)": MODEL_UNCERTAINTY_CHOICES, "template poolings": POOLING_CHOICES,
    "comparison scores (evaluate ijb --score)": SCORE_CHOICES, "pair distances": PAIR_DISTANCE_CHOICES,
    "TAR readings": TAR_METHOD_CHOICES, "explanation maps (explain map --method)": MAP_METHOD_CHOICES,
    "paper reports (report paper NAME)": PAPER_CHOICES, "metrics (metrics files, tables, the DVC view)": METRIC_CHOICES,
}


def cmd_methods(args) -> None:
    """Print every registry: what `--model`/params names each kind of method can take."""
    for kind, choices in METHOD_KINDS.items():
        print(f"{kind}: {', '.join(choices)}")
