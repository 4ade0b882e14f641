"""Data-parallel launch: a model's `resources` → the train job's sbatch options and its launcher
(srun on SLURM, torchrun on one machine), and the trainer's rendezvous from SLURM's variables.

tests/integration/test_slurm.py runs it on the real test cluster; tests/test_ddp.py checks that two
processes started with SLURM's variables train like one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from facetrust.config import train_launcher, train_layout
from facetrust.errors import ConfigError
from facetrust.train.distributed import expand_hostlist, slurm_rendezvous
from facetrust.train.launch import launch_command, main, per_task_arguments

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).with_name("snakemake")


@pytest.mark.parametrize("hostlist, hosts", [
    ("vm", ["vm"]),
    ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
    ("gpu[08-10,12],login1", ["gpu08", "gpu09", "gpu10", "gpu12", "login1"]),
    ("a[1,3-4]b,c", ["a1b", "a3b", "a4b", "c"]),
    ("node-[9-11]", ["node-9", "node-10", "node-11"]),
])
def test_hostlist_expands_like_scontrol_show_hostnames(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["gpu[01-03", "gpu[[1]]", "gpu[3-1]", "gpu[a-b]"])
def test_malformed_hostlists_are_refused(bad):
    with pytest.raises(ValueError, match="host list"):
        expand_hostlist(bad)


SRUN_TASK = {"SLURM_JOB_ID": "4242", "SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "8", "SLURM_LOCALID": "1",
             "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_NTASKS": "8"}


def test_an_srun_task_gets_rank_world_size_and_the_first_node_as_rendezvous():
    env = slurm_rendezvous(SRUN_TASK)
    assert env == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                   "MASTER_PORT": str(15000 + 4242 % 20000)}
    # every task of the job computes the same address and port
    other = slurm_rendezvous({**SRUN_TASK, "SLURM_PROCID": "6", "SLURM_LOCALID": "2"})
    assert (other["MASTER_ADDR"], other["MASTER_PORT"]) == (env["MASTER_ADDR"], env["MASTER_PORT"])
    assert slurm_rendezvous({**SRUN_TASK, "MASTER_PORT": "29511"})["MASTER_PORT"] == "29511"


@pytest.mark.parametrize("environ", [
    {},  # not under SLURM
    {"SLURM_JOB_ID": "1", "SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "vm"},  # batch script
    {**SRUN_TASK, "SLURM_STEP_NUM_TASKS": "1"},  # a one-task step (the plugin's srun -n1)
    {**SRUN_TASK, "RANK": "0", "WORLD_SIZE": "2"},  # torchrun inside an allocation: torchrun's wins
])
def test_no_slurm_group_outside_a_multi_task_srun_step(environ):
    assert slurm_rendezvous(environ) is None


def test_per_task_threads_replace_the_jobs_total():
    assert per_task_arguments(["train", "--threads", "8", "--out", "x"], 2) == ["train", "--threads", "2", "--out", "x"]
    assert per_task_arguments(["train", "--threads=8"], 2) == ["train", "--threads=2"]
    assert per_task_arguments(["train"], 3) == ["train", "--threads", "3"]


def test_launcher_uses_srun_inside_an_allocation_and_torchrun_elsewhere():
    command = ["train", "--model", "m", "--threads", "8"]
    on_slurm = launch_command(2, 4, 2, 4, command, {"SLURM_JOB_ID": "7"}, srun="/usr/bin/srun")
    assert on_slurm == ["/usr/bin/srun", "--nodes=2", "--ntasks=8", "--ntasks-per-node=4", "--cpus-per-task=2",
                        "--gpus-per-task=1", "--kill-on-bad-exit=1", "facetrust", "train", "--model", "m",
                        "--threads", "2"]
    local = launch_command(1, 2, 1, 0, command, {}, srun="/usr/bin/srun")
    assert local[1:] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "facetrust.cli",
                         "train", "--model", "m", "--threads", "1"]
    with pytest.raises(ValueError, match="SLURM allocation"):
        launch_command(2, 1, 1, 0, command, {}, srun="/usr/bin/srun")


def test_launcher_cli_refuses_several_nodes_outside_slurm_with_exit_2(monkeypatch, capsys):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert main(["--nodes", "2", "--tasks-per-node", "1", "--", "train", "--model", "m"]) == 2
    assert "SLURM allocation" in capsys.readouterr().err


def _params(resources: dict, batch_size: int = 64, threads: int = 2) -> dict:
    return {"threads": threads, "models": {"m": {"train": {"batch_size": batch_size}, "resources": resources}}}


def test_layout_defaults_to_one_process_per_gpu_and_the_global_threads():
    assert train_layout(_params({}), "m")["tasks"] == 1
    assert train_launcher(_params({}), "m") == "facetrust"
    layout = train_layout(_params({"nodes": 2, "gpus": 4}), "m")
    assert (layout["tasks"], layout["tasks_per_node"], layout["cpus_per_task"], layout["gpus_total"]) == (8, 4, 2, 8)
    cpu = train_layout(_params({"gpus": 0, "tasks_per_node": 2, "cpus_per_task": 1}), "m")
    assert (cpu["tasks"], cpu["gpus_total"]) == (2, 0)
    assert train_launcher(_params({"gpus": 0, "tasks_per_node": 2, "cpus_per_task": 1}), "m").startswith(
        "python -m facetrust.train.launch --nodes 1 --tasks-per-node 2 --cpus-per-task 1 --gpus 0 --")


@pytest.mark.parametrize("resources, batch, key", [
    ({"gpus": 4, "tasks_per_node": 2}, 64, "tasks_per_node"),
    ({"nodes": 3, "gpus": 2}, 64, "batch_size"),
])
def test_layouts_that_cannot_work_are_config_errors_naming_the_key(resources, batch, key):
    with pytest.raises(ConfigError, match=key):
        train_layout(_params(resources, batch), "m")


def _fake_job(resources: dict, threads: int):
    """What the SLURM plugin reads of a job: ``resources`` (get/attribute access) and ``threads``."""
    class Resources(dict):
        __getattr__ = dict.__getitem__

    return SimpleNamespace(resources=Resources(resources), threads=threads)


@pytest.mark.skipif(not SNAKEMAKE.exists(), reason="no snakemake beside this interpreter")
def test_two_node_gpu_model_becomes_one_sbatch_allocation_and_one_srun_step(tmp_path):
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    overlay = yaml.safe_load((REPO / "tests" / "data" / "tiny_params.yaml").read_text())
    overlay["threads"] = 3
    overlay["models"]["arcface"]["resources"] = {"nodes": 2, "gpus": 4, "mem_mb": 64000}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(overlay))
    shutil.copy(REPO / "params.yaml", tmp_path / "params.yaml")
    out = subprocess.run([str(SNAKEMAKE), "models/arcface/checkpoint.pt", "-s", str(REPO / "Snakefile"),
                          "-d", str(tmp_path), "-n", "-p", "--cores", "12",
                          "--configfile", str(tmp_path / "config.yaml")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    block = out.stdout.split("rule train:")[1]
    resources = dict(item.split("=", 1) for item in re.search(r"resources: (.*)", block).group(1).split(", "))
    assert {k: resources[k] for k in ("gpu", "nodes", "tasks", "tasks_per_gpu", "cpus_per_task", "mpi")} == {
        "gpu": "8", "nodes": "2", "tasks": "8", "tasks_per_gpu": "1", "cpus_per_task": "3", "mpi": "srun"}
    shell = re.search(r"Shell command: (.*)", block).group(1)
    # the job's threads = 4 tasks x 3 CPUs on a node; the launcher gives each process its 3
    assert ("OMP_NUM_THREADS=12 python -m facetrust.train.launch --nodes 2 --tasks-per-node 4 --cpus-per-task 3"
            " --gpus 4 -- train") in shell

    job = _fake_job({k: int(v) if v.isdigit() else v for k, v in resources.items()}, threads=12)
    sbatch = get_submit_command(job, {"run_uuid": "u", "slurm_logfile": "l", "comment_str": "c", "account": "",
                                      "partition": "", "workdir": ""}) + set_gres_string(job)
    for option in ("--nodes=2", "--ntasks=8", "--ntasks-per-gpu=1", "--cpus-per-task=3", "--mem 64000", "--gpus=8"):
        assert option in sbatch, sbatch
