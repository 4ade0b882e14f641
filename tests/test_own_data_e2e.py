"""config/own_data.yaml end to end on a user's folders: pack -> train -> SCF head -> embed -> evaluate
-> tables and reports, run by Snakemake as the README says (tiny sizes from tests/data/tiny_own_data.yaml
over the preset).  The folders are as a user has them: rendered faces in nested identity folders, mixed
sizes and formats (jpg, png, bmp, webp), one corrupt file and one image without a face."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from own_data_fixture import write_identity_folder, write_lfw_style_folder

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRESET, TINY = REPO / "config" / "own_data.yaml", REPO / "tests" / "data" / "tiny_own_data.yaml"

pytest.importorskip("facenet_pytorch", reason="the preset detects faces with MTCNN")


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                           "--configfile", str(PRESET), str(TINY), "--replace-workflow-config", *args],
                          capture_output=True, text=True, timeout=1200, env=env)


@pytest.fixture(scope="module")
def own_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("own")
    shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
    train = write_identity_folder(workdir / "my_data" / "train", identities=8, images=6)
    test = write_lfw_style_folder(workdir / "my_data" / "test", identities=6, images=4)
    (workdir / "my_data" / "test" / "pairs.txt").rename(workdir / "my_data" / "test_pairs.txt")
    (workdir / "my_data" / "test" / "subjects.csv").rename(workdir / "my_data" / "test_subjects.csv")
    result = snakemake(workdir, "--cores", "2", "all")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, train, test


def test_dry_run_starts_with_the_three_pack_rules(tmp_path):
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    write_identity_folder(tmp_path / "my_data" / "train", identities=2, images=1)
    write_lfw_style_folder(tmp_path / "my_data" / "test", identities=2, images=2)
    (tmp_path / "my_data" / "test" / "pairs.txt").rename(tmp_path / "my_data" / "test_pairs.txt")
    (tmp_path / "my_data" / "test" / "subjects.csv").rename(tmp_path / "my_data" / "test_subjects.csv")
    identity = sorted(p for p in (tmp_path / "my_data" / "train").iterdir() if p.is_dir())[0]
    (identity / "gone.jpg").symlink_to(tmp_path / "absent.jpg")  # the packer lists it; the DAG still plans
    result = snakemake(tmp_path, "-n", "all")
    assert result.returncode == 0, result.stderr[-3000:]
    for rule in ("pack_train", "pack_pairs", "pack_ijb", "decode", "align", "train", "fit_head", "embed",
                 "evaluate_ijb", "evaluate_pairs", "ijbc_table", "verification_table", "report_scf"):
        assert f"rule {rule}:" in result.stdout, rule
    assert "rule synthesize:" not in result.stdout


@pytest.mark.slow
def test_the_preset_packs_the_folders_and_writes_the_tables_and_reports(own_run):
    workdir, train, test = own_run
    report = json.loads((workdir / "data" / "packed" / "train" / "pack.json").read_text())
    assert {s["path"] for s in report["skipped_images"]} == {train["corrupt"], train["no_face"]}
    assert report["num_classes"] == 8 and report["num_images"] == len(train["images"])
    pairs = json.loads((workdir / "data" / "packed" / "pairs" / "own_pairs.pack.json").read_text())
    assert pairs["n_pairs"] == test["n_pairs"] and pairs["skipped"] == 0
    assert pairs["in_training_set"] == {"training_faces": "data/packed/train/faces.csv", "images": 0, "examples": [],
                                        "identities": 0, "identity_examples": []}
    ijb = json.loads((workdir / "data" / "packed" / "ijb" / "own_ijb" / "pack.json").read_text())
    assert ijb["n_subjects"] == 6 and ijb["n_templates"] == 12 and ijb["n_genuine"] == 6
    assert ijb["in_training_set"]["images"] == ijb["in_training_set"]["identities"] == 0  # checked against training

    table = pd.read_csv(workdir / "results" / "ijbc_table.csv")
    assert table["test_set"].unique().tolist() == ["own_ijb"]
    assert table["method"].tolist() == ["ArcFace", "ArcFace+SCF"]
    tar = table.filter(like="TAR@FAR=")
    assert ((tar >= 0) & (tar <= 1)).all().all()
    verification = pd.read_csv(workdir / "results" / "verification_table.csv")
    assert len(verification) == 1 and "own_pairs" in verification.to_csv()
    for path in ("results/reports/scf.md", "results/reports/sphereface.md", "models/arcface/heads/scf/head.pt",
                 "embeddings/arcface/own_pairs.npz", "embeddings/arcface_scf/own_ijb.npz",
                 "data/aligned/own_ijb/index.csv", "data/manifests/train.json", "logs/pack/train.log"):
        assert (workdir / path).exists(), path


@pytest.mark.slow
def test_the_preset_is_up_to_date_after_a_run(own_run):
    workdir, _, _ = own_run
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr
    # what a file manager or a user drops beside the photos is not an input: nothing reruns
    identity = sorted(p for p in (workdir / "my_data" / "train").iterdir() if p.is_dir())[0]
    (workdir / "my_data" / "train" / ".DS_Store").write_bytes(b"\0")
    (identity / "notes.txt").write_text("taken in 2019")
    result = snakemake(workdir, "-n", "all")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]
