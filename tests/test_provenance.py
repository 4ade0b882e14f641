"""Provenance sidecars: what made an output, outside the output's own bytes."""

from __future__ import annotations

import json
from pathlib import Path

from facetrust.cli import main
from facetrust.provenance import sidecar_path

SMALL = ["--set", "train_identities=4", "--set", "train_images_per_identity=[2,2]", "--set", "pair_identities=20",
         "--set", "pairs_per_fold=2", "--set", "ijb_identities=4", "--set", "ijb_impostor_pairs=20"]


def test_sidecar_goes_to_the_provenance_tree_inside_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert sidecar_path("results/figures/roc.png") == tmp_path / "provenance/results/figures/roc.png.json"
    outside = tmp_path.parent / "elsewhere" / "m.json"
    assert sidecar_path(outside) == outside.with_name("m.json.provenance.json")


def test_a_command_records_what_made_its_output_and_the_same_run_records_the_same_bytes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["synth", "--out", "synth", "--seed", "5", *SMALL]) == 0
    first = (tmp_path / "provenance" / "synth.json").read_bytes()
    record = json.loads(first)
    assert record["seed"] == 5 and record["command"][:2] == ["facetrust", "synth"]
    assert {"facetrust", "git_sha", "torch", "numpy", "python", "determinism", "slurm_job_id"} <= set(record)
    assert not any(p.name.endswith(".json") and "provenance" in p.name for p in Path("synth").rglob("*"))
    assert main(["synth", "--out", "synth", "--seed", "5", *SMALL]) == 0
    assert (tmp_path / "provenance" / "synth.json").read_bytes() == first


def test_a_failed_command_writes_no_record(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "pairs", "--embeddings", "missing.npz", "--out", "m.json"]) == 2
    assert not (tmp_path / "provenance").exists()
