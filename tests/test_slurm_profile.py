"""The SLURM profile (profiles/slurm/config.yaml) is valid for Snakemake 9 and the SLURM plugin.

Fast checks only; tests/integration/test_slurm.py runs it on a real cluster.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

PROFILE = Path(__file__).resolve().parents[1] / "profiles" / "slurm" / "config.yaml"
# Resources the SLURM plugin (2.x) or Snakemake itself understand; anything else
# would silently do nothing on the cluster.
KNOWN_RESOURCES = {
    "mem_mb",
    "mem_mb_per_cpu",
    "mem",
    "runtime",
    "disk_mb",
    "tmpdir",
    "gpu",
    "gpu_model",
    "gres",
    "cpus_per_task",
    "cpus_per_gpu",
    "tasks",
    "tasks_per_gpu",
    "nodes",
    "slurm_partition",
    "slurm_account",
    "slurm_extra",
    "constraint",
    "qos",
    "clusters",
}


@pytest.fixture(scope="module")
def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_every_profile_key_is_an_option_of_snakemake_with_the_slurm_plugin(profile):
    from snakemake.cli import get_argument_parser

    options = {opt for action in get_argument_parser()._actions for opt in action.option_strings}
    unknown = [key for key in profile if f"--{key}" not in options]
    assert not unknown, f"{PROFILE}: keys that Snakemake would reject: {unknown}"
    assert profile["executor"] == "slurm"


def test_profile_names_only_resources_the_plugin_maps(profile):
    names = set(profile.get("default-resources", {}))
    for rule, resources in profile.get("set-resources", {}).items():
        names |= set(resources)
    assert names <= KNOWN_RESOURCES, f"{PROFILE}: unknown resources {names - KNOWN_RESOURCES}"


def test_default_memory_and_time_grow_with_each_retry(profile):
    # Snakemake evaluates a profile's resource string as a Python expression
    # in which `attempt` is 1 on the first try and grows with every retry.
    assert profile["retries"] >= 1
    for name in ("mem_mb", "runtime"):
        expression = str(profile["default-resources"][name])
        values = [eval(expression, {"attempt": attempt}) for attempt in (1, 2, 3)]
        assert values[0] > 0 and values[0] < values[1] < values[2], (name, values)


def test_default_resources_leave_cpus_to_the_rules_threads(profile):
    # A default cpus_per_task would replace every rule's `threads` (and any
    # cpus_per_gpu) in the sbatch call.
    assert "cpus_per_task" not in profile.get("default-resources", {})


def test_slurm_logs_are_kept_under_logs(profile):
    assert profile["slurm-logdir"] == "logs/slurm"
    assert profile["slurm-keep-successful-logs"] is True
    assert profile["slurm-init-seconds-before-status-checks"] >= 20
