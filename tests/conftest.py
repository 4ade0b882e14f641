"""Session fixtures: expensive set-ups that several test files share are paid once per session."""

from __future__ import annotations

import shutil

import pytest

from pipeline_helpers import TINY, snakemake


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny DAG (tests/data/tiny_params.yaml) run once to results/ijbc_table.csv by Snakemake,
    as `make run` runs it.  Tests read it; a test that changes it works on ``copy_run`` of it."""
    workdir = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY, workdir / "params.yaml")
    result = snakemake(workdir, "--cores", "2", "results/ijbc_table.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir
