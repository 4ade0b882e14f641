"""The floating-point path is pinned before numpy or torch loads and recorded in provenance.

Without the pins an AVX-512 host and an AVX2 host train the tiny pipeline to different checkpoints
(tests/test_pipeline_e2e.py runs it both ways and compares every output's bytes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from facetrust.float_path import PINS, pin_environment


def test_pins_fill_what_is_unset_and_leave_an_explicit_choice():
    environ = {"OPENBLAS_CORETYPE": "SkylakeX"}
    pinned = pin_environment(environ)
    assert environ["OPENBLAS_CORETYPE"] == "SkylakeX"  # the user's explicit choice wins
    assert {k: v for k, v in pinned.items() if k != "OPENBLAS_CORETYPE"} == \
        {k: v for k, v in PINS.items() if k != "OPENBLAS_CORETYPE"}


def test_the_cli_pins_the_kernels_before_numpy_and_torch_load_and_provenance_records_them():
    # a fresh interpreter without the variables: what `facetrust <stage>` starts with
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    code = ("import json, facetrust.cli, numpy, torch\n"
            "from facetrust.provenance import record\n"
            "print(json.dumps(record(['x'])['float_path']))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    recorded = json.loads(result.stdout.splitlines()[-1])
    assert {k: recorded[k] for k in PINS} == PINS
    assert recorded["openblas_core"] == "Haswell"  # numpy's OpenBLAS took the AVX2 kernels
    assert recorded["aten_cpu_capability"] in ("AVX2", "DEFAULT")  # never AVX512 (DEFAULT: a CPU without AVX2)
    # numpy's own loops: its AVX2 dispatch at most, never the AVX-512 groups (whose exp/log round differently)
    assert recorded["numpy_simd"] and not {"X86_V4", "AVX512_ICL", "AVX512_SPR"} & set(recorded["numpy_simd"])


def test_the_cli_turns_numpy_s_huge_page_advice_off_unless_the_user_set_it():
    code = ("import facetrust.cli, numpy\n"
            "from numpy._core.multiarray import _set_madvise_hugepage\n"
            "print(_set_madvise_hugepage(False))")  # returns the setting it replaces
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    for setting, expected in ((None, "False"), ("1", "True")):
        run_env = env if setting is None else {**env, "NUMPY_MADVISE_HUGEPAGE": setting}
        result = subprocess.run([sys.executable, "-c", code], env=run_env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-2000:]
        assert result.stdout.split()[-1] == expected, setting


def test_numpy_s_pinned_float64_exp_and_log_are_its_avx2_loops_on_any_host():
    """The values the pinned process computes equal those of a process forced to numpy's AVX2 loops
    (on an AVX-512 host the unpinned SVML loops give other last bits: seen for exp, log, expm1, power)."""
    code = ("import facetrust.cli, numpy as np, hashlib\n"
            "x = np.random.default_rng(0).standard_normal(100_003)\n"
            "values = np.concatenate([np.exp(x), np.log(np.abs(x) + 1e-3), np.expm1(x)])\n"
            "print(hashlib.sha256(values.tobytes()).hexdigest())")
    base = {k: v for k, v in os.environ.items() if k not in PINS}
    forced = {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"}  # numpy's AVX2 loops, from outside
    digests = [subprocess.run([sys.executable, "-c", code], env={**base, **extra}, capture_output=True, text=True,
                              timeout=120).stdout.strip() for extra in ({}, forced)]
    assert digests[0] and digests[0] == digests[1]


_FAULTS_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "reuse":
    from facetrust.cli.common import reuse_freed_memory
    assert reuse_freed_memory()
a = np.ones(16 << 20); del a  # 128 MB, touched, freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(16 << 20)  # the same size again, touched
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_stages_that_churn_memory_reuse_freed_memory_instead_of_faulting_in_fresh_pages():
    """`facetrust train`, `train-xcos`, `embed`, `explain sanity | faithfulness | invert | invert-select |
    score` and `evaluate ijb` call reuse_freed_memory: a second 128 MB array lands on the pages the first one freed (no page
    faults), where glibc's default maps it afresh (a fault per 4 KiB page)."""
    env = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
    faults = {mode: int(subprocess.run([sys.executable, "-c", _FAULTS_PROBE, mode], capture_output=True, text=True,
                                       env=env, check=True, timeout=120).stdout) for mode in ("default", "reuse")}
    assert faults["default"] > 20000 and faults["reuse"] < 1000, faults
    import inspect

    from facetrust.cli import evaluate, explain, stages

    assert "reuse_freed_memory()" in inspect.getsource(evaluate.cmd_evaluate_ijb)
    assert "reuse_freed_memory()" in inspect.getsource(stages.cmd_train)
    assert "reuse_freed_memory()" in inspect.getsource(stages.cmd_embed)
    assert "reuse_freed_memory()" in inspect.getsource(stages.cmd_train_xcos)
    for command in (explain.run_sanity_command, explain.run_faithfulness_command, explain.run_invert,
                    explain.run_invert_select, explain.run_score):
        assert "reuse_freed_memory()" in inspect.getsource(command)
