"""Cut many 2-D windows from a slice or a volume with one flat ``torch.take`` (no loop per
patch)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from agcl._validation import check_int, is_real

__all__ = ["extract_windows", "gather_windows"]


def as_tensor(name: str, value: Any) -> torch.Tensor:
    """A numpy array or tensor as a tensor (no copy when possible)."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint16 or value.dtype == np.uint32:
            value = value.astype(np.int64)
        return torch.from_numpy(np.ascontiguousarray(value))
    raise TypeError(f"{name} must be a numpy array or torch.Tensor; got {type(value).__name__}")


def normalise_axis(axis: int, ndim: int = 3) -> int:
    return check_int("axis", axis, low=-ndim, high=ndim - 1) % ndim


def pair(name: str, value: int | Sequence[int]) -> tuple[int, int]:
    """``value`` (an int or a pair of ints, each >= 1) as ``(h, w)``; floats and strings refused."""
    if isinstance(value, np.integer):
        value = int(value)
    vals = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(vals, (str, bytes)) or not isinstance(vals, Sequence) or len(vals) != 2:
        raise TypeError(f"{name} must be an int or a pair of ints; got {value!r}")
    h, w = (check_int(name, int(v) if isinstance(v, np.integer) else v, low=1) for v in vals)
    return h, w


def window_index(
    shape: Sequence[int], axis: int, centres: torch.Tensor, patch: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices into a row-major ``shape`` volume of windows around ``centres``.

    ``centres`` is ``(P, 3)``: (slice along ``axis``, index along the first in-plane axis,
    index along the second). A window's pixel ``[r, c]`` is the voxel at in-plane position
    ``(i - h // 2 + r, j - w // 2 + c)``; positions outside the volume are clamped in the
    returned index and flagged ``False`` in the validity mask.

    Returns:
        ``(flat (P, h, w) int64, valid (P, h, w) bool)``.
    """
    dims = [int(d) for d in shape]
    strides = [int(np.prod(dims[k + 1 :])) for k in range(3)]
    b, c = (k for k in range(3) if k != axis)
    h, w = patch
    dr = torch.arange(h, device=centres.device) - h // 2
    dc = torch.arange(w, device=centres.device) - w // 2
    rows = centres[:, 1:2] + dr  # (P, h)
    cols = centres[:, 2:3] + dc  # (P, w)
    vr = (rows >= 0) & (rows < dims[b])
    vc = (cols >= 0) & (cols < dims[c])
    rows = rows.clamp(0, dims[b] - 1) * strides[b]
    cols = cols.clamp(0, dims[c] - 1) * strides[c]
    base = (centres[:, 0] * strides[axis]).view(-1, 1, 1)
    flat = base + rows.unsqueeze(2) + cols.unsqueeze(1)
    return flat, vr.unsqueeze(2) & vc.unsqueeze(1)


def gather_windows(
    vol: torch.Tensor,
    axis: int,
    centres: torch.Tensor,
    patch: tuple[int, int],
    pad_value: float | Callable[[], float],
) -> torch.Tensor:
    """Windows ``(P, h, w)`` of ``vol`` (3-D, any strides) around ``(slice, i, j)`` centres.

    Windows inside the volume are read through a sliding-window ``as_strided`` view with one
    advanced-indexing gather (no index tensor of size ``P*h*w``); windows that cross the
    border go through :func:`window_index` with padding (``pad_value`` may be a callable,
    evaluated only then).
    """
    dims = list(vol.shape)
    b, c = (k for k in range(3) if k != axis)
    h, w = patch
    p = centres.shape[0]
    if p == 0:
        return torch.empty((0, h, w), dtype=vol.dtype, device=vol.device)
    i0 = centres[:, 1] - h // 2
    j0 = centres[:, 2] - w // 2
    inside = (i0 >= 0) & (i0 + h <= dims[b]) & (j0 >= 0) & (j0 + w <= dims[c])
    all_inside = bool(inside.all())
    if all_inside or bool(inside.any()):
        st = vol.stride()
        view = vol.as_strided(
            (dims[axis], dims[b] - h + 1, dims[c] - w + 1, h, w),
            (st[axis], st[b], st[c], st[b], st[c]),
            vol.storage_offset(),
        )
        if all_inside:  # the common case: one gather straight into the output
            return view[centres[:, 0], i0, j0]
    out = torch.empty((p, h, w), dtype=vol.dtype, device=vol.device)
    if bool(inside.any()):
        sel = torch.nonzero(inside).squeeze(1)
        out[sel] = view[centres[sel, 0], i0[sel], j0[sel]]
    if not bool(inside.all()):
        sel = torch.nonzero(~inside).squeeze(1)
        flat, valid = window_index(dims, axis, centres[sel], patch)
        src = vol if vol.is_contiguous() else vol.contiguous()
        fill = torch.as_tensor(
            pad_value() if callable(pad_value) else pad_value, dtype=vol.dtype, device=vol.device
        )
        out[sel] = torch.where(valid, torch.take(src, flat), fill)
    return out


def extract_windows(
    array: Any,
    centres: Any,
    patch_size: int | Sequence[int],
    *,
    pad_value: float = 0.0,
    axis: int = -1,
) -> torch.Tensor:
    """Cut 2-D windows at explicit centres (e.g. a sliding-window grid at inference).

    Args:
        array: a 2-D slice ``(H, W)`` or a 3-D volume (numpy array or tensor).
        centres: integer ``(P, 2)`` in-plane centres ``(i, j)`` for a slice, or ``(P, 3)``
            ``(slice, i, j)`` for a volume, where ``slice`` indexes ``axis`` and ``i``, ``j``
            index the two other axes in their order.
        patch_size: ``h`` or ``(h, w)``; pixel ``[r, c]`` of a window is the voxel at
            ``(i - h // 2 + r, j - w // 2 + c)``, so the centre sits at ``[h // 2, w // 2]``.
        pad_value: the value of pixels outside the array.
        axis: the slice axis of a 3-D ``array``.

    Shape:
        Output ``(P, h, w)``, the dtype and device of ``array``.

    Returns:
        The windows.

    Raises:
        TypeError: a non-numeric ``pad_value``.
        ValueError: wrong ranks, a centre outside the array, a fractional ``pad_value`` for
            an integer array, or NaN/inf inside the windows cut.

    Examples:
        >>> import torch
        >>> x = torch.arange(16.0).view(4, 4)
        >>> extract_windows(x, torch.tensor([[0, 0]]), 3, pad_value=-1.0)
        tensor([[[-1., -1., -1.],
                 [-1.,  0.,  1.],
                 [-1.,  4.,  5.]]])
    """
    arr = as_tensor("array", array)
    cen = as_tensor("centres", centres)
    if arr.ndim not in (2, 3):
        raise ValueError(f"array must be a 2-D slice or a 3-D volume; got shape {tuple(arr.shape)}")
    want = arr.ndim
    if cen.ndim != 2 or cen.shape[1] != want or cen.is_floating_point():
        raise ValueError(
            f"centres must be an integer (P, {want}) array for a {want}-D array; got shape "
            f"{tuple(cen.shape)} and dtype {cen.dtype}"
        )
    patch = pair("patch_size", patch_size)
    if not is_real(pad_value):
        raise TypeError(f"pad_value must be a number; got {type(pad_value).__name__} {pad_value!r}")
    if not (arr.is_floating_point() or float(pad_value).is_integer()):  # 0.5 would become 0
        raise ValueError(
            f"pad_value must be a whole number for an array of dtype {arr.dtype}; got {pad_value}"
        )
    cen = cen.to(device=arr.device, dtype=torch.long)
    if arr.ndim == 2:
        arr, ax = arr.unsqueeze(0), 0
        cen = torch.cat([torch.zeros_like(cen[:, :1]), cen], 1)
    else:
        ax = normalise_axis(axis)
    dims = [arr.shape[ax]] + [arr.shape[k] for k in range(3) if k != ax]
    if cen.numel() and any(
        bool(((cen[:, k] < 0) | (cen[:, k] >= dims[k])).any()) for k in range(3)
    ):
        raise ValueError(
            f"centres must lie inside the array of shape {tuple(array.shape)}; got a centre outside"
        )
    out = gather_windows(arr, ax, cen, patch, pad_value)
    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise ValueError(
            f"array holds NaN or inf inside the windows ({bad} values); a window of non-finite "
            "voxels would train or predict on garbage: clean the volume first"
        )
    return out
