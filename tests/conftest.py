"""Session fixtures: expensive set-ups that several test files share are paid once per session."""

from __future__ import annotations

import os

# One OpenMP thread per test process, set before anything loads torch or numpy's BLAS: `make test`
# runs two xdist workers on 2 cores beside SLURM, DVC and Snakemake jobs, and torch's default of a
# thread per core oversubscribed them (4+ spinning threads on 2 cores): tests that take 0.5-7 s alone
# took 22-105 s in a CI run (tests/test_explain_inversion.py, tests/test_explain_stages.py).  A
# test that wants more threads sets them itself; pipeline jobs get theirs from their rules.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# facetrust's caches (schema, decoded IJB protocols, backbone outputs) in a directory of this test
# process, not the user's ~/.cache: a test run neither reads nor leaves entries there.
if "FACETRUST_CACHE_DIR" not in os.environ:
    import atexit
    import tempfile

    _CACHE = tempfile.mkdtemp(prefix="facetrust-test-cache-")
    os.environ["FACETRUST_CACHE_DIR"] = _CACHE
    atexit.register(lambda: __import__("shutil").rmtree(_CACHE, ignore_errors=True))

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pipeline_helpers import TINY, snakemake  # noqa: E402

TESTS = Path(__file__).resolve().parent
# The test files that take minutes, longest first (a serial run on 2 cores: SLURM ~6 min, the DVC
# round trip ~2.5, the browser report ~1.5, …).  `make test` runs `pytest -n 2 --dist loadgroup
# --no-loadscope-reorder`: each file runs whole on one worker (its module fixtures set up once), and
# files are handed out in collection order to whichever worker is free, so the long ones start
# first and the short ones fill in around them (longest-processing-time-first list scheduling).
LONGEST_FIRST = ("integration/test_slurm.py", "integration/test_dvc.py", "test_report_browser.py",
                 "test_pipeline_e2e.py", "test_explain_pipeline_e2e.py", "test_own_data_e2e.py",
                 "test_benchmarks_quick.py", "test_presets.py", "test_coverage_study.py")


# Files that share a session fixture run on one worker (an xdist group), so that it is set up once.
SHARED_WORKER = {"integration/test_dvc.py": "dvc_full_run", "test_report_browser.py": "dvc_full_run"}


def _file(item) -> str:
    return Path(item.path).resolve().relative_to(TESTS).as_posix()


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Long files first (:data:`LONGEST_FIRST`), the order within a file and among the rest kept;
    every test in the xdist group of its file (``--dist loadgroup``: one file, or the files of
    :data:`SHARED_WORKER`, on one worker)."""
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(_file(item), len(rank)))
    for item in items:
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(_file(item), _file(item))))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The tiny DAG (tests/data/tiny_params.yaml) run once to results/ijbc_table.csv by Snakemake,
    as `make run` runs it.  Tests read it; a test that changes it works on ``copy_run`` of it."""
    workdir = tmp_path_factory.mktemp("tiny")
    shutil.copy(TINY, workdir / "params.yaml")
    result = snakemake(workdir, "--cores", "2", "results/ijbc_table.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.fixture(scope="session")
def dvc_full_run(tmp_path_factory):
    """tests/data/tiny_params_full.yaml run by `dvc repro` in a one-commit git copy of the working
    tree (tests/dvc_helpers.py): the DVC round trip's first clone and the browser report's run."""
    from dvc_helpers import full_run_clone

    return full_run_clone(tmp_path_factory.mktemp("dvc") / "first")
