"""The pipeline benchmark's log reading and critical path, on a hand-made run."""

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("bench_pipeline", REPO / "benchmarks" / "bench_pipeline.py")
bench_pipeline = importlib.util.module_from_spec(spec)
sys.modules["bench_pipeline"] = bench_pipeline  # dataclasses look their module up there
spec.loader.exec_module(bench_pipeline)

LOG = """Building DAG of jobs...
[Sat Nov 28 04:00:00 2026]
localrule a:
    output: x
    jobid: 1
    benchmark: b/a.tsv
[Sat Nov 28 04:00:10 2026]
localrule b:
    input: x
    output: y
    jobid: 2
    benchmark: b/b.tsv
    wildcards: model=m1
localrule c:
    input: x
    output: z
    jobid: 3
    benchmark: b/c.tsv
localrule d:
    input: y, z
    output: w
    jobid: 4
    benchmark: b/d.tsv
[Sat Nov 28 04:10:00 2026]
"""


def test_critical_path_is_the_longest_chain_of_dependent_jobs(tmp_path):
    (tmp_path / "run.log").write_text(LOG)
    (tmp_path / "b").mkdir()
    for name, seconds, rss in (("a", 10, 100), ("b", 50, 300), ("c", 200, 900), ("d", 5, 50)):
        (tmp_path / "b" / f"{name}.tsv").write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0\t{rss}\n")
    jobs, stamps = bench_pipeline.parse_log(tmp_path / "run.log")
    assert [j.rule for j in jobs] == ["a", "b", "c", "d"] and jobs[1].wildcards == "model=m1"
    for job in jobs:
        bench_pipeline.read_benchmark(job, tmp_path)
    total, path = bench_pipeline.critical_path(jobs)
    assert total == 215 and [j.rule for j in path] == ["a", "c", "d"]  # c (200 s) gates d, not b (50 s)
    assert (stamps[-1] - stamps[0]).total_seconds() == 600


def test_exact_peaks_go_to_the_job_whose_outputs_lie_nearest(tmp_path):
    """A command's record belongs to the job nearest its outputs: `train --out models/m` to the train
    job (models/m/model.pt), `fit-head --out models/m/heads/h` to fit_head, though both lie inside
    models/m; a record matching no job is not counted; the larger of self and children counts."""
    import json

    log = ("[Sat Nov 28 04:00:00 2026]\nlocalrule train:\n    output: models/m/model.pt, models/m/config.yaml\n"
           "    jobid: 1\nlocalrule fit_head:\n    input: models/m/model.pt\n    output: models/m/heads/h/head.pt\n"
           "    jobid: 2\nlocalrule embed:\n    input: models/m/model.pt\n    output: embeddings/m.npz\n    jobid: 3\n")
    (tmp_path / "run.log").write_text(log)
    jobs, _ = bench_pipeline.parse_log(tmp_path / "run.log")
    records = [("train", ["models/m"], 900.0, 1200.0), ("fit-head", ["models/m/heads/h"], 700.0, 0.0),
               ("embed", [str(tmp_path / "embeddings" / "m.npz")], 500.0, 0.0),  # absolute, inside the run
               ("report", ["elsewhere/table.csv"], 9999.0, 0.0)]
    (tmp_path / bench_pipeline.PEAK_MEMORY_FILE).write_text("".join(
        json.dumps({"command": c, "exit": 0, "cwd": str(tmp_path), "outputs": o, "max_rss_mib": s,
                    "children_max_rss_mib": k}) + "\n" for c, o, s, k in records))
    assert bench_pipeline.read_exact_peaks(jobs, tmp_path) == 3
    assert [j.exact_rss_mib for j in jobs] == [1200.0, 700.0, 500.0]
    assert bench_pipeline.read_exact_peaks(jobs, tmp_path / "no-run") == 0


TIMED_LOG = """[Sat Nov 28 04:00:00 2026]
localrule a:
    output: x
    jobid: 1
[Sat Nov 28 04:00:00 2026]
localrule b:
    output: y
    jobid: 2
[Sat Nov 28 04:01:00 2026]
Finished jobid: 1 (Rule: a)
[Sat Nov 28 04:01:30 2026]
localrule c:
    input: x
    output: z
    jobid: 3
[Sat Nov 28 04:02:00 2026]
Finished jobid: 2 (Rule: b)
[Sat Nov 28 04:03:00 2026]
Finished jobid: 3 (Rule: c)
"""


def test_idle_core_time_counts_the_core_seconds_no_job_used(tmp_path):
    """a (0-60 s) and b (0-120 s) side by side, c (90-180 s) after a 30 s gap on the first core:
    of 2 x 180 core-s, 60 + 120 + 90 were used, 90 idle (the gap and the last minute's second core)."""
    (tmp_path / "run.log").write_text(TIMED_LOG)
    jobs, _ = bench_pipeline.parse_log(tmp_path / "run.log")
    assert [(j.rule, (j.end - j.start).total_seconds()) for j in jobs] == [("a", 60), ("b", 120), ("c", 90)]
    busy = bench_pipeline.busy_profile(jobs)
    assert busy["idle_core_s"] == 90
    assert busy["busy_per_30_s"] == [2, 2, 1, 2, 1, 1]
    figure = tmp_path / "timeline.png"
    bench_pipeline.plot_timeline(jobs, figure, "test", bench_pipeline.critical_path(jobs)[1])
    assert figure.stat().st_size > 5000
