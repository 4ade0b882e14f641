"""What made an output: a sidecar record written beside the outputs' content, never inside it.

Every ``facetrust`` command that writes ``--out`` records, after it succeeded, a JSON file with the
package version, the git commit of the source tree (and whether it had uncommitted changes), the
Python / torch / numpy versions, the command line, the seed of the params file it read, torch's
determinism policy and thread count, the floating-point path (:mod:`facetrust.float_path`: the
pinned kernels, as the libraries report them) and the SLURM job id when there is one.  A command
that never loaded torch (evaluation and reports are numpy) records torch's installed version and
``null`` for what only a loaded torch can say (its threads, CPU capability and CUDA): importing
torch for the record alone cost ~2 s and ~600 MB per job.  It holds no
timestamp, so two runs of the same commit with the same seed write the same bytes here too.

Where: ``provenance/<output path>.json`` under the working directory for outputs inside it (so
result directories such as ``results/figures`` hold only results: DVC renders every file there as
a plot), and ``<output>.provenance.json`` beside outputs elsewhere.  The content files stay free of
run-specific values, which is what lets DVC and the tests compare them byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from facetrust.io import write_text_atomic

ROOT = "provenance"


def _git(*args: str) -> subprocess.CompletedProcess | None:
    source = Path(__file__).resolve().parents[2]
    try:
        return subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state() -> dict[str, Any]:
    """``{"git_sha": str | None, "git_dirty": bool | None}`` of the installed source tree."""
    head = _git("rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return {"git_sha": os.environ.get("FACETRUST_GIT_SHA"), "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_sha": head.stdout.strip(), "git_dirty": None if status is None else bool(status.stdout.strip())}


def _installed(package: str) -> str | None:
    """``package.__version__`` without importing it: its ``version.py`` (torch writes one), else
    the distribution's metadata (an unpacked torch may have none), else None."""
    spec = importlib.util.find_spec(package)
    if spec is not None and spec.origin:
        try:
            text = Path(spec.origin).with_name("version.py").read_text()
        except OSError:
            text = ""
        found = re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE)
        if found:
            return found.group(1)
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def record(argv: Sequence[str], seed: int | None = None) -> dict[str, Any]:
    """The provenance record of a command (see the module docstring)."""
    import numpy

    import facetrust
    from facetrust.float_path import effective

    torch = sys.modules.get("torch")  # loaded by the command, or None (see the module docstring)
    return {
        "facetrust": facetrust.__version__,
        **git_state(),
        "python": platform.python_version(),
        "torch": torch.__version__ if torch else _installed("torch"),
        "numpy": numpy.__version__,
        "command": ["facetrust", *argv],
        "seed": seed,
        # the trainers' policy (facetrust.train.parts.set_determinism), in force while they run
        "determinism": "torch.use_deterministic_algorithms(True) on CPU; cudnn.benchmark off on GPU",
        "torch_threads": torch.get_num_threads() if torch else None,
        # what decides the floating-point path (pinned: facetrust.float_path)
        "float_path": effective(),
        "cuda": torch.version.cuda if torch and torch.cuda.is_available() else None,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def sidecar_path(output: str | os.PathLike, cwd: str | os.PathLike | None = None) -> Path:
    """Where the record of ``output`` goes (see the module docstring)."""
    output = Path(output)
    cwd = Path(cwd or os.getcwd()).resolve()
    absolute = output if output.is_absolute() else cwd / output
    try:
        relative = absolute.resolve().relative_to(cwd)
    except ValueError:
        return absolute.with_name(absolute.name + ".provenance.json")
    return cwd / ROOT / relative.parent / (relative.name + ".json")


def record_text(argv: Sequence[str], seed: int | None = None) -> str:
    """The sidecar file's text: :func:`record` as sorted, indented JSON."""
    return json.dumps(record(argv, seed), indent=2, sort_keys=True) + "\n"


def write_sidecar(output: str | os.PathLike, argv: Sequence[str], seed: int | None = None) -> Path:
    """Write the record of ``output`` (a file or a directory the command wrote); returns its path.
    (The CLI commits it with the outputs instead: facetrust.outputs.transaction.)"""
    path = sidecar_path(output)
    write_text_atomic(path, record_text(argv, seed))
    return path
