"""The silhouette coefficient of labelled embeddings (Rousseeuw), blocked and subsampled.

Examples:
    >>> import torch
    >>> from agcl.metrics import silhouette_score
    >>> z = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> silhouette_score(z, torch.tensor([0, 0, 1, 1])) > 0.9
    True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agcl._validation import check_choice, check_int
from agcl.metrics._embeddings import METRICS, Metric, check_embeddings, check_labels, unit_rows

__all__ = ["silhouette_score"]


def silhouette_score(
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    metric: Metric = "cosine",
    max_samples: int = 5000,
    seed: int = 0,
    block_size: int = 1024,
) -> float:
    """Mean silhouette coefficient of the clusters that the labels ``y`` make in ``z``.

    For row ``i`` in cluster ``A``: ``a(i)`` is its mean distance to the other rows of ``A``,
    ``b(i)`` the smallest mean distance to the rows of another cluster, and
    ``s(i) = (b(i) - a(i)) / max(a(i), b(i))``; a row alone in its cluster has ``s(i) = 0``
    (Rousseeuw 1987), as does a row with ``a(i) = b(i) = 0``. The result is the mean of
    ``s(i)``, in ``[-1, 1]``: near 1 for tight, well-apart clusters, near 0 for overlapping
    ones, negative when rows sit closer to another cluster than to their own. ``"cosine"``
    distance is ``1 - cosine similarity`` (clipped to ``[0, 2]``; a zero row is at distance 1
    from everything), ``"euclidean"`` the L2 distance. Above ``max_samples`` rows, each label
    keeps ``floor(n_label * max_samples / N)`` of its rows (at least one), drawn with a
    generator seeded by ``seed``, so the result is deterministic. Memory is
    ``O(block_size x N)``.

    Args:
        z: embeddings.
        y: integer labels with at least two distinct values.
        metric: ``"cosine"`` or ``"euclidean"``.
        max_samples: rows used at most (about: plus one per label, see above), >= 2.
        seed: seed of the subsampling.
        block_size: rows per block.

    Shape:
        - z: ``(N, D)``; y: ``(N,)``.

    Returns:
        The mean silhouette coefficient, a float in ``[-1, 1]``.

    Raises:
        TypeError: a non-tensor, floating labels or integer embeddings.
        ValueError: bad shapes, lengths that differ, non-finite values, fewer than two labels
            or an unknown metric.

    References:
        P. J. Rousseeuw, Silhouettes: a graphical aid to the interpretation and validation of
        cluster analysis, J. Comput. Appl. Math. 20 (1987).

    Examples:
        >>> z = torch.tensor([[0.0], [1.0], [5.0], [7.0]])
        >>> round(silhouette_score(z, torch.tensor([0, 0, 1, 1]), metric="euclidean"), 4)
        0.7203
    """
    z = check_embeddings("z", z)
    y = check_labels("y", y, z.shape[0], "z", z.device)
    check_choice("metric", metric, METRICS)
    check_int("max_samples", max_samples, low=2)
    check_int("seed", seed)
    check_int("block_size", block_size, low=1)
    classes, inverse = torch.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"y must hold at least two distinct labels for a silhouette; got "
            f"{len(classes)} ({classes.tolist()})"
        )
    n = z.shape[0]
    if n > max_samples:
        gen = torch.Generator().manual_seed(seed)
        keep = []
        for c in range(len(classes)):
            rows = (inverse == c).nonzero().flatten().cpu()
            take = max(1, len(rows) * max_samples // n)
            keep.append(rows[torch.randperm(len(rows), generator=gen)[:take]])
        idx = torch.cat(keep).sort().values.to(z.device)
        z, inverse = z[idx], inverse[idx]
    if metric == "cosine":
        z = unit_rows(z)
    onehot = F.one_hot(inverse, len(classes)).to(z.dtype)  # (N, C)
    counts = onehot.sum(dim=0)  # (C,)
    scores = []
    for start in range(0, z.shape[0], block_size):
        block = z[start : start + block_size]
        if metric == "cosine":
            dist = (1.0 - block @ z.T).clamp(0.0, 2.0)
        else:
            dist = torch.cdist(block, z).clamp_min(0.0)
        rows = torch.arange(block.shape[0], device=z.device)
        dist[rows, start + rows] = 0.0  # self-distance, exactly
        sums = dist @ onehot  # (B, C)
        own = inverse[start : start + block_size]
        own_n = counts[own]
        a = sums.gather(1, own[:, None]).squeeze(1) / (own_n - 1).clamp_min(1.0)
        means = sums / counts
        means[rows, own] = torch.inf
        b = means.amin(dim=1)
        denom = torch.maximum(a, b)
        s = torch.where(denom > 0, (b - a) / torch.where(denom > 0, denom, 1.0), 0.0)
        scores.append(torch.where(own_n > 1, s, 0.0))
    return float(torch.cat(scores).double().mean())
