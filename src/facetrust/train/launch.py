"""Start a data-parallel ``facetrust`` command: one ``srun`` step on SLURM, torchrun elsewhere.

    python -m facetrust.train.launch --nodes N --tasks-per-node T --cpus-per-task C [--gpus G] \\
        -- train --model M --params P --out DIR --threads X

Inside a SLURM allocation (``SLURM_JOB_ID`` set and ``srun`` on the PATH) this replaces itself by
``srun --nodes=N --ntasks=N*T --ntasks-per-node=T --cpus-per-task=C [--gpus-per-task=1]
--kill-on-bad-exit=1 facetrust …``: SLURM starts every process, on every node, and each finds its
rank, the world size and the rendezvous host in the variables srun sets
(:func:`facetrust.train.distributed.slurm_rendezvous`).  On one machine outside SLURM it runs
``torchrun --standalone --nproc_per_node=T -m facetrust.cli …`` instead; more than one node
without SLURM is a configuration error (exit 2).

Each process gets ``C`` threads: ``OMP_NUM_THREADS`` and the command's ``--threads`` value (the
job's total, as Snakemake passes it) are set to ``C``.  The Snakemake rule ``train`` builds this
command from a model's ``resources`` (facetrust.config.train_layout / train_launcher).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Mapping

from facetrust import options


def per_task_arguments(command: list[str], cpus_per_task: int) -> list[str]:
    """``command`` with its ``--threads`` value (``--threads X`` or ``--threads=X``) set to
    ``cpus_per_task``; appended when absent."""
    out, skip = [], False
    found = False
    for index, word in enumerate(command):
        if skip:
            skip = False
            continue
        if word == "--threads" and index + 1 < len(command):
            out += ["--threads", str(cpus_per_task)]
            skip = found = True
        elif word.startswith("--threads="):
            out.append(f"--threads={cpus_per_task}")
            found = True
        else:
            out.append(word)
    return out if found else out + ["--threads", str(cpus_per_task)]


def launch_command(nodes: int, tasks_per_node: int, cpus_per_task: int, gpus: int,
                   command: list[str], environ: Mapping[str, str] = os.environ,
                   srun: str | None = None) -> list[str]:
    """The argv that starts ``nodes * tasks_per_node`` processes of ``facetrust COMMAND``.

    ``srun``: the srun executable (default: found on the PATH); used when ``SLURM_JOB_ID`` is set.
    ValueError when several nodes are asked for outside a SLURM allocation."""
    command = per_task_arguments(command, cpus_per_task)
    srun = srun if srun is not None else shutil.which("srun", path=environ.get("PATH"))
    if environ.get("SLURM_JOB_ID") and srun:
        return [srun, f"--nodes={nodes}", f"--ntasks={nodes * tasks_per_node}",
                f"--ntasks-per-node={tasks_per_node}", f"--cpus-per-task={cpus_per_task}",
                *(["--gpus-per-task=1"] if gpus else []),
                "--kill-on-bad-exit=1", "facetrust", *command]
    if nodes > 1:
        raise ValueError(f"{nodes} nodes need a SLURM allocation (snakemake --profile slurm, or run "
                         "inside salloc/sbatch); outside SLURM only one machine's processes can start")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={tasks_per_node}", "-m", "facetrust.cli", *command]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m facetrust.train.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=options.integer(1, 100_000), default=1)
    parser.add_argument("--tasks-per-node", type=options.integer(1, 4096), required=True)
    parser.add_argument("--cpus-per-task", type=options.threads, default=1)
    parser.add_argument("--gpus", type=options.integer(0, 4096), default=0, help="GPUs per node (one per task)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the facetrust command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no facetrust command after --")
    for name in ("nodes", "tasks_per_node", "cpus_per_task"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    try:
        argv_out = launch_command(args.nodes, args.tasks_per_node, args.cpus_per_task, args.gpus, command)
    except ValueError as error:
        print(f"facetrust launch: {error}", file=sys.stderr)
        return 2
    env = {**os.environ, "OMP_NUM_THREADS": str(args.cpus_per_task)}
    print("facetrust launch: " + " ".join(argv_out), file=sys.stderr, flush=True)
    os.execvpe(argv_out[0], argv_out, env)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
