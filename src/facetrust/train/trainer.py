"""Train a backbone with a margin head on an InsightFace RecordIO set (SGD, warm-up, DDP, resume).

Entry points:

* :func:`train` ``(config, rec_dir, out_dir, *, resume=False, log=None) -> Path``: the run itself;
  DDP-aware (under ``torchrun`` every process calls it; rank 0 writes).
* :func:`run_train` ``(params, model, out_dir, *, resume=False, rec_dir=None) -> Path``: what
  ``facetrust train --model NAME --params params.yaml --out DIR [--resume]`` calls.
* ``python -m facetrust.train.trainer --config CONFIG.json --rec DIR --out DIR [--resume]``,
  also under ``torchrun --nproc_per_node=K``.

Outputs in ``out_dir``: ``checkpoint.pt`` (see :mod:`facetrust.models.artifacts`; rewritten
atomically at every epoch end), ``config.json``, ``train_log.csv`` (epoch, step, loss, accuracy,
lr, images_per_s; accuracy = arg-max of the margin logits, so it reads below the plain accuracy).

Partial FC (``partial_fc: {sample_rate: r}``, :mod:`facetrust.train.partial_fc`): the margin head
is sharded over the processes and sampled per step; only the backbone is in DDP, and every save
gathers the shards so the checkpoint has the full head, as without it.

Determinism: the backbone is initialised after ``torch.manual_seed(seed)``, the head from its own
generator, the sample order from Generator(seed + epoch), flips from (seed, epoch, index); on the
CPU ``torch.use_deterministic_algorithms(True)``.  The same config gives a bit-identical
checkpoint, and a resumed run ends bit-identical to an uninterrupted one (same thread count).

Memory layout (``memory_format``, :func:`training_layout`): one CPU process trains channels-last
(NHWC) where the backbone allows it (:func:`facetrust.models.registry.nhwc_safe`), ~1.2-1.3x the
NCHW step of the params.yaml backbones; data-parallel runs and CUDA train NCHW unless the config
asks.  The checkpoint holds NCHW tensors either way.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from facetrust.errors import ConfigError, InputError, RunError
from facetrust.io import write_json_atomic
from facetrust.models.artifacts import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    build_backbone_from_config,
    build_margin,
    load_checkpoint,
    save_checkpoint,
)
from facetrust.train.config import TrainConfig
from facetrust.train.dataset import EpochSampler, RecordDataset, SkippingSampler
from facetrust.train.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    broadcast_object,
    cleanup_distributed,
    convert_sync_batchnorm,
    init_distributed,
    wrap_ddp,
)
from facetrust.train.loader import batch_to_device, make_loader
from facetrust.train.parts import (
    LOG_NAME,
    TrainCsvLog,
    TrainModel,
    initialise_from,
    restore_rng,
    rng_state,
    seed_everything,
    set_determinism,
)
from facetrust.train.partial_fc import PartialFC, PartialFCStep, shard_head
from facetrust.train.schedule import LRSchedule


_logger = logging.getLogger("facetrust.train")


class TrainingDiverged(RunError):
    """The loss became NaN or infinite (exit code 1: a failed run, not bad input); the message
    says where the last good checkpoint is, or that there is none."""


def _quiet(message: str) -> None:
    """The log of ranks other than 0: they stay silent."""


def train(
    config: TrainConfig | Mapping,
    rec_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    log: Callable[[str], None] | None = None,
    device: str | None = None,
) -> Path:
    """Train ``config`` on the InsightFace set in ``rec_dir``; returns ``out_dir/checkpoint.pt``.

    ``resume``: continue from ``out_dir/checkpoint.pt`` (its config must match, except runtime
    keys such as ``max_steps``); without a checkpoint it starts afresh.  ``log`` receives one
    line per epoch (default: the ``facetrust.train`` logger).  Under ``torchrun`` this joins the
    process group, shards the data with DistributedSampler, splits ``batch_size`` across the
    processes, synchronises BatchNorm, and only rank 0 writes."""
    config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
    log = log or _logger.info
    out_dir = Path(out_dir)
    owns_group = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    # Process-wide settings changed for the run are put back afterwards (tests and notebooks
    # call train() inside a longer-lived process).
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    fill_memory = torch.utils.deterministic.fill_uninitialized_memory
    info = init_distributed(device)
    if info.is_main and info.distributed:
        log(f"data-parallel: {info.world_size} processes ({torch.distributed.get_backend()}), rendezvous "
            f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}")
    checkpoint_file = out_dir / CHECKPOINT_NAME
    had_checkpoint, had_dir = checkpoint_file.is_file(), out_dir.is_dir()
    try:
        if config.freeze_backbone and config.freeze_head:  # only ScaleFace's scale predictor trains
            from facetrust.train.scale_head import ScaleHeadTrainer

            return ScaleHeadTrainer(config, rec_dir, out_dir, resume=resume, log=log, info=info).fit()
        return _train(config, Path(rec_dir), out_dir, resume, log, info)
    except BaseException:
        # A run that failed before its first checkpoint leaves no config.json or header-only log;
        # once a checkpoint exists, it and its log are the state to resume from and stay.
        if info.is_main and not had_checkpoint and not checkpoint_file.is_file():
            for name in (CONFIG_NAME, LOG_NAME):
                (out_dir / name).unlink(missing_ok=True)
            if not had_dir and out_dir.is_dir() and not any(out_dir.iterdir()):
                out_dir.rmdir()
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.utils.deterministic.fill_uninitialized_memory = fill_memory
        torch.set_num_threads(threads)
        if owns_group:
            cleanup_distributed()


def _train(config: TrainConfig, rec_dir: Path, out_dir: Path, resume: bool, log, info: DistInfo) -> Path:
    if config.batch_size % info.world_size:
        raise ConfigError(
            f"train config 'batch_size' {config.batch_size} is not divisible by the {info.world_size} processes"
        )
    local_batch = config.batch_size // info.world_size
    if not info.is_main:
        log = _quiet
    if config.threads:
        torch.set_num_threads(config.threads)
    set_determinism(info.device)
    seed_everything(config.seed)

    dataset = RecordDataset(rec_dir, config.input_size, flip=config.flip_augment, seed=config.seed)
    num_classes = dataset.num_classes
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch < 1:
        raise InputError(f"{rec_dir}: {len(dataset)} images, fewer than one batch of {config.batch_size}")

    backbone = build_backbone_from_config(config.to_dict())
    head, scale_head = build_margin(config.to_dict(), num_classes, backbone.feature_map_shape)
    frozen = tuple(name for name, flag in (("backbone", config.freeze_backbone),
                                           ("head", config.freeze_head)) if flag)
    model = TrainModel(backbone, head, scale_head, frozen)
    checkpoint_file = out_dir / CHECKPOINT_NAME
    resuming = resume and checkpoint_file.is_file()
    if config.init_from is not None and not resuming:  # a resumed run has the weights already
        initialise_from(model, config.init_from, log)
    # Partial FC: keep this process's rows of the head before anything moves to the device.
    sharded = shard_head(model, config.partial_fc, config.seed, info) if config.partial_fc else None
    model.to(info.device)
    layout = training_layout(model, config, info)
    if layout != "contiguous":
        log(f"memory layout: {layout}")
    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], config, info.device)
    schedule = LRSchedule(optimizer, config.lr_schedule, config.lr, steps_per_epoch, config.epochs,
                          config.warmup_epochs, config.milestones, config.gamma, config.poly_power)
    # float16 autocast needs loss scaling; bfloat16 ("bf16") has float32's range and does not.
    fp16 = config.backbone_options.get("fp16") is True and info.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)

    epoch, step = 0, 0
    if resuming:
        epoch, step = _resume(checkpoint_file, config, model, optimizer, schedule, scaler, info.device, sharded)
        log(f"resuming {checkpoint_file} at epoch {epoch}, step {step}")

    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out_dir / CONFIG_NAME, config.to_dict())
    csv_log = TrainCsvLog(out_dir / LOG_NAME, step if resume else None) if info.is_main else None

    model = convert_sync_batchnorm(model, info)
    # The whole model under DDP; under Partial FC only the backbone (the head's rows are per process).
    forward_loss = _FullFCStep(wrap_ddp(model, info)) if sharded is None else PartialFCStep(model, info)
    sampler, loader, loader_generator = _loader(dataset, config, info, local_batch)

    def payload() -> dict | None:
        """The checkpoint dict (rank 0); under Partial FC collective, with the head and its
        momentum gathered into the full-FC layout (None on the other ranks)."""
        head_state, optimizer_state = model.head.state_dict(), optimizer.state_dict()
        if sharded is not None:
            head_state, optimizer_state = sharded.full_state_dict(), sharded.full_optimizer_state(optimizer)
        if not info.is_main:
            return None
        return nchw({
            "backbone": model.backbone.state_dict(),
            "head": head_state,
            "scale_head": None if model.scale_head is None else model.scale_head.state_dict(),
            "optimizer": optimizer_state,
            "scheduler": schedule.state_dict(),
            "scaler": scaler.state_dict() if fp16 else {},
            "epoch": epoch,
            "step": step,
            "num_classes": num_classes,
            "feature_map_shape": list(model.backbone.feature_map_shape),
            "rng": rng_state(info.device),
            "config": config.to_dict(),
        })

    def save() -> None:
        if info.is_main or sharded is not None:  # every process takes part in gathering the shards
            state = payload()
            if info.is_main:
                save_checkpoint(checkpoint_file, state)

    total_steps = steps_per_epoch * config.epochs
    stop_at = total_steps if config.max_steps is None else min(total_steps, config.max_steps)
    try:
        while epoch < config.epochs and step < stop_at:
            done_in_epoch = step - epoch * steps_per_epoch
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, skip=done_in_epoch * local_batch)
            loader_generator.manual_seed(config.seed * 1_000_003 + epoch)  # worker seeds
            forward_loss.train()
            step_before = step
            step = _run_epoch(forward_loss, loader, optimizer, schedule, scaler, info, config, epoch, step,
                              stop_at, steps_per_epoch, csv_log)
            if step == step_before:
                raise InputError(f"{rec_dir}: the data loader yielded no batch in epoch {epoch + 1}")
            if step == (epoch + 1) * steps_per_epoch:
                epoch += 1
                log(f"epoch {epoch}/{config.epochs} done (step {step})")
            save()
            barrier(info)
    except TrainingDiverged as error:
        raise TrainingDiverged(f"{error}; {_last_good(checkpoint_file)}") from None
    finally:
        if csv_log is not None:
            csv_log.close()
    final_save = not checkpoint_file.is_file()  # nothing left to do on resume
    if sharded is not None:  # every process or none joins the gather
        final_save = broadcast_object(final_save, info)
    if final_save:
        save()
    barrier(info)
    return checkpoint_file


def build_optimizer(parameters: list, config: TrainConfig, device: torch.device) -> torch.optim.SGD:
    """SGD with momentum and weight decay over ``parameters``.  On the CPU, PyTorch's fused kernel
    (one pass per tensor for decay, momentum and update instead of a Python loop of three kernels per
    tensor): the same weights bit for bit (tests/test_trainer_optimizer.py), the step of the default
    ArcFace's 94 tensors 1.2 -> 0.3 ms on one thread (benchmarks/README.md note 17)."""
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           fused=True if device.type == "cpu" and parameters else None)


def training_layout(model: torch.nn.Module, config: TrainConfig, info: DistInfo) -> str:
    """Put ``model``'s 4-D weights in the layout it trains in, in place; returns ``"channels_last"``
    or ``"contiguous"`` (NCHW).

    ``memory_format: auto`` is channels-last for one CPU process when
    :func:`~facetrust.models.registry.nhwc_safe`.  Why not elsewhere: ATen's channels-last training
    batch norm sums a channel's batch statistics sequentially in float32 (forward error 1.5e-5
    against NCHW's 4e-7, against float64), which the two-process run's two-pass
    ``GlooSyncBatchNorm`` does not, so NCHW is the layout in which a data-parallel run equals one
    process (``tests/test_ddp.py``); and that composite batch norm in NHWC costs what the
    convolutions save (1.04x the NCHW step; benchmarks/README.md note 11).  On CUDA NCHW stays the
    default until a GPU run has measured it.  ``channels_last`` asks for it anywhere, refused for a
    CPU model that is not ``nhwc_safe`` (its NHWC backward corrupts the heap in PyTorch 2.14)."""
    from facetrust.models.registry import nhwc_safe

    wanted = config.memory_format
    if wanted == "auto":
        wanted = ("channels_last" if info.device.type == "cpu" and not info.distributed and nhwc_safe(model)
                  else "contiguous")
    elif wanted == "channels_last" and info.device.type == "cpu" and not nhwc_safe(model):
        raise ConfigError("train config 'memory_format' is 'channels_last', but the backbone has a strided 1x1 "
                          "convolution reading fewer than 8 channels, whose channels-last backward is broken on "
                          "the CPU in this PyTorch; use 'auto' or 'contiguous' (or a width of 8 or more)")
    if wanted == "channels_last":
        model.to(memory_format=torch.channels_last)
    return wanted


def nchw(value):
    """``value`` (a checkpoint payload: nested dicts, lists and tensors) with every tensor in
    PyTorch's default contiguous layout: a checkpoint is NCHW whatever layout trained it."""
    if isinstance(value, torch.Tensor):
        return value.contiguous()
    if isinstance(value, dict):
        out = copy.copy(value)  # a new container of the same type (a state dict keeps its _metadata)
        for key, item in value.items():
            out[key] = nchw(item)
        return out
    if isinstance(value, (list, tuple)):
        return type(value)(nchw(item) for item in value)
    return value


def _last_good(checkpoint_file: Path) -> str:
    """Where a diverged run can be taken up again (its checkpoint is written only at epoch ends)."""
    if not checkpoint_file.is_file():
        return (f"no checkpoint was written ({checkpoint_file} does not exist); lower 'lr' (or lengthen the "
                f"warm-up) and train again")
    return (f"the last good checkpoint is {checkpoint_file} (written at the end of the last whole epoch); it "
            f"is kept: lower 'lr' (or lengthen the "
            f"warm-up) and train again (a resume with the same config diverges the same way)")


def _resume(checkpoint_file: Path, config: TrainConfig, model, optimizer, schedule, scaler, device,
            sharded: PartialFC | None = None) -> tuple[int, int]:
    """Load the state of ``checkpoint_file`` into the run's objects; returns ``(epoch, step)``.
    Under Partial FC each process takes its rows of the (full-layout) head and momentum."""
    state = load_checkpoint(checkpoint_file)
    mismatch = config.differs_from(TrainConfig.from_dict(state["config"]))
    if mismatch:
        raise ConfigError(f"{checkpoint_file}: cannot resume, config differs in {', '.join(mismatch)}")
    model.backbone.load_state_dict(state["backbone"])
    if sharded is None:
        model.head.load_state_dict(state["head"])
    else:
        sharded.load_full_state_dict(state["head"])
        state["optimizer"] = sharded.shard_optimizer_state(state["optimizer"], optimizer)
    if model.scale_head is not None:
        model.scale_head.load_state_dict(state["scale_head"])
    optimizer.load_state_dict(state["optimizer"])
    _state_in_parameter_layout(optimizer)
    schedule.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"], device)
    return int(state["epoch"]), int(state["step"])


def _state_in_parameter_layout(optimizer: torch.optim.Optimizer) -> None:
    """Each per-parameter state tensor (SGD's momentum) in its parameter's memory layout, in place:
    checkpoints hold them NCHW (:func:`nchw`) while a channels-last run's parameters are not, and the
    fused CPU step (:func:`build_optimizer`) walks parameter, gradient and momentum in memory order."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            for key, value in list(state.items()):
                if torch.is_tensor(value) and value.shape == parameter.shape and value.stride() != parameter.stride():
                    state[key] = torch.empty_like(parameter).copy_(value)


def _loader(dataset, config: TrainConfig, info: DistInfo, local_batch: int):
    """``(sampler, loader, generator)``: shuffled per epoch from the seed (DistributedSampler under DDP)."""
    if info.distributed:
        sampler = SkippingSampler(DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                                     shuffle=True, seed=config.seed, drop_last=True))
    else:
        sampler = EpochSampler(len(dataset), config.seed)
    loader_generator = torch.Generator()
    loader = make_loader(dataset, local_batch, sampler=sampler, num_workers=config.num_workers,
                         generator=loader_generator, device=info.device, drop_last=True)
    return sampler, loader, loader_generator


class _FullFCStep:
    """The trainer's loss hook of the full FC: the whole model (DDP-wrapped when distributed) gives
    the logits of this process's batch.  ``step(images, labels, step) -> (cross entropy, extra
    loss, correct fraction)``; :class:`PartialFCStep` is the sharded counterpart."""

    def __init__(self, model):
        self.model = model

    def train(self) -> None:
        self.model.train()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int):
        logits, extra = self.model(images, labels)
        correct = (logits.detach().argmax(1) == labels).float().mean()
        return F.cross_entropy(logits.float(), labels), extra, correct


def _run_epoch(forward_loss, loader, optimizer, schedule, scaler, info, config, epoch, step, stop_at,
               steps_per_epoch, csv_log) -> int:
    """One pass over ``loader`` (possibly resumed mid-way); returns the global step reached.
    ``forward_loss(images, labels, step)``: :class:`_FullFCStep` or :class:`PartialFCStep`."""
    from tqdm import tqdm

    end_of_epoch = min(stop_at, (epoch + 1) * steps_per_epoch)
    window_loss = window_correct = window_steps = 0.0
    window_start = time.perf_counter()
    progress = tqdm(total=end_of_epoch - step, desc=f"epoch {epoch + 1}/{config.epochs}",
                    disable=not info.is_main, leave=False, file=sys.stderr)
    for images, labels in loader:
        if step >= end_of_epoch:
            break
        images, labels = batch_to_device(images, labels, info.device)  # uint8 -> normalised float32
        lr = schedule.current_lr
        optimizer.zero_grad(set_to_none=True)
        cross_entropy, extra, correct = forward_loss(images, labels, step)
        loss = cross_entropy + extra
        if not torch.isfinite(loss):  # stop before a NaN update; the last epoch's checkpoint stays
            raise TrainingDiverged(f"training diverged at step {step + 1} (epoch {epoch + 1}): loss {loss.item()} = "
                                   f"cross-entropy {cross_entropy.item()} + extra {float(extra)}")
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        step += 1
        progress.update(1)
        window_loss += loss.detach()
        window_correct += correct
        window_steps += 1
        if step % config.log_every == 0 or step == end_of_epoch:
            stats = all_reduce_mean(torch.stack([torch.as_tensor(window_loss), torch.as_tensor(window_correct)])
                                    / window_steps, info)
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            images_per_s = window_steps * config.batch_size / elapsed
            progress.set_postfix(loss=f"{stats[0].item():.3f}", acc=f"{stats[1].item():.3f}")
            if csv_log is not None:
                csv_log.write(epoch + 1, step, stats[0].item(), stats[1].item(), lr, images_per_s)
            window_loss = window_correct = window_steps = 0.0
            window_start = time.perf_counter()
    progress.close()
    return step


# ---------------------------------------------------------------------------------------------
# Entry points


def run_train(
    params: str | os.PathLike | Mapping,
    model: str,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    rec_dir: str | os.PathLike | None = None,
) -> Path:
    """``facetrust train --model NAME --params params.yaml --out DIR [--resume]``.

    Reads the model's settings from ``params`` (a params.yaml path or its parsed dict), the
    training set from ``datasets.train`` unless ``rec_dir`` is given; DDP-aware like ``train``."""
    if not isinstance(params, Mapping):
        from facetrust.yaml_files import load_yaml

        params = load_yaml(params) or {}
    config = TrainConfig.from_params(params, model)
    if rec_dir is None:
        rec_dir = (params.get("datasets") or {}).get("train", "data/synth/train")
    return train(config, rec_dir, out_dir, resume=resume)


def _load_config_arg(value: str) -> TrainConfig:
    text = value if value.lstrip().startswith("{") else Path(value).read_text()
    try:
        return TrainConfig.from_dict(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--config {value!r}: not JSON: {exc}") from None


def main(argv: list[str] | None = None) -> int:
    """``python -m facetrust.train.trainer --config JSON --rec DIR --out DIR [--resume]``."""
    parser = argparse.ArgumentParser(prog="python -m facetrust.train.trainer",
                                     description="Train a backbone + margin head (also under torchrun).")
    parser.add_argument("--config", required=True, help="TrainConfig as a JSON file or a JSON string")
    parser.add_argument("--rec", required=True, help="directory holding train.rec, train.idx, property")
    parser.add_argument("--out", required=True, help="output directory (checkpoint.pt, config.json, train_log.csv)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = train(_load_config_arg(args.config), args.rec, args.out, resume=args.resume, device=args.device)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if int(os.environ.get("RANK", "0")) == 0:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
