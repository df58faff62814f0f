"""CT intensity preprocessing as in the AGCL paper: an HU window, then percentile min-max.

The paper clips to [-175, 250] HU and then rescales each volume with its 1st and 99th
percentiles, ``(v - v1) / (v99 - v1)``. Both steps are optional and configurable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agcl._validation import check_real_sequence

__all__ = ["HU_WINDOW", "PERCENTILES", "clip_hu", "percentile_normalize", "preprocess_ct"]

#: The paper's abdominal soft-tissue window in HU.
HU_WINDOW: tuple[float, float] = (-175.0, 250.0)
#: The paper's percentiles for min-max normalisation.
PERCENTILES: tuple[float, float] = (1.0, 99.0)


def _as_numpy(name: str, volume: Any) -> tuple[np.ndarray, torch.Tensor | None]:
    if isinstance(volume, torch.Tensor):
        return volume.detach().cpu().numpy().astype(np.float32, copy=False), volume
    if isinstance(volume, np.ndarray):
        return volume.astype(np.float32, copy=False), None
    raise TypeError(f"{name} must be a numpy array or torch.Tensor; got {type(volume).__name__}")


def _check_finite(name: str, arr: np.ndarray) -> None:
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise ValueError(
            f"{name} must be finite; got {bad} non-finite voxel(s) (NaN or inf) of {arr.size}; "
            "replace them first, e.g. np.nan_to_num(volume, nan=-1024.0) for air"
        )


def _back(out: np.ndarray, like: torch.Tensor | None) -> Any:
    out = np.asarray(out, dtype=np.float32)  # numpy ops on a 0-d array return a scalar
    return torch.from_numpy(out).to(like.device) if like is not None else out


def _check_pair(name: str, pair: Any) -> tuple[float, float]:
    try:
        lo, hi = check_real_sequence(name, pair, length=2)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair of numbers (low, high); got {pair!r}") from None
    if not lo < hi:
        raise ValueError(f"{name} must satisfy low < high; got {pair!r}")
    return lo, hi


def clip_hu(volume: Any, window: tuple[float, float] = HU_WINDOW) -> Any:
    """Clip intensities to ``window`` (HU).

    Args:
        volume: numpy array or tensor of any shape.
        window: ``(low, high)``.

    Returns:
        A ``float32`` array (or tensor, if a tensor came in) of the same shape.

    Examples:
        >>> clip_hu(np.array([-1000.0, 0.0, 400.0])).tolist()
        [-175.0, 0.0, 250.0]
    """
    lo, hi = _check_pair("window", window)
    arr, like = _as_numpy("volume", volume)
    return _back(np.clip(arr, lo, hi).astype(np.float32, copy=False), like)


def percentile_normalize(volume: Any, percentiles: tuple[float, float] = PERCENTILES) -> Any:
    """Min-max normalise with percentiles: ``(v - v_lo) / (v_hi - v_lo)``.

    Values outside the percentile range map outside [0, 1] (as in the paper's formula). A
    volume whose two percentiles coincide (e.g. a constant volume) maps to zeros instead of
    dividing by zero.

    Args:
        volume: numpy array or tensor of any shape.
        percentiles: ``(lo, hi)`` in [0, 100].

    Returns:
        A ``float32`` array (or tensor) of the same shape.

    Raises:
        ValueError: percentiles outside [0, 100] or not increasing; non-finite voxels.

    Examples:
        >>> percentile_normalize(np.arange(5.0), (0, 100)).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
        >>> percentile_normalize(np.full(3, 7.0)).tolist()
        [0.0, 0.0, 0.0]
    """
    lo, hi = _check_pair("percentiles", percentiles)
    if lo < 0 or hi > 100:
        raise ValueError(f"percentiles must lie in [0, 100]; got {percentiles!r}")
    arr, like = _as_numpy("volume", volume)
    _check_finite("volume", arr)
    if arr.size == 0:
        return _back(arr.copy(), like)
    v_lo, v_hi = np.percentile(arr, [lo, hi])
    span = float(v_hi - v_lo)
    if not span > 0:
        return _back(np.zeros_like(arr), like)
    out = (arr - np.float32(v_lo)) / np.float32(span)
    return _back(out.astype(np.float32, copy=False), like)


def preprocess_ct(
    volume: Any,
    *,
    window: tuple[float, float] | None = HU_WINDOW,
    percentiles: tuple[float, float] | None = PERCENTILES,
    source: Any = None,
) -> Any:
    """The paper's CT preprocessing: clip to ``window``, then percentile min-max.

    Args:
        volume: HU intensities, numpy array or tensor.
        window: the HU window, or ``None`` to skip clipping.
        percentiles: the normalisation percentiles, or ``None`` to skip normalisation.
        source: where ``volume`` came from (e.g. its file path), named in error messages.

    Returns:
        A ``float32`` array (or tensor) of the same shape.

    Raises:
        ValueError: ``volume`` holds NaN or inf voxels (the count is printed): a percentile
            of such a volume is NaN and would turn the whole scan into zeros.

    References:
        Lee et al., Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation (AGCL), supplementary material: preprocessing.

    Examples:
        >>> v = np.array([-1000.0, -175.0, 0.0, 250.0, 3000.0])
        >>> [round(float(x), 3) for x in preprocess_ct(v, percentiles=(0, 100))]
        [0.0, 0.0, 0.412, 1.0, 1.0]
    """
    try:
        _check_finite("volume", _as_numpy("volume", volume)[0])
    except ValueError as err:
        if source is None:
            raise
        raise ValueError(f"{source}: {err}") from None
    out = volume
    if window is not None:
        out = clip_hu(out, window)
    if percentiles is not None:
        out = percentile_normalize(out, percentiles)
    if window is None and percentiles is None:
        arr, like = _as_numpy("volume", volume)
        out = _back(arr.copy(), like)
    return out
