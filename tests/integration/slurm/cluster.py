"""A real single-node SLURM cluster for integration tests, driven from Python.

The shell scripts next to this file do the work (``install.sh``,
``start_cluster.sh``, ``stop_cluster.sh``); this module wraps them for pytest
and adds what a test needs around them: the client environment
(``SLURM_CONF``), a Snakemake runner that cannot hang the suite, a copy of the
project's SLURM profile sized to the test node, and ``sacct`` queries.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
DEFAULT_STATE_DIR = Path(os.environ.get("FACETRUST_SLURM_STATE", "/tmp/facetrust-slurm"))


class ClusterError(RuntimeError):
    """The cluster could not be installed or started; the message holds the log tail."""


@dataclass(frozen=True)
class SlurmCluster:
    """A running cluster: where its state lives and what its one node offers."""

    state_dir: Path
    slurm_conf: Path
    node: str
    cpus: int
    mem_mb: int
    gpus: int
    partition: str

    def client_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for SLURM clients (sbatch, sacct, snakemake and its jobs)."""
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.slurm_conf)
        return env

    def sacct(
        self, job_ids: list[str], fields: str = "JobIDRaw,JobName,State,ReqMem,ReqTRES"
    ) -> list[dict]:
        """Accounting records (allocations only, no steps) of ``job_ids``, one dict per job."""
        out = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-o", fields, "-j", ",".join(job_ids)],
            env=self.client_env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        names = fields.split(",")
        return [dict(zip(names, line.split("|"))) for line in out.splitlines() if line.strip()]


def missing_packages() -> list[str]:
    """The Debian packages of the cluster that are not installed."""
    missing = []
    for pkg in PACKAGES:
        status = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True
        )
        if "install ok installed" not in status.stdout:
            missing.append(pkg)
    return missing


def install_packages(timeout_s: float = 900) -> None:
    """Install missing packages with apt (root); raises ClusterError with apt's output tail."""
    proc = subprocess.run(
        [str(HERE / "install.sh")], capture_output=True, text=True, timeout=timeout_s
    )
    if proc.returncode != 0:
        raise ClusterError(
            f"install.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}"
        )


def start_cluster(state_dir: Path = DEFAULT_STATE_DIR, timeout_s: float = 300) -> SlurmCluster:
    """Start (or restart) the cluster in ``state_dir`` and wait until its node is idle."""
    proc = subprocess.run(
        [str(HERE / "start_cluster.sh"), str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if proc.returncode != 0:
        stop_cluster(state_dir)
        raise ClusterError(
            f"start_cluster.sh failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-4000:]}"
        )
    values = dict(
        line.split("=", 1)
        for line in (state_dir / "cluster.env").read_text().splitlines()
        if "=" in line
    )
    return SlurmCluster(
        state_dir=state_dir,
        slurm_conf=Path(values["SLURM_CONF"]),
        node=values["FACETRUST_SLURM_NODE"],
        cpus=int(values["FACETRUST_SLURM_CPUS"]),
        mem_mb=int(values["FACETRUST_SLURM_MEM_MB"]),
        gpus=int(values["FACETRUST_SLURM_GPUS"]),
        partition=values["FACETRUST_SLURM_PARTITION"],
    )


def stop_cluster(state_dir: Path = DEFAULT_STATE_DIR) -> None:
    """Stop every daemon that start_cluster started in ``state_dir`` (by pid file)."""
    subprocess.run([str(HERE / "stop_cluster.sh"), str(state_dir)], timeout=120, check=False)


def sized_profile(
    profile_dir: Path, out_dir: Path, cluster: SlurmCluster, init_seconds: int = 3
) -> Path:
    """Copy of the profile in ``profile_dir`` whose requests fit the test node.

    Every key stays as shipped; only sizes are capped, by wrapping each memory
    expression in ``min(...)`` so that it still grows with ``attempt`` (a
    quarter of the node per attempt), and CPUs per GPU at the node's CPUs. The first status check comes after
    ``init_seconds`` instead of the real-cluster default. Returns ``out_dir``.
    """
    config = yaml.safe_load((profile_dir / "config.yaml").read_text())
    mem_cap = max(cluster.mem_mb // 4, 256)

    def fit(resources: dict) -> dict:
        fitted = dict(resources)
        if "mem_mb" in fitted:
            fitted["mem_mb"] = f"min({fitted['mem_mb']}, {mem_cap} * attempt)"
        if "cpus_per_gpu" in fitted:
            fitted["cpus_per_gpu"] = min(int(fitted["cpus_per_gpu"]), cluster.cpus)
        return fitted

    if "default-resources" in config:
        config["default-resources"] = fit(config["default-resources"])
    if "set-resources" in config:
        config["set-resources"] = {rule: fit(res) for rule, res in config["set-resources"].items()}
    config["slurm-init-seconds-before-status-checks"] = init_seconds
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return out_dir


def run_snakemake(
    args: list[str], *, cwd: Path, env: dict[str, str], timeout_s: float, log_path: Path
) -> subprocess.CompletedProcess:
    """Run ``snakemake ARGS`` with its output in ``log_path``; never hangs.

    When the plugin loses track of a job, Snakemake waits forever and ignores
    SIGTERM; on timeout it gets SIGINT (which makes it cancel its SLURM jobs),
    then SIGKILL 60 s later. The returncode is then negative/non-zero.
    """
    # The snakemake of the interpreter running the tests (the project venv).
    snakemake = Path(sys.executable).parent / "snakemake"
    if not snakemake.exists():
        snakemake = Path(shutil.which("snakemake") or "snakemake")
    # Rules call `facetrust` from PATH, as in an activated venv (and on the
    # nodes, which inherit this environment through sbatch --export=ALL).
    env = dict(env, PATH=f"{snakemake.parent}{os.pathsep}{env.get('PATH', '')}")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(snakemake), *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with open(log_path, "a") as log_tail:
                log_tail.write(f"\n[run_snakemake] timed out after {timeout_s} s; interrupted\n")
    return subprocess.CompletedProcess(proc.args, proc.returncode, log_path.read_text(), "")
