"""Readable reference for the modal-target loss: materialises the full similarity matrix.

This is the test oracle and the benchmark baseline, written the obvious way with an ``A x M``
similarity matrix and ``A x M`` positive masks, independently of the class-sum trick and of the
blocked log-sum-exp used by the production backends. Memory is ``O(A * M)``.

References:
    Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic Segmentation"
    (the AGCL paper, Eq. 2 and 3). Khosla et al., "Supervised Contrastive Learning", 2020.
"""

from __future__ import annotations

import torch

from agcl.kernels._checks import check_lse_args

__all__ = ["contrastive_lse_naive", "modal_target_loss_naive"]


def _logits(
    z: torch.Tensor, temperature: float, a: int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits of anchors ``a .. a+n-1`` against every row, and the ``(n, M)`` self mask."""
    logits = z[a : a + n] @ z.T / temperature
    cols = torch.arange(z.shape[0], device=z.device)
    rows = torch.arange(a, a + n, device=z.device)
    return logits, rows[:, None] == cols[None, :]


def contrastive_lse_naive(
    z: torch.Tensor,
    temperature: float,
    *,
    anchor_start: int = 0,
    num_anchors: int | None = None,
    block_size: int | None = None,
) -> torch.Tensor:
    """Same contract as :func:`agcl.kernels.contrastive_lse_torch.contrastive_lse_torch`, in one
    ``torch.logsumexp`` over the full ``(A, M)`` logits (``block_size`` is ignored).

    Shape:
        - z: ``(M, D)``; output: ``(A,)``.

    Raises:
        TypeError, ValueError: as :func:`agcl.kernels._checks.check_lse_args`.

    Examples:
        >>> z = torch.eye(3, dtype=torch.float64)
        >>> contrastive_lse_naive(z, 1.0)  # two off-diagonal zeros per row: log 2
        tensor([0.6931, 0.6931, 0.6931], dtype=torch.float64)
    """
    temperature, anchor_start, n = check_lse_args(
        z, temperature, anchor_start, num_anchors, block_size
    )
    logits, self_mask = _logits(z, temperature, anchor_start, n)
    return torch.logsumexp(logits.masked_fill(self_mask, float("-inf")), dim=1)


def modal_target_loss_naive(
    z: torch.Tensor,
    positive_key: torch.Tensor,
    temperature: float,
    *,
    modality_key: torch.Tensor | None = None,
    partial_weight: float = 0.0,
    anchor_start: int = 0,
    num_anchors: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor modal-target loss straight from Eq. 3 with an ``(A, M)`` weight matrix.

    ``loss_i = -sum_j W_ij log p_ij / sum_j W_ij`` with ``log p_ij = s_ij - log sum_{k != i}
    exp(s_ik)``, ``W_ij = 1`` for full positives (same ``positive_key``, ``j != i``),
    ``partial_weight`` for partial positives (same ``modality_key``, different
    ``positive_key``) and 0 otherwise.

    Args:
        z: rows of the contrast set (normalised by the caller if wanted).
        positive_key: one integer per row; equal keys are positives.
        temperature: ``T > 0``.
        modality_key: one integer per row, for partial positives; ``None`` for none.
        partial_weight: weight of a partial positive, in ``[0, 1]``.
        anchor_start, num_anchors: the anchors are rows ``anchor_start .. +num_anchors-1``.

    Shape:
        - z: ``(M, D)``; positive_key, modality_key: ``(M,)``; outputs: ``(A,)``.

    Returns:
        ``(loss, valid)``: per-anchor loss (0 where invalid) and the bool mask of anchors with
        ``sum_j W_ij > 0``.

    Examples:
        >>> z = torch.eye(2, dtype=torch.float64)
        >>> loss, valid = modal_target_loss_naive(z, torch.tensor([0, 0]), 1.0)
        >>> loss.abs().tolist(), valid.tolist()  # one positive and no negative: loss 0
        ([0.0, 0.0], [True, True])
    """
    n = z.shape[0] - anchor_start if num_anchors is None else num_anchors
    logits, self_mask = _logits(z, temperature, anchor_start, n)
    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    log_prob = torch.where(self_mask, torch.zeros_like(log_prob), log_prob)
    anchor_key = positive_key[anchor_start : anchor_start + n]
    same = (anchor_key[:, None] == positive_key[None, :]) & ~self_mask
    weight = same.to(z.dtype)
    if modality_key is not None and partial_weight > 0:
        anchor_mod = modality_key[anchor_start : anchor_start + n]
        partial = (anchor_mod[:, None] == modality_key[None, :]) & ~same & ~self_mask
        weight = weight + partial_weight * partial.to(z.dtype)
    total = weight.sum(dim=1)
    valid = total > 0
    per_anchor = -(weight * log_prob).sum(dim=1) / torch.where(valid, total, torch.ones_like(total))
    return torch.where(valid, per_anchor, torch.zeros_like(per_anchor)), valid
