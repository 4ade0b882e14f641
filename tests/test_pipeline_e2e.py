"""The whole DAG on a tiny configuration: synthesize -> decode/align -> train -> embed ->
evaluate -> table, run by Snakemake exactly as `make run` runs it (only smaller)."""

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from pipeline_helpers import BIN, FORCED_AVX2, REPO, TINY, copy_run, snakemake  # noqa: F401 (REPO, snakemake re-exported)

# ``tiny_run`` (tests/conftest.py): the tiny DAG run once per session, shared with other files.


def test_dry_run_lists_the_chain_of_rules(tmp_path):
    shutil.copy(TINY, tmp_path / "params.yaml")
    result = snakemake(tmp_path, "-n", "results/ijbc_table.csv")
    assert result.returncode == 0, result.stderr[-2000:]
    for rule in ("synthesize", "decode", "align", "train", "embed", "evaluate_ijb", "ijbc_table"):
        assert f"rule {rule}:" in result.stdout, rule


def test_a_bad_params_key_stops_the_workflow_with_its_name(tmp_path):
    (tmp_path / "params.yaml").write_text(TINY.read_text() + "\nevaluat: {}\n")
    result = snakemake(tmp_path, "-n", "results/ijbc_table.csv")
    assert result.returncode != 0
    assert "'evaluat' was unexpected" in result.stdout + result.stderr


@pytest.mark.slow
def test_tiny_pipeline_writes_the_ijbc_table(tiny_run):
    table = pd.read_csv(tiny_run / "results" / "ijbc_table.csv")
    assert list(table.columns[:4]) == ["method", "backbone", "train_set", "test_set"]
    assert table["method"].tolist() == ["ArcFace"]
    tar = table.filter(like="TAR@FAR=").iloc[0]
    assert ((tar >= 0) & (tar <= 1)).all()
    assert tar.is_monotonic_increasing  # TAR cannot fall as the FAR grows
    for path in ("data/synth/train/train.rec", "data/manifests/train.json", "models/arcface/checkpoint.pt",
                 "embeddings/arcface/synth_ijbc.npz", "results/metrics/arcface/synth_ijbc.json",
                 "logs/train/arcface.log", "logs/benchmark/train/arcface.tsv"):
        assert (tiny_run / path).exists(), path


@pytest.mark.slow
def test_tiny_pipeline_is_up_to_date_after_a_run(tiny_run):
    result = snakemake(tiny_run, "-n", "results/ijbc_table.csv")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def _hashes(root: Path) -> dict[str, str]:
    """sha256 of every output file of a run; logs hold timings (images/s, seconds) and are left out."""
    import hashlib

    hashes = {}
    for top in ("data", "models", "embeddings", "results", "provenance"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and not path.name.endswith("_log.csv"):
                hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.mark.slow
def test_the_same_seed_twice_gives_the_same_bytes_on_the_hosts_best_and_on_forced_avx2_kernels(
        tiny_run, tmp_path_factory):
    """Run twice: ``tiny_run`` with the libraries free to take the host's widest instruction set
    (AVX-512 here), this one with their AVX2 paths forced from outside, as on a machine without
    AVX-512. The pins (facetrust.float_path) make both the same arithmetic: without them the
    checkpoint, embeddings and ROC of the two runs differ on an AVX-512 host (seen: 7 of 93 files)."""
    workdir = tmp_path_factory.mktemp("tiny_again")
    shutil.copy(TINY, workdir / "params.yaml")
    result = snakemake(workdir, "--cores", "2", "results/ijbc_table.csv", env=FORCED_AVX2)
    assert result.returncode == 0, result.stderr[-4000:]
    first, second = _hashes(tiny_run), _hashes(workdir)
    assert any(name.endswith("checkpoint.pt") for name in first) and any(name.endswith(".npz") for name in first)
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    import json

    recorded = json.loads((tiny_run / "provenance" / "models" / "arcface.json").read_text())["float_path"]
    assert recorded["OPENBLAS_CORETYPE"] == "Haswell" and recorded["openblas_core"] == "Haswell"
    assert recorded["aten_cpu_capability"] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


@pytest.mark.slow
def test_the_tiny_pipeline_numbers_are_the_committed_ones(tiny_run):
    """A change that moves a number is a visible, deliberate diff of tests/data/tiny_expected_ijbc_table.csv."""
    expected = pd.read_csv(REPO / "tests" / "data" / "tiny_expected_ijbc_table.csv")
    table = pd.read_csv(tiny_run / "results" / "ijbc_table.csv")
    assert set(expected.columns) <= set(table.columns)  # the table may carry more detail columns
    table = table[list(expected.columns)]
    assert table.iloc[:, :4].equals(expected.iloc[:, :4])
    numbers, reference = table.iloc[:, 4:].to_numpy(float), expected.iloc[:, 4:].to_numpy(float)
    assert abs(numbers - reference).max() <= 1e-6, f"\n{table}\nexpected\n{expected}"


@pytest.mark.slow
def test_after_kill_9_of_snakemake_unlock_then_rerun_incomplete_finishes_the_job(tiny_run, tmp_path):
    """The README's troubleshooting sequence: `--rerun-incomplete` alone stops on the lock the killed
    run left; `--unlock` then `--rerun-incomplete` finishes, and the table is the uninterrupted one."""
    import signal
    import time

    # The data stages are the session run's (a copy): the train job and everything after it run here.
    copy_run(tiny_run, tmp_path)
    for stale in ("models", "embeddings", "results", "provenance", "logs/train"):
        shutil.rmtree(tmp_path / stale, ignore_errors=True)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    run = subprocess.Popen([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(tmp_path), "--cores", "1",
                            "results/ijbc_table.csv"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "logs" / "train" / "arcface.log").exists():
        time.sleep(0.5)
    assert (tmp_path / "logs" / "train" / "arcface.log").exists(), "the train job never started"
    os.killpg(run.pid, signal.SIGKILL)  # Snakemake and the job it was running, as `kill -9` of a session
    run.wait()
    again = snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "results/ijbc_table.csv")
    assert again.returncode != 0 and "locked" in (again.stdout + again.stderr).lower()
    assert snakemake(tmp_path, "--unlock").returncode == 0
    finished = snakemake(tmp_path, "--cores", "2", "--rerun-incomplete", "results/ijbc_table.csv")
    assert finished.returncode == 0, finished.stderr[-3000:]
    expected = pd.read_csv(REPO / "tests" / "data" / "tiny_expected_ijbc_table.csv")
    assert pd.read_csv(tmp_path / "results" / "ijbc_table.csv")[list(expected.columns)].equals(expected)


@pytest.mark.slow
def test_a_corrupt_loose_crop_under_skip_is_a_failure_to_enrol_in_the_table(tiny_run, tmp_path):
    """align.on_bad_image: skip leaves the image out (aligned manifest); evaluate_ijb reads that
    list, keeps the template's other images or rejects the pairs of an emptied template."""
    import json

    import yaml

    copy_run(tiny_run, tmp_path)  # synthesize, decode and train stay the session run's; align reruns
    params = yaml.safe_load(TINY.read_text())
    params["align"]["on_bad_image"] = "skip"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = snakemake(tmp_path, "--cores", "2", "data/synth/ijb/synth_ijbc/meta/synth_ijbc_face_tid_mid.txt")
    assert result.returncode == 0, result.stderr[-4000:]
    ijb = tmp_path / "data" / "synth" / "ijb" / "synth_ijbc"
    first = (ijb / "meta" / "synth_ijbc_face_tid_mid.txt").read_text().split()[0]
    crop = ijb / "loose_crop" / first
    crop.write_bytes(crop.read_bytes()[:200])  # a truncated JPEG
    result = snakemake(tmp_path, "--cores", "2", "results/ijbc_table.csv")
    assert result.returncode == 0, result.stderr[-4000:]
    manifest = json.loads((tmp_path / "data" / "aligned" / "synth_ijbc" / "manifest.json").read_text())
    assert manifest["skipped_images"] == [first]
    metrics = json.loads((tmp_path / "results" / "metrics" / "arcface" / "synth_ijbc.json").read_text())
    assert metrics["failure_to_enrol"]["images"] == 1 and metrics["failure_to_enrol"]["convention"] == "reject"
    assert (tmp_path / "results" / "ijbc_table.csv").exists()
