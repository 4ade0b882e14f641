"""``make bench``: run every benchmark, then print one table of figures, ratios and goals.

Each benchmark is its own script (ours and the reference side by side, agreement checked,
``results/<name>.json`` written); this runs them one after the other and summarises the JSON
files.  ``--quick`` runs them at tiny sizes (what ``tests/test_benchmarks_quick.py`` does) and
summarises nothing.  About 10-15 minutes on a 2-core machine; the IJB-C-scale data (1.2 GB) is
generated on the first run under ``benchmarks/runs/``.

    python benchmarks/run_all.py [--quick] [--only ijb,reject,decode,throughput,bessel,gpu,partial_fc]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from harness import BENCH_DIR, RESULTS_DIR, child_env, table

SCRIPTS = {
    "ijb": ["bench_ijb.py"],
    "reject": ["bench_reject.py"],
    "decode": ["bench_decode.py"],
    "throughput": ["bench_throughput.py"],
    "bessel": ["bench_bessel.py", "--repeats", "20"],
    "gpu": ["gpu_iresnet50.py"],
    "partial_fc": ["bench_partial_fc.py"],
}


def _load(name: str) -> dict | None:
    path = RESULTS_DIR / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def summary() -> str:
    """The table of the latest results: figure, reference, ratio, goal."""
    rows = []
    ijb = _load("ijbc_1to1")
    if ijb:
        ours, ref = ijb["ours"], ijb["reference"]
        rows.append(["IJB-C 1:1, whole `facetrust evaluate ijb` vs reference scoring+ROC (CPU s)",
                     f"{ours['cpu_s_min']:.2f}", f"{ref['times']['scoring_roc_cpu_s']:.1f}",
                     f"{ijb['ratio_cpu']:.1f}x", ">= 20x"])
        rows.append(["IJB-C 1:1, same in wall s (shared machine)", f"{ours['wall_s']:.2f}",
                     f"{ref['times']['scoring_roc_s']:.1f}", f"{ijb['ratio_wall']:.1f}x", ">= 20x"])
        rows.append(["IJB-C 1:1, peak RSS (MiB), whole processes", f"{ours['max_rss_mib']:.0f}",
                     f"{ref['max_rss_mib']:.0f}", f"{ijb['peak_rss_ratio']:.1f}x less", "lower"])
        apart = max(r["pairs_apart"] for r in ijb["agreement"]["tar_at_far"].values())
        rows.append(["IJB-C 1:1, TAR@FAR vs reference (genuine pairs apart, worst FAR)", str(apart), "0", "", "equal"])
        rows.append(["IJB-C 1:1, one-time protocol parsing (s, then cached)", f"{ijb['parse_s']:.2f}", "", "", ""])
        if "scaling" in ijb:
            rows.append(["IJB-C 1:1, scaling exponent over 1/8..1x pairs (CPU)", f"{ijb['scaling']['exponent_cpu']:.2f}",
                         "", "", "<= 1.05"])
            rows.append(["IJB-C 1:1, whole run / floor (2·P·d flops + one pass)", f"{ours['wall_s'] / ijb['floor_s']:.1f}x",
                         "", "", ""])
    reject = _load("reject_curve")
    if reject:
        rows.append([f"reject curve, {reject['fractions']} fractions, {reject['pairs']:,} pairs vs one TAR@FAR (CPU s)",
                     f"{reject['fast_curve_cpu_s']:.2f}", f"{reject['single_tar_at_far_cpu_s']:.2f}",
                     f"{reject['ratio_fast_over_single_cpu']:.2f}x", "<= 1x"])
    decode = _load("recordio_decode")
    if decode:
        rates = decode["rates"]
        limit, ours = rates["limit_decode_jpeg"], rates["ours_sample"]
        rows.append(["RecordIO training sample (read+decode+flip into a uint8 batch) vs bare decode_jpeg (img/s, 1 thread)",
                     f"{ours:,.0f}", f"{limit:,.0f}", f"{ours / limit:.2f}x", ">= 0.9x"])
        if "simplejpeg_decode" in rates:
            rows.append(["same vs bare simplejpeg.decode_jpeg (the decoder it calls)", f"{ours:,.0f}",
                         f"{rates['simplejpeg_decode']:,.0f}", f"{ours / rates['simplejpeg_decode']:.2f}x", ""])
        if decode.get("mxnet"):
            mx = decode["mxnet"]["images_per_s"]
            rows.append(["RecordIO sample vs MXNet 1.9.1 read+imdecode (img/s)", f"{ours:,.0f}",
                         f"{mx:,.0f}", f"{ours / mx:.1f}x", ""])
        curve = ", ".join(f"{w}: {r:,.0f}" for w, r in decode["dataloader_images_per_s"].items())
        rows.append(["DataLoader img/s by workers (wall, batches normalised on the CPU)", curve, "", "", "grows"])
        if "dataloader" in decode:
            curve = ", ".join(f"{w}: {c['uint8']:,.0f}" for w, c in decode["dataloader"].items())
            rows.append(["DataLoader img/s by workers (wall, uint8 batches as a GPU trainer takes them)", curve,
                         "", "", "grows"])
    throughput = _load("cpu_throughput")
    if throughput:
        for model in throughput["models"]:
            rows.append([f"CPU {model['model']} ({model['backbone']} {'x'.join(map(str, model['input_size']))}): "
                         "train samples/s / embed img/s", f"{model['train_samples_per_s']:,.0f} / "
                         f"{model['embed_images_per_s']:,.0f}", "sgemm", f"{model['train_fraction_of_sgemm']:.2f} / "
                         f"{model['embed_fraction_of_sgemm']:.2f}", ""])
    gpu = _load("gpu_iresnet50")
    if gpu:
        best = gpu["settings"]["bf16+channels_last+compile"]
        rows.append([f"GPU iResNet-50 112x112 ({gpu['gpu']}): train / infer samples/s",
                     f"{best['train_samples_per_s']:,.0f} / {best['infer_samples_per_s']:,.0f}", "fp32", "", ""])
    check = _load("gpu_check")  # benchmarks/gpu_check.sh, run on a GPU machine
    if check:
        rows.append([f"GPU check ({', '.join(check['gpu']['devices'])}): facetrust trainer vs arcface_torch-style loop, "
                     "iResNet-50 bf16 samples/s", f"{check['train_ours']['samples_per_s']:,.0f}",
                     f"{check['train_arcface_torch_loop']['samples_per_s']:,.0f}", f"{check['ratio']:.2f}x", ">= 1.0x"])
        rows.append(["GPU check: embedding stream img/s; two runs give equal checkpoints",
                     f"{check['embed']['images_per_s']:,.0f}; {check['determinism']['equal']}", "", "", "equal"])
    partial_fc = _load("partial_fc")
    if partial_fc:
        for row in partial_fc["computed"]:
            if row["world_size"] == 8 and row["sample_rate"] == 0.1:
                rows.append([f"Partial FC 0.1, 8 processes, {row['classes'] // 10**6}M x {row['dim']}: FC GiB/process "
                             "(computed) vs full FC under DDP", f"{row['partial_fc_bytes']['total'] / 2**30:.2f}",
                             f"{row['full_fc_bytes']['total'] / 2**30:.2f}", f"{row['ratio_full_over_partial']:.1f}x",
                             "lower"])
        measured = {m["setting"]: m for m in partial_fc["measured"]}
        full, sampled = measured["full"], measured["partial-0.1"]
        rows.append([f"Partial FC 0.1 vs full FC, {full['classes']:,} classes, 1 process: peak MiB / step s (measured)",
                     f"{sampled['peak_above_baseline_mib']:.0f} / {sampled['step_s']:.2f}",
                     f"{full['peak_above_baseline_mib']:.0f} / {full['step_s']:.2f}",
                     f"{full['peak_above_baseline_mib'] / sampled['peak_above_baseline_mib']:.1f}x / "
                     f"{full['step_s'] / sampled['step_s']:.1f}x", "lower"])
    return table(rows, ["benchmark", "ours", "reference", "ratio", "goal"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SCRIPTS))
    parser.add_argument("--work", help="work folder passed to the scripts (default benchmarks/runs)")
    args, extra = parser.parse_known_args()
    failed = []
    for name in args.only.split(","):
        command = [sys.executable, str(BENCH_DIR / SCRIPTS[name][0]), *SCRIPTS[name][1:], *extra]
        if args.quick:
            command += ["--smoke", "--device", "cpu"] if name == "gpu" else ([] if name == "bessel" else ["--quick"])
            if name == "bessel":
                command = [sys.executable, str(BENCH_DIR / "bench_bessel.py"), "--repeats", "2", "--batch", "64"]
        if args.work and name in ("ijb", "decode"):
            command += ["--work", args.work]
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        run = subprocess.run(command, env=child_env(), cwd=BENCH_DIR.parent)
        print(f"== {name}: exit {run.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
        if run.returncode != 0 and not (name == "gpu" and not args.quick):  # no GPU here is not a failure
            failed.append(name)
    if not args.quick:
        print(summary())
    if failed:
        raise SystemExit(f"benchmarks failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
