"""The embedded default pipeline as a whole: wall time, peak memory and the critical path.

Reads a finished run's Snakemake log (``.snakemake/log/*.snakemake.log``: every job's rule,
inputs, outputs and benchmark file) and the per-job benchmark files (``logs/benchmark/**.tsv``:
seconds, max RSS), links each job to the jobs that produced its inputs, and prints

- the run's wall time (first to last job timestamp) against the target of issue 22 (main job
  <= 6 min, `all` <= 20 min on a quiet 2-core machine), the sum of job times (what one core
  would take) and the peak RSS of any one job (a job's own peak; jobs run two at a time on 2 cores):
  Snakemake's sampled figure and, for a run made with ``--run``, the exact one each ``facetrust``
  command records (``getrusage``, :func:`read_exact_peaks`);
- the critical path: the chain of dependent jobs with the largest summed time, i.e. the jobs
  that gate the run however many cores it gets.

    .venv/bin/python benchmarks/bench_pipeline.py --workdir .           # after `make all-reports`
    .venv/bin/python benchmarks/bench_pipeline.py --run --target all    # run it first, in a fresh dir
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py lives beside this script
from harness import machine, without_bytecode_override  # noqa: E402

from facetrust.cli import PEAK_MEMORY_LOG  # noqa: E402  (the variable the commands read)

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGETS_MIN = {"results/ijbc_table.csv": 6.0, "all": 20.0}


@dataclass
class Job:
    jobid: str
    rule: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    benchmark: str | None = None
    wildcards: str = ""
    seconds: float = 0.0
    max_rss_mb: float = 0.0
    exact_rss_mib: float = 0.0  # from the commands' own getrusage records (PEAK_MEMORY_FILE)
    start: dt.datetime | None = None  # the log's stamp before the job's entry
    end: dt.datetime | None = None  # the stamp before its "Finished jobid" line


def parse_log(path: Path) -> tuple[list[Job], list[dt.datetime]]:
    """Jobs and the timestamps of a Snakemake log."""
    jobs, stamps, current = [], [], None
    finished: dict[str, dt.datetime] = {}
    for line in path.read_text().splitlines():
        stamp = re.match(r"\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]", line)
        if stamp:
            stamps.append(dt.datetime.strptime(stamp.group(1), "%a %b %d %H:%M:%S %Y"))
        rule = re.match(r"^(local)?rule (\w+):", line)
        if rule:
            current = Job(jobid="", rule=rule.group(2), start=stamps[-1] if stamps else None)
            jobs.append(current)
            continue
        done = re.match(r"^Finished jobid: (\d+)", line)
        if done and stamps:
            finished[done.group(1)] = stamps[-1]
        if current is None or not line.startswith("    "):
            continue
        key, _, value = line.strip().partition(": ")
        if key in ("input", "output"):
            getattr(current, key + "s").extend(v.strip() for v in value.split(","))
        elif key == "jobid":
            current.jobid = value
        elif key == "benchmark":
            current.benchmark = value
        elif key == "wildcards":
            current.wildcards = value
    jobs = [job for job in jobs if job.jobid]
    for job in jobs:
        job.end = finished.get(job.jobid)
    return jobs, stamps


def busy_profile(jobs: list[Job], cores: int = 2) -> dict:
    """How full the cores were: ``idle_core_s``, the core-seconds no job used between the first
    job's start and the last one's end (``cores`` x wall - the jobs' summed wall, from the log's
    one-second stamps), and ``busy_per_30_s``, the mean number of jobs running in each 30 s."""
    spans = [(job.start, job.end) for job in jobs if job.start and job.end]
    if not spans:
        return {"idle_core_s": None, "busy_per_30_s": []}
    t0, t1 = min(s for s, _ in spans), max(e for _, e in spans)
    wall = (t1 - t0).total_seconds()
    bins = [0.0] * max(1, -int(-wall // 30))  # ceil: a bin per started 30 s
    for start, end in spans:
        x, stop = (start - t0).total_seconds(), (end - t0).total_seconds()
        while x < stop:
            index = int(x // 30)
            step = min(stop, (index + 1) * 30) - x
            bins[index] += step
            x += step
    return {"idle_core_s": round(cores * wall - sum(bins)), "busy_per_30_s": [round(b / 30, 2) for b in bins]}


#: The rules a timeline colours, each always in the same colour (the embedded default's long jobs); the rest are grey.
TIMELINE_RULES = ("train", "train_xcos", "invert", "explain_faithfulness", "embed", "evaluate_ijb", "explain_sanity",
                  "synthesize", "invert_select", "fit_head")


def _label(job: Job) -> str:
    """A bar's text: a training by its model, any other job by its rule (without ``explain_``)."""
    first = job.wildcards.split(",")[0].partition("=")[2].strip()
    return first if job.rule == "train" and first else job.rule.removeprefix("explain_")


def plot_timeline(jobs: list[Job], out: Path, title: str, path: list[Job], cores: int = 2) -> None:
    """Each job as a bar in the slot it ran in (the first free one, in start order: Snakemake runs
    ``cores`` jobs at a time, not on fixed cores), the rules of :data:`TIMELINE_RULES` coloured
    and the others grey, the critical path outlined: where the run's time went and where a slot sat
    idle.  ``path``: the critical path (:func:`critical_path`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    spans = sorted((job for job in jobs if job.start and job.end), key=lambda j: (j.start, j.end))
    if not spans:
        return
    t0 = spans[0].start
    on_path = {id(job) for job in path}
    seconds: dict[str, float] = {}
    for job in spans:
        seconds[job.rule] = seconds.get(job.rule, 0.0) + (job.end - job.start).total_seconds()
    palette = plt.get_cmap("tab10")
    colours = {rule: palette(i) for i, rule in enumerate(TIMELINE_RULES) if rule in seconds}  # fixed: runs compare
    big = sorted(colours, key=lambda r: -seconds[r])
    free_at = [0.0] * cores
    figure, axes = plt.subplots(figsize=(12, 3.0))
    for job in spans:
        start, end = (job.start - t0).total_seconds() / 60, (job.end - t0).total_seconds() / 60
        lane = min(range(cores), key=lambda c: (free_at[c] > start + 1e-9, free_at[c]))
        free_at[lane] = max(end, start)
        critical = id(job) in on_path
        axes.barh(lane, max(end - start, 1 / 60), left=start, height=0.7, color=colours.get(job.rule, "0.75"),
                  edgecolor="black" if critical else "white", linewidth=1.2 if critical else 0.4)
        if end - start > 0.9:
            axes.text((start + end) / 2, lane, _label(job)[:16], ha="center", va="center", fontsize=7)
    axes.set_yticks(range(cores), [f"slot {c + 1}" for c in range(cores)])
    axes.set_xlabel("minutes since the first job")
    axes.set_title(title, fontsize=9)
    handles = [matplotlib.patches.Patch(color=colours[rule], label=f"{rule} ({seconds[rule] / 60:.1f} min)")
               for rule in big]
    handles.append(matplotlib.patches.Patch(color="0.75", label="other rules"))
    axes.legend(handles=handles, fontsize=7, ncol=min(len(handles), 5), loc="upper center",
                bbox_to_anchor=(0.5, -0.28), frameon=False)
    figure.tight_layout()
    figure.savefig(out, dpi=130)
    plt.close(figure)


def read_benchmark(job: Job, workdir: Path) -> None:
    if job.benchmark and (workdir / job.benchmark).is_file():
        with (workdir / job.benchmark).open() as handle:
            row = next(csv.DictReader(handle, delimiter="\t"))
        job.seconds = float(row["s"])
        rss = row.get("max_rss", "NA")
        job.max_rss_mb = float(rss) if rss not in ("NA", "-") else 0.0


#: Where the run's ``facetrust`` commands append their exact peak memory (``facetrust.cli.record_peak_memory``,
#: asked for by the variable it names), in the run's directory.
PEAK_MEMORY_FILE = ".facetrust_peak_memory.jsonl"


def read_exact_peaks(jobs: list[Job], workdir: Path) -> int:
    """Give each job the largest exact peak (``max_rss_mib`` of the process or of one of its children)
    among the command records of ``workdir``'s :data:`PEAK_MEMORY_FILE` that belong to it: a record
    belongs to the job whose outputs lie nearest its own (equal, or one inside the other: a command's
    ``--out`` directory holds the rule's files); returns how many records matched a job.
    Snakemake's ``max_rss`` samples the process tree now and then and reads low for a short peak
    (note 14 of benchmarks/README.md); this one is the kernel's."""
    path = workdir / PEAK_MEMORY_FILE
    if not path.is_file():
        return 0
    root = workdir.resolve()

    def relative(name: str, cwd: str) -> Path:
        full = (Path(cwd) / name).resolve()
        return full.relative_to(root) if full.is_relative_to(root) else full

    def distance(a: Path, b: Path) -> int | None:
        """How many path levels apart ``a`` and ``b`` are when one is (inside) the other, else None."""
        return abs(len(a.parts) - len(b.parts)) if a == b or a.is_relative_to(b) or b.is_relative_to(a) else None

    matched = 0
    for line in path.read_text().splitlines():
        record = json.loads(line)
        outputs = [relative(name, record["cwd"]) for name in record["outputs"]]
        # the job whose files are nearest the command's outputs: `train --out models/m` is the train
        # job (models/m/model.pt), not fit_head's (models/m/heads/h/head.pt), though both lie inside
        best, best_distance = None, None
        for job in jobs:
            near = [d for out in job.outputs for mine in outputs if (d := distance(Path(out), mine)) is not None]
            if near and (best_distance is None or min(near) < best_distance):
                best, best_distance = job, min(near)
        if best is not None:
            best.exact_rss_mib = max(best.exact_rss_mib, record["max_rss_mib"], record["children_max_rss_mib"])
            matched += 1
    return matched


def critical_path(jobs: list[Job]) -> tuple[float, list[Job]]:
    """The chain of dependent jobs with the largest summed time (jobs are logged in a valid order)."""
    producer = {output: job for job in jobs for output in job.outputs}
    best: dict[str, tuple[float, list[Job]]] = {}
    for job in jobs:
        parents = {producer[i].jobid: producer[i] for i in job.inputs if i in producer and producer[i] is not job}
        before = max((best[p.jobid] for p in parents.values() if p.jobid in best), key=lambda b: b[0],
                     default=(0.0, []))
        best[job.jobid] = (before[0] + job.seconds, before[1] + [job])
    return max(best.values(), key=lambda b: b[0])


def run_pipeline(target: str) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="bench_pipeline."))
    shutil.copy(REPO / "params.yaml", workdir / "params.yaml")
    env = {**without_bytecode_override(os.environ), "PATH": f"{BIN}:{os.environ['PATH']}",
           PEAK_MEMORY_LOG: str(workdir / PEAK_MEMORY_FILE)}
    subprocess.run([str(BIN / "snakemake"), "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2", target],
                   check=True, env=env)
    return workdir


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=".", help="directory of a finished run")
    parser.add_argument("--run", action="store_true", help="run the pipeline first in a fresh directory")
    parser.add_argument("--target", default="all", choices=sorted(TARGETS_MIN))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "pipeline.json"))
    parser.add_argument("--timeline", help="also draw the jobs on the cores over time to this .png")
    args = parser.parse_args()
    workdir = run_pipeline(args.target) if args.run else Path(args.workdir)
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        raise SystemExit(f"{workdir}: no Snakemake log (run the pipeline first, or pass --run)")
    jobs, stamps = parse_log(logs[-1])
    for job in jobs:
        read_benchmark(job, workdir)
    matched = read_exact_peaks(jobs, workdir)
    wall_min = (stamps[-1] - stamps[0]).total_seconds() / 60 if len(stamps) > 1 else 0.0
    total, path = critical_path(jobs)
    peak = max(jobs, key=lambda j: j.max_rss_mb)
    target_min = TARGETS_MIN[args.target]
    print(f"{len(jobs)} jobs, wall {wall_min:.1f} min (target {target_min:.0f} min, ratio {wall_min / target_min:.2f}); "
          f"sum of job times {sum(j.seconds for j in jobs) / 60:.1f} min; "
          f"peak RSS {peak.max_rss_mb:.0f} MB ({peak.rule} {peak.wildcards})")
    exact = max(jobs, key=lambda j: j.exact_rss_mib)
    if matched:
        print(f"exact peak RSS {exact.exact_rss_mib:.0f} MiB ({exact.rule} {exact.wildcards}; getrusage of the "
              f"commands, {matched} records of {sum(1 for j in jobs if j.exact_rss_mib)} jobs)")
    busy = busy_profile(jobs)
    print(f"idle core time {busy['idle_core_s']} core-s (2 cores; the jobs' summed wall against 2 x the run's)")
    print(f"critical path {total / 60:.1f} min:")
    for job in path:
        print(f"  {job.seconds:7.1f} s  {job.rule:<20} {job.wildcards}")
    result = {"benchmark": "pipeline", "target": args.target, "log": logs[-1].name, "jobs": len(jobs),
              "wall_min": round(wall_min, 2), "target_min": target_min,
              "ratio": round(wall_min / target_min, 3),  # wall / target: <= 1 meets it
              "job_time_sum_min": round(sum(j.seconds for j in jobs) / 60, 2), "peak_rss_mb": round(peak.max_rss_mb),
              "peak_rss_job": f"{peak.rule} {peak.wildcards}".strip(), "critical_path_min": round(total / 60, 2),
              # Snakemake's figure above samples; these are the kernel's (None: the run recorded none)
              "peak_rss_exact_mib": round(exact.exact_rss_mib) if matched else None,
              "peak_rss_exact_job": f"{exact.rule} {exact.wildcards}".strip() if matched else None,
              "exact_rss_mib_per_job": {f"{j.rule} {j.wildcards}".strip(): round(j.exact_rss_mib)
                                        for j in sorted(jobs, key=lambda j: -j.exact_rss_mib) if j.exact_rss_mib},
              "critical_path": [f"{j.rule} {j.wildcards}".strip() for j in path], **busy,
              "machine": machine()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.timeline:
        plot_timeline(jobs, Path(args.timeline), f"{args.target}: {len(jobs)} jobs, wall {wall_min:.1f} min, "
                      f"{busy['idle_core_s']} idle core-s; critical path outlined ({total / 60:.1f} min)", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
