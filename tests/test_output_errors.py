"""Output errors — a full disk, a read-only directory — end a stage with exit 1, a message naming
the path, no traceback, and no half-made set of outputs (a tiny tmpfs; mounting needs root)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

import bad_input_fixtures as fx
from facetrust.cli import main
from train_helpers import make_tiny_rec, tiny_config


def _mount(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    rec = make_tiny_rec(root / "rec")
    config = tiny_config(epochs=1)
    model = {key: config[key] for key in ("backbone", "backbone_options", "embedding_size", "input_size", "head")}
    model["train"] = {k: v for k, v in config.items() if k not in model and k != "threads"}
    params = {"seed": 1, "threads": 1, "models": {"tiny": model}, "heads": {"pfe": {"method": "pfe", "epochs": 1, "hidden": [8],
                                                                        "batch_size": 16}},
              "datasets": {"train": str(rec)}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    assert main(["train", "--model", "tiny", "--params", str(root / "params.yaml"), "--out", str(root / "model")]) == 0
    rng = np.random.default_rng(0)
    np.savez(root / "pairs.npz", image=np.array([str(i) for i in range(40)]),
             embedding=rng.normal(size=(40, 8)).astype(np.float32), issame=np.arange(20) % 2 == 0,
             uncertainty=rng.uniform(0.5, 1.5, 40).astype(np.float32))
    (root / "metrics.json").write_text('{"test_set": "x", "tar_at_far": {"1e-01": 0.5}}')
    fx.ijb_dir(root / "ijb")
    issame = np.arange(40) % 2 == 0
    np.savez(root / "scores.npz", issame=issame, score_names=np.array(["xcos"]),
             xcos=np.where(issame, 0.5, -0.5) + np.linspace(-0.6, 0.6, 40))
    return root


def _stages(inputs: Path, out: Path) -> dict[str, list[str]]:
    return {
        "synth": ["synth", "--out", str(out / "synth"), "--set", "train_identities=4",
                  "--set", "train_images_per_identity=[2,2]", "--set", "pair_identities=20", "--set", "pairs_per_fold=2",
                  "--set", "ijb_identities=4", "--set", "ijb_impostor_pairs=20"],
        "train": ["train", "--model", "tiny", "--params", str(inputs / "params.yaml"), "--out", str(out / "model")],
        "fit-head": ["fit-head", "--model", "tiny", "--head", "pfe", "--backbone", str(inputs / "model"),
                     "--params", str(inputs / "params.yaml"), "--out", str(out / "head")],
        "data verify": ["data", "verify", str(inputs / "rec"), "--out", str(out / "manifest.json")],
        "evaluate pairs": ["evaluate", "pairs", "--embeddings", str(inputs / "pairs.npz"), "--out", str(out / "m.json"),
                           "--roc", str(out / "roc.csv")],
        "evaluate reject": ["evaluate", "reject", "--embeddings", str(inputs / "pairs.npz"), "--out", str(out / "r.json"),
                            "--csv", str(out / "r.csv")],
        "report table": ["report", "table", "--metrics", str(inputs / "metrics.json"), "--out", str(out / "t.csv")],
        "align": ["align", "--in", str(inputs / "ijb"), "--name", "ijbx", "--out", str(out / "aligned")],
        "evaluate pairs --scores": ["evaluate", "pairs", "--scores", str(inputs / "scores.npz"),
                                    "--out", str(out / "m.json"), "--roc", str(out / "roc.csv")],
    }


STAGES = ["synth", "train", "fit-head", "data verify", "evaluate pairs", "evaluate reject", "report table", "align",
          "evaluate pairs --scores"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("disk", ["full", "read-only"])
def test_an_output_error_is_exit_1_naming_the_path_and_leaves_nothing(inputs, tmp_path, capsys, stage, disk):
    out = tmp_path / "out"
    if not _mount(out, "size=24k" if disk == "full" else "size=1m"):
        pytest.skip("mounting a tmpfs needs root")
    try:
        if disk == "full":
            with (out / "filler").open("wb", buffering=0) as filler:  # fill the disk to the last block
                try:
                    while True:
                        filler.write(b"\0" * 1024)
                except OSError:
                    pass
        else:
            subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        before = sorted(p.name for p in out.iterdir())
        code = main(_stages(inputs, out)[stage])
        err = capsys.readouterr().err
        assert code == 1, err
        assert "Traceback" not in err and str(out) in err, err
        assert sorted(p.name for p in out.iterdir()) == before  # no output, no temporary file
    finally:
        subprocess.run(["umount", str(out)], capture_output=True)
