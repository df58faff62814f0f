"""Private helpers shared by the metrics: mask and spacing validation, bounding-box crops."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from agcl._validation import is_real

__all__ = ["as_mask", "as_mask_pair", "as_spacing", "union_crop"]


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(
        value, "cpu"
    ):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor; got {type(value).__name__}"
        )
    return value


def as_mask(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a boolean numpy array.

    Boolean arrays pass through; integer or floating arrays must hold only 0 and 1.
    """
    array = _to_numpy(name, value)
    if array.dtype == np.bool_:
        return array
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise TypeError(f"{name} must be a boolean (or 0/1) mask; got dtype {array.dtype}")
    if array.size and not np.isin(array, (0, 1)).all():
        values = np.unique(array)[:5]
        raise ValueError(
            f"{name} must be a boolean mask or hold only 0 and 1; got values such as "
            f"{values.tolist()} (for a label map, compare it with an organ id first, "
            "e.g. labels == 1)"
        )
    return array.astype(bool)


def as_mask_pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate two masks of one shape (at least 1-D)."""
    p = as_mask("pred", pred)
    g = as_mask("gt", gt)
    if p.shape != g.shape:
        raise ValueError(
            f"pred and gt must have the same shape; got pred {p.shape} and gt {g.shape}"
        )
    if p.ndim == 0:
        raise ValueError("pred and gt must be at least 1-D masks; got 0-D arrays")
    return p, g


def _number(name: str, value: Any, ndim: int) -> float:
    """A Python or numpy real number (0-d arrays and tensors too) as a float; strings refused."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch scalar
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()
    if not is_real(value):  # float("1.5") would accept a string's characters
        raise TypeError(
            f"{name} must be a number or a sequence of {ndim} numbers; got {value!r} "
            f"({type(value).__name__})"
        )
    return float(value)


def as_spacing(spacing: Sequence[float] | float | None, ndim: int) -> tuple[float, ...]:
    """Voxel spacing as ``ndim`` positive floats (``None`` means 1 per axis; a scalar is repeated).

    Python and numpy numbers (``np.float32(2.0)``), sequences of them and 1-D arrays or tensors
    are accepted; strings and bools are refused.
    """
    if spacing is None:
        return (1.0,) * ndim
    if is_real(spacing) or (isinstance(spacing, np.ndarray) and spacing.ndim == 0):
        values: tuple[float, ...] = (_number("spacing", spacing, ndim),) * ndim
    else:
        if isinstance(spacing, (str, bytes)) or not isinstance(spacing, Iterable):
            raise TypeError(
                f"spacing must be a number or a sequence of {ndim} numbers; got {spacing!r}"
            )
        values = tuple(_number("spacing", s, ndim) for s in spacing)
    if len(values) != ndim:
        raise ValueError(
            f"spacing must have one entry per mask axis ({ndim}); got {len(values)}: {values}"
        )
    if not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"spacing must hold finite numbers > 0 (mm per voxel); got {values}")
    return values


def union_crop(*masks: np.ndarray, pad: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of the masks' union, grown by ``pad`` voxels and clipped."""
    union = np.logical_or.reduce(masks)
    slices = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        hit = np.flatnonzero(union.any(axis=other)) if other else np.flatnonzero(union)
        lo = max(int(hit[0]) - pad, 0)
        hi = min(int(hit[-1]) + pad + 1, union.shape[axis])
        slices.append(slice(lo, hi))
    return tuple(slices)
