"""k-nearest-neighbour accuracy of labelled embeddings (an encoder probe,
:mod:`agcl.metrics.probe`).

No training at all: each held-out row takes the majority label of its most similar fit rows, so
the accuracy reads the geometry of the embedding as it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agcl._validation import check_choice, check_int
from agcl.metrics._embeddings import METRICS, Metric, check_pair, unit_rows

__all__ = ["knn_accuracy"]

BLOCK = 512  # score rows per k-NN block: a few (block x N_fit) tensors at a time


def knn_predict(
    fit_z: torch.Tensor,
    fit_ys: list[torch.Tensor],
    score_z: torch.Tensor,
    k: int,
    metric: str,
    block_size: int,
) -> list[torch.Tensor]:
    """Predicted label of every score row, for each label set in ``fit_ys`` (same neighbours)."""
    if metric == "cosine":
        fit_z, score_z = unit_rows(fit_z), unit_rows(score_z)
    k = min(k, fit_z.shape[0])
    sets = []  # (classes, one-hot (N_fit, C)) per label set
    for y in fit_ys:
        classes, inverse = torch.unique(y, return_inverse=True)
        sets.append((classes, F.one_hot(inverse, len(classes)).to(fit_z.dtype)))
    preds: list[list[torch.Tensor]] = [[] for _ in fit_ys]
    for start in range(0, score_z.shape[0], block_size):
        block = score_z[start : start + block_size]
        sim = block @ fit_z.T if metric == "cosine" else -torch.cdist(block, fit_z)
        # the k most similar fit rows; among rows as similar as the k-th, the lowest indices
        kth = sim.topk(k, dim=1).values[:, -1:]
        above = sim > kth
        at = sim == kth
        room = k - above.sum(dim=1, keepdim=True)
        chosen = above | (at & (at.cumsum(dim=1, dtype=torch.int32) <= room))
        weight = chosen.to(sim.dtype)
        for out, (classes, onehot) in zip(preds, sets):
            votes = weight @ onehot  # (B, C) neighbour counts
            total = (weight * sim) @ onehot  # (B, C) summed similarity
            tied = votes == votes.amax(dim=1, keepdim=True)
            total = torch.where(tied, total, torch.full_like(total, -torch.inf))
            best = (total == total.amax(dim=1, keepdim=True)).to(torch.int8).argmax(dim=1)
            out.append(classes[best])  # argmax: the first (smallest) class
    return [torch.cat(p) for p in preds]


def knn_accuracy(
    fit_z: torch.Tensor,
    fit_y: torch.Tensor,
    score_z: torch.Tensor,
    score_y: torch.Tensor,
    *,
    k: int = 20,
    metric: Metric = "cosine",
    block_size: int = BLOCK,
) -> float:
    """k-nearest-neighbour classification accuracy of ``score_z`` against ``fit_z``.

    Each score row takes the label most frequent among its ``k`` most similar fit rows
    (``k`` is capped at the number of fit rows). Ties are broken deterministically: among fit
    rows exactly as similar as the k-th, the lower row indices are the neighbours; among labels
    with equally many neighbours, the one whose neighbours have the larger summed similarity
    wins (compared as computed, in floating point), and the smallest label id after that.
    ``"cosine"`` similarity is invariant to the
    scale of each row (a zero row has similarity 0 to everything); ``"euclidean"`` uses minus
    the L2 distance. A score label absent from ``fit_y`` is never predicted: it counts as an
    error. The work runs over blocks of ``block_size`` score rows, so memory is
    ``O(block_size x N_fit)``, on ``fit_z``'s device.

    Args:
        fit_z: embeddings of the labelled (fit) rows.
        fit_y: their integer labels.
        score_z: embeddings to classify.
        score_y: their true labels.
        k: number of neighbours, >= 1.
        metric: ``"cosine"`` or ``"euclidean"``.
        block_size: score rows per block.

    Shape:
        - fit_z: ``(N_fit, D)``; fit_y: ``(N_fit,)``.
        - score_z: ``(N_score, D)``; score_y: ``(N_score,)``.

    Returns:
        The fraction of score rows whose predicted label equals ``score_y``, in ``[0, 1]``.

    Raises:
        TypeError: a non-tensor, floating labels or integer embeddings.
        ValueError: bad shapes, lengths that differ, an empty set, non-finite values, ``k < 1``
            or an unknown metric.

    Examples:
        >>> fit = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]])
        >>> knn_accuracy(fit, torch.tensor([3, 3, 7]), torch.tensor([[5.0, 1.0], [0.1, 1.0]]),
        ...              torch.tensor([3, 7]), k=1)
        1.0
    """
    fit_z, fit_y, score_z, score_y = check_pair(fit_z, fit_y, score_z, score_y)
    check_int("k", k, low=1)
    check_choice("metric", metric, METRICS)
    check_int("block_size", block_size, low=1)
    pred = knn_predict(fit_z, [fit_y], score_z, k, metric, block_size)[0]
    return float((pred == score_y).double().mean())
