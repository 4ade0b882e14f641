"""The full tiny DAG as `dvc repro` runs it, in a one-commit git copy of the working tree: the DVC
round trip's first clone (tests/integration/test_dvc.py) and the run the browser's report is built
from (tests/test_report_browser.py), set up once per session (tests/conftest.py ``dvc_full_run``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FULL_PARAMS = REPO / "tests" / "data" / "tiny_params_full.yaml"


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",  # snakemake, dvc and facetrust of this venv
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "ci", "GIT_AUTHOR_EMAIL": "ci@example.invalid",
        "GIT_COMMITTER_NAME": "ci", "GIT_COMMITTER_EMAIL": "ci@example.invalid",
    }


def run(cwd: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(args)} (in {cwd}) exited {result.returncode}:\n"
                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def copy_working_tree(dest: Path) -> None:
    """A fresh one-commit git repository holding the working tree as it is now (uncommitted
    edits included; ignored files such as .venv and earlier outputs left out)."""
    listed = run(REPO, "git", "ls-files", "-z", "--cached", "--others", "--exclude-standard").stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # a tracked file deleted in the working tree is left out
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    shutil.copy(FULL_PARAMS, dest / "params.yaml")
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "working tree")


def full_run_clone(first: Path) -> Path:
    """``first``: the working tree with tests/data/tiny_params_full.yaml as its params.yaml, after
    `dvc repro` (Snakemake inside every stage) and a commit of dvc.lock and the git-kept metrics."""
    copy_working_tree(first)
    run(first, "dvc", "repro", timeout=900)
    run(first, "git", "add", "-A")  # dvc.lock, .gitignore files, the git-kept metrics
    run(first, "git", "commit", "-qm", "dvc repro")
    return first
