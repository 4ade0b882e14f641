"""GPU benchmark: iResNet-50 at 112×112 (the field's standard recognition network), samples/s.

Trains (forward, ArcFace-style margin head over ``--classes`` identities, backward, SGD) and
embeds (forward in ``no_grad``) random 112×112 batches in four settings, each adding one
technique arcface_torch uses or that modern PyTorch offers:

1. ``fp32``: eager float32;
2. ``bf16``: ``torch.autocast("cuda", torch.bfloat16)`` (AMP, no loss scaling needed with bf16);
3. ``bf16+channels_last``: the model and inputs in ``torch.channels_last`` (NHWC convolutions);
4. ``bf16+channels_last+compile``: ``torch.compile`` of the backbone (the first steps compile; they
   are excluded from the timing).

Prints samples/s for training and inference per setting and the GPU name, and writes
``results/gpu_iresnet50.json``.  Needs a CUDA GPU; on a machine without one it says so and exits
(``--device cpu --smoke`` runs tiny batches without ``torch.compile``, so CI can check the script).

    python benchmarks/gpu_iresnet50.py [--batch 256] [--steps 30] [--classes 10000]
"""

from __future__ import annotations

import argparse
import time

from harness import results_dir, table, write_result

SETTINGS = (
    ("fp32", dict(bf16=False, channels_last=False, compile=False)),
    ("bf16", dict(bf16=True, channels_last=False, compile=False)),
    ("bf16+channels_last", dict(bf16=True, channels_last=True, compile=False)),
    ("bf16+channels_last+compile", dict(bf16=True, channels_last=True, compile=True)),
)


def run_setting(args, bf16: bool, channels_last: bool, compile: bool) -> dict:
    import torch
    import torch.nn.functional as F

    from facetrust.models import build_backbone
    from facetrust.models.margins import build_head

    torch.manual_seed(0)
    device = torch.device(args.device)
    # The trunk's own autocast (InsightFace's `fp16` option) decides its precision: off, it would
    # switch an outer bf16 autocast off inside the trunk and measure float32 under the bf16 name.
    backbone = build_backbone("iresnet50", embedding_size=512, input_size=(args.size, args.size),
                              fp16="bf16" if bf16 else False).to(device)
    head = build_head("arcface", 512, args.classes, s=64.0, m=0.5).to(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    backbone = backbone.to(memory_format=memory_format)
    model = torch.compile(backbone) if compile else backbone
    optimizer = torch.optim.SGD(list(backbone.parameters()) + list(head.parameters()), lr=0.1, momentum=0.9)
    images = torch.randn(args.batch, 3, args.size, args.size, device=device).to(memory_format=memory_format)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)

    def train_step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(head(model(images), labels), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def infer_step():
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(images)

    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {}
    for name, step in (("train", train_step), ("infer", infer_step)):
        backbone.train(name == "train")
        for _ in range(args.warmup):  # compilation and cuDNN autotuning happen here
            step()
        synchronize()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize()
        out[f"{name}_samples_per_s"] = args.batch * args.steps / (time.perf_counter() - start)
    out["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return out


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--results", help="results folder (default benchmarks/results)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--smoke", action="store_true", help="tiny run without torch.compile, nothing written")
    args = parser.parse_args()
    args.size = 112
    if args.smoke:
        args.batch, args.steps, args.warmup, args.classes, args.size = 2, 1, 1, 10, 32
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_iresnet50.py: no CUDA GPU on this machine; nothing measured")
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    gpu = torch.cuda.get_device_name() if args.device == "cuda" else f"none ({args.device})"
    settings = [(name, flags) for name, flags in SETTINGS if not (args.smoke and flags["compile"])]
    rows = {name: run_setting(args, **flags) for name, flags in settings}
    base = rows["fp32"]
    print(f"GPU: {gpu}; iResNet-50, {args.size}x{args.size}, batch {args.batch}, torch {torch.__version__}")
    print(table([[name, f"{r['train_samples_per_s']:,.0f}", f"{r['train_samples_per_s'] / base['train_samples_per_s']:.2f}",
                  f"{r['infer_samples_per_s']:,.0f}", f"{r['infer_samples_per_s'] / base['infer_samples_per_s']:.2f}",
                  f"{r['max_memory_gib']:.1f}"] for name, r in rows.items()],
                ["setting", "train samples/s", "x fp32", "infer samples/s", "x fp32", "peak GiB"]))
    if not args.smoke:
        best = max(rows.values(), key=lambda r: r["train_samples_per_s"])
        payload = {"gpu": gpu, "torch": torch.__version__, "batch": args.batch, "steps": args.steps, "settings": rows,
                   "ratio": best["train_samples_per_s"] / base["train_samples_per_s"]}  # best setting / fp32
        print(f"wrote {write_result('gpu_iresnet50', payload, results_dir(args))}")


if __name__ == "__main__":
    main()
