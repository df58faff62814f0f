"""Label fusion: per-organ foreground probabilities -> one multi-organ label map."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agcl._validation import check_in_range

__all__ = ["fuse_labels"]


_INT16_MAX = int(np.iinfo(np.int16).max)


def check_threshold(threshold: object, name: str = "threshold") -> float:
    """Raise unless ``threshold`` is a real number in ``[0, 1)`` (NaN refused); return it."""
    value = check_in_range(name, threshold, 0.0, 1.0)  # TypeError for a non-number; NaN refused
    if value == 1.0:
        raise ValueError(f"{name} must be a number in [0, 1); got {threshold!r}")
    return value


def fuse_labels(
    probabilities: Any,
    organ_ids: Sequence[int] | None = None,
    *,
    threshold: float = 0.5,
) -> np.ndarray:
    """Fuse per-organ foreground probabilities into one label map (the paper's label fusion).

    At every voxel the organ with the highest probability wins; the voxel is background (0)
    when no organ's probability exceeds ``threshold`` (strictly greater passes). Ties go to the
    organ listed first.

    Args:
        probabilities: ``(K, *S)`` array or tensor of probabilities in [0, 1], one map per organ
            (0 outside the organ's attention region).
        organ_ids: the label id of each of the K maps (default ``1..K``); ids must be positive
            and distinct.
        threshold: in [0, 1); the minimum (exclusive) probability for a voxel to be foreground.

    Shape:
        probabilities: ``(K, *S)``; output ``(*S)``.

    Returns:
        An ``int16`` numpy label map with values in ``{0} | set(organ_ids)``.

    Raises:
        TypeError: probabilities not an array/tensor, a threshold that is not a number.
        ValueError: wrong rank, ids of the wrong length, non-positive, repeated or beyond-int16
            (> 32767) ids, threshold outside [0, 1) or NaN, or non-finite probabilities.

    References:
        H. H. Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation" (AGCL), label fusion module.

    Examples:
        >>> import numpy as np
        >>> probs = np.array([[0.9, 0.6, 0.2], [0.1, 0.7, 0.3]])
        >>> fuse_labels(probs, organ_ids=[1, 6])
        array([1, 6, 0], dtype=int16)
    """
    if hasattr(probabilities, "detach") and hasattr(probabilities, "cpu"):
        probabilities = probabilities.detach().cpu().numpy()
    if not isinstance(probabilities, np.ndarray):
        raise TypeError(
            "probabilities must be a numpy array or a torch tensor; "
            f"got {type(probabilities).__name__}"
        )
    if probabilities.ndim < 2:
        raise ValueError(
            f"probabilities must be (K, *S) with one map per organ; got shape {probabilities.shape}"
        )
    k = probabilities.shape[0]
    ids = list(range(1, k + 1)) if organ_ids is None else [int(i) for i in organ_ids]
    if len(ids) != k:
        raise ValueError(
            f"organ_ids must have one id per probability map ({k}); got {len(ids)}: {ids}"
        )
    if any(i <= 0 for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(
            f"organ_ids must be distinct positive label ids (0 is background); got {ids}"
        )
    if any(i > _INT16_MAX for i in ids):
        raise ValueError(
            f"organ_ids must be at most {_INT16_MAX} (the label map is int16); got {max(ids)}"
        )
    check_threshold(threshold)
    if not np.isfinite(probabilities).all():
        raise ValueError("probabilities must be finite; got NaN or inf entries")
    if k == 0:
        return np.zeros(probabilities.shape[1:], np.int16)
    best = np.argmax(probabilities, axis=0)
    top = np.take_along_axis(probabilities, best[None], axis=0)[0]
    lut = np.asarray(ids, dtype=np.int16)
    return np.where(top > threshold, lut[best], np.int16(0)).astype(np.int16)
