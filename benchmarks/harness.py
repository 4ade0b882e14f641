"""What every benchmark script shares: timing a subprocess with its own resource usage, the
machine description, the results file and a plain-text table.

Each benchmark runs ours and the reference side by side in one run and reports wall time (best
of ``--repeat``), CPU time and peak memory.  The machines these run on are often shared: ratios of
runs made back to back are more telling than absolute seconds, and CPU time (user + system) is
less disturbed by other load than wall time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

LOAD_AT_START = os.getloadavg()  # the load when the benchmark began (recorded beside the load at the end)
BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
WORK_DIR = BENCH_DIR / "runs"  # git-ignored: generated data and caches


def without_bytecode_override(environ) -> dict:
    """``environ`` without ``PYTHONDONTWRITEBYTECODE``: measured processes run as Python does by default,
    importing the package from its bytecode cache.  A shell that sets it (some development containers do)
    makes every process compile the package's modules again: 0.1 s of an IJB-C-scale evaluation, more
    for a pipeline job that imports the trainers (benchmarks/README.md note 11)."""
    env = dict(environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def child_env(**extra: str) -> dict:
    """The environment for measured subprocesses: this checkout's package first, one BLAS/OpenMP thread."""
    env = without_bytecode_override(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH", "")]))
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(name, "1")
    env.update(extra)
    return env


# Started first, small, and then starting the command: a process's peak RSS (ru_maxrss) carries the
# peak of the process it was forked from (Linux keeps the pre-exec high-water mark), so a command
# started straight from a benchmark that holds gigabytes reported the benchmark's peak, not its own.
_LAUNCHER = ("import json, os, sys, time\n"
             "start = time.perf_counter()\n"
             "pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)\n"
             "_, status, usage = os.wait4(pid, 0)\n"
             "wall = time.perf_counter() - start\n"
             "with open(sys.argv[1], 'w') as out:\n"
             "    json.dump([wall, os.waitstatus_to_exitcode(status), usage.ru_utime, usage.ru_stime,"
             " usage.ru_maxrss], out)\n")


def run_measured(command: list[str], env: dict | None = None, check: bool = True) -> dict:
    """Run ``command``; return its wall, user and system seconds and its own peak RSS (MiB), via wait4
    in a small launcher process (:data:`_LAUNCHER`)."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err, \
            tempfile.NamedTemporaryFile("r", suffix=".json") as figures:
        process = subprocess.run([sys.executable, "-I", "-S", "-c", _LAUNCHER, figures.name, *map(str, command)],
                                 env=env or child_env(), stdout=out, stderr=err, text=True)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
        if process.returncode != 0:
            raise RuntimeError(f"launcher failed ({process.returncode}):\n{stderr[-4000:]}")
        wall, returncode, user, system, max_rss_kib = json.load(figures)
    if check and returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({returncode}):\n{stderr[-4000:]}")
    return {"wall_s": wall, "user_s": user, "sys_s": system, "cpu_s": user + system,
            "max_rss_mib": max_rss_kib / 1024, "stdout": stdout, "stderr": stderr, "returncode": returncode}


def best_of(runs: list[dict]) -> dict:
    """The run with the least wall time (the least disturbed by other load), plus the list's size."""
    best = dict(min(runs, key=lambda run: run["wall_s"]))
    best["runs"] = len(runs)
    best["cpu_s_min"] = min(run["cpu_s"] for run in runs)
    return {key: value for key, value in best.items() if key not in ("stdout", "stderr")}


def instruction_sets() -> dict:
    """The instruction set each numerical library chose on this CPU: numpy's SIMD targets in use,
    OpenBLAS's core type (threadpoolctl) and PyTorch's CPU capability (in a child process, so
    that a benchmark that does not use torch does not load it)."""
    import subprocess
    import sys

    sets: dict = {}
    try:
        from numpy._core import _multiarray_umath as umath

        sets["numpy_simd"] = [name for name in umath.__cpu_dispatch__ if umath.__cpu_features__.get(name)]
        sets["numpy_baseline"] = list(umath.__cpu_baseline__)
    except (ImportError, AttributeError):
        pass
    try:
        from threadpoolctl import threadpool_info

        sets["openblas_core"] = sorted({lib.get("architecture") for lib in threadpool_info()
                                        if lib.get("internal_api") == "openblas" and lib.get("architecture")})
    except ImportError:
        pass
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
                           capture_output=True, text=True, env=child_env())
    if probe.returncode == 0 and probe.stdout.strip():
        sets["torch_cpu_capability"] = probe.stdout.strip().splitlines()[-1]
    return sets


def machine() -> dict:
    """Where the figures were measured: CPU model, cores, memory, the instruction sets the libraries
    chose, the load (1-minute average at the start and at the end of the benchmark), Python and
    library versions."""
    import numpy as np

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal"))
        info["memory_gib"] = round(mem_kb / 2**20, 1)
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
        info["load_1min_start_end"] = [round(LOAD_AT_START[0], 2), round(os.getloadavg()[0], 2)]
    except (OSError, StopIteration):
        pass
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = sorted({f"{lib.get('internal_api')} {lib.get('version')} ({lib.get('architecture')})"
                               for lib in threadpool_info() if lib.get("user_api") == "blas"})
    except ImportError:
        pass
    info["threads"] = os.environ.get("OMP_NUM_THREADS", "unset")
    info["instruction_sets"] = instruction_sets()
    return info


def write_result(name: str, payload: dict, results_dir: Path = RESULTS_DIR) -> Path:
    """Write ``results_dir/<name>.json`` (atomically) with the machine added; return its path.

    ``payload["ratio"]`` is the headline ratio (ours against the reference or the target, in the
    direction the benchmark's comment beside it says): every result file has one.
    """
    from facetrust.io import write_json_atomic

    if "ratio" not in payload:
        raise ValueError(f"benchmark {name}: the result has no headline 'ratio'")
    path = Path(results_dir) / f"{name}.json"
    write_json_atomic(path, {"benchmark": name, "machine": machine(),
                             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), **payload})
    return path


def table(rows: list[list], header: list[str]) -> str:
    """A Markdown table (what the README copies)."""
    text = [[str(cell) for cell in row] for row in [header] + rows]
    widths = [max(len(row[j]) for row in text) for j in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in text]
    lines.insert(1, "| " + " | ".join("-" * w for w in widths) + " |")
    return "\n".join(lines)


def results_dir(args) -> Path:
    """Where this run writes its JSON: benchmarks/results, or a scratch folder in --quick mode."""
    return Path(args.results) if getattr(args, "results", None) else RESULTS_DIR


def add_common_arguments(parser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, agreement checks only (CI)")
    parser.add_argument("--repeat", type=int, default=3, help="time each side this often, keep the best wall time")
    parser.add_argument("--work", type=Path, default=WORK_DIR, help="generated data and caches (git-ignored)")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
