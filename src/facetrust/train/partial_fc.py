"""Partial FC: a margin head whose class centres are sharded over the processes and sampled per step.

An et al., "Killing Two Birds with One Stone: Efficient and Robust Training of Face Recognition
CNNs by Partial FC", CVPR 2022 (arXiv 2203.15565); InsightFace arcface_torch's ``partial_fc_v2``.

* **Sharding** (model parallelism): process r of K holds the centres of its contiguous slice of
  the C classes (:func:`~facetrust.train.model_parallel.class_shard`), so the weight, its momentum
  and its gradient per process are C/K × D instead of C × D.
* **The whole batch on every process**: embeddings (and labels) are all-gathered; the gradient of
  the gather returns to each process the gradient of its own embeddings summed over all shards.
* **Sampling** (sample_rate r < 1): per step each process keeps every *positive* class of the
  global batch that lies in its shard, plus uniformly drawn negatives up to ⌈r·C/K⌉ centres in all
  (only positives when they alone exceed that).  The draw comes from a generator seeded by
  (seed, rank, step): a rerun, or a resumed run, draws the same centres.
* **Logits** s·cos θ between the normalised embeddings and the normalised sampled centres, the
  configured margin on each target (:meth:`MarginHead.target_logits`, the full FC's own margin
  code), then :func:`~facetrust.train.model_parallel.sharded_cross_entropy`: no process holds
  logits for all classes.

With r = 1 and one process this is exactly the full FC (the same logits, loss and gradients up to
float rounding).

Gradients and the optimiser.  Only the sampled rows get a nonzero gradient (the gradient of
``weight[index]`` is a dense zero tensor with the sampled rows filled).  arcface_torch's
``partial_fc_v2`` does the same and hands the whole shard to one SGD optimiser: an unsampled row
has zero gradient but still moves by its momentum and shrinks by weight decay.  (Its older
``partial_fc`` v1 copied the sampled rows and their momentum into a separate tensor and back, so
unsampled rows stayed frozen.)  We follow v2: the shard is an ordinary parameter of the run's
SGD, so momentum and weight decay apply to every row every step.

The backbone's gradient.  The loss is the mean over the *global* batch, the same value on every
process.  The backbone is wrapped in DDP, which averages gradients over the K processes, so the
embedding gradient from the gather is multiplied by K: DDP's average then gives the gradient of
the global mean loss, as in the full-FC DDP run (arcface_torch's ``AllGatherFunc`` multiplies by
the world size for the same reason).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn as nn

from facetrust.errors import ConfigError, InputError
from facetrust.models.margins.head import MarginHead, cosine_matrix
from facetrust.train.distributed import DistInfo, wrap_ddp
from facetrust.train.model_parallel import (
    class_shard,
    gather_batch,
    gather_labels,
    gather_rows_to_main,
    sharded_cross_entropy,
)

# Kinds whose logits are s·cos θ with a margin on the target only: what the sharded softmax needs.
# Refused: softmax (unnormalised W·x + b), sphereface (λ fusion state, ‖x‖ scale: not tested here),
# scaleface (a per-sample scale predictor beside the backbone), magface (a norm regulariser).
PARTIAL_FC_KINDS = ("normface", "cosface", "arcface", "combined")
PARTIAL_FC_OPTIONS = ("sample_rate",)


def check_partial_fc(options: Any, head_kind: str, freeze_head: bool) -> None:
    """Raise ConfigError naming the key when ``train.partial_fc`` is not usable; None passes."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        raise ConfigError(f"train config 'partial_fc' must be a mapping such as {{sample_rate: 0.1}} or null, "
                          f"got {options!r}")
    unknown = sorted(set(options) - set(PARTIAL_FC_OPTIONS))
    if unknown:
        raise ConfigError(f"train config 'partial_fc.{unknown[0]}' is not an option; allowed: "
                          f"{', '.join(PARTIAL_FC_OPTIONS)}")
    rate = options.get("sample_rate", 1.0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise ConfigError(f"train config 'partial_fc.sample_rate' must be a number in (0, 1], got {rate!r}")
    if head_kind not in PARTIAL_FC_KINDS:
        raise ConfigError(f"train config 'partial_fc' needs a normalised margin head ('head.kind' one of "
                          f"{', '.join(PARTIAL_FC_KINDS)}), got 'head.kind' {head_kind!r}")
    if freeze_head:
        raise ConfigError("train config 'partial_fc' trains the class centres; 'freeze_head' keeps them fixed")


def _step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the negatives of (seed, rank, step); independent streams per rank and step."""
    state = np.random.SeedSequence([int(seed), int(rank), int(step)]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


class PartialFC(nn.Module):
    """This process's shard of a normalised margin head, with per-step class sampling.

    Built from the full :class:`MarginHead` (so the initial centres are the full head's rows
    ``[class_start, class_start + num_local)``); takes over its margin and scale and drops its full
    weight.  ``forward(embeddings, labels, step) -> (loss, correct)``: this process's (N, D)
    embeddings and (N,) labels; the loss is the mean cross entropy over the global batch and all
    classes, ``correct`` the fraction whose target logit is the largest of the sampled ones."""

    def __init__(self, head: MarginHead, sample_rate: float = 1.0, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        super().__init__()
        if head.num_classes < world_size:
            raise ConfigError(f"train config 'partial_fc': {head.num_classes} classes cannot be sharded over "
                              f"{world_size} processes")
        self.num_classes, self.embedding_size = head.num_classes, head.embedding_size
        self.rank, self.world_size, self.seed = int(rank), int(world_size), int(seed)
        self.class_start, self.num_local = class_shard(self.num_classes, self.rank, self.world_size)
        self.sample_rate = float(sample_rate)
        self.num_sample = min(self.num_local, math.ceil(self.sample_rate * self.num_local))
        shard = head.weight.detach()[self.class_start:self.class_start + self.num_local]
        # A copy only when it is a slice (a view would keep the full matrix alive); one process
        # keeps the whole matrix, and a copy would double its memory for a moment.
        self.weight = nn.Parameter(shard.clone() if self.num_local < self.num_classes else shard)
        head.weight = None  # the full C × D matrix is freed; the head keeps its margin and scale
        self.head = head
        self.last_index: torch.Tensor | None = None  # the rows sampled by the last forward (None: all)

    def sample(self, local_labels: torch.Tensor, here: torch.Tensor, step: int
               ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(sampled rows of the shard, sorted; None for all rows, target column per sample)``.

        ``local_labels`` are labels minus ``class_start``; ``here`` marks those in this shard.  The
        target column is only meaningful where ``here``."""
        if self.num_sample >= self.num_local:
            return None, local_labels
        positives = torch.unique(local_labels[here])  # sorted
        if positives.numel() >= self.num_sample:
            index = positives
        else:
            # Uniform negatives: random scores, positives forced to the top, the ⌈r·C/K⌉ best kept.
            # Drawn on the CPU from the step's own generator: the same rows on any device.
            scores = torch.rand(self.num_local, generator=torch.Generator().manual_seed(
                _step_seed(self.seed, self.rank, step)))
            scores[positives.cpu()] = 2.0
            index = scores.topk(self.num_sample).indices.sort().values.to(local_labels.device)
        targets = torch.searchsorted(index, local_labels.clamp(0, self.num_local - 1))
        return index, targets

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, step: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        # As the full head: float32 or wider, outside autocast (arccos near ±1 and s = 64).
        compute_dtype = torch.promote_types(self.weight.dtype, torch.float32)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            embeddings = gather_batch(embeddings.to(compute_dtype), self.rank, self.world_size,
                                      grad_scale=self.world_size)  # K: DDP averages (module docstring)
            local_labels = gather_labels(labels.long(), self.world_size) - self.class_start
            here = (local_labels >= 0) & (local_labels < self.num_local)
            index, targets = self.sample(local_labels, here, step)
            self.last_index = index
            weight = self.weight if index is None else self.weight[index]
            cos = cosine_matrix(embeddings, weight)
            feature_norms = embeddings.norm(dim=1)
            if self.head.margin is not None:  # normface: plain s·cos θ
                rows = here.nonzero()[:, 0]
                columns = targets[rows]
                target = self.head.target_logits(cos[rows, columns], feature_norms[rows])
                cos = cos.index_put((rows, columns), target.to(cos.dtype))
            logits = cos * self.head.scale(feature_norms, None).unsqueeze(1)
            return sharded_cross_entropy(logits, torch.where(here, targets, -1), self.world_size)

    # ------------------------------------------------------------------ full-FC state (checkpoints)

    def full_state_dict(self) -> dict | None:
        """Collective.  On rank 0: the state dict of the equivalent full :class:`MarginHead` (the
        shards gathered into ``weight`` (C, D), on the CPU); None on the other ranks."""
        weight = gather_rows_to_main(self.weight, self.num_classes, self.rank, self.world_size)
        if weight is None:
            return None
        return {"weight": weight, **self.head.state_dict()}

    def load_full_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Take this process's rows of a full head's state dict (a checkpoint's ``head``)."""
        state = dict(state)
        weight = state.pop("weight", None)
        if weight is None or tuple(weight.shape) != (self.num_classes, self.embedding_size):
            shape = None if weight is None else tuple(weight.shape)
            raise InputError(f"checkpoint head 'weight' has shape {shape}, expected "
                             f"({self.num_classes}, {self.embedding_size})")
        with torch.no_grad():
            self.weight.copy_(weight[self.class_start:self.class_start + self.num_local])
        self.head.load_state_dict(state, strict=True)

    def _optimizer_index(self, optimizer: torch.optim.Optimizer) -> int:
        """The number of ``self.weight`` in ``optimizer.state_dict()`` (params numbered in order)."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        return next(i for i, p in enumerate(params) if p is self.weight)

    def full_optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict | None:
        """Collective.  On rank 0: ``optimizer.state_dict()`` with this head's per-row state (SGD's
        momentum) gathered to (C, D), the layout of a full-FC run; None on the other ranks."""
        state = optimizer.state_dict()
        index = self._optimizer_index(optimizer)
        entry = dict(state["state"].get(index, {}))
        for key, value in sorted(entry.items()):
            if torch.is_tensor(value) and value.shape[:1] == (self.num_local,):
                entry[key] = gather_rows_to_main(value, self.num_classes, self.rank, self.world_size)
        if self.rank != 0:
            return None
        if entry:
            state["state"] = {**state["state"], index: entry}
        return state

    def shard_optimizer_state(self, state: dict, optimizer: torch.optim.Optimizer) -> dict:
        """A saved (full-layout) optimizer state dict with this process's rows of the head's state."""
        index = self._optimizer_index(optimizer)
        entry = state["state"].get(index)
        if not entry:
            return state
        rows = slice(self.class_start, self.class_start + self.num_local)
        sliced = {key: value[rows] if torch.is_tensor(value) and value.shape[:1] == (self.num_classes,) else value
                  for key, value in entry.items()}
        return {**state, "state": {**state["state"], index: sliced}}

    def extra_repr(self) -> str:
        return (f"classes [{self.class_start}, {self.class_start + self.num_local}) of {self.num_classes}, "
                f"sample_rate={self.sample_rate}, num_sample={self.num_sample}, rank={self.rank}/{self.world_size}")


def shard_head(model: nn.Module, options: Mapping[str, Any], seed: int, info: DistInfo) -> PartialFC:
    """Replace ``model.head`` (a full :class:`MarginHead`) by this process's :class:`PartialFC`
    shard (``options``: the config's ``partial_fc``); returns it."""
    sharded = PartialFC(model.head, float(options.get("sample_rate", 1.0)), seed, info.rank, info.world_size)
    model.head = sharded
    return sharded


class PartialFCStep:
    """The trainer's loss hook under Partial FC: the backbone in DDP (its gradients averaged over
    the processes), the sharded head outside it (each process's rows are its own, never averaged).

    ``step(images, labels, step) -> (cross entropy, extra loss 0, correct fraction)``."""

    def __init__(self, model: nn.Module, info: DistInfo):
        self.model = model
        self.backbone_trains = "backbone" not in model.frozen
        # A frozen backbone has no gradient to synchronise: DDP refuses a module without one.
        self.backbone = wrap_ddp(model.backbone, info) if self.backbone_trains else model.backbone

    def train(self) -> None:
        self.model.train()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, step: int):
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_trains):
            embeddings = self.backbone(images)
        cross_entropy, correct = self.model.head(embeddings, labels, step)
        return cross_entropy, cross_entropy.new_zeros(()), correct
