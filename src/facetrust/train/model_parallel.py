"""Collectives of a model-parallel classifier (Partial FC): class shards, the gathered batch, and a
softmax cross entropy whose classes are spread over the processes.

Every process holds the class centres of one contiguous shard (:func:`class_shard`) and sees the
whole global batch (:func:`gather_batch`).  :func:`sharded_cross_entropy` then computes the
cross entropy over all classes from the per-process logit columns with three all-reduces of one
number per sample (the row maximum, the sum of exponentials, the target logit), so no process
ever holds a (batch × all classes) logit matrix (An et al., CVPR 2022, Sec. 3.1; the same
decomposition as Megatron-LM's vocabulary-parallel cross entropy).

Everything here also runs without a process group when ``world_size`` is 1: then a "shard" is
all classes and no collective is called.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def class_shard(num_classes: int, rank: int, world_size: int) -> tuple[int, int]:
    """``(first class, number of classes)`` held by ``rank``: contiguous slices, the first
    ``num_classes % world_size`` ranks one class more (arcface_torch's split)."""
    base, extra = divmod(num_classes, world_size)
    return base * rank + min(rank, extra), base + int(rank < extra)


class _GatherBatch(torch.autograd.Function):
    """All-gather of equally sized per-process batches along dim 0, with a gradient.

    Forward: the processes' tensors concatenated in rank order.  Backward: every process holds the
    gradient of its own loss with respect to the *whole* gathered batch; the gradient of a process's
    own rows is the sum of those over processes (an all-reduce, then this rank's slice), multiplied
    by ``grad_scale`` (see :class:`facetrust.train.partial_fc.PartialFC` for why the trainer passes
    the world size)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, world_size: int, rank: int, grad_scale: float) -> torch.Tensor:
        ctx.rank, ctx.rows, ctx.grad_scale = rank, tensor.shape[0], grad_scale
        parts = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        own = grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]
        return own * ctx.grad_scale, None, None, None


def gather_batch(tensor: torch.Tensor, rank: int, world_size: int, grad_scale: float = 1.0) -> torch.Tensor:
    """The global batch (world_size·N, ...) from every process's (N, ...) rows, in rank order;
    differentiable (see :class:`_GatherBatch`).  ``tensor`` itself when ``world_size`` is 1."""
    if world_size == 1:
        return tensor
    return _GatherBatch.apply(tensor, world_size, rank, float(grad_scale))


def gather_labels(labels: torch.Tensor, world_size: int) -> torch.Tensor:
    """Every process's labels (N,) concatenated in rank order (no gradient)."""
    if world_size == 1:
        return labels
    parts = [torch.empty_like(labels) for _ in range(world_size)]
    dist.all_gather(parts, labels.contiguous())
    return torch.cat(parts)


def _all_reduce(tensor: torch.Tensor, op, world_size: int) -> torch.Tensor:
    if world_size > 1:
        dist.all_reduce(tensor, op=op)
    return tensor


class _ShardedSoftmaxCrossEntropy(torch.autograd.Function):
    """mean_i −log softmax(z_i)[y_i] over classes spread across processes.

    ``logits`` (N, S): this process's columns; ``targets`` (N,): the column of the sample's class
    in this process's columns, −1 where the class lives on another process.  With the global row
    maximum m_i, the global Σ_j exp(z_ij − m_i) = Z_i and the target logit t_i (held by exactly one
    process, summed over all), the loss is log Z_i + m_i − t_i and its gradient with respect to
    z_ij is (softmax_ij − [j = y_i]) / N: the probabilities kept from the forward pass, minus one
    at the target, which only the process holding the target column subtracts."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, world_size: int):
        with torch.no_grad():
            row_max = _all_reduce(logits.max(dim=1).values, dist.ReduceOp.MAX, world_size)
            probabilities = (logits - row_max.unsqueeze(1)).exp_()
            row_sum = _all_reduce(probabilities.sum(dim=1), dist.ReduceOp.SUM, world_size)
            rows = (targets >= 0).nonzero()[:, 0]
            columns = targets[rows]
            target_logit = logits.new_zeros(logits.shape[0])
            target_logit[rows] = logits[rows, columns]
            target_logit = _all_reduce(target_logit, dist.ReduceOp.SUM, world_size)
            probabilities.div_(row_sum.unsqueeze(1))
            loss = (row_sum.log() + row_max - target_logit).mean()
            # the target is an arg-max of all logits (ties count as correct)
            correct = (target_logit >= row_max).float().mean()
        ctx.save_for_backward(probabilities, rows, columns)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, grad_correct: torch.Tensor):
        probabilities, rows, columns = ctx.saved_tensors
        # Computed in place in the saved probabilities: the (N, S) matrix is the largest tensor of
        # the head, and a second copy would double its peak (the graph is freed after one backward).
        grad = probabilities
        grad[rows, columns] -= 1.0
        grad.mul_(grad_loss / probabilities.shape[0])
        return grad, None, None


def sharded_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, world_size: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean cross entropy, fraction of samples whose target logit is the largest)`` over the
    classes of every process (see :class:`_ShardedSoftmaxCrossEntropy`); the same two numbers on
    every process.  Equals ``F.cross_entropy`` on the concatenated logits up to float rounding."""
    return _ShardedSoftmaxCrossEntropy.apply(logits, targets.long(), int(world_size))


def gather_rows_to_main(shard: torch.Tensor, num_rows: int, rank: int, world_size: int,
                        chunk_rows: int = 1 << 16) -> torch.Tensor | None:
    """The (num_rows, ...) tensor whose row slices (:func:`class_shard`) the processes hold, on the
    CPU of rank 0; None on the other ranks.  Collective: every rank must call it.

    Gathered ``chunk_rows`` rows per process at a time, so rank 0's device holds world_size·chunk
    rows beyond its shard, never the whole matrix (for 2M classes × 512 that is 4 GB)."""
    if world_size == 1:
        return shard.detach().to("cpu", copy=True)
    sizes = [class_shard(num_rows, r, world_size)[1] for r in range(world_size)]
    starts = [class_shard(num_rows, r, world_size)[0] for r in range(world_size)]
    full = torch.empty((num_rows, *shard.shape[1:]), dtype=shard.dtype) if rank == 0 else None
    for offset in range(0, max(sizes), chunk_rows):
        length = min(chunk_rows, max(sizes) - offset)
        piece = shard.new_zeros((length, *shard.shape[1:]))  # equal sizes for the collective
        mine = max(0, min(length, sizes[rank] - offset))
        piece[:mine] = shard.detach()[offset:offset + mine]
        pieces = [torch.empty_like(piece) for _ in range(world_size)] if rank == 0 else None
        dist.gather(piece, pieces, dst=0)
        if rank == 0:
            for r, received in enumerate(pieces):
                valid = max(0, min(length, sizes[r] - offset))
                full[starts[r] + offset:starts[r] + offset + valid] = received[:valid].cpu()
    return full
