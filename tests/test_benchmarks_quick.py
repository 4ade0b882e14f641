"""Every benchmark script runs in its quick mode (tiny sizes, agreement checks only), so they cannot rot.

No timing is asserted: the scripts check that ours and the reference agree and exit non-zero
when they do not.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.slow  # each runs a benchmark script end to end (not in `make test-fast`)


@pytest.mark.parametrize("only", ["ijb", "reject", "decode", "throughput", "bessel", "gpu", "partial_fc"])
def test_benchmark_quick_mode_agrees_with_its_reference(tmp_path, only):
    env = dict(os.environ, OMP_NUM_THREADS="1", FACETRUST_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", only, "--work",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"== {only}: exit 0" in run.stdout


def test_throughput_breakdown_times_every_operator(tmp_path):
    """``bench_throughput.py --breakdown``: the default model's train step and embedding pass per ATen
    operator, the convolutions among them, and the timed operators summing to about the untimed step."""
    env = dict(os.environ, OMP_NUM_THREADS="1", FACETRUST_CACHE_DIR=str(tmp_path / "cache"))
    run = subprocess.run([sys.executable, str(BENCH / "bench_throughput.py"), "--quick", "--breakdown", "--work",
                          str(tmp_path), "--results", str(tmp_path)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    parts = re.findall(r"(train step|embedding pass)[^:]*: ([0-9.]+) ms untimed, ([0-9.]+) ms over the timed", run.stdout)
    assert [p[0] for p in parts] == ["train step", "embedding pass"]
    for _, untimed, timed in parts:
        assert 0.3 < float(timed) / float(untimed) < 3.0
    assert "| aten.convolution_backward" in run.stdout and "| aten.convolution " in run.stdout
