"""Autograd-aware all-gather for losses whose contrast set spans every rank.

Each rank contributes ``n_r`` rows; sizes may differ between ranks: rows are padded to the
largest size for the collective and the padding is dropped afterwards. The gather's backward
sums the incoming gradient over ranks (every rank's loss depends on every rank's rows) and
hands each rank the slice of its own rows.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["all_reduce_sum", "distributed_world", "gather_rows"]


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)``, or ``(0, 1)`` when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _AllGather(torch.autograd.Function):
    """``(n_max, D)`` per rank -> ``(W, n_max, D)``; backward: all-reduce sum, keep own slice."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.stack(parts)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[dist.get_rank()]


def _pad(x: torch.Tensor, n: int) -> torch.Tensor:
    if x.shape[0] == n:
        return x
    pad = x.new_zeros((n - x.shape[0],) + tuple(x.shape[1:]))
    return torch.cat([x, pad])


def gather_rows(
    rows: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, int, list[int]]:
    """All-gather ``rows`` (with gradients) and integer ``labels`` from every rank, rank-major.

    Args:
        rows: this rank's rows.
        labels: this rank's integer labels, one row of label columns per row.

    Shape:
        - rows: ``(n_r, D)``; labels: ``(n_r, K)``.
        - outputs: ``(N, D)`` and ``(N, K)`` with ``N = sum_r n_r``.

    Returns:
        ``(all_rows, all_labels, offset, sizes)``: rank ``r``'s rows are
        ``all_rows[offset : offset + sizes[r]]``.

    Raises:
        ValueError: ranks disagree on the feature dimension or the number of label columns.
    """
    rank, world = distributed_world()
    shape = torch.tensor([rows.shape[0], rows.shape[1], labels.shape[1]], device=rows.device)
    shapes = [torch.empty_like(shape) for _ in range(world)]
    dist.all_gather(shapes, shape)
    table = torch.stack(shapes).tolist()
    if len({(d, k) for _, d, k in table}) != 1:
        raise ValueError(
            "gather_distributed=True needs the same feature dimension and label options on every "
            f"rank; got (rows, D, label columns) per rank = {table}"
        )
    sizes = [n for n, _, _ in table]
    n_max = max(sizes)
    gathered = _AllGather.apply(_pad(rows, n_max))
    label_parts = [torch.empty_like(_pad(labels, n_max)) for _ in range(world)]
    dist.all_gather(label_parts, _pad(labels, n_max).contiguous())
    all_rows = torch.cat([gathered[r, : sizes[r]] for r in range(world)])
    all_labels = torch.cat([label_parts[r][: sizes[r]] for r in range(world)])
    return all_rows, all_labels, sum(sizes[:rank]), sizes


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """Sum of a detached tensor over ranks (no gradient)."""
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
