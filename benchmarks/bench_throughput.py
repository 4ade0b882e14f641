"""Benchmark: CPU training and embedding throughput of the embedded default models (one thread).

For every model of ``params.yaml`` (backbone + margin head as ``facetrust train`` builds them) it
times, on random inputs of the model's size, best of ``--repeat``:

- **train**: one SGD step (forward, margin-head loss, backward, update) on a batch of the model's
  ``batch_size``, in samples/s, as ``facetrust train`` runs it: in its layout
  (``train.trainer.training_layout``: channels-last where the backbone allows it), with its
  allocator setting (``cli.common.reuse_freed_memory``: freed memory reused, not mapped afresh) and
  its optimiser (``train.trainer.build_optimizer``: the model's SGD settings, PyTorch's fused CPU
  kernel), beside the plain PyTorch step of the same model (NCHW, the C library's default
  allocator, ``nn.PReLU`` and ``nn.Conv2d`` (``models.prelu.plain_prelus``,
  ``models.conv.plain_convs``), ``torch.optim.SGD`` with the same settings:
  ``train_plain_nchw_samples_per_s``, ``train_over_plain_nchw``).  On random inputs ATen's PReLU
  backward is about twice as slow as on images (a branch per element, mispredicted half the time),
  so the trainer's own figure below is the one to read for training;
- **embed**: the forward pass ``facetrust embed`` makes (the image and its mirror, F1) in
  ``torch.no_grad`` on batches of 256, in images/s, with the model ``facetrust embed`` runs: the
  loaded model's layout (``models.registry.inference_layout``: channels-last), its batch norms
  folded (``embed.for_inference``), the same allocator setting; beside the plain loop of the same
  backbone (NCHW, batch norms as modules: ``embed_plain_nchw_images_per_s``,
  ``embed_over_plain_nchw``).  The FLOPs counted (convolutions and matrix products) are the same
  on both sides: folding rescales weights and adds biases, which the counter does not count.

Each side of each model runs in its own child process (the allocator setting lasts for a
process), plain first, each with one untimed step and one untimed batch before the timing.

Reference: the machine's own limit — the work per sample (FLOPs counted by
``torch.utils.flop_counter``) divided by the single-thread sgemm rate (numpy's, best of 20, measured
before and after the models and the higher one taken) — so the ratio column says how close each
model runs to BLAS speed (small convolutions on 32×32 inputs are far from it).
Beside it, in the same run (:func:`library_rates`): torch's own sgemm and the fastest of a few large
3x3 convolutions oneDNN runs (``train_fraction_of_onednn_conv``, ``embed_fraction_of_onednn_conv``):
what the libraries the models run on reach on this machine.  Results go to
``results/cpu_throughput.json``.  The GPU counterpart is ``gpu_iresnet50.py``.

**Trainer beside the plain loop** (full mode, the default model): ``facetrust train`` itself (RecordIO
read and JPEG decode, uint8 batches normalised once, the determinism settings, logging) for 2 epochs
on the synthetic training set (rendered once under ``--work``), its images/s read from its own
``train_log.csv`` after the first logging window, beside the plain step above of the same model.
Both run in child processes on the pipeline's pinned (AVX2) float path with one thread, wall time;
the script itself runs on that path too (``facetrust.float_path``, set before numpy and torch load), so
the sgemm bound is the AVX2 one the pipeline has.

``--breakdown`` also times the default model's train step and embedding pass per ATen operator
(:func:`op_breakdown`; in the JSON under ``op_breakdown``).

    python benchmarks/bench_throughput.py [--repeat 3] [--steps 5] [--quick] [--breakdown]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facetrust.float_path import pin_environment

pin_environment()  # before numpy and torch load: the pipeline's float path (AVX2 kernels), sgemm included
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread, the sgemm bound included (OpenBLAS reads it at load)

import numpy as np  # noqa: E402

from harness import BENCH_DIR, REPO, add_common_arguments, results_dir, table, write_result  # noqa: E402

NUM_CLASSES = 1000  # of the order of the synthetic training set's identities


def _model(config: dict):
    from facetrust.models import build_backbone
    from facetrust.models.artifacts import build_margin
    from facetrust.train.parts import TrainModel

    backbone = build_backbone(config["backbone"], embedding_size=int(config["embedding_size"]),
                              input_size=tuple(config["input_size"]), **config.get("backbone_options", {}))
    head, scale_head = build_margin(config, NUM_CLASSES, backbone.feature_map_shape)
    train = config.get("train", {})
    frozen = tuple(name for name, key in (("backbone", "freeze_backbone"), ("head", "freeze_head")) if train.get(key))
    return TrainModel(backbone, head, scale_head, frozen)


def _best(function, repeat: int) -> tuple[float, float]:
    """(best CPU seconds, best wall seconds) of ``function()`` over ``repeat`` calls."""
    cpu = wall = float("inf")
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        function()
        cpu, wall = min(cpu, time.process_time() - start_cpu), min(wall, time.perf_counter() - start)
    return cpu, wall


def _flops(function) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        function()
    return float(counter.get_total_flops())


def _train_workload(name: str, config: dict, side: str):
    """Side ``side`` of model ``name`` (:func:`measure_side`) built and ready to train, in training mode:
    ``(model, train_step, batch size, layout)``."""
    import torch
    import torch.nn.functional as F

    from facetrust.train.config import TrainConfig

    if side == "ours":
        from facetrust.cli.common import reuse_freed_memory

        reuse_freed_memory()
    torch.manual_seed(0)
    model = _model(config)
    if side == "plain":  # nn.PReLU and nn.Conv2d, ATen's and oneDNN's own backward (models/prelu.py, conv.py)
        from facetrust.models.conv import plain_convs
        from facetrust.models.prelu import plain_prelus

        model = plain_convs(plain_prelus(model))
    batch = int(config.get("train", {}).get("batch_size", 128))
    height, width = config["input_size"]
    train_config = TrainConfig.from_params({"models": {name: config}}, name)
    layout = "contiguous"
    if side == "ours":
        from facetrust.train.distributed import DistInfo
        from facetrust.train.trainer import training_layout

        layout = training_layout(model, train_config, DistInfo())
    images = torch.randn(batch, 3, height, width)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = None
    if parameters and side == "ours":  # the trainer's SGD (fused on the CPU)
        from facetrust.train.trainer import build_optimizer

        optimizer = build_optimizer(parameters, train_config, torch.device("cpu"))
    elif parameters:  # the same hyperparameters, PyTorch's default implementation
        optimizer = torch.optim.SGD(parameters, lr=train_config.lr, momentum=train_config.momentum,
                                    weight_decay=train_config.weight_decay)

    def train_step():
        logits, extra = model(images, labels)
        loss = F.cross_entropy(logits, labels) + extra
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return model.train(), train_step, batch, layout


def _embed_workload(model, config: dict, embed_batch: int, side: str):
    """The embedding pass of side ``side`` on ``model``'s backbone, after its training was timed (``ours``
    folds the batch norms in place): ``(embed, backbone)``."""
    import torch

    backbone = model.backbone.eval().to(memory_format=torch.contiguous_format)
    if side == "ours":  # as a loaded model (its layout), as ``facetrust embed`` runs it (batch norms folded)
        from facetrust.embed import for_inference
        from facetrust.models.registry import inference_layout

        backbone = for_inference(inference_layout(backbone))
    height, width = config["input_size"]
    inputs = torch.randn(embed_batch, 3, height, width)

    def embed():
        with torch.no_grad():
            return backbone(inputs) + backbone(torch.flip(inputs, dims=[3]))

    return embed, backbone


def measure_side(name: str, config: dict, repeat: int, steps: int, embed_batch: int, side: str) -> dict:
    """One side of model ``name``, in this process: ``plain``, the plain PyTorch loop (NCHW, the C
    library's default allocator, ``nn.PReLU``), or ``ours``, what ``facetrust train`` / ``embed`` run (the trainer's
    layout, the loaded model's layout, and :func:`facetrust.cli.common.reuse_freed_memory`, which
    every ``facetrust`` command sets first).  Call it in a fresh process (the allocator setting
    lasts for the process): :func:`measure` does."""
    model, train_step, batch, layout = _train_workload(name, config, side)
    train_step()  # warm-up: allocations, lazy initialisation
    train_flops = _flops(train_step) / batch
    train_cpu, train_wall = _best(lambda: [train_step() for _ in range(steps)], repeat)

    embed, backbone = _embed_workload(model, config, embed_batch, side)
    embed()
    embed_flops = _flops(embed) / embed_batch
    embed_cpu, embed_wall = _best(lambda: [embed() for _ in range(steps)], repeat)
    return {"train_samples_per_s": batch * steps / train_cpu, "train_samples_per_s_wall": batch * steps / train_wall,
            "train_gflop_per_sample": train_flops / 1e9, "batch_size": batch,
            "train_layout": "channels_last" if layout == "channels_last" else "nchw",
            "embed_images_per_s": embed_batch * steps / embed_cpu, "embed_images_per_s_wall": embed_batch * steps / embed_wall,
            "embed_gflop_per_image": embed_flops / 1e9, "embed_layout": _layout(backbone)}


def op_breakdown(name: str, config: dict, steps: int, embed_batch: int) -> dict:
    """Where the time of the ``ours`` side goes (``--breakdown``): every ATen operator of ``steps``
    train steps and embedding passes timed by a ``TorchDispatchMode`` around the call (wall time, one
    thread), summed per operator and per operator and first input's shape, in ms per step / pass.
    torch.profiler distorts these small ops here (a 169 ms step read 415 ms under it); under this
    timer the operators sum to 0.97-1.03x the untimed step.  Run it in a fresh process, as
    :func:`measure_side`."""
    import collections

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class OperatorTimes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.seconds = collections.Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            first = args[0] if args and isinstance(args[0], torch.Tensor) else None
            start = time.perf_counter()
            out = func(*args, **(kwargs or {}))
            self.seconds[(str(func.overloadpacket), tuple(first.shape) if first is not None else ())] += (
                time.perf_counter() - start)
            return out

    def timed(function) -> dict:
        function()
        start = time.perf_counter()
        for _ in range(steps):
            function()
        untimed = (time.perf_counter() - start) / steps
        with OperatorTimes() as times:
            for _ in range(steps):
                function()
        per_op = collections.Counter()
        for (op, _), seconds in times.seconds.items():
            per_op[op] += seconds
        scale = 1e3 / steps
        return {"untimed_ms": untimed * 1e3, "timed_ops_ms": sum(times.seconds.values()) * scale,
                "by_operator_ms": {op: t * scale for op, t in per_op.most_common(12)},
                "by_operator_and_shape_ms": [[op, list(shape), t * scale] for (op, shape), t in times.seconds.most_common(16)]}

    model, train_step, batch, _ = _train_workload(name, config, "ours")
    train = timed(train_step)
    embed, _ = _embed_workload(model, config, embed_batch, "ours")
    return {"model": name, "batch_size": batch, "embed_batch": embed_batch, "train_step": train, "embed_pass": timed(embed)}


def _breakdown_table(title: str, part: dict) -> str:
    total = part["timed_ops_ms"]
    rows = [[op, f"{ms:.2f}", f"{100 * ms / total:.1f}"] for op, ms in part["by_operator_ms"].items()]
    return (f"{title}: {part['untimed_ms']:.1f} ms untimed, {total:.1f} ms over the timed operators\n"
            + table(rows, ["operator", "ms", "%"]))


def measure(name: str, config: dict, repeat: int, steps: int, embed_batch: int, params_file: Path) -> dict:
    """Model ``name``'s plain loop and ours (:func:`measure_side`), each in its own child process on
    the pinned float path with one thread, plain first."""
    sides = {}
    for side in ("plain", "ours"):
        code = (f"import json, sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import torch, yaml; "
                f"torch.set_num_threads(1); import bench_throughput as b; "
                f"c = yaml.safe_load(open({str(params_file)!r}))['models'][{name!r}]; "
                f"c.setdefault('train', {{}}).update({config.get('train', {})!r}); "
                f"print(json.dumps(b.measure_side({name!r}, c, {repeat}, {steps}, {embed_batch}, {side!r})))")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{name} ({side}): {run.stderr.strip()[-2000:]}")
        sides[side] = json.loads(run.stdout.splitlines()[-1])
    plain, ours = sides["plain"], sides["ours"]
    return {"model": name, "backbone": config["backbone"], "input_size": list(config["input_size"]), **ours,
            "train_plain_nchw_samples_per_s": plain["train_samples_per_s"],
            "train_plain_nchw_samples_per_s_wall": plain["train_samples_per_s_wall"],
            "train_over_plain_nchw": ours["train_samples_per_s"] / plain["train_samples_per_s"],
            "embed_plain_nchw_images_per_s": plain["embed_images_per_s"],
            "embed_over_plain_nchw": ours["embed_images_per_s"] / plain["embed_images_per_s"],
            "plain": plain}


def _trainer_images_per_s(log_csv: Path, batch: int) -> float:
    """Images/s of a ``train_log.csv`` after its first window (start-up and warm-up): the windows'
    images over their time (each epoch's windows are timed from its first batch)."""
    with open(log_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    steps = [int(row["step"]) for row in rows]
    windows = [(b - a, float(row["images_per_s"])) for a, b, row in zip(steps, steps[1:], rows[1:])]
    return sum(n for n, _ in windows) * batch / sum(n * batch / rate for n, rate in windows)


def trainer_side_by_side(name: str, params_file: Path, work: Path, repeat: int) -> dict:
    """``facetrust train``'s own loop beside the plain step of model ``name`` (module docstring)."""
    import yaml

    from facetrust.float_path import pin_environment

    env = dict(os.environ, OMP_NUM_THREADS="1")
    pin_environment(env)
    data = work / "synth"
    if not (data / "train" / "train.rec").exists():
        print(f"rendering the synthetic benchmark under {data} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "facetrust.cli", "synth", "--out", str(data), "--params", str(params_file),
                        "--workers", "2"], check=True, env=env, stdout=subprocess.DEVNULL)
    params = yaml.safe_load(params_file.read_text())
    model = params["models"][name]
    model.setdefault("train", {})["epochs"] = 2
    batch = int(model["train"].get("batch_size", 128))
    runs = []
    with tempfile.TemporaryDirectory(dir=work) as scratch:
        trainer_params = Path(scratch) / "params.yaml"
        trainer_params.write_text(yaml.safe_dump(params))
        for attempt in range(repeat):
            out = Path(scratch) / f"model{attempt}"
            subprocess.run([sys.executable, "-m", "facetrust.cli", "train", "--model", name, "--params",
                            str(trainer_params), "--out", str(out), "--threads", "1", "--train-data",
                            str(data / "train")], check=True, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            runs.append(_trainer_images_per_s(out / "train_log.csv", batch))
    plain = measure(name, yaml.safe_load(params_file.read_text())["models"][name], repeat, 5, 256, params_file)
    trainer = max(runs)
    return {"model": name, "float_path": "pinned (AVX2), one thread, wall time", "epochs": 2,
            "trainer_images_per_s": trainer, "trainer_runs": runs, "trainer_layout": plain["train_layout"],
            "plain_step_samples_per_s": plain["train_plain_nchw_samples_per_s_wall"],
            "trainer_over_plain": trainer / plain["train_plain_nchw_samples_per_s_wall"],
            "layout_step_samples_per_s": plain["train_samples_per_s_wall"],
            "trainer_over_layout_step": trainer / plain["train_samples_per_s_wall"],
            "plain_gflop_per_sample": plain["train_gflop_per_sample"]}


def _layout(module) -> str:
    """``channels_last`` or ``nchw``: the memory format of the module's first convolution's weights."""
    import torch

    weight = next(m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    return "nchw" if weight.is_contiguous() else "channels_last"


def sgemm_gflops(repeat: int = 20) -> float:
    """numpy's single-thread sgemm rate, GFLOP/s: the best of ``repeat`` 1024x512 @ 512x4096 products."""
    a, b = np.ones((1024, 512), np.float32), np.ones((512, 4096), np.float32)
    a @ b
    best = min(_best(lambda: a @ b, repeat))
    return 2 * 1024 * 4096 * 512 / best / 1e9


def library_rates(quick: bool = False) -> dict:
    """Two more same-run references beside numpy's sgemm (one thread, the pinned float path, best
    CPU time of 5): torch's own sgemm (``torch.mm``, the same 1024x512 @ 512x4096 product) and the
    fastest of a few large 3x3 convolutions oneDNN runs in the layout the models run in
    (channels-last, forward, no gradient).  They say how much of a gap to the sgemm bound is left
    to the libraries: a model cannot run its convolutions faster than oneDNN's best one."""
    import torch
    import torch.nn.functional as F

    a, b = torch.ones(1024, 512), torch.ones(512, 4096)
    torch.mm(a, b)
    mm = 2 * 1024 * 4096 * 512 / min(_best(lambda: torch.mm(a, b), 5)) / 1e9
    shapes = [(8, 32, 16, 16)] if quick else [(64, 64, 32, 32), (128, 128, 16, 16), (256, 128, 8, 8)]
    conv = {}
    with torch.no_grad():
        for batch, channels, height, width in shapes:
            x = torch.randn(batch, channels, height, width).contiguous(memory_format=torch.channels_last)
            w = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
            F.conv2d(x, w, padding=1)
            flops = 2 * batch * channels * channels * 9 * height * width
            conv[f"{batch}x{channels}x{height}x{width}"] = flops / min(_best(lambda: F.conv2d(x, w, padding=1), 5)) / 1e9
    return {"torch_sgemm_gflops": mm, "onednn_conv3x3_gflops": conv, "onednn_conv3x3_best_gflops": max(conv.values())}


def main() -> None:
    import torch
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=5, help="train steps / embed batches per timing")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the default model's train step and embedding pass per ATen operator")
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = yaml.safe_load(open(args.params))["models"]
    if args.quick:
        models = dict(list(models.items())[:1])
        for config in models.values():
            config.setdefault("train", {})["batch_size"] = 8
    repeat, steps = (1, 1) if args.quick else (args.repeat, args.steps)
    # The bound is the machine's best: measured before and after the models (a VM's rate drifts
    # between minutes: one run's 5-repeat sgemm read 97 GFLOP/s where the runs before and after read
    # 108), the higher one used, both recorded.
    sgemm_runs = [sgemm_gflops(5 if args.quick else 20)]
    libraries = library_rates(args.quick)
    conv_best = libraries["onednn_conv3x3_best_gflops"]
    rows = []
    for name, config in models.items():
        rows.append(measure(name, config, repeat, steps, 16 if args.quick else 256, Path(args.params)))
        print(f"{name}: train {rows[-1]['train_samples_per_s']:,.0f} samples/s, embed "
              f"{rows[-1]['embed_images_per_s']:,.0f} img/s", flush=True)
    sgemm_runs.append(sgemm_gflops(5 if args.quick else 20))
    peak = max(sgemm_runs)
    for row in rows:
        row["train_fraction_of_sgemm"] = row["train_samples_per_s"] * row["train_gflop_per_sample"] / peak
        row["embed_fraction_of_sgemm"] = row["embed_images_per_s"] * row["embed_gflop_per_image"] / peak
        row["train_fraction_of_onednn_conv"] = row["train_samples_per_s"] * row["train_gflop_per_sample"] / conv_best
        row["embed_fraction_of_onednn_conv"] = row["embed_images_per_s"] * row["embed_gflop_per_image"] / conv_best
    print(table([[r["model"], r["backbone"], "x".join(map(str, r["input_size"])), f"{r['train_samples_per_s']:,.0f}",
                  f"{r['train_fraction_of_sgemm']:.2f}", f"{r['embed_images_per_s']:,.0f}",
                  f"{r['embed_fraction_of_sgemm']:.2f}"] for r in rows],
                ["model", "backbone", "input", "train samples/s", "x sgemm", "embed img/s", "x sgemm"]))
    print(table([[r["model"], r["train_layout"], f"{r['train_samples_per_s']:,.0f}",
                  f"{r['train_plain_nchw_samples_per_s']:,.0f}", f"{r['train_over_plain_nchw']:.2f}",
                  r["embed_layout"], f"{r['embed_images_per_s']:,.0f}", f"{r['embed_plain_nchw_images_per_s']:,.0f}",
                  f"{r['embed_over_plain_nchw']:.2f}"] for r in rows],
                ["model", "train layout", "train samples/s", "plain NCHW", "ratio",
                 "embed layout", "embed img/s", "plain NCHW img/s", "ratio"]))
    print(f"one thread, CPU time; sgemm {peak:.0f} GFLOP/s (numpy; best of the runs before and after the models: "
          f"{' / '.join(f'{rate:.0f}' for rate in sgemm_runs)}), {libraries['torch_sgemm_gflops']:.0f} (torch.mm); "
          f"oneDNN's best 3x3 convolution {conv_best:.0f} GFLOP/s "
          f"({', '.join(f'{k} {v:.0f}' for k, v in libraries['onednn_conv3x3_gflops'].items())}); the default model "
          f"at {rows[0]['train_fraction_of_onednn_conv']:.2f} (train) / {rows[0]['embed_fraction_of_onednn_conv']:.2f} "
          f"(embed) of it")
    breakdown = None
    if args.breakdown:  # in a fresh process, as the sides are measured
        name, config = next(iter(models.items()))
        code = (f"import json, sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import torch, yaml; "
                f"torch.set_num_threads(1); import bench_throughput as b; "
                f"c = yaml.safe_load(open({args.params!r}))['models'][{name!r}]; "
                f"c.setdefault('train', {{}}).update({config.get('train', {})!r}); "
                f"print(json.dumps(b.op_breakdown({name!r}, c, {steps}, {16 if args.quick else 256})))")
        run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, OMP_NUM_THREADS="1"),
                             capture_output=True, text=True)
        if run.returncode != 0:
            raise SystemExit(f"{name} (breakdown): {run.stderr.strip()[-2000:]}")
        breakdown = json.loads(run.stdout.splitlines()[-1])
        print(_breakdown_table(f"{name} train step, batch {breakdown['batch_size']}", breakdown["train_step"]))
        print(_breakdown_table(f"{name} embedding pass (image + mirror), batch {breakdown['embed_batch']}",
                               breakdown["embed_pass"]))
    if not args.quick:
        name = next(iter(models))
        side = trainer_side_by_side(name, Path(args.params), args.work, args.repeat)
        # the trainer on the synthetic training set's images, as a fraction of the sgemm bound (the
        # steps above run on random inputs, on which ATen's PReLU backward is slower)
        side["trainer_fraction_of_sgemm"] = side["trainer_images_per_s"] * side["plain_gflop_per_sample"] / peak
        print(f"{name}: facetrust train ({side['trainer_layout']}) {side['trainer_images_per_s']:,.0f} img/s beside the "
              f"plain NCHW step {side['plain_step_samples_per_s']:,.0f} samples/s ({side['trainer_over_plain']:.2f}x) and "
              f"the {side['trainer_layout']} step {side['layout_step_samples_per_s']:,.0f} "
              f"({side['trainer_over_layout_step']:.2f}x; {side['float_path']})")
        # Headline: the default model's training throughput as a fraction of the sgemm bound.
        payload = {"sgemm_gflops": peak, "sgemm_gflops_before_after": sgemm_runs, **libraries, "models": rows, "ratio": rows[0]["train_fraction_of_sgemm"],
                   "trainer_beside_plain_loop": side, **({"op_breakdown": breakdown} if breakdown else {})}
        print(f"wrote {write_result('cpu_throughput', payload, results_dir(args))}")
    if not all(r["train_samples_per_s"] > 0 and r["embed_images_per_s"] > 0 for r in rows):
        raise SystemExit("a model did not run")


if __name__ == "__main__":
    main()
