"""Running the Snakemake DAG from the tests: the tiny configuration, the ``snakemake`` call, and a
copy of a finished run that Snakemake sees as up to date (so a test pays only for the jobs its own
change makes stale, not for the whole DAG again)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_params.yaml"
BIN = Path(sys.executable).parent


# The libraries' AVX2 paths forced from outside, as on a machine without AVX-512; without these
# variables each library takes the host's widest instruction set (facetrust.float_path then pins).
FORCED_AVX2 = {"OPENBLAS_CORETYPE": "Haswell", "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2", "MKL_CBWR": "AVX2",
               "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}


def snakemake(workdir: Path, *args: str, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Snakemake on ``workdir``, with the host's own instruction set unless ``env`` says otherwise."""
    base = {key: value for key, value in os.environ.items() if key not in FORCED_AVX2}
    env = {**base, "PATH": f"{BIN}:{os.environ['PATH']}", **(env or {})}
    return subprocess.run(
        [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), *args],
        capture_output=True, text=True, timeout=timeout, env=env,
    )


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of the run directory ``run`` (outputs, logs, Snakemake's metadata) with modification
    times kept, as ``cp -a`` makes it: Snakemake finds the same jobs up to date there."""
    shutil.copytree(run, destination, symlinks=True, copy_function=shutil.copy2, dirs_exist_ok=True)
    return destination
