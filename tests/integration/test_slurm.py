"""The SLURM profile on a real single-node SLURM cluster (Debian's Slurm 22.05).

The session fixture installs the packages if they are missing (root, apt),
starts munged, MariaDB, slurmdbd, slurmctld and slurmd under a temp dir, and
stops them by pid at the end. Every workflow runs through a copy of
``profiles/slurm`` whose sizes are capped to the test node (see
``cluster.sized_profile``); all other keys are used as shipped.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SLURM_DIR = Path(__file__).resolve().parent / "slurm"
PROFILE = REPO / "profiles" / "slurm"
TINY_PARAMS = REPO / "tests" / "data" / "tiny_params.yaml"
TABLE = "results/ijbc_table.csv"
# Top-level paths left out of the copies of the project: outputs, caches and
# local state (the pipeline's rules call the installed `facetrust`).
NOT_COPIED_TOP = {
    ".git",
    ".snakemake",
    ".dvc",
    "data",
    "models",
    "embeddings",
    "logs",
    "results",
    "benchmarks",
    "dvc-remote",
    ".pytest_cache",
}


def _load_cluster_module():
    spec = importlib.util.spec_from_file_location(
        "facetrust_slurm_cluster", SLURM_DIR / "cluster.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


cluster_mod = _load_cluster_module()


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running single-node cluster (2 fake GPUs), stopped after the session."""
    if platform.system() != "Linux" or not shutil.which("apt-get"):
        pytest.skip("the SLURM test cluster needs Debian/Ubuntu (apt-get)")
    if os.geteuid() != 0:
        pytest.skip("the SLURM test cluster runs its daemons as root; run as root")
    if cluster_mod.missing_packages():
        cluster_mod.install_packages()
    cluster = cluster_mod.start_cluster()
    try:
        yield cluster
    finally:
        cluster_mod.stop_cluster(cluster.state_dir)


@pytest.fixture(scope="session")
def test_profile(slurm_cluster, tmp_path_factory):
    """The project's SLURM profile with its sizes capped to the test node, and the first status check
    11 s after a submission.  The plugin checks again 10 s later each time no job has finished (3, 16,
    39 s ... at the default 3); the tiny pipeline's jobs end 5-9 s after their submission now that a
    job's Snakemake start reads the schema from its cache (facetrust.config.registry_snapshot), so at
    3 s each waited for the 16-s check (the six SLURM stages 96 s under CI load), and at 9 s a job of
    9 s waited for the 28-s one (74 s, quiet)."""
    return cluster_mod.sized_profile(PROFILE, tmp_path_factory.mktemp("profile"), slurm_cluster, init_seconds=11)


@pytest.fixture(scope="session")
def toy_profile(slurm_cluster, tmp_path_factory):
    """:func:`test_profile` with the first status check 8 s after submission: the toy's jobs (one shell
    line) end about 5 s after it (measured: the toy workflow 77 s at 3 s, 53 s at 8 s)."""
    return cluster_mod.sized_profile(PROFILE, tmp_path_factory.mktemp("toy_profile"), slurm_cluster, init_seconds=8)


def _records(text: str) -> dict[str, str]:
    """KEY=VALUE lines of the toy workflow's outputs as a dict."""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _megabytes(req_mem: str) -> int:
    """sacct's ReqMem ("4000M", "8G") in MB."""
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[req_mem[-1]]
    return round(float(req_mem[:-1]) * factor)


def test_toy_workflow_runs_every_job_through_sbatch_with_gpus_and_retries(
    slurm_cluster, toy_profile, tmp_path
):
    work = tmp_path / "toy"
    work.mkdir()
    log = tmp_path / "snakemake.log"
    proc = cluster_mod.run_snakemake(
        [
            "-s",
            str(SLURM_DIR / "toy" / "Snakefile"),
            "--directory",
            str(work),
            "--profile",
            str(toy_profile),
        ],
        cwd=work,
        env=slurm_cluster.client_env(),
        timeout_s=300,
        log_path=log,
    )
    assert proc.returncode == 0, proc.stdout[-4000:]
    facts = _records((work / "report.txt").read_text())

    # Every job ran inside a SLURM allocation of its own.
    job_ids = [facts[f"{rule}.job_id"] for rule in ("prepare", "train", "report")]
    assert all(job_id.isdigit() for job_id in job_ids), facts
    assert len(set(job_ids)) == 3, facts
    submitted = set(re.findall(r"SLURM jobid (\d+)", proc.stdout))
    assert set(job_ids) < submitted, f"not every job was submitted with sbatch: {submitted}"
    assert len(submitted) == 4, f"expected 3 jobs and one retry, submitted {submitted}"

    # The GPU job sees its GPU; the others see none.
    assert facts["train.cuda_visible_devices"] != "none", facts
    assert facts["prepare.cuda_visible_devices"] == "none", facts

    # Accounting knows every allocation: the three jobs and `prepare`'s
    # first try, which failed on purpose.
    records = {r["JobIDRaw"]: r for r in slurm_cluster.sacct(sorted(submitted))}
    assert {records[j]["State"] for j in job_ids} == {"COMPLETED"}, records
    first_try = (work / "prepare.first_attempt").read_text().strip()
    assert submitted == set(job_ids) | {first_try}, submitted
    assert records[first_try]["State"] == "FAILED", records
    # The retry asked for twice the memory (profile: mem_mb = N * attempt).
    first_mem = _megabytes(records[first_try]["ReqMem"])
    assert _megabytes(records[facts["prepare.job_id"]]["ReqMem"]) == 2 * first_mem, records
    # `train`'s gpu=1 became --gpus=1; nothing else asked for one.
    assert "gres/gpu=1" in records[facts["train.job_id"]]["ReqTRES"], records
    assert "gres/gpu" not in records[facts["prepare.job_id"]]["ReqTRES"], records

    # SLURM logs of successful jobs are kept where the profile puts them.
    for rule in ("prepare", "train", "report"):
        assert list(
            (work / "logs" / "slurm" / f"rule_{rule}").rglob("*.log")
        ), f"no SLURM log for {rule}"


def _copy_project(dest: Path) -> Path:
    """Copy of the checkout at ``dest`` without its outputs, caches and venvs."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {n for n in names if n == "__pycache__" or n.endswith(".egg-info")}
        if Path(directory) == REPO:
            skipped |= {n for n in names if n in NOT_COPIED_TOP or n.startswith(".venv")}
        return skipped

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


@pytest.mark.skipif(
    not TINY_PARAMS.exists(), reason=f"{TINY_PARAMS.relative_to(REPO)} does not exist yet"
)
@pytest.mark.skipif(
    not (REPO / "Snakefile").exists(), reason="the pipeline's Snakefile does not exist yet"
)
def test_tiny_pipeline_on_slurm_gives_the_same_table_as_a_local_run(
    slurm_cluster, test_profile, tmp_path
):
    target_args = [TABLE, "--configfile", str(TINY_PARAMS)]

    local = _copy_project(tmp_path / "local")
    local_proc = cluster_mod.run_snakemake(
        ["--cores", "2", *target_args],
        cwd=local,
        env=slurm_cluster.client_env(),
        timeout_s=900,
        log_path=tmp_path / "local.log",
    )
    assert local_proc.returncode == 0, local_proc.stdout[-4000:]

    on_slurm = _copy_project(tmp_path / "slurm")
    slurm_proc = cluster_mod.run_snakemake(
        ["--profile", str(test_profile), "--max-threads", str(slurm_cluster.cpus), *target_args],
        cwd=on_slurm,
        env=slurm_cluster.client_env(),
        timeout_s=1800,
        log_path=tmp_path / "slurm.log",
    )
    assert slurm_proc.returncode == 0, slurm_proc.stdout[-4000:]
    # Every rule of the run went through sbatch (the pipeline has no
    # localrules): each has its SLURM log directory.
    rules_run = set(re.findall(r"^rule (\w+):$", slurm_proc.stdout, flags=re.MULTILINE))
    rules_on_slurm = {p.name.removeprefix("rule_") for p in (on_slurm / "logs" / "slurm").iterdir()}
    assert (
        rules_run and rules_run == rules_on_slurm
    ), f"ran: {rules_run}; via sbatch: {rules_on_slurm}"

    local_table = (local / TABLE).read_text()
    slurm_table = (on_slurm / TABLE).read_text()
    assert slurm_table == local_table, f"local:\n{local_table}\nslurm:\n{slurm_table}"


DDP_MODEL = {
    "method": "ArcFace",
    "backbone": "iresnet",
    "backbone_options": {"layers": [1, 1, 1, 1], "width": 8},
    "embedding_size": 32,
    "input_size": [32, 32],
    "head": {"kind": "arcface", "s": 16.0, "m": 0.3},
    # lr 0.01: at the tiny pipeline's 0.05 the float-order differences of 4 SGD steps grow past
    # the DDP tolerance (measured: 2e-6 at 0.01, 2e-3 at 0.05), which would hide a real mismatch
    "train": {"epochs": 2, "batch_size": 32, "lr": 0.01, "warmup_epochs": 0},
    "resources": {"gpus": 0, "tasks_per_node": 2, "cpus_per_task": 1, "mem_mb": 2000},
}


@pytest.mark.skipif(not TINY_PARAMS.exists(), reason=f"{TINY_PARAMS.relative_to(REPO)} does not exist yet")
def test_two_task_model_trains_data_parallel_in_one_srun_step_like_one_process(
    slurm_cluster, test_profile, tmp_path
):
    import yaml

    project = _copy_project(tmp_path / "ddp")
    overlay = tmp_path / "ddp_model.yaml"
    overlay.write_text(yaml.safe_dump({"models": {"arcface_ddp": DDP_MODEL}}))
    target = "models/arcface_ddp/checkpoint.pt"
    proc = cluster_mod.run_snakemake(
        ["--profile", str(test_profile), "--max-threads", str(slurm_cluster.cpus), target,
         "--configfile", str(TINY_PARAMS), str(overlay)],
        cwd=project,
        env=slurm_cluster.client_env(),
        timeout_s=900,
        log_path=tmp_path / "ddp.log",
    )
    assert proc.returncode == 0, proc.stdout[-4000:]

    # the train job: one allocation of 2 tasks x 1 CPU, and inside it one srun step of 2 tasks
    log = (project / "logs" / "train" / "arcface_ddp.log").read_text()
    assert re.search(r"facetrust launch: \S*srun --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 ", log), log[:2000]
    assert "data-parallel: 2 processes (gloo)" in log
    slurm_logs = list((project / "logs" / "slurm" / "rule_train").rglob("*.log"))
    job_id = slurm_logs[0].stem
    out = subprocess.run(["sacct", "-n", "-P", "-j", job_id, "-o", "JobID,JobName,NNodes,NTasks,AllocCPUS,State"],
                         env=slurm_cluster.client_env(), capture_output=True, text=True, timeout=30, check=True).stdout
    steps = {line.split("|")[0]: line.split("|") for line in out.splitlines() if line.strip()}
    assert steps[job_id][4] == "2" and steps[job_id][5] == "COMPLETED", out
    trainer_step = steps[f"{job_id}.0"]
    assert trainer_step[1] == "facetrust" and trainer_step[3] == "2" and trainer_step[5] == "COMPLETED", out

    # equal to one process on the same global batches, within tests/test_ddp.py's tolerance
    import json

    import torch

    from facetrust.train.trainer import train

    config = json.loads((project / "models" / "arcface_ddp" / "config.json").read_text())
    # memory_format auto trains a data-parallel run NCHW (a one-process run of this width would be
    # channels-last, whose batch-norm sums drift 5e-4 in 4 steps: docs/ARCHITECTURE.md, Memory
    # layout); the reference is the one-process run in the layout the two processes used
    assert config["memory_format"] == "auto" and "memory layout: channels_last" not in log
    config["memory_format"] = "contiguous"
    train(config, project / "data" / "synth" / "train", tmp_path / "single", device="cpu")
    ddp = torch.load(project / target, weights_only=True)
    single = torch.load(tmp_path / "single" / "checkpoint.pt", weights_only=True)
    assert ddp["step"] == single["step"] == 4
    for part in ("backbone", "head"):
        for key, value in single[part].items():
            assert torch.allclose(ddp[part][key].float(), value.float(), atol=1e-4, rtol=0), (part, key)
