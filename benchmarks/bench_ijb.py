"""Benchmark: IJB-C-scale 1:1 verification, ``facetrust evaluate ijb`` vs the InsightFace way.

On a generated protocol of IJB-C's exact size (``ijbc_synth.py``: 469,375 images, 23,124
templates, 15,658,489 pairs, d = 512, cached under ``--work``) it runs, side by side:

- **ours**: the whole ``facetrust evaluate ijb`` process (imports, decoded-protocol cache, streamed
  embeddings, pooling, pair scores, ROC, metrics and ROC files), best of ``--repeat``; the one-time
  text parsing (first run on a protocol, before the cache exists) is measured separately;
- **reference**: ``ijb_reference.py``, the InsightFace ``eval_ijbc.py`` algorithm; the figure
  compared is its pair scoring + ROC alone (its parsing, loading and pooling are reported too).

It checks that TAR@FAR is equal at every FAR and AUC agrees, prints wall and CPU time, peak memory
and the ratio, the scaling exponent of ours over 1/8 … 1× the pairs (every point measured alike: its
protocol cache filled by an untimed run, then best of ``--repeat``), and the distance to the floor
(2·P·d flops at the measured sgemm rate + one pass over the scores).  Results go to
``results/ijbc_1to1.json``.

    python benchmarks/bench_ijb.py [--repeat 3] [--quick] [--compare-src DIR]

Both kinds of protocol are run: the one above (continuous scores, no ties) and one with tied
float64 scores (``ijbc_synth.py --ties``: 10 % duplicate templates, 1 % repeated pairs,
int8-quantised features), each beside the reference; the tied one reports how many pairs the
exact TAR rescored in float64 (``exact_tar.py``: only those the float32 error bound cannot order).
Ours and the reference run with the same number of BLAS/OpenMP threads (``--threads``, default 1,
recorded).  ``--size-fraction F`` scales every count of the protocol by F (a smaller machine).

``--compare-src DIR`` also runs another checkout's ``src`` on the same inputs and checks that the
metrics and ROC files are byte-identical (how the fast path was verified against the old one).
"""

from __future__ import annotations

import argparse
import dataclasses
import filecmp
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

import ijbc_synth
from harness import add_common_arguments, best_of, child_env, results_dir, run_measured, table, write_result

SCALES = (0.125, 0.25, 0.5, 1.0)


def ours_command(protocol: Path, embeddings: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "facetrust.cli", "evaluate", "ijb", "--embeddings", str(embeddings),
            "--protocol", str(protocol), "--name", ijbc_synth.NAME, "--out", str(out / "metrics.json"),
            "--roc", str(out / "roc.csv")]


def run_ours(protocol: Path, embeddings: Path, out: Path, cache: Path, repeat: int) -> dict:
    """Best of ``repeat`` warm runs (the protocol cache filled by one untimed run first)."""
    env = child_env(FACETRUST_CACHE_DIR=str(cache))
    command = ours_command(protocol, embeddings, out)
    cold = run_measured(command, env)
    best = best_of([run_measured(command, env) for _ in range(repeat)])
    best["cold_wall_s"] = cold["wall_s"]
    best["metrics"] = json.loads((out / "metrics.json").read_text())
    return best


def parse_seconds(protocol: Path) -> float:
    """Seconds to parse the protocol text (no cache), in a fresh process, imports excluded."""
    code = ("import time,sys; from facetrust.data.ijb import read_ijb_protocol; t=time.perf_counter(); "
            f"read_ijb_protocol(sys.argv[1], {ijbc_synth.NAME!r}, cache=False); print(time.perf_counter()-t)")
    return float(run_measured([sys.executable, "-c", code, str(protocol)])["stdout"].split()[-1])


def run_reference(protocol: Path, embeddings: Path, out: Path) -> dict:
    command = [sys.executable, str(Path(__file__).with_name("ijb_reference.py")), "--protocol", str(protocol),
               "--name", ijbc_synth.NAME, "--embeddings", str(embeddings), "--out", str(out / "reference.json")]
    run = run_measured(command, child_env())
    result = json.loads((out / "reference.json").read_text())
    result.update({key: run[key] for key in ("wall_s", "cpu_s", "max_rss_mib")})
    return result


def stage_breakdown(protocol: Path, embeddings: Path, cache: Path) -> dict:
    """Seconds per stage of ours, in one process (``--stages`` mode of this script)."""
    from facetrust.float_path import pin_environment

    env = child_env(FACETRUST_CACHE_DIR=str(cache))
    pin_environment(env)  # the float path `facetrust evaluate ijb` runs on (numpy's AVX2 loops and sort)
    run = run_measured([sys.executable, __file__, "--stages", str(protocol), str(embeddings)], env)
    return json.loads(run["stdout"].splitlines()[-1])


def stages_main(protocol: str, embeddings: str) -> None:
    """Time each stage of ``run_evaluate_ijb`` in this process; print JSON (seconds, flops)."""
    start = time.perf_counter()
    from facetrust.data.ijb import read_ijb_protocol
    from facetrust.evaluate.embeddings_file import load_embeddings
    from facetrust.evaluate.exact_tar import exact_tar_at_far, float32_dot_error_bound
    from facetrust.evaluate.ijb import template_features_float64
    from facetrust.evaluate.template_dots import float64_pair_scores, pair_scores, template_rows
    from facetrust.evaluate.roc import DEFAULT_IJB_FARS, roc_points_and_classes

    times = {"imports_s": time.perf_counter() - start}

    cpu = {}

    def stage(name, function, *args, **kwargs):
        before, begin = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        value = function(*args, **kwargs)
        times[name] = time.perf_counter() - begin
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu[name] = {"user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
                     "minor_faults": after.ru_minflt - before.ru_minflt}
        return value

    p = stage("protocol_cached_s", read_ijb_protocol, protocol, ijbc_synth.NAME)
    e = stage("open_embeddings_s", load_embeddings, embeddings, stream=True)
    ids, features64 = stage("pool_s", template_features_float64, e.features, p.template_ids, p.media_ids,
                            p.detector_scores)
    features = features64.astype(np.float32)
    scores = stage("scores_s", pair_scores, ids, features, p.pairs)
    _, classes = stage("roc_s", roc_points_and_classes, p.labels, scores)
    exact = stage("exact_tar_s", exact_tar_at_far, scores, p.labels, float64_pair_scores(ids, features64, p.pairs),
                  float32_dot_error_bound(features.shape[1]), DEFAULT_IJB_FARS, "nearest", classes)
    times["rescored_pairs"] = exact.rescored_pairs
    begin = time.perf_counter()
    np.count_nonzero(scores >= np.float32(0.3))
    times["one_pass_s"] = time.perf_counter() - begin
    rows = template_rows(ids, p.pairs)
    used = [np.unique(rows[:, j]).size for j in (0, 1)]
    times["score_flops"] = 2.0 * used[0] * used[1] * features.shape[1]
    times["floor_flops"] = 2.0 * p.pairs.shape[0] * features.shape[1]
    times["cpu"] = cpu  # user and system seconds and minor page faults of each stage
    print(json.dumps(times))


def sgemm_gflops() -> float:
    """Single-thread float32 GEMM rate (GFLOP/s) of this machine's BLAS, best of 5."""
    code = ("import numpy as np,time; a=np.ones((1024,512),np.float32); b=np.ones((512,8192),np.float32); a@b; "
            "t=min((lambda s: (a@b, time.perf_counter()-s)[1])(time.perf_counter()) for _ in range(5)); "
            "print(2*1024*8192*512/t/1e9)")
    return float(run_measured([sys.executable, "-c", code])["stdout"].split()[-1])


def agreement(ours: dict, reference: dict) -> dict:
    """TAR@FAR and AUC of ours vs the reference; differences in genuine pairs."""
    n_genuine = reference["n_genuine"]
    rows = {}
    for far, ref in reference["tar_at_far"].items():
        mine = ours["tar_at_far"][far]
        rows[far] = {"ours": mine, "reference": ref, "reference_float32_scores": reference["tar_at_far_float32_scores"][far],
                     "pairs_apart": round(abs(mine - ref) * n_genuine)}
    return {"tar_at_far": rows, "equal_at_every_far": all(r["pairs_apart"] == 0 for r in rows.values()),
            "equal_to_float32_reference": all(r["ours"] == r["reference_float32_scores"] for r in rows.values()),
            "auc_difference": abs(ours["auc"] - reference["auc"])}


def scaling(root: Path, embeddings: Path, work: Path, repeat: int, seed: int) -> dict:
    """Time of ours at each fraction of the pairs, and the fitted exponent of time vs pairs.

    Every point is measured in the same state: all protocol caches are filled (one untimed run
    each) before any timed run, and the timed runs go round the fractions ``repeat`` times, so a
    change of the machine's load falls on every point alike; each point keeps its best run.
    """
    protocols = [ijbc_synth.subset(root, fraction, seed) for fraction in SCALES]
    env = child_env(FACETRUST_CACHE_DIR=str(work / "cache"))
    commands = [ours_command(protocol, embeddings, work / f"out-{fraction:g}")
                for fraction, protocol in zip(SCALES, protocols)]
    for fraction, command in zip(SCALES, commands):
        (work / f"out-{fraction:g}").mkdir(parents=True, exist_ok=True)
        run_measured(command, env)
    runs = [[] for _ in SCALES]
    for _ in range(repeat):
        for k, command in enumerate(commands):
            runs[k].append(run_measured(command, env))
    points = []
    for fraction, measured in zip(SCALES, runs):
        best = best_of(measured)
        metrics = json.loads((work / f"out-{fraction:g}" / "metrics.json").read_text())
        points.append({"fraction": fraction, "pairs": metrics["n_pairs"], "wall_s": best["wall_s"],
                       "cpu_s": best["cpu_s_min"]})
    pairs = np.log([p["pairs"] for p in points])
    return {"points": points, "exponent_wall": float(np.polyfit(pairs, np.log([p["wall_s"] for p in points]), 1)[0]),
            "exponent_cpu": float(np.polyfit(pairs, np.log([p["cpu_s"] for p in points]), 1)[0])}


def compare_sources(other_src: Path, protocol: Path, embeddings: Path, ours_out: Path, work: Path) -> bool:
    out = work / "out-other"
    out.mkdir(parents=True, exist_ok=True)
    env = child_env(PYTHONPATH=str(other_src), FACETRUST_CACHE_DIR="off")
    run_measured(ours_command(protocol, embeddings, out), env)
    return all(filecmp.cmp(ours_out / name, out / name, shallow=False) for name in ("metrics.json", "roc.csv"))


def report(result: dict) -> str:
    ours, ref = result["ours"], result["reference"]
    rows = [
        ["reference scoring + ROC (InsightFace way)", f"{ref['times']['scoring_roc_s']:.1f} s",
         f"{ref['times']['scoring_roc_cpu_s']:.1f} s", ""],
        ["reference whole process", f"{ref['wall_s']:.1f} s", f"{ref['cpu_s']:.1f} s", f"{ref['max_rss_mib']:.0f} MiB"],
        ["ours: whole `facetrust evaluate ijb`", f"{ours['wall_s']:.2f} s", f"{ours['cpu_s_min']:.2f} s",
         f"{ours['max_rss_mib']:.0f} MiB"],
        ["ours: one-time protocol text parsing", f"{result['parse_s']:.2f} s", "", ""],
        ["ratio reference scoring+ROC / ours", f"{result['ratio_wall']:.1f}x", f"{result['ratio_cpu']:.1f}x", ""],
    ]
    return table(rows, ["", "wall", "CPU", "peak RSS"])


def compare(root: Path, work: Path, repeat: int, full: bool, compare_src: Path | None) -> dict:
    """Ours beside the reference on the protocol at ``root``: times, memory, agreement, ratios."""
    embeddings = root / "embeddings.npz"
    ours = run_ours(root, embeddings, work / "out-1", work / "cache", repeat)
    reference = run_reference(root, embeddings, work)
    agree = agreement(ours["metrics"], reference)
    result = {"sizes": json.loads((root / "summary.json").read_text()), "repeat": repeat,
              "ours": {k: v for k, v in ours.items() if k != "metrics"}, "reference": reference,
              "agreement": agree, "parse_s": parse_seconds(root)}
    result["ratio_wall"] = reference["times"]["scoring_roc_s"] / ours["wall_s"]
    result["ratio_cpu"] = reference["times"]["scoring_roc_cpu_s"] / ours["cpu_s_min"]
    result["peak_rss_ratio"] = reference["max_rss_mib"] / ours["max_rss_mib"]
    result["stages"] = stage_breakdown(root, embeddings, work / "cache")
    if compare_src:
        result["byte_identical_to_compare_src"] = compare_sources(compare_src, root, embeddings, work / "out-1", work)
    if full:
        result["sgemm_gflops"] = sgemm_gflops()
        stages = result["stages"]
        result["floor_s"] = stages["floor_flops"] / (result["sgemm_gflops"] * 1e9) + stages["one_pass_s"]
    return result


def print_comparison(title: str, result: dict) -> None:
    print(f"\n## {title}")
    print(report(result))
    for far, row in result["agreement"]["tar_at_far"].items():
        print(f"TAR@FAR={far}: ours {row['ours']:.6f}  reference {row['reference']:.6f}  "
              f"(float32 scores {row['reference_float32_scores']:.6f})  pairs apart {row['pairs_apart']}")
    print(f"AUC difference {result['agreement']['auc_difference']:.2e}; "
          f"TAR equal at every FAR: {result['agreement']['equal_at_every_far']}")
    stages = result["stages"]
    cpu = stages.get("cpu", {})
    print("stages (wall; user + sys): " + ", ".join(
        f"{k[:-2]} {v:.2f} s" + (f" ({cpu[k]['user']:.2f} + {cpu[k]['sys']:.2f})" if k in cpu else "")
        for k, v in stages.items() if k.endswith("_s"))
          + f"; {stages['rescored_pairs']:,} of {result['sizes']['n_pairs']:,} pairs rescored in float64 "
          "for the exact TAR")


def disagrees(result: dict) -> bool:
    agree = result["agreement"]
    return (not agree["equal_at_every_far"] or agree["auc_difference"] > 1e-6
            or result.get("byte_identical_to_compare_src") is False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare-src", type=Path, help="another checkout's src/ to byte-compare outputs with")
    parser.add_argument("--size-fraction", type=float, default=1.0,
                        help="scale every count of the IJB-C-sized protocol (e.g. 0.25 on a small, shared machine)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads of both sides")
    parser.add_argument("--ties", type=float, default=0.1, help="duplicate-template fraction of the tied protocol")
    parser.add_argument("--no-scaling", action="store_true", help="leave out the 1/8..1x scaling runs")
    parser.add_argument("--stages", nargs=2, metavar=("PROTOCOL", "EMBEDDINGS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stages:
        return stages_main(*args.stages)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(args.threads)  # child_env passes them to both sides
    full_sizes = ijbc_synth.Sizes()
    if args.size_fraction != 1.0:
        full_sizes = dataclasses.replace(full_sizes, **{
            field: max(1, round(getattr(full_sizes, field) * args.size_fraction))
            for field in ("n_images", "n_templates", "n_subjects", "n_pairs", "n_genuine")})
    sizes = ijbc_synth.QUICK if args.quick else full_sizes
    repeat = 1 if args.quick else args.repeat
    begin = time.perf_counter()
    root = ijbc_synth.ensure(args.work, sizes, args.seed)
    tied_root = ijbc_synth.ensure(args.work, sizes, args.seed, ties=args.ties)
    print(f"protocols {root}, {tied_root} ({time.perf_counter() - begin:.0f} s to generate or find)", flush=True)

    result = compare(root, args.work / f"{root.name}-bench", repeat, not args.quick, args.compare_src)
    result["tied"] = compare(tied_root, args.work / f"{tied_root.name}-bench", repeat, False, None)
    result["threads"] = args.threads
    result["size_fraction"] = args.size_fraction
    result["ratio"] = min(result["ratio_wall"], result["tied"]["ratio_wall"])
    if not args.quick and not args.no_scaling:
        result["scaling"] = scaling(root, root / "embeddings.npz", args.work / f"{root.name}-bench", repeat, args.seed)
        result["tied"]["scaling"] = scaling(tied_root, tied_root / "embeddings.npz",
                                            args.work / f"{tied_root.name}-bench", repeat, args.seed)
    print(f"threads: {args.threads} BLAS/OpenMP thread(s) on both sides; protocol size x{args.size_fraction:g}")
    print_comparison("protocol without ties", result)
    print_comparison(f"protocol with tied scores ({result['tied']['sizes'].get('duplicate_templates', 0):,} duplicate "
                     "templates, 1 % repeated pairs, int8 features)", result["tied"])
    for key, title in (("", "untied"), ("tied", "tied")):
        part = result[key] if key else result
        if "scaling" in part:
            points = ", ".join(f"{p['pairs']:,}: {p['wall_s']:.2f} s" for p in part["scaling"]["points"])
            print(f"scaling, {title} (wall): {points}; exponent {part['scaling']['exponent_wall']:.2f} "
                  f"(CPU {part['scaling']['exponent_cpu']:.2f})")
    if "floor_s" in result:
        stages = result["stages"]
        print(f"floor: {stages['floor_flops'] / 1e9:.1f} GFLOP at {result['sgemm_gflops']:.0f} GFLOP/s + one pass "
              f"= {result['floor_s']:.2f} s; ours scores {stages['score_flops'] / 1e9:.1f} GFLOP; "
              f"whole run {result['ours']['wall_s'] / result['floor_s']:.1f}x the floor")
    if "byte_identical_to_compare_src" in result:
        print(f"metrics and ROC files byte-identical to {args.compare_src}: {result['byte_identical_to_compare_src']}")
    name = "ijbc_1to1" + ("" if args.threads == 1 else f"_threads{args.threads}")
    path = write_result(name if not args.quick else "ijbc_1to1_quick", result,
                        results_dir(args) if not args.quick else args.work / f"{root.name}-bench")
    print(f"wrote {path}")
    if disagrees(result) or disagrees(result["tied"]):
        raise SystemExit("ours and the reference disagree (TAR must be equal at every FAR, AUC within 1e-6)")


if __name__ == "__main__":
    main()
