"""GPU check: the first run of this code on a GPU, in one go (``gpu_check.sh`` runs it; ≤ 8 min on one GPU).

1. **GPU**: torch and CUDA versions, every visible device (``CUDA_VISIBLE_DEVICES`` is honoured).
2. **Training**, iResNet-50 at 112×112 under bfloat16 autocast (``backbone_options.fp16: "bf16"``),
   ArcFace head (s = 64, m = 0.5) over ``--classes`` identities, SGD, batch ``--batch``:
   - *ours*: ``facetrust.train.trainer.train`` itself on a RecordIO set generated here (JPEGs
     decoded by the trainer's DataLoader workers, normalised on the GPU), ``--steps`` steps;
     samples/s from its ``train_log.csv`` windows, the first window (warm-up) left out;
   - *arcface_torch-style loop*: the same backbone, ArcFace logits written out as arcface_torch's
     ``CombinedMarginLoss`` computes them, SGD, on one fixed random batch already on the GPU
     (arcface_torch's ``SyntheticDataLoader``, its throughput benchmark): no data loading at all.
   The ratio ours / loop is printed (goal ≥ 1.0: the trainer's data path and bookkeeping cost
   nothing next to the model).
3. **Embedding**: ``--embed-images`` (100,000) images streamed as uint8 batches of ``--embed-batch``
   generated on the GPU, ``normalize_batch`` + the backbone in eval mode under bf16: images/s.
4. **Determinism**: two ``train`` runs of ``--det-steps`` steps with the determinism flags
   (``torch.use_deterministic_algorithms(True)``, ``CUBLAS_WORKSPACE_CONFIG=:4096:8``, cuDNN
   benchmark off) must give checkpoints with equal tensors (``torch.load(weights_only=True)``).

NCCL DDP is exercised by ``gpu_ddp_probe.py`` under ``torchrun`` (``gpu_check.sh``).  No downloads;
everything is generated from the seed.  ``--smoke`` runs every part on the CPU with a tiny
iResNet at 16×16 in seconds (what CI runs); nothing is written to ``benchmarks/results`` then.

    python benchmarks/gpu_check.py [--smoke] [--steps 300] [--batch 128] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # harness.py lives beside this script
from harness import results_dir, table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEED = 2026


def sizes(args) -> dict:
    """The model and data sizes of a full check, or of the CPU smoke run."""
    if args.smoke:
        return {"backbone": "iresnet", "options": {"layers": [1, 1, 1, 1], "width": 4}, "size": 16, "embedding": 16,
                "classes": 8, "per_class": 8, "batch": 8, "steps": 4, "log_every": 2, "embed_images": 256,
                "embed_batch": 64, "det_steps": 2, "workers": 0, "device": "cpu"}
    return {"backbone": "iresnet50", "options": {}, "size": 112, "embedding": 512, "classes": args.classes,
            "per_class": max(1, (args.batch * 50) // args.classes), "batch": args.batch, "steps": args.steps,
            "log_every": 25, "embed_images": args.embed_images, "embed_batch": args.embed_batch,
            "det_steps": args.det_steps, "workers": min(8, max(1, (os.cpu_count() or 2) - 1)), "device": "cuda"}


def make_recordio(out_dir: Path, classes: int, per_class: int, size: int) -> Path:
    """An InsightFace RecordIO set of seeded synthetic faces: a random prototype per class plus noise."""
    import numpy as np
    from PIL import Image

    from facetrust.data.insightface import write_insightface_dataset

    rng = np.random.default_rng(SEED)
    prototypes = rng.integers(0, 256, (classes, size, size, 3))

    def samples():
        for label in range(classes):
            for _ in range(per_class):
                image = np.clip(prototypes[label] + rng.normal(0, 20, prototypes[label].shape), 0, 255)
                buffer = io.BytesIO()
                Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
                yield label, buffer.getvalue()

    write_insightface_dataset(out_dir, samples(), classes, (size, size))
    return out_dir


def train_config(s: dict, steps: int) -> dict:
    options = dict(s["options"])
    if s["device"] == "cuda":
        options["fp16"] = "bf16"
    return {"backbone": s["backbone"], "backbone_options": options, "embedding_size": s["embedding"],
            "input_size": [s["size"], s["size"]], "head": {"kind": "arcface", "s": 64.0, "m": 0.5},
            "epochs": 1000, "max_steps": steps, "batch_size": s["batch"], "lr": 0.1, "warmup_epochs": 0,
            "lr_schedule": "cosine", "seed": SEED, "num_workers": s["workers"], "log_every": s["log_every"],
            "threads": None if s["device"] == "cuda" else 1}


def ours_training(s: dict, rec: Path, out: Path) -> dict:
    """facetrust's trainer on the RecordIO set: samples/s of its log windows after the first."""
    from facetrust.train.trainer import train

    start = time.perf_counter()
    train(train_config(s, s["steps"]), rec, out, device=s["device"], log=lambda message: None)
    wall = time.perf_counter() - start
    with open(out / "train_log.csv", newline="") as handle:
        rates = [float(row["images_per_s"]) for row in csv.DictReader(handle)]
    steady = rates[1:] or rates
    return {"samples_per_s": statistics.median(steady), "windows": len(rates), "wall_s": wall}


def arcface_torch_loop(s: dict) -> dict:
    """The same model trained the way arcface_torch's throughput benchmark does it: one random
    batch on the device, ArcFace logits (cos(θ + m) on the target, × s), SGD; samples/s."""
    import torch
    import torch.nn.functional as F

    from facetrust.models import build_backbone

    device = torch.device(s["device"])
    torch.manual_seed(SEED)
    options = dict(s["options"], fp16="bf16") if device.type == "cuda" else dict(s["options"])
    backbone = build_backbone(s["backbone"], embedding_size=s["embedding"], input_size=(s["size"], s["size"]),
                              **options).to(device)
    weight = torch.nn.Parameter(torch.normal(0, 0.01, (s["classes"], s["embedding"]), device=device))
    optimizer = torch.optim.SGD([{"params": backbone.parameters()}, {"params": [weight]}], lr=0.1, momentum=0.9,
                                weight_decay=5e-4)
    images = torch.rand(s["batch"], 3, s["size"], s["size"], device=device) * 2 - 1  # SyntheticDataLoader
    labels = torch.randint(0, s["classes"], (s["batch"],), device=device)
    margin, scale = 0.5, 64.0

    def step():
        embeddings = backbone(images)
        cosine = F.linear(F.normalize(embeddings), F.normalize(weight)).clamp(-1 + 1e-7, 1 - 1e-7)
        target = torch.cos(torch.acos(cosine.gather(1, labels[:, None])) + margin)
        logits = cosine.scatter(1, labels[:, None], target) * scale
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    backbone.train()
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = max(2, s["steps"] // 10)
    for _ in range(warmup):
        step()
    synchronize()
    start = time.perf_counter()
    for _ in range(s["steps"]):
        step()
    synchronize()
    return {"samples_per_s": s["batch"] * s["steps"] / (time.perf_counter() - start), "warmup_steps": warmup}


def embedding_stream(s: dict, model_dir: Path) -> dict:
    """images/s of the trained backbone over a stream of uint8 batches made on the device."""
    import torch

    from facetrust.data.transforms import normalize_batch
    from facetrust.models import build_backbone
    from facetrust.models.artifacts import load_checkpoint

    device = torch.device(s["device"])
    options = dict(s["options"], fp16="bf16") if device.type == "cuda" else dict(s["options"])
    backbone = build_backbone(s["backbone"], embedding_size=s["embedding"], input_size=(s["size"], s["size"]),
                              **options)
    backbone.load_state_dict(load_checkpoint(model_dir / "checkpoint.pt")["backbone"])
    backbone.to(device).eval()
    generator = torch.Generator(device=device).manual_seed(SEED)
    shape = (s["embed_batch"], 3, s["size"], s["size"])
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        backbone(normalize_batch(torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=generator)))
        synchronize()
        done, start = 0, time.perf_counter()
        while done < s["embed_images"]:
            batch = torch.randint(0, 256, shape, dtype=torch.uint8, device=device, generator=generator)
            embeddings = backbone(normalize_batch(batch))
            done += batch.shape[0]
        synchronize()
        seconds = time.perf_counter() - start
    finite = bool(torch.isfinite(embeddings).all())
    return {"images": done, "images_per_s": done / seconds, "finite": finite}


def determinism(s: dict, rec: Path, work: Path) -> dict:
    """Two runs with the determinism flags: are the checkpoints' tensors equal?"""
    import torch

    from facetrust.models.artifacts import load_checkpoint
    from facetrust.train.trainer import train

    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        for name in ("a", "b"):
            train(train_config(s, s["det_steps"]), rec, work / f"det-{name}", device=s["device"], log=lambda m: None)
    finally:
        torch.use_deterministic_algorithms(False)
    first, second = (load_checkpoint(work / f"det-{name}" / "checkpoint.pt") for name in ("a", "b"))
    differing = [path for path in _tensor_paths(first) if not _equal(_get(first, path), _get(second, path))]
    return {"steps": s["det_steps"], "equal": not differing, "differing_tensors": differing[:10]}


def _tensor_paths(tree, prefix=()):
    import torch

    if isinstance(tree, torch.Tensor):
        yield prefix
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _tensor_paths(value, prefix + (key,))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from _tensor_paths(value, prefix + (index,))


def _get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def _equal(a, b) -> bool:
    import torch

    return a.dtype == b.dtype and a.shape == b.shape and bool(torch.equal(a, b))


def gpu_description(device: str) -> dict:
    import torch

    info = {"torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES", "unset")}
    if device == "cuda":
        info["devices"] = [f"{torch.cuda.get_device_name(i)} ({torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                           for i in range(torch.cuda.device_count())]
        info["bf16_supported"] = torch.cuda.is_bf16_supported()
    else:
        info["devices"] = ["none: CPU smoke mode"]
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run of every part (CI); nothing written")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--classes", type=int, default=10_000)
    parser.add_argument("--embed-images", type=int, default=100_000)
    parser.add_argument("--embed-batch", type=int, default=1024)
    parser.add_argument("--det-steps", type=int, default=30)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--results", type=Path, help="results folder (default benchmarks/results)")
    args = parser.parse_args()
    import torch

    s = sizes(args)
    if s["device"] == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU visible (CUDA_VISIBLE_DEVICES="
              f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); run with --smoke for the CPU check", file=sys.stderr)
        return 2
    if s["device"] == "cuda":
        torch.backends.cudnn.benchmark = True
    gpu = gpu_description(s["device"])
    print(f"GPU: {', '.join(gpu['devices'])}; torch {gpu['torch']}, CUDA {gpu['cuda']}, "
          f"CUDA_VISIBLE_DEVICES={gpu['cuda_visible_devices']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=args.work) as scratch:
        work = Path(scratch)
        begin = time.perf_counter()
        rec = make_recordio(work / "rec", s["classes"], s["per_class"], s["size"])
        print(f"generated {s['classes'] * s['per_class']:,} JPEGs at {s['size']}x{s['size']} in "
              f"{time.perf_counter() - begin:.1f} s", flush=True)
        ours = ours_training(s, rec, work / "ours")
        loop = arcface_torch_loop(s)
        ratio = ours["samples_per_s"] / loop["samples_per_s"]
        print(table([["ours: facetrust trainer, RecordIO data path", f"{ours['samples_per_s']:,.0f}"],
                     ["arcface_torch-style loop, synthetic batch on the device", f"{loop['samples_per_s']:,.0f}"],
                     ["ratio ours / loop (goal >= 1.0)", f"{ratio:.2f}"]],
                    [f"{s['backbone']} {s['size']}x{s['size']}, batch {s['batch']}, {s['steps']} steps"
                     + (", bf16" if s["device"] == "cuda" else ", fp32 CPU"), "samples/s"]), flush=True)
        embed = embedding_stream(s, work / "ours")
        print(f"embedding: {embed['images']:,} images in batches of {s['embed_batch']}: "
              f"{embed['images_per_s']:,.0f} images/s (finite: {embed['finite']})", flush=True)
        if s["device"] == "cuda":
            torch.backends.cudnn.benchmark = False  # the determinism flags
        det = determinism(s, rec, work)
        print(f"determinism: two runs of {det['steps']} steps give equal checkpoints: {det['equal']}"
              + (f" (differ: {det['differing_tensors']})" if not det["equal"] else ""), flush=True)
    result = {"gpu": gpu, "sizes": s, "train_ours": ours, "train_arcface_torch_loop": loop, "ratio": ratio,
              "embed": embed, "determinism": det}
    if args.smoke:
        print("smoke mode: nothing written")
    else:
        print(f"wrote {write_result('gpu_check', result, results_dir(args))}")
    print(json.dumps({"ratio": round(ratio, 3), "embed_images_per_s": round(embed["images_per_s"]),
                      "deterministic": det["equal"]}))
    return 0 if det["equal"] and embed["finite"] else 1


if __name__ == "__main__":
    sys.exit(main())
