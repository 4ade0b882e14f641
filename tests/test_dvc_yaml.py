"""dvc.yaml stays in step with the Snakefile (one source of truth for the DAG) and is accepted by
the real `dvc` (no overlapping outputs, stages in pipeline order). Fast: no stage is run; the
full round trip is tests/integration/test_dvc.py."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
STAGES = DVC_YAML["stages"]
# The Snakefile's named targets, one per coarse stage.
NAMED_TARGETS = {"data", "models", "embeddings", "metrics", "explain", "tables"}


def snakemake_call(stage: str) -> tuple[list[str], list[str]]:
    """(--allowed-rules list, targets) of a stage whose cmd runs snakemake."""
    words = shlex.split(STAGES[stage]["cmd"])
    assert words[0] == "snakemake", stage
    start = words.index("--allowed-rules") + 1
    end = words.index("--", start)
    return words[start:end], words[end + 1:]


def workflow_rules() -> set[str]:
    rules = set()
    for path in [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]:
        rules |= set(re.findall(r"^rule (\w+):", path.read_text(), flags=re.MULTILINE))
    return rules


def test_every_workflow_rule_but_all_runs_in_exactly_one_dvc_stage():
    allowed = {stage: snakemake_call(stage)[0] for stage in STAGES if STAGES[stage]["cmd"].startswith("snakemake")}
    flat = [rule for rules in allowed.values() for rule in rules]
    assert len(flat) == len(set(flat)), "a rule is allowed in two stages: they would write the same outputs"
    assert set(flat) == workflow_rules() - {"all"}


def test_each_snakemake_stage_builds_one_named_target_among_its_own_rules():
    targets = []
    for stage in STAGES:
        if STAGES[stage]["cmd"].startswith("snakemake"):
            rules, stage_targets = snakemake_call(stage)
            assert len(stage_targets) == 1 and stage_targets[0] in rules, stage
            targets += stage_targets
    assert sorted(targets) == sorted(NAMED_TARGETS)


def test_snakemake_stage_outputs_persist_because_dvc_would_delete_them():
    for stage, spec in STAGES.items():
        if spec["cmd"].startswith("snakemake"):
            for out in spec["outs"]:
                (path, options), = out.items()
                assert options.get("persist") is True, f"{stage}: {path}"


def _lookup(params: dict, dotted: str):
    node = params
    for key in dotted.split("."):
        assert isinstance(node, dict) and key in node, dotted
        node = node[key]
    return node


def test_every_dvc_param_is_present_in_the_shipped_params_files():
    """DVC refuses a stage whose declared param is missing from params.yaml."""
    for name in ("params.yaml", "tests/data/tiny_params_full.yaml"):
        params = yaml.safe_load((REPO / name).read_text())
        for stage, spec in STAGES.items():
            for key in spec.get("params", []):
                _lookup(params, key)


def test_dvc_accepts_the_stages_and_orders_them_as_the_pipeline(tmp_path):
    shutil.copy(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    result = subprocess.run([str(BIN / "dvc"), "dag", "--dot"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    edges = set(re.findall(r'"(\w+)" -> "(\w+)"', result.stdout))
    for edge in [("data", "train"), ("train", "embed"), ("embed", "evaluate"), ("evaluate", "report"),
                 ("embed", "report"), ("data", "report"), ("evaluate", "dvc_view"), ("train", "explain"),
                 ("explain", "report")]:
        assert edge in edges, edge


def _summary(workdir: Path, *targets: str) -> dict[str, str]:
    """{output file: rule} of every job Snakemake would run for ``targets`` (nothing is run)."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}"}
    result = subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                             "--summary", *targets], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("\t") for line in result.stdout.splitlines()[1:] if "\t" in line]
    return {row[0]: row[2] for row in rows}


@pytest.mark.slow
@pytest.mark.parametrize("params", ["params.yaml", "tests/data/tiny_params_full.yaml"])
def test_upstream_named_targets_cover_every_input_of_the_tables(params, tmp_path):
    """The report stage runs only the report rules, so every file of another rule that the
    tables, figures and reports need must be built by the data/models/embeddings/metrics
    targets of the upstream DVC stages (e.g. fitted heads, pair-set embeddings, reject curves)."""
    shutil.copy(REPO / params, tmp_path / "params.yaml")
    report_rules = set(snakemake_call("report")[0])
    needed = {f for f, rule in _summary(tmp_path, "tables").items() if rule not in report_rules}
    built = set(_summary(tmp_path, *sorted(NAMED_TARGETS - {"tables"})))
    assert needed and not needed - built, sorted(needed - built)[:10]


def test_logs_with_wall_clock_figures_are_not_part_of_the_tracked_models(tmp_path):
    """train_log.csv (images_per_s) and fit_log.csv (seconds) change every run; `dvc check-ignore`
    (the real dvc, with the repository's .dvcignore) must leave them out of the `models` output
    and keep the checkpoints in."""
    from facetrust.train.frozen import FrozenTrainer
    from facetrust.train.parts import LOG_COLUMNS, LOG_NAME

    assert "images_per_s" in LOG_COLUMNS and FrozenTrainer.log_name == "fit_log.csv"
    shutil.copy(REPO / ".dvcignore", tmp_path / ".dvcignore")
    shutil.copytree(REPO / ".dvc", tmp_path / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp", "config.local"))
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    logs = [f"models/arcface/{LOG_NAME}", "models/arcface/heads/pfe/fit_log.csv", "models/xcos/fit_log.csv"]
    kept = ["models/arcface/checkpoint.pt", "models/arcface/heads/pfe/head.pt", "models/arcface/config.json"]
    for name in logs + kept:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run([str(BIN / "dvc"), "check-ignore", *logs, *kept], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert sorted(result.stdout.split()) == sorted(logs), result.stdout + result.stderr
