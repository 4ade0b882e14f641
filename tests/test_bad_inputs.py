"""The bad-input table: every bad input is refused with exit 2, the file and record/line/key named,
and no traceback; a few rows show the ``on_bad_image: skip`` policy instead (exit 0, counted).

Each row is (id, what the user did, argv builder, exit code, words the message must hold).  The
docs/troubleshooting.md lists the same rows; ``test_troubleshooting_lists_every_case`` keeps the
two in step.  Commands run in-process through ``facetrust.cli.main`` (a subprocess costs ~1.5 s).
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pytest

import bad_input_fixtures as fx
from facetrust.cli import main

REPO = Path(__file__).resolve().parents[1]
NAN, INF = float("nan"), float("inf")


def _verify(root: Path) -> list[str]:
    return ["data", "verify", str(root)]


def _align(root: Path, tmp: Path, *extra: str) -> list[str]:
    return ["align", "--in", str(root), "--name", "ijbx", "--out", str(tmp / "aligned"), *extra]


def _ijb_edit(file_key: str, old: str, new: str):
    """An IJB directory with one meta file edited, aligned."""
    def build(tmp: Path) -> list[str]:
        root = fx.ijb_dir(tmp / "ijb")
        fx.edit(root / "meta" / f"ijbx_{file_key}.txt", old, new)
        return _align(root, tmp)
    return build


def _ijb_both_names(old: str, new: str):
    def build(tmp: Path) -> list[str]:
        root = fx.ijb_dir(tmp / "ijb")
        for key in ("face_tid_mid", "name_5pts_score"):
            fx.edit(root / "meta" / f"ijbx_{key}.txt", old, new)
        return _align(root, tmp)
    return build


def _empty(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _missing_crop(tmp: Path) -> list[str]:
    root = fx.ijb_dir(tmp / "ijb")
    (root / "loose_crop" / "3.jpg").unlink()
    return _align(root, tmp)


def _ijb_not_utf8(tmp: Path) -> list[str]:
    root = fx.ijb_dir(tmp / "ijb")
    path = root / "meta" / "ijbx_face_tid_mid.txt"
    path.write_bytes(path.read_bytes().replace(b"2.jpg", b"2\xff.jpg", 1))
    return _align(root, tmp)


def _recordio_truncated(tmp: Path) -> list[str]:
    root = fx.good_training_set(tmp / "set")
    rec = root / "train.rec"
    rec.write_bytes(rec.read_bytes()[:-30])
    return ["data", "dump", str(root), "--jsonl"]


def _recordio_bad_magic(tmp: Path) -> list[str]:
    root = fx.good_training_set(tmp / "set")
    data = bytearray((root / "train.rec").read_bytes())
    data[0:4] = b"RIFF"
    (root / "train.rec").write_bytes(bytes(data))
    return _verify(root)


def _bad_idx_line(tmp: Path) -> list[str]:
    root = fx.good_training_set(tmp / "set")
    fx.edit(root / "train.idx", "1\t", "one\t")
    return _verify(root)


def _params(text: bytes):
    def build(tmp: Path) -> list[str]:
        (tmp / "params.yaml").write_bytes(text)
        return ["synth", "--params", str(tmp / "params.yaml"), "--out", str(tmp / "synth")]
    return build


def _checkpoint(payload: bytes):
    def build(tmp: Path) -> list[str]:
        (tmp / "model").mkdir()
        (tmp / "model" / "checkpoint.pt").write_bytes(payload)
        fx.bin_with_images(tmp / "pairs.bin", [fx.jpeg(0), fx.jpeg(1)])
        return ["embed", "--model", str(tmp / "model"), "--testset", str(tmp / "pairs.bin"),
                "--out", str(tmp / "e.npz")]
    return build


def _shell_pickle() -> bytes:
    import pickle

    return pickle.dumps({"format": "facetrust-train-checkpoint", "x": fx._RunsShell("/tmp/never")}, protocol=2)


def _npz(kind: str):
    """``evaluate pairs`` on an embeddings file damaged in one way."""
    def build(tmp: Path) -> list[str]:
        import io
        import zipfile

        import numpy as np

        path = tmp / "e.npz"
        images = np.array(["a", "b", "c", "d"])
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "truncated":
            np.savez(path, image=images, embedding=np.ones((4, 8), np.float32), issame=np.array([True, False]))
            path.write_bytes(path.read_bytes()[:200])
        elif kind == "object":
            with zipfile.ZipFile(path, "w") as archive:
                for name, value in (("image", images), ("embedding", np.array([[1, "x"]] * 4, dtype=object))):
                    buffer = io.BytesIO()
                    np.lib.format.write_array(buffer, value, allow_pickle=True)
                    archive.writestr(f"{name}.npy", buffer.getvalue())
        else:
            features = {"string": np.array([["a", "b"]] * 4), "nan": np.full((4, 8), np.nan, np.float32),
                        "zero-dim": np.zeros((4, 0), np.float32)}[kind]
            np.savez(path, image=images, embedding=features, issame=np.array([True, False]))
        return ["evaluate", "pairs", "--embeddings", str(path), "--out", str(tmp / "m.json")]
    return build


def _nan_checkpoint(tmp: Path) -> list[str]:
    import torch

    from facetrust.models.artifacts import save_checkpoint
    from facetrust.models.registry import build_backbone

    backbone = build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4)
    state = backbone.state_dict()
    state["fc.weight"] = torch.full_like(state["fc.weight"], float("nan"))
    config = {"backbone": "iresnet", "embedding_size": 8, "input_size": [16, 16],
              "backbone_options": {"layers": [1, 1, 1, 1], "width": 4}, "head": {"kind": "arcface"}}
    save_checkpoint(tmp / "model" / "checkpoint.pt", {"backbone": state, "config": config, "epoch": 1, "step": 1,
                                                       "num_classes": 2})
    fx.bin_with_images(tmp / "pairs.bin", [fx.jpeg(0), fx.jpeg(1)])
    return ["embed", "--model", str(tmp / "model"), "--test-set", str(tmp / "pairs.bin"), "--out", str(tmp / "e.npz")]


def _synth_into_a_full_directory(tmp: Path) -> list[str]:
    (tmp / "mine").mkdir()
    (tmp / "mine" / "thesis.tex").write_text("kept")
    return ["synth", "--out", str(tmp / "mine")]


def _out_is_the_input(tmp: Path) -> list[str]:
    fx.bin_with_images(tmp / "lfw.bin", [fx.jpeg(0), fx.jpeg(1)])
    (tmp / "model").mkdir()
    return ["embed", "--model", str(tmp / "model"), "--test-set", str(tmp / "lfw.bin"), "--out", str(tmp / "lfw.bin")]


_HELD_LOCKS: list[int] = []  # open descriptors of the locks the lock row holds (closed at exit)


def _out_locked(tmp: Path) -> list[str]:
    """``align`` on a directory whose lock another run holds (a second descriptor of this process
    stands for it: flock locks conflict between open files, not only between processes)."""
    import fcntl
    import os

    from facetrust.outputs import lock_path

    out = tmp / "aligned"
    fd = os.open(lock_path(out), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"PID 4242, facetrust align\n")
    _HELD_LOCKS.append(fd)
    return _align(fx.ijb_dir(tmp / "ijb"), tmp)


def _ijb_cr_only(tmp: Path) -> list[str]:
    root = fx.ijb_dir(tmp / "ijb")
    for path in (root / "meta").iterdir():
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    return _align(root, tmp)


def _params_with(tmp: Path, text: str) -> Path:
    path = tmp / "params.yaml"
    path.write_text(text)
    return path


def _verify_out_over_its_photos(tmp: Path) -> list[str]:
    (tmp / "photos").mkdir()
    for name in ("a.jpg", "b.jpg"):
        (tmp / "photos" / name).write_bytes(fx.jpeg(1, 32))
    (tmp / "model").mkdir()
    return ["verify", str(tmp / "photos" / "a.jpg"), str(tmp / "photos" / "b.jpg"), "--model", str(tmp / "model"),
            "--threshold", "0.5", "--out", str(tmp / "photos")]


def _two_outputs_one_path(tmp: Path) -> list[str]:
    return ["evaluate", "reject", "--embeddings", str(tmp / "e.npz"), "--out", str(tmp / "m.json"),
            "--csv", str(tmp / "m.json")]


def _params_duplicate_key(tmp: Path) -> list[str]:
    params = _params_with(tmp, "seed: 7\nseed: 8\nmodels: {}\n")
    return ["train", "--params", str(params), "--model", "m", "--out", str(tmp / "o")]


def _pth_too_wide(tmp: Path) -> list[str]:
    import torch

    # 750 bytes of storage that declare 8000 output channels: the width is read from conv1's shape
    torch.save({"conv1.weight": torch.zeros(1).expand(8000, 3, 3, 3)}, tmp / "backbone.pth")
    return ["import-model", "--path", str(tmp / "backbone.pth"), "--out", str(tmp / "m")]


def _metrics_tar_text(tmp: Path) -> list[str]:
    (tmp / "m.json").write_text(json.dumps({"test_set": "x", "protocol": "ijb_1to1", "tar_at_far": {"1e-04": "abc"}}))
    return ["report", "table", "--metrics", str(tmp / "m.json"), "--out", str(tmp / "t.csv")]


def _symlink_loop(tmp: Path) -> list[str]:
    (tmp / "a.json").symlink_to(tmp / "b.json")
    (tmp / "b.json").symlink_to(tmp / "a.json")
    return ["report", "table", "--metrics", str(tmp / "a.json"), "--out", str(tmp / "t.csv")]


# (id, what the user did, build(tmp) -> argv, exit code, words in the message)
CASES = [
    # --- RecordIO framing and training sets (data verify / dump / inspect; training reads the same)
    ("rec-truncated", "a `.rec` cut short", _recordio_truncated, 2, ["train.rec", "key 6", "past the end of the file"]),
    ("rec-bad-magic", "a `.rec` that is not RecordIO", _recordio_bad_magic, 2, ["train.rec", "bad magic", "key 0"]),
    ("idx-bad-line", "a malformed `.idx` line", _bad_idx_line, 2, ["train.idx", "line 2"]),
    ("rec-empty", "an empty `.rec/.idx` (an empty training set)",
     lambda t: _verify(fx.empty_training_set(t / "set")), 2, ["train.idx", "no records"]),
    ("label-nan", "a NaN label in an image record",
     lambda t: _verify(fx.training_set(t / "set", labels=(0, NAN, 1, 1))), 2, ["train.rec key 2", "label nan"]),
    ("label-huge", "a 1e30 label", lambda t: _verify(fx.training_set(t / "set", labels=(0, 0, 1e30, 1))), 2,
     ["train.rec key 3", "label 1.0000000150474662e+30"]),
    ("label-negative", "a negative label", lambda t: _verify(fx.training_set(t / "set", labels=(-1, 0, 1, 1))), 2,
     ["train.rec key 1", "label -1.0"]),
    ("label-fraction", "a non-integral label", lambda t: _verify(fx.training_set(t / "set", labels=(0, 0, 1, 2.5))),
     2, ["train.rec key 4", "label 2.5"]),
    ("label-range", "a label at or above the number of classes",
     lambda t: _verify(fx.training_set(t / "set", labels=(0, 0, 1, 7))), 2, ["train.rec key 4", "outside 0..1"]),
    ("header-nan", "NaN in header record 0", lambda t: _verify(fx.training_set(t / "set", header=(NAN, 7.0))), 2,
     ["train.rec key 0", "header A", "nan"]),
    ("header-drops", "a header record 0 whose range drops images",
     lambda t: _verify(fx.training_set(t / "set", header=(2.0, 4.0))), 2,
     ["train.idx", "header (A=2, B=4)", "silently dropped"]),
    ("header-identity-images", "image records where the header puts identities",
     lambda t: _verify(fx.training_set(t / "set", identity_flag=0)), 2, ["train.rec key 5", "an image record"]),
    ("property-binary", "a non-UTF-8 `property`",
     lambda t: _verify(fx.training_set(t / "set", property_text=b"\xff\xfe2,32,32")), 2,
     ["property", "num_classes,height,width"]),
    ("image-jpeg-bomb", "a decompression-bomb JPEG in a `.rec`",
     lambda t: _verify(fx.training_set(t / "set", payloads=[fx.jpeg(0), fx.jpeg_bomb(), fx.jpeg(2), fx.jpeg(3)])),
     2, ["train.rec key 2", "decompression bomb"]),
    ("image-png-bomb", "a decompression-bomb PNG in a `.rec`",
     lambda t: _verify(fx.training_set(t / "set", payloads=[fx.png_bomb(), fx.jpeg(1), fx.jpeg(2), fx.jpeg(3)])),
     2, ["train.rec key 1", "decompression bomb"]),
    ("image-corrupt-scan", "a JPEG with corrupt scan data",
     lambda t: _verify(fx.training_set(t / "set", payloads=[fx.jpeg(0), fx.jpeg(1), fx.corrupt_jpeg(), fx.jpeg(3)])),
     2, ["train.rec key 3", "Corrupt JPEG data"]),
    ("image-undecodable", "an image record that is not an image",
     lambda t: _verify(fx.training_set(t / "set", payloads=[b"GIF89a?", fx.jpeg(1), fx.jpeg(2), fx.jpeg(3)])),
     2, ["train.rec key 1", "cannot decode image"]),
    ("verify-skip", "`data verify --on-bad-image skip` with a corrupt JPEG",
     lambda t: _verify(fx.training_set(t / "set", payloads=[fx.jpeg(0), fx.jpeg(1), fx.corrupt_jpeg(), fx.jpeg(3)]))
     + ["--on-bad-image", "skip"], 0, ['"skipped": 1', "key 3", "Corrupt JPEG data"]),
    # --- .bin verification sets
    ("bin-code-execution", "a `.bin` whose pickle runs a command",
     lambda t: ["data", "inspect", str(fx.code_execution_bin(t / "evil.bin"))], 2, ["evil.bin", "system is not allowed"]),
    ("bin-memo-bomb", "a 9-byte `.bin` naming memo slot 400,000,000",
     lambda t: ["data", "inspect", str(fx.memo_bomb_bin(t / "memo.bin"))], 2, ["memo.bin", "memo index 400000000"]),
    ("bin-empty", "an empty `.bin`", lambda t: ["data", "inspect", str(_empty(t / "empty.bin"))], 2,
     ["empty.bin", "empty file"]),
    ("bin-bomb-image", "a decompression bomb inside a `.bin`",
     lambda t: ["data", "inspect", str(fx.bin_with_images(t / "lfw.bin", [fx.jpeg_bomb(), fx.jpeg(1)]))], 2,
     ["lfw.bin image 0", "decompression bomb"]),
    # --- IJB meta files and loose crops (align; evaluate reads the same meta files)
    ("ijb-dotdot", "an IJB image name with `../`", _ijb_both_names("2.jpg", "../../2.jpg"), 2,
     ["ijbx_face_tid_mid.txt", "line 2", "leaves loose_crop/"]),
    ("ijb-absolute", "an absolute IJB image name", _ijb_both_names("3.jpg", "/etc/passwd"), 2,
     ["ijbx_face_tid_mid.txt", "line 3", "absolute"]),
    ("ijb-20-digit-id", "a 20-digit template id", _ijb_edit("face_tid_mid", "2.jpg 5 ", "2.jpg 12345678901234567890 "),
     2, ["ijbx_face_tid_mid.txt", "line 2, column 2", "64-bit integer range"]),
    ("ijb-not-int", "a non-numeric template id", _ijb_edit("face_tid_mid", "2.jpg 5 ", "2.jpg five "), 2,
     ["ijbx_face_tid_mid.txt", "line 2, column 2", "'five' is not int"]),
    ("ijb-columns", "a wrong number of columns", _ijb_edit("face_tid_mid", "2.jpg 5 51", "2.jpg 5"), 2,
     ["ijbx_face_tid_mid.txt", "line 2", "expected 3 fields"]),
    ("ijb-not-utf8", "a meta file that is not UTF-8", _ijb_not_utf8, 2,
     ["ijbx_face_tid_mid.txt", "line 2", "not UTF-8"]),
    ("ijb-missing-image", "an image in one meta file and not the other",
     _ijb_edit("name_5pts_score", "2.jpg", "9.jpg"), 2, ["ijbx_face_tid_mid.txt", "line 2", "'2.jpg' is not in"]),
    ("ijb-pair-label", "a pair label other than 0/1", _ijb_edit("template_pair_label", "5 6 0", "5 6 2"), 2,
     ["ijbx_template_pair_label.txt", "line 1", "label 2 is not 0 or 1"]),
    ("ijb-pair-template", "a pair naming a template without images",
     _ijb_edit("template_pair_label", "5 6 0", "5 99 0"), 2, ["ijbx_template_pair_label.txt", "line 1", "template 99"]),
    ("ijb-landmark-nan", "NaN landmarks", _ijb_edit("name_5pts_score", "2.jpg 23.1500", "2.jpg nan"), 2,
     ["ijbx_name_5pts_score.txt", "line 2", "landmarks are not finite"]),
    ("ijb-landmark-degenerate", "degenerate landmarks (all five points equal)",
     lambda t: _align(fx.ijb_dir(t / "ijb", landmarks=[fx.LANDMARKS, [30.0] * 10, fx.LANDMARKS]), t), 2,
     ["ijbx_name_5pts_score.txt", "line 2", "degenerate"]),
    ("ijb-landmark-outside", "landmarks far outside the image",
     lambda t: _align(fx.ijb_dir(t / "ijb", landmarks=[fx.LANDMARKS, fx.LANDMARKS + 1000, fx.LANDMARKS]), t), 2,
     ["loose_crop/2.jpg", "ijbx_name_5pts_score.txt line 2", "far outside the 64x64 image"]),
    ("ijb-score-zero", "a detector score of 0", lambda t: _align(fx.ijb_dir(t / "ijb", scores=(0.9, 0.0, 0.7)), t), 2,
     ["ijbx_name_5pts_score.txt", "line 2", "detector score 0.0"]),
    ("ijb-score-negative", "a negative detector score",
     lambda t: _align(fx.ijb_dir(t / "ijb", scores=(0.9, 0.8, -0.5)), t), 2,
     ["ijbx_name_5pts_score.txt", "line 3", "detector score -0.5"]),
    ("ijb-score-inf", "an infinite detector score",
     lambda t: _align(fx.ijb_dir(t / "ijb", scores=(INF, 0.8, 0.7)), t), 2,
     ["ijbx_name_5pts_score.txt", "line 1", "detector score inf"]),
    ("ijb-crop-missing", "a loose crop that does not exist", _missing_crop, 2, ["loose_crop/3.jpg", "cannot read image"]),
    ("ijb-crop-corrupt", "a loose crop with corrupt JPEG data",
     lambda t: _align(fx.ijb_dir(t / "ijb", crops=[fx.jpeg(10, 64), fx.corrupt_jpeg(3, 64), fx.jpeg(12, 64)]), t), 2,
     ["loose_crop/2.jpg", "Corrupt JPEG data"]),
    ("ijb-crop-bomb", "a decompression-bomb loose crop",
     lambda t: _align(fx.ijb_dir(t / "ijb", crops=[fx.jpeg(10, 64), fx.png_bomb(), fx.jpeg(12, 64)]), t), 2,
     ["loose_crop/2.jpg", "decompression bomb"]),
    ("align-skip", "`align --on-bad-image skip` with a zero score and a corrupt crop",
     lambda t: _align(fx.ijb_dir(t / "ijb", crops=[fx.jpeg(10, 64), fx.jpeg(11, 64), fx.corrupt_jpeg(3, 64)],
                                 scores=(0.9, 0.0, 0.7)), t, "--on-bad-image", "skip"), 0,
     ['"skipped": 2', '"images": 1']),
    # --- configuration and usage
    ("params-missing", "a params file that does not exist",
     lambda t: ["synth", "--params", str(t / "nope.yaml"), "--out", str(t / "s")], 2, ["nope.yaml", "no such params file"]),
    ("params-yaml", "a params file that is not YAML", _params(b"seed: [1,\n"), 2, ["params.yaml", "not valid YAML"]),
    ("params-not-utf8", "a non-UTF-8 `params.yaml`", _params(b"seed: 1\nname: \xff\xfe\n"), 2,
     ["params.yaml", "not UTF-8"]),
    ("params-unknown-key", "an unknown key in `params.yaml`", _params(b"sed: 1\n"), 2,
     ["params.yaml", "sed", "allowed keys"]),
    ("params-bad-enum", "a value outside the allowed ones",
     _params((REPO / "params.yaml").read_bytes().replace(b"method: landmarks", b"method: dlib", 1)), 2,
     ["params.yaml", "align.method", "'dlib' is not one of"]),
    ("unknown-model", "`train --model` naming no configured model",
     lambda t: ["train", "--model", "no_such_model", "--params", str(REPO / "params.yaml"), "--out", str(t / "m")], 2,
     ["models.no_such_model", "configured"]),
    ("synth-set-json", "`synth --set x=[3,`", lambda t: ["synth", "--out", str(t / "s"), "--set", "x=[3,"], 2,
     ["--set 'x=[3,'", "not valid JSON"]),
    ("synth-set-key", "`synth --set` with an unknown key",
     lambda t: ["synth", "--out", str(t / "s"), "--set", "faces=3"], 2, ["synth.faces", "unknown key"]),
    # --- outputs: never over a user's data (facetrust.outputs), one run per output directory
    ("out-not-empty", "`synth --out` naming a non-empty directory it did not make", _synth_into_a_full_directory, 2,
     ["mine", "not empty", "--force"]),
    ("out-is-input", "an `--out` that is one of the inputs (or a link to it)", _out_is_the_input, 2,
     ["--out", "lfw.bin", "the input --test-set", "refusing to overwrite an input"]),
    ("out-locked", "an `--out` directory another run is writing", _out_locked, 1,
     ["aligned", "in use by another run", "PID 4242"]),
    ("out-holds-photos", "`verify --out` naming the folder of its own photographs", _verify_out_over_its_photos, 2,
     ["--out", "photos", "holds the input", "refusing to write over an input"]),
    ("outs-one-path", "two outputs of one run given one path", _two_outputs_one_path, 2,
     ["--out", "--csv", "m.json", "are the same file"]),
    ("symlink-loop", "an input that is a loop of symbolic links", _symlink_loop, 2, ["a.json", "loop of symbolic links"]),
    ("yaml-duplicate-key", "a key given twice in `params.yaml`", _params_duplicate_key, 2,
     ["params.yaml", "duplicate key 'seed' at line 2 (first at line 1)"]),
    ("pth-broadcast", "a 750-byte `backbone.pth` declaring 8,000 channels", _pth_too_wide, 2,
     ["backbone.pth", "'conv1.weight'", "broadcast view"]),
    ("metrics-text-tar", "a metrics file whose TAR is text", _metrics_tar_text, 2,
     ["m.json", "tar_at_far['1e-04']", "must be a number or null"]),
    # --- numeric options (checked at parse time: argparse names the option and its range)
    ("option-range", "a numeric option out of its range (`--ci-level 7`, `--batch-size 0`, a 5,000-digit `--seed`)",
     lambda t: ["evaluate", "pairs", "--embeddings", str(t / "e.npz"), "--out", str(t / "m.json"), "--ci-level", "7"],
     2, ["argument --ci-level", "outside the allowed range (0, 1)"]),
    # --- line endings: \n, \r\n and \r read alike
    ("ijb-cr-only", "IJB meta files with CR-only (old Mac) line endings", _ijb_cr_only, 0, ['"images": 3']),
    # --- checkpoints (read with weights_only=True; never executed)
    ("checkpoint-garbage", "a `checkpoint.pt` that is not a checkpoint", _checkpoint(b"not a checkpoint"), 2,
     ["checkpoint.pt"]),
    ("checkpoint-pickle", "a `checkpoint.pt` whose pickle runs a command", _checkpoint(_shell_pickle()), 2,
     ["checkpoint.pt", "refused by the weights-only loader", "never loaded otherwise"]),
    ("checkpoint-nan", "a `checkpoint.pt` with NaN weights", _nan_checkpoint, 2,
     ["checkpoint.pt", "'fc.weight'", "NaN or infinite"]),
    ("margin-out-of-range", "an ArcFace margin m = 100 in params", lambda t: ["train", "--model", "m", "--out", str(
        t / "model"), "--params", str(_params_with(t, "models:\n  m: {backbone: iresnet, head: {kind: arcface, m: 100}}\n"))], 2,
     ["margin head 'arcface'", "m = 100", "outside"]),
    # --- embeddings files (evaluate reads them without pickles)
    ("npz-empty", "an empty embeddings `.npz`", _npz("empty"), 2, ["e.npz", "not a readable .npz"]),
    ("npz-truncated", "a truncated embeddings `.npz`", _npz("truncated"), 2, ["e.npz", "not a readable .npz"]),
    ("npz-object", "an embeddings `.npz` holding a pickled object array", _npz("object"), 2,
     ["e.npz", "Object arrays cannot be loaded"]),
    ("npz-string", "string features in an embeddings `.npz`", _npz("string"), 2,
     ["e.npz", "'embedding'", "floating-point"]),
    ("npz-nan", "NaN features in an embeddings `.npz`", _npz("nan"), 2, ["e.npz", "row 0", "not finite"]),
    ("npz-zero-dim", "zero-dimension features in an embeddings `.npz`", _npz("zero-dim"), 2,
     ["e.npz", "(4, 0)", "D >= 1"]),
]


# --- budgets, special files and silent accepts (issue 21)


def _tiny_model(tmp: Path, **config_changes) -> Path:
    import torch

    from facetrust.models.artifacts import save_checkpoint
    from facetrust.models.registry import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("iresnet", embedding_size=8, input_size=(16, 16), layers=[1, 1, 1, 1], width=4)
    config = {"backbone": "iresnet", "embedding_size": 8, "input_size": [16, 16],
              "backbone_options": {"layers": [1, 1, 1, 1], "width": 4}, "head": {"kind": "arcface"}, **config_changes}
    save_checkpoint(tmp / "model" / "checkpoint.pt", {"backbone": backbone.state_dict(), "config": config, "epoch": 1,
                                                       "step": 1, "num_classes": 2})
    return tmp / "model"


def _embed(tmp: Path, testset: Path, *extra: str) -> list[str]:
    return ["embed", "--model", str(tmp / "model"), "--test-set", str(testset), "--out", str(tmp / "e.npz"), *extra]


def _collision_bin(tmp: Path) -> list[str]:
    return ["data", "inspect", str(fx.hash_collision_bin(tmp / "coll.bin", 20000))]


def _fanout_bin(tmp: Path) -> list[str]:
    import pickle

    image = fx.jpeg(0, 64)
    (tmp / "fan.bin").write_bytes(pickle.dumps(([image] * 400, [True] * 200), protocol=4))  # one image, 400 names
    return ["data", "inspect", str(tmp / "fan.bin")]


def _pixel_budget(tmp: Path) -> list[str]:
    _tiny_model(tmp)
    fx.bin_with_images(tmp / "big.bin", [fx.jpeg(0, 256)] * 16)  # 16 names of one 256x256 JPEG
    return _embed(tmp, tmp / "big.bin", "--max-decoded-pixels", "500000")


def _fifo_crop(tmp: Path) -> list[str]:
    import os

    root = fx.ijb_dir(tmp / "ijb")
    (root / "loose_crop" / "2.jpg").unlink()
    os.mkfifo(root / "loose_crop" / "2.jpg")  # nobody writes: reading it would block for ever
    return _align(root, tmp)


def _device_bin(tmp: Path) -> list[str]:
    (tmp / "zero.bin").symlink_to("/dev/zero")
    return ["data", "inspect", str(tmp / "zero.bin")]


def _fifo_params(tmp: Path) -> list[str]:
    import os

    os.mkfifo(tmp / "params.yaml")
    return ["synth", "--params", str(tmp / "params.yaml"), "--out", str(tmp / "synth")]


def _crop_link_out(tmp: Path) -> list[str]:
    root = fx.ijb_dir(tmp / "ijb")
    (tmp / "secret.jpg").write_bytes(fx.jpeg(5, 64))
    (root / "loose_crop" / "2.jpg").unlink()
    (root / "loose_crop" / "2.jpg").symlink_to(tmp / "secret.jpg")
    return _align(root, tmp)


_ALIAS_BOMB = ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))).encode()


def _property_classes(tmp: Path) -> list[str]:
    return _verify(fx.training_set(tmp / "set", property_text=b"1000000000000,32,32"))


def _huge_npy_shape(tmp: Path) -> list[str]:
    import io
    import zipfile

    import numpy as np

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 512)})
    with zipfile.ZipFile(tmp / "e.npz", "w") as archive:
        archive.writestr("image.npy", _npy(np.array(["a", "b"])))
        archive.writestr("embedding.npy", header.getvalue() + bytes(64))
        archive.writestr("issame.npy", _npy(np.array([True])))
    return ["evaluate", "pairs", "--embeddings", str(tmp / "e.npz"), "--out", str(tmp / "m.json")]


def _npy(array) -> bytes:
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array)
    return buffer.getvalue()


def _deflate_size(tmp: Path) -> list[str]:
    import struct

    import numpy as np

    np.savez_compressed(tmp / "e.npz", image=np.array(["a", "b"]), embedding=np.ones((2, 8), np.float32),
                        issame=np.array([True]))
    data = bytearray((tmp / "e.npz").read_bytes())
    for signature, field in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):  # local and central headers
        start = 0
        while (start := data.find(signature, start)) >= 0:
            data[start + field : start + field + 4] = struct.pack("<I", 4_000_000_000)  # "uncompressed size"
            start += 4
    (tmp / "e.npz").write_bytes(bytes(data))
    return ["evaluate", "pairs", "--embeddings", str(tmp / "e.npz"), "--out", str(tmp / "m.json")]


def _shared_offset(tmp: Path) -> list[str]:
    root = fx.good_training_set(tmp / "set")
    lines = (root / "train.idx").read_text().splitlines()
    offset_of_1 = lines[1].split("\t")[1]
    lines[2] = lines[2].split("\t")[0] + "\t" + offset_of_1  # key 2 -> the record of key 1
    (root / "train.idx").write_text("\n".join(lines) + "\n")
    return _verify(root)


def _duplicate_pair(tmp: Path) -> list[str]:
    root = fx.ijb_dir(tmp / "ijb")
    path = root / "meta" / "ijbx_template_pair_label.txt"
    path.write_text(path.read_text() * 2)
    return ["evaluate", "ijb", "--embeddings", str(tmp / "e.npz"), "--protocol", str(root), "--name", "ijbx",
            "--out", str(tmp / "m.json")]


BUDGET_CASES = [
    ("bin-hash-collision", "a `.bin` holding a dict of keys that share one hash",
     _collision_bin, 2, ["coll.bin", "more than 4096 dict or set keys"]),
    ("bin-memo-fanout", "a `.bin` naming one image hundreds of times through the pickle memo",
     _fanout_bin, 2, ["fan.bin", "reference more than 16 x the file's"]),
    ("embed-pixel-budget", "a test set whose images declare more pixels than `embed --max-decoded-pixels`",
     _pixel_budget, 2, ["big.bin", "declare more than 500000 pixels", "--max-decoded-pixels"]),
    ("crop-fifo", "a FIFO in place of a loose crop", _fifo_crop, 2,
     ["loose_crop/2.jpg", "a FIFO, not a regular file"]),
    ("bin-device", "`/dev/zero` in place of a `.bin`", _device_bin, 2,
     ["zero.bin", "a character device, not a regular file"]),
    ("params-fifo", "a FIFO in place of `params.yaml`", _fifo_params, 2, ["params.yaml", "a FIFO"]),
    ("crop-link-out", "a loose crop that is a symlink out of the set", _crop_link_out, 2,
     ["loose_crop/2.jpg", "outside", "--allow-external-links"]),
    ("params-alias-bomb", "a YAML alias bomb in `params.yaml`", _params(_ALIAS_BOMB), 2,
     ["params.yaml", "alias bomb"]),
    ("params-deep", "`params.yaml` nested 5,000 levels deep", _params(b"seed: " + b"[" * 5000 + b"]" * 5000), 2,
     ["params.yaml", "nested deeper than 64 levels"]),
    ("params-long-value", "a 100,000-character value where `params.yaml` wants a number",
     _params(re.sub(rb"(?m)^seed: \d+", b"seed: '" + b"9" * 100000 + b"'", (REPO / "params.yaml").read_bytes())), 2,
     ["params.yaml", "seed", "characters)"]),
    ("property-classes", "a `property` declaring more classes than the set has images", _property_classes, 2,
     ["property", "declares 1000000000000 classes", "only 4 images"]),
    ("checkpoint-embedding-size", "a checkpoint declaring an `embedding_size` its weights cannot hold",
     lambda t: (_tiny_model(t, embedding_size=10**9), fx.bin_with_images(t / "p.bin", [fx.jpeg(0), fx.jpeg(1)]),
                _embed(t, t / "p.bin"))[-1], 2, ["checkpoint.pt", "embedding_size 1000000000"]),
    ("npz-declared-shape", "an `.npz` member whose header declares a terabyte", _huge_npy_shape, 2,
     ["e.npz", "'embedding' declares shape (1000000000000, 512)"]),
    ("npz-deflate-size", "a deflated `.npz` member declaring 4 GB", _deflate_size, 2,
     ["e.npz", "declares 4000000000 bytes", "compressed bytes can hold"]),
    ("idx-shared-offset", "an `.idx` key pointing at another key's record", _shared_offset, 2,
     ["train.idx", "key 2 points at offset", "the record of key 1"]),
    ("ijb-huge-exponent", "a number with a 5-digit exponent in an IJB meta file (crashed pandas' parser)",
     _ijb_edit("name_5pts_score", "2.jpg 23.1500", "2.jpg 6e49999999999"), 2,
     ["ijbx_name_5pts_score.txt", "line 2", "'6e49999999999' has an exponent of 11 digits"]),
    ("ijb-duplicate-pair", "a pair listed twice in an IJB pair file", _duplicate_pair, 2,
     ["ijbx_template_pair_label.txt", "line 2", "repeats line 1", "--duplicate-pairs drop"]),
]
CASES += BUDGET_CASES


@pytest.mark.parametrize("case, what, build, exit_code, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_table(tmp_path, capsys, case, what, build, exit_code, words):
    argv = build(tmp_path)
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse: a usage error (exit 2, one line naming the option)
        code = stop.code
    elapsed = time.perf_counter() - start
    out, err = capsys.readouterr()
    message = err + out
    assert code == exit_code, f"{case}: exit {code}, expected {exit_code}\n{message[-2000:]}"
    assert "Traceback" not in message
    for word in words:
        assert word in message, f"{case}: {word!r} not in the message:\n{message[-2000:]}"
    assert elapsed < 20, f"{case}: {elapsed:.1f} s (a hang?)"
    if exit_code == 2:
        assert "error:" in err
        assert not (tmp_path / "aligned" / "aligned.rec").exists()  # nothing half-written


def test_memo_bomb_is_refused_fast_in_little_memory(tmp_path):
    import resource

    from facetrust.data.binset import load_bin
    from facetrust.errors import InputError

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(InputError, match="memo index 400000000"):
        load_bin(fx.memo_bomb_bin(tmp_path / "memo.bin"))
    assert time.perf_counter() - start < 0.1
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 * 1024  # kB: under 50 MB


def test_code_execution_bin_never_runs(tmp_path):
    path = fx.code_execution_bin(tmp_path / "evil.bin")
    assert main(["data", "inspect", str(path)]) == 2
    assert not path.with_suffix(".pwned").exists()


def test_dump_writes_non_finite_labels_as_strict_json(tmp_path, capsys):
    root = fx.training_set(tmp_path / "set", labels=(0, NAN, INF, -INF))
    assert main(["data", "dump", str(root), "--jsonl"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def strict(token):  # json.loads calls this for NaN/Infinity; strict JSON has neither
        raise AssertionError(f"bare {token} in the dump")

    rows = [json.loads(line, parse_constant=strict) for line in lines]
    assert [row["label"] for row in rows[1:5]] == [[0.0], ["NaN"], ["Infinity"], ["-Infinity"]]
    assert math.isnan(float(rows[2]["label"][0])) and float(rows[4]["label"][0]) == -INF


def test_skip_policy_counts_and_leaves_the_bad_images_out(tmp_path, capsys):
    root = fx.ijb_dir(tmp_path / "ijb", crops=[fx.jpeg(10, 64), fx.corrupt_jpeg(3, 64), fx.jpeg(12, 64)])
    assert main(_align(root, tmp_path, "--on-bad-image", "skip")) == 0
    manifest = json.loads((tmp_path / "aligned" / "manifest.json").read_text())
    assert manifest["skipped"] == 1 and manifest["skipped_images"] == ["2.jpg"]
    assert manifest["images"] == 2 and "Corrupt JPEG data" in manifest["skipped_examples"][0]
    index = (tmp_path / "aligned" / "index.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in index[1:]] == ["1.jpg", "3.jpg"]


def test_troubleshooting_lists_every_case():
    section = (REPO / "docs" / "troubleshooting.md").read_text()
    for case, what, _build, exit_code, _words in CASES:
        assert f"| {what} | {exit_code} |" in section, f"docs/troubleshooting.md lacks the row for {case}: {what}"


def test_crop_links_inside_the_set_or_allowed_ones_are_followed(tmp_path, capsys):
    root = fx.ijb_dir(tmp_path / "ijb")
    crops = root / "loose_crop"
    (crops / "2.jpg").unlink()
    (crops / "2.jpg").symlink_to(crops / "1.jpg")  # inside loose_crop/: fine
    assert main(_align(root, tmp_path)) == 0
    (tmp_path / "elsewhere.jpg").write_bytes(fx.jpeg(5, 64))
    (crops / "2.jpg").unlink()
    (crops / "2.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    assert main(_align(root, tmp_path / "refused")) == 2
    assert main(_align(root, tmp_path / "allowed", "--allow-external-links")) == 0


def test_a_quoted_value_in_an_error_is_cut_short(tmp_path, capsys):
    build = next(case[2] for case in CASES if case[0] == "params-long-value")
    assert main(build(tmp_path)) == 2
    assert len(capsys.readouterr().err) < 1000  # the value is 100,000 characters
