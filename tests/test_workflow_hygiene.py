"""Snakemake hygiene (docs/ARCHITECTURE.md "Rules"): `snakemake --lint` and `snakefmt --check` are clean, and every
rule declares a log, a benchmark, threads and resources."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_snakemake_lint_is_clean():
    result = subprocess.run([str(BIN / "snakemake"), "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_snakefmt_check_is_clean():
    result = subprocess.run([str(BIN / "snakefmt"), "--check", "Snakefile", "workflow/rules"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


def test_every_rule_with_a_command_has_log_benchmark_threads_resources():
    for path in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for block in path.read_text().split("\nrule ")[1:]:
            name = block.split(":")[0]
            if "shell:" not in block:
                continue
            for directive in ("log:", "benchmark:", "threads:", "resources:", "conda:"):
                assert f"    {directive}" in block, f"{path.name}: rule {name} lacks {directive}"
