"""Benchmark: CPU training and embedding throughput of the embedded default models (one thread).

For every model of ``params.yaml`` (backbone + margin head as ``facetrust train`` builds them) it
times, on random inputs of the model's size, best of ``--repeat``:

- **train**: one SGD step (forward, margin-head loss, backward, update) on a batch of the model's
  ``batch_size``, in samples/s;
- **embed**: the forward pass ``facetrust embed`` makes (the image and its mirror, F1) in
  ``torch.no_grad`` on batches of 256, in images/s.

Reference: the machine's own limit — the work per sample (FLOPs counted by
``torch.utils.flop_counter``) divided by the single-thread sgemm rate — so the ratio column says
how close each model runs to BLAS speed (small convolutions on 32×32 inputs are far from it).
Results go to ``results/cpu_throughput.json``.  The GPU counterpart is ``gpu_iresnet50.py``.

    python benchmarks/bench_throughput.py [--repeat 3] [--steps 5] [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from harness import REPO, add_common_arguments, results_dir, table, write_result

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


def measure(name: str, config: dict, repeat: int, steps: int, embed_batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    model = _model(config)
    batch = int(config.get("train", {}).get("batch_size", 128))
    height, width = config["input_size"]
    images = torch.randn(batch, 3, height, width)
    labels = torch.randint(0, NUM_CLASSES, (batch,))
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(parameters, lr=0.01, momentum=0.9) if parameters else None

    def train_step():
        logits, extra = model(images, labels)
        loss = F.cross_entropy(logits, labels) + extra
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    model.train()
    train_step()  # warm-up: allocations, lazy initialisation
    train_flops = _flops(train_step) / batch
    train_cpu, train_wall = _best(lambda: [train_step() for _ in range(steps)], repeat)

    backbone = model.backbone.eval()
    inputs = torch.randn(embed_batch, 3, height, width)

    def embed():
        with torch.no_grad():
            return backbone(inputs) + backbone(torch.flip(inputs, dims=[3]))

    embed()
    embed_flops = _flops(embed) / embed_batch
    embed_cpu, embed_wall = _best(lambda: [embed() for _ in range(steps)], repeat)
    return {"model": name, "backbone": config["backbone"], "input_size": list(config["input_size"]),
            "batch_size": batch, "train_samples_per_s": batch * steps / train_cpu,
            "train_samples_per_s_wall": batch * steps / train_wall, "train_gflop_per_sample": train_flops / 1e9,
            "embed_images_per_s": embed_batch * steps / embed_cpu,
            "embed_images_per_s_wall": embed_batch * steps / embed_wall, "embed_gflop_per_image": embed_flops / 1e9}


def sgemm_gflops() -> float:
    a, b = np.ones((1024, 512), np.float32), np.ones((512, 4096), np.float32)
    a @ b
    best = min(_best(lambda: a @ b, 5))
    return 2 * 1024 * 4096 * 512 / best / 1e9


def main() -> None:
    import torch
    import yaml

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=5, help="train steps / embed batches per timing")
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = yaml.safe_load(open(args.params))["models"]
    if args.quick:
        models = dict(list(models.items())[:1])
        for config in models.values():
            config.setdefault("train", {})["batch_size"] = 8
    repeat, steps = (1, 1) if args.quick else (args.repeat, args.steps)
    peak = sgemm_gflops()
    if not args.quick:  # one untimed pass first (one-time allocations and kernel choices)
        name, config = next(iter(models.items()))
        measure(name, config, 1, 1, 256)
    rows = [measure(name, config, repeat, steps, 16 if args.quick else 256) for name, config in models.items()]
    for row in rows:
        row["train_fraction_of_sgemm"] = row["train_samples_per_s"] * row["train_gflop_per_sample"] / peak
        row["embed_fraction_of_sgemm"] = row["embed_images_per_s"] * row["embed_gflop_per_image"] / peak
    print(table([[r["model"], r["backbone"], "x".join(map(str, r["input_size"])), f"{r['train_samples_per_s']:,.0f}",
                  f"{r['train_fraction_of_sgemm']:.2f}", f"{r['embed_images_per_s']:,.0f}",
                  f"{r['embed_fraction_of_sgemm']:.2f}"] for r in rows],
                ["model", "backbone", "input", "train samples/s", "x sgemm", "embed img/s", "x sgemm"]))
    print(f"one thread, CPU time; sgemm {peak:.0f} GFLOP/s")
    if not args.quick:
        # Headline: the default model's training throughput as a fraction of the sgemm bound.
        payload = {"sgemm_gflops": peak, "models": rows, "ratio": rows[0]["train_fraction_of_sgemm"]}
        print(f"wrote {write_result('cpu_throughput', payload, results_dir(args))}")
    if not all(r["train_samples_per_s"] > 0 and r["embed_images_per_s"] > 0 for r in rows):
        raise SystemExit("a model did not run")


if __name__ == "__main__":
    main()
