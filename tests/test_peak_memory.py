"""`facetrust` commands record their exact peak memory where a harness asks (facetrust.cli.record_peak_memory)."""

import json
import os
import subprocess
import sys
import textwrap

from facetrust.cli import PEAK_MEMORY_LOG, build_parser, record_peak_memory


def test_a_command_appends_its_peak_to_the_file_the_variable_names(tmp_path):
    """Two commands, run as the pipeline runs them, each append one line: the command, its exit
    code, its outputs (as given) and a peak of the order of an interpreter with the CLI loaded."""
    target = tmp_path / "peaks.jsonl"
    env = {**os.environ, PEAK_MEMORY_LOG: str(target)}
    runs = (["methods"], ["evaluate", "ijb", "--embeddings", "missing.npz", "--protocol", "missing",
                          "--name", "ijbc", "--out", "m.json"])
    codes = [subprocess.run([sys.executable, "-m", "facetrust.cli", *argv], env=env, capture_output=True,
                            cwd=tmp_path).returncode for argv in runs]
    assert codes == [0, 2]
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["command"], r["exit"], r["outputs"]) for r in records] == [("methods", 0, []), ("evaluate", 2, ["m.json"])]
    assert all(r["cwd"] == str(tmp_path) and 20 < r["max_rss_mib"] < 2000 for r in records)
    assert not (tmp_path / "m.json").exists()


def test_the_record_is_the_kernels_high_water_mark(tmp_path):
    """After touching 300 MB more than it ever held, a fresh process's recorded peak grows by about
    that (in a fresh interpreter: the high-water mark of a test worker may already lie above it)."""
    code = textwrap.dedent("""
        import json, sys
        import numpy as np
        from facetrust.cli import build_parser, record_peak_memory

        args = build_parser().parse_args(["methods"])
        environ = {VARIABLE: sys.argv[1]}
        before = record_peak_memory(args, 0, environ)["max_rss_mib"]
        block = np.ones(300 * 2**20 // 8)  # touched: resident
        after = record_peak_memory(args, 0, environ)["max_rss_mib"]
        print(json.dumps([before, after]))
    """).replace("VARIABLE", repr(PEAK_MEMORY_LOG))
    target = tmp_path / "peaks.jsonl"
    # started from a small launcher: Linux keeps a process's high-water mark across exec, so a child
    # started straight from this (maybe large) test worker would begin at the worker's peak
    launcher = "import subprocess, sys; sys.exit(subprocess.run(sys.argv[1:]).returncode)"
    done = subprocess.run([sys.executable, "-c", launcher, sys.executable, "-c", code, str(target)],
                          capture_output=True, text=True, check=True)
    before, after = json.loads(done.stdout.strip().splitlines()[-1])
    assert after - before > 250, (before, after)
    assert [json.loads(line)["max_rss_mib"] for line in target.read_text().splitlines()] == [before, after]


def test_nothing_is_written_without_the_variable_and_an_unwritable_file_only_warns(tmp_path, monkeypatch):
    """The warning is caught at the logger's call (other tests may reconfigure logging handlers)."""
    import facetrust.cli as cli

    warnings = []
    monkeypatch.setattr(cli.log, "warning", lambda message, *values: warnings.append(message % values))
    args = build_parser().parse_args(["methods"])
    assert record_peak_memory(args, 0, environ={}) is None
    record = record_peak_memory(args, 1, environ={PEAK_MEMORY_LOG: str(tmp_path / "missing" / "peaks.jsonl")})
    assert record["exit"] == 1 and len(warnings) == 1 and "cannot record peak memory" in warnings[0]
    assert not (tmp_path / "missing").exists()
