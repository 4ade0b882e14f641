"""The explain line's rules end to end on a tiny configuration (tests/data/tiny_params_explain.yaml):
train two models, train_xcos, xcos_scores, evaluate_xcos, explain_thresholds, explain_sanity,
explain_faithfulness, invert and the three
reports, run by Snakemake exactly as `make all-reports` runs them (only smaller)."""

import shutil

import pandas as pd
import pytest

from test_pipeline_e2e import REPO, snakemake

TINY = REPO / "tests" / "data" / "tiny_params_explain.yaml"
REPORTS = ("results/reports/xcos.md", "results/reports/explanations.md", "results/reports/inversion.md")


@pytest.mark.slow
def test_explain_rules_write_the_reports_tables_and_figures(tmp_path):
    shutil.copy(TINY, tmp_path / "params.yaml")
    dry = snakemake(tmp_path, "-n", "all")
    assert dry.returncode == 0, dry.stderr[-3000:]
    for rule in ("train_xcos", "xcos_scores", "evaluate_xcos", "explain_thresholds", "explain_sanity",
                 "explain_faithfulness", "invert_select", "invert", "report_xcos",
                 "report_explanations", "report_inversion"):
        assert f"rule {rule}:" in dry.stdout, rule
    result = snakemake(tmp_path, "--cores", "2", *REPORTS)
    assert result.returncode == 0, result.stderr[-4000:]
    xcos = pd.read_csv(tmp_path / "results" / "xcos_table.csv")
    assert xcos["score"].tolist() == ["xCos", "cos (same network)", "cos (standard model)"]
    assert xcos["accuracy"].between(0, 1).all()
    assert len(pd.read_csv(tmp_path / "results" / "explain_table.csv")) == 8
    inversion = pd.read_csv(tmp_path / "results" / "inversion_table.csv")
    assert inversion["variant"].tolist() == ["full", "full", "no_bn", "no_bn", "no_class", "no_class"]
    assert inversion["role"].tolist() == ["independent", "secondary"] * 3
    assert (tmp_path / "models" / "xcos" / "replicate1" / "xcos.pt").is_file()
    for figure in ("xcos_pairs", "explain_curves", "explain_cascade", "inversion"):
        assert (tmp_path / "results" / "figures" / f"{figure}.png").stat().st_size > 0, figure
    text = (tmp_path / "results" / "reports" / "xcos.md").read_text()
    assert "99.68" in text and "99.52" in text and "xCos keeps the accuracy" in text and "synth_val" in text
    again = snakemake(tmp_path, "-n", *REPORTS)
    assert "Nothing to be done" in again.stdout + again.stderr
