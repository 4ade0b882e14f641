"""The short fuzz run of CI: benchmarks/fuzz_parsers.py --quick (a few hundred Hypothesis inputs
per parser) lets nothing but InputError escape, within its time and memory limits."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_parsers.py"


def test_quick_fuzz_of_recordio_bin_and_ijb_parsers(capsys):
    spec = importlib.util.spec_from_file_location("fuzz_parsers", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    assert fuzz.main(["--quick"]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    for target in ("recordio", "bin", "ijb"):
        assert f"{target:9s} inputs {fuzz.QUICK_EXAMPLES:7d}  max CPU time" in out


def test_quick_mutation_fuzz_with_cr_endings_huge_integers_and_declared_sizes(capsys):
    """The benchmark run's mutation mode (`--mutations 1000000`) in small: every exception other
    than InputError is counted, and there must be none."""
    spec = importlib.util.spec_from_file_location("fuzz_parsers", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fuzz)
    result = fuzz.mutation_fuzz(1500, seed=0, progress_every=0)
    assert result["per_target"] == {"recordio": 500, "bin": 500, "ijb": 500}
    assert result["foreign"] == {}, result["examples"]
