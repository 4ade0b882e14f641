"""DVC round trip, "CI from cache" (issue 5), against the real `dvc` and `snakemake`.

A one-commit git copy of the working tree (tracked + untracked, non-ignored files, as they are now)
with tests/data/tiny_params_full.yaml as its params.yaml runs `dvc repro` (Snakemake inside every
stage; the session's ``dvc_full_run``, tests/dvc_helpers.py, which the browser test shares), commits
dvc.lock and `dvc push`es to the default remote, a directory beside the clone.
A `git clone` of it, sharing that remote, then runs

    dvc repro --pull --allow-missing report dvc_view

and must regenerate every table, figure and report byte for byte from the pulled metrics, ROC
and embeddings, with no synthesis, training or embedding (asserted from Snakemake's own log and
the rule logs), without even downloading the training set or the models; `dvc metrics show`
and `dvc plots show` must work there. About 3 to 4 minutes on 2 loaded cores (the full tiny
run is most of it).
"""

from __future__ import annotations

import filecmp
import json
import re
from pathlib import Path

import pytest

from dvc_helpers import REPO, run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UPSTREAM_STAGES = ("data", "train", "embed", "evaluate", "explain")
REPORT_RULES_FILE = REPO / "workflow" / "rules" / "report.smk"
# Everything the figures stage writes, compared byte for byte between the two clones.
REPORT_OUTPUTS = ("results/figures", "results/reports", "results/ijbc_table.csv",
                  "results/verification_table.csv", "results/quality_table.csv", "results/quality_split.csv",
                  "results/xcos_table.csv", "results/explain_table.csv", "results/inversion_table.csv")


def snakemake_rules_run(clone: Path) -> list[str]:
    """Names of the rules of every job Snakemake ran in ``clone`` (from .snakemake/log)."""
    rules = []
    for log in sorted((clone / ".snakemake" / "log").glob("*.snakemake.log")):
        rules += re.findall(r"^(?:local)?rule (\w+):", log.read_text(), flags=re.MULTILINE)
    return rules


def report_rules() -> set[str]:
    return set(re.findall(r"^rule (\w+):", REPORT_RULES_FILE.read_text(), flags=re.MULTILINE))


def files_under(root: Path, names) -> list[str]:
    found = []
    for name in names:
        path = root / name
        found += [str(p.relative_to(root)) for p in path.rglob("*") if p.is_file()] if path.is_dir() else [name]
    return sorted(found)


@pytest.fixture(scope="module")
def ci_from_cache(dvc_full_run):
    """(first clone after the full run and push, second clone after the figures-from-cache run,
    the second run's `dvc repro` output)."""
    first = dvc_full_run  # the session's full run (tests/dvc_helpers.py), shared with the browser test
    root = first.parent
    second = root / "second"
    run(first, "dvc", "push")
    assert any((root / "facetrust-dvc-remote").rglob("*")), "the default remote (beside the clone) is empty"

    run(root, "git", "clone", "-q", str(first), str(second))
    repro = run(second, "dvc", "repro", "--pull", "--allow-missing", "report", "dvc_view")
    return first, second, repro.stdout + repro.stderr


def test_figures_stage_pulls_and_regenerates_without_upstream_stages(ci_from_cache):
    _, second, output = ci_from_cache
    for stage in UPSTREAM_STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in output, stage
    assert "Running stage 'report'" in output and "Running stage 'dvc_view'" in output

    ran = snakemake_rules_run(second)
    allowed = report_rules() | {"tables"}
    assert ran and set(ran) <= allowed, f"rules outside the report stage ran: {set(ran) - allowed}"
    for rule in ("figure_roc", "figure_reject", "figure_histograms", "ijbc_table", "quality_split",
                 "report_scf", "report_sphereface", "report_scaleface"):
        assert rule in ran, rule
    # No synthesis, decoding, alignment, training, head fitting, embedding or evaluation: their
    # rule logs were never written, and their inputs were never even downloaded.
    assert sorted(p.name for p in (second / "logs").iterdir()) == ["benchmark", "report"]
    assert sorted(p.name for p in (second / "logs" / "benchmark").iterdir()) == ["report"]
    for never_pulled in ("models", "data/synth/train", "data/aligned", "data/manifests"):
        assert not (second / never_pulled).exists(), never_pulled


def test_regenerated_figures_tables_and_reports_equal_the_originals(ci_from_cache):
    first, second, _ = ci_from_cache
    names = files_under(first, REPORT_OUTPUTS)
    assert any(n.endswith(".png") for n in names) and any(n.endswith(".md") for n in names)
    assert files_under(second, REPORT_OUTPUTS) == names
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert not mismatch and not errors, mismatch + errors
    # DVC hashed the regenerated outputs to what the first clone pushed: dvc.lock is unchanged.
    assert run(second, "git", "status", "--porcelain", "dvc.lock").stdout == ""


def test_dvc_metrics_show_prints_the_tar_and_accuracy_table(ci_from_cache):
    _, second, _ = ci_from_cache
    shown = run(second, "dvc", "metrics", "show", "--json").stdout
    (workspace,) = json.loads(shown).values()  # one revision: the workspace
    metrics = workspace["data"]
    rows = {Path(path).stem: data["data"] for path, data in metrics.items()}
    assert sorted(rows) == ["arcface", "arcface_scf"]
    for row in rows.values():
        assert set(row) == {"synth_ijbc", "synth_lfw"}
        assert 0 <= row["synth_ijbc"]["TAR@FAR=1e-02"] <= 1
        assert 0 <= row["synth_lfw"]["accuracy"] <= 1
    table = run(second, "dvc", "metrics", "show").stdout
    assert "synth_ijbc.TAR@FAR=1e-01" in table and "synth_lfw.accuracy" in table


def test_dvc_plots_show_renders_roc_and_reject_curves(ci_from_cache, tmp_path):
    _, second, _ = ci_from_cache
    plots = json.loads(run(second, "dvc", "plots", "show", "--json").stdout)
    assert not plots.get("errors"), plots.get("errors")
    kinds = {name: [p["type"] for p in entries] for name, entries in plots["data"].items()}
    assert kinds["results/dvc/roc/synth_ijbc.csv"] == ["vega"]
    assert kinds["results/dvc/reject/synth_ijbc.csv"] == ["vega"]
    assert kinds["results/figures/roc_synth_ijbc.png"] == ["image"]
    roc = plots["data"]["results/dvc/roc/synth_ijbc.csv"][0]["content"]
    assert {row["variant"] for row in roc["data"]["values"]} == {"arcface", "arcface_scf"}
    run(second, "dvc", "plots", "show", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").stat().st_size > 0
