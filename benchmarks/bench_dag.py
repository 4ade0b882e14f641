"""Snakemake DAG construction for a large study: 100 models x 4 test sets (`snakemake -n all`).

Generates a configuration with ``--models`` trained models (each its own variant) and two pair sets
plus two IJB sets on a fake data root laid out like the real one (empty files: a dry run reads no
data), then times ``snakemake -n --quiet all`` (parse, config validation, DAG construction, job
planning).  Target: <= 10 s on a 2-core machine.  There is no reference implementation to run side
by side: the reference is the target itself, so the printed ratio is time / 10 s.

    .venv/bin/python benchmarks/bench_dag.py                 # 100 models x 4 test sets
    .venv/bin/python benchmarks/bench_dag.py --quick         # 5 models (CI: the script still runs)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from harness import machine

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET_S = 10.0


def fake_data_root(root: Path) -> dict:
    """Empty files where a real MS1MV2 + LFW/CFP + IJB-B/C layout keeps its data; the datasets block."""
    train = root / "faces_emore"
    train.mkdir(parents=True)
    for name in ("train.rec", "train.idx", "property", "lfw.bin", "cfp_fp.bin"):
        (train / name).touch()
    ijb = {}
    for name, folder in (("ijbb", "IJBB"), ("ijbc", "IJBC")):
        meta = root / "IJB_release" / folder / "meta"
        meta.mkdir(parents=True)
        for part in ("face_tid_mid", "name_5pts_score", "template_pair_label"):
            (meta / f"{name}_{part}.txt").touch()
        ijb[name] = str(root / "IJB_release" / folder)
    return {"source": "files", "train": str(train),
            "pairs": {"lfw": str(train / "lfw.bin"), "cfp_fp": str(train / "cfp_fp.bin")}, "ijb": ijb}


def study_config(n_models: int, datasets: dict) -> dict:
    models = {
        f"m{i:03d}": {"method": f"Model {i}", "backbone": "iresnet50", "embedding_size": 512, "input_size": [112, 112],
                      "head": {"kind": "arcface" if i % 2 else "cosface"}, "train": {"epochs": 1}}
        for i in range(n_models)
    }
    names = sorted(models)
    return {"seed": 1, "threads": 1, "datasets": datasets, "models": models, "heads": {}, "variants": {},
            "report": {"ijbc_table": {"test_set": "ijbc", "variants": names},
                       "verification_table": {"test_set": "lfw", "variants": names},
                       "reject": {"test_set": "ijbc", "variants": []}}}


def time_dry_run(workdir: Path, config: dict, repeat: int) -> tuple[float, float, int]:
    """Best wall and CPU seconds of ``snakemake -n`` for every (model, test set) metrics file plus
    the report targets, and the number of jobs it plans."""
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    test_sets = [*config["datasets"]["pairs"], *config["datasets"]["ijb"]]
    targets = [f"results/metrics/{model}/{test_set}.json" for model in config["models"] for test_set in test_sets]
    command = [str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile",
               str(workdir / "study.yaml"), "--replace-workflow-config", "--quiet", "rules", "-n", "all", *targets]
    times, cpu, jobs = [], [], 0
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), os.times()
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        end_cpu = os.times()
        times.append(time.perf_counter() - start)
        cpu.append(end_cpu.children_user + end_cpu.children_system - start_cpu.children_user - start_cpu.children_system)
        if result.returncode != 0:
            raise SystemExit(f"snakemake -n failed:\n{result.stderr[-3000:]}")
        for line in result.stdout.splitlines():
            if line.strip().startswith("total"):
                jobs = int(line.split()[-1])
    return min(times), min(cpu), jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="5 models, one run (CI)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "dag.json"))
    args = parser.parse_args()
    n_models, repeat = (5, 1) if args.quick else (args.models, args.repeat)
    workdir = Path(tempfile.mkdtemp(prefix="bench_dag."))
    try:
        config = study_config(n_models, fake_data_root(workdir / "data"))
        (workdir / "study.yaml").write_text(yaml.safe_dump(config))
        seconds, cpu_seconds, jobs = time_dry_run(workdir, config, repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {"benchmark": "dag", "models": n_models, "test_sets": 4, "jobs": jobs, "dry_run_s": round(seconds, 2), "dry_run_cpu_s": round(cpu_seconds, 2),
              "target_s": TARGET_S, "ratio_to_target": round(seconds / TARGET_S, 3),
              "ratio": round(seconds / TARGET_S, 3),  # time / target: <= 1 meets it
              "machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(f"snakemake -n: {n_models} models x 4 test sets, {jobs} jobs: {seconds:.2f} s wall, {cpu_seconds:.2f} s CPU "
          f"(target {TARGET_S:.0f} s, ratio {seconds / TARGET_S:.2f})")
    if not args.quick:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
