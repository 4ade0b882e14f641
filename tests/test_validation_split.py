"""The validation split (issue 17 item 1): synth_val has identities of no other set, adding it changes
no other file, and every stage that fits a threshold or chooses a value reads a validation set, never
a test set (the Snakemake DAG of `all` is walked)."""

from __future__ import annotations

import csv
import dataclasses
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from facetrust.config import check_explain
from facetrust.data.binset import load_bin
from facetrust.data.synthetic import SynthConfig, synthesize
from facetrust.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(__import__("sys").executable).parent / "snakemake"
TINY = SynthConfig(
    image_size=32, loose_crop_size=48, train_identities=4, train_images_per_identity=(2, 3),
    pair_identities=20, pair_images_per_identity=3, pairs_per_fold=4, ijb_identities=4,
    ijb_templates_per_identity=(2, 2), ijb_media_per_template=(1, 1), ijb_frames_per_media=(1, 1),
    ijb_impostor_pairs=10, val_identities=30, val_pairs_per_fold=6,
)
#: Rules that fit a threshold or choose a value: each must take `--validation` (a validation set).
CHOOSING_RULES = {"explain_thresholds", "train_xcos"}
#: Rules that use fitted thresholds: each reads them from a file a choosing rule wrote (`--thresholds`).
THRESHOLD_USERS = {"explain_faithfulness", "explain_sanity"}


def _identities(root: Path) -> dict[str, set[int]]:
    sets: dict[str, set[int]] = {}
    with open(root / "quality.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            sets.setdefault(row["set"], set()).add(int(row["identity"]))
    return sets


def test_validation_identities_are_in_no_other_set_and_adding_it_changes_no_other_file(tmp_path):
    synthesize(tmp_path / "a", TINY, 3)
    synthesize(tmp_path / "b", dataclasses.replace(TINY, val_identities=40, val_pairs_per_fold=8), 3)
    sets = _identities(tmp_path / "a")
    assert set(sets) == {"train", "synth_lfw", "synth_ijbc", "synth_val"}
    others = sets["train"] | sets["synth_lfw"] | sets["synth_ijbc"]
    assert len(sets["synth_val"]) == 30 and not sets["synth_val"] & others
    _, issame = load_bin(tmp_path / "a" / "pairs" / "synth_val.bin")
    assert len(issame) == TINY.pair_folds * 6 and sum(issame) == len(issame) // 2
    for name in ("pairs/synth_lfw.bin", "train/train.rec", "ijb/synth_ijbc/loose_crop/1.jpg"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "pairs" / "synth_val.bin").read_bytes() != \
        (tmp_path / "b" / "pairs" / "synth_val.bin").read_bytes()


def _dag_commands(*extra: str) -> dict[str, list[str]]:
    """{rule: [shell command, ...]} of every job of `snakemake all` (dry run, all jobs forced)."""
    result = subprocess.run([str(SNAKEMAKE), "-n", "-p", "--forceall", "all", *extra], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    commands: dict[str, list[str]] = {}
    rule = None
    for line in result.stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):", line)
        if match:
            rule = match.group(1)
        elif line.startswith("Shell command: ") and rule:
            commands.setdefault(rule, []).append(line[len("Shell command: "):])
    return commands


def _option(command: str, flag: str) -> list[str]:
    words = shlex.split(command.split(">")[0])
    return [words[i + 1] for i, word in enumerate(words[:-1]) if word == flag]


def test_every_choosing_stage_in_the_dag_reads_a_validation_set_and_no_test_set():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    validation = set(params["datasets"]["validation"].values())
    tests = set(params["datasets"]["pairs"].values()) | set(params["datasets"]["ijb"].values())
    commands = _dag_commands()
    assert CHOOSING_RULES <= set(commands), sorted(CHOOSING_RULES - set(commands))
    seen = 0
    for rule, jobs in commands.items():
        for command in jobs:
            chosen_on = _option(command, "--validation")
            if rule in CHOOSING_RULES:
                assert chosen_on, f"{rule} chooses values but takes no --validation: {command}"
            for path in chosen_on:
                seen += 1
                assert path in validation and path not in tests, f"{rule} chooses on {path}"
    assert seen >= len(CHOOSING_RULES)
    written_by_choosers = {_option(c, "--out")[0] for rule in CHOOSING_RULES for c in commands[rule]}
    for rule in THRESHOLD_USERS:
        for command in commands[rule]:
            assert _option(command, "--thresholds") and set(_option(command, "--thresholds")) <= written_by_choosers


def test_a_test_set_wired_as_the_validation_set_is_refused():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    wired = {**params, "datasets": {**params["datasets"],
                                    "validation": {"synth_val": params["datasets"]["pairs"]["synth_lfw"]}}}
    with pytest.raises(ConfigError, match="test set cannot be a validation set"):
        check_explain(wired)
    named = {**params, "explain": {**params["explain"], "validation_set": "synth_lfw"}}
    with pytest.raises(ConfigError, match="explain.validation_set"):
        check_explain(named)
