"""Sliding-window inference, shared by stage 1 (3-D windows over a coarse grid) and stage 3
(2-D windows inside each organ's attention): window positions, the window weight, and the
weighted average of overlapping window predictions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from agcl._validation import check_choice, check_int

__all__ = ["WINDOW_WEIGHTS", "sliding_window", "window_starts", "window_weight"]

#: how overlapping windows are averaged: every voxel alike, or the window's centre first
WINDOW_WEIGHTS: tuple[str, ...] = ("uniform", "gaussian")


def window_starts(lo: int, hi: int, size: int, stride: int, *, short: str = "centre") -> list[int]:
    """Start indices of windows of ``size`` covering ``[lo, hi]`` (inclusive) every ``stride``,
    the last one flush with ``hi``.

    A range shorter than a window gets one window: centred on it (``short="centre"``) or
    starting at ``lo`` (``short="start"``, for a volume padded at its end).

    Examples:
        >>> window_starts(0, 9, 4, 3)
        [0, 3, 6]
        >>> window_starts(5, 6, 4, 2)  # a short range gets one centred window
        [4]
        >>> window_starts(0, 2, 4, 2, short="start")
        [0]
    """
    check_int("size", size, low=1)
    check_int("stride", stride, low=1)
    check_choice("short", short, ("centre", "start"))
    length = int(hi) - int(lo) + 1
    if length <= size:
        return [int(lo) if short == "start" else int(lo) - (size - length) // 2]
    starts = list(range(int(lo), int(hi) - size + 2, stride))
    if starts[-1] != int(hi) - size + 1:
        starts.append(int(hi) - size + 1)
    return starts


def window_weight(
    shape: int | Sequence[int],
    kind: str = "gaussian",
    *,
    sigma_fraction: float = 0.125,
    floor: float = 1e-3,
) -> torch.Tensor:
    """The per-voxel weight of a window's prediction when overlapping windows are averaged.

    ``"uniform"``: every voxel 1 (the plain mean). ``"gaussian"``: a Gaussian centred on the
    window, sigma ``sigma_fraction`` of its size along each axis (1/8, nnU-Net's choice), 1 at
    the centre and floored at ``floor``, so a voxel near a window's edge, where the network saw
    the least context, counts less than the same voxel near another window's centre. An int
    ``shape`` is a square 2-D window.

    Shape:
        output ``shape`` float32.

    Examples:
        >>> w = window_weight(8)
        >>> float(w.max()), bool(w[0, 0] < w[4, 4]), tuple(w.shape)
        (1.0, True, (8, 8))
        >>> window_weight((4, 4, 2), "uniform").unique().tolist()
        [1.0]
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        dims = (shape, shape)  # one size: a square 2-D window (checked below)
    else:
        dims = tuple(shape)
    dims = tuple(
        check_int("shape", int(n) if isinstance(n, np.integer) else n, low=1) for n in dims
    )
    check_choice("window weight", kind, WINDOW_WEIGHTS)
    if kind == "uniform":
        return torch.ones(dims)
    w = torch.ones((), dtype=torch.float64)
    for axis, n in enumerate(dims):
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        g = torch.exp(-0.5 * (x / max(n * sigma_fraction, 1e-3)) ** 2)
        w = w[..., None] * g.view(*([1] * axis), n) if axis else g
    return (w / w.max()).clamp_min(floor).float()


@torch.no_grad()
def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    window: Sequence[int],
    corners: Any,
    *,
    weight: str | torch.Tensor = "gaussian",
    pad_value: float | Sequence[float] = 0.0,
    batch_size: int = 1,
) -> torch.Tensor:
    """The weighted mean of ``predict`` over windows of ``inputs`` starting at ``corners``.

    Windows may reach outside ``inputs``: there the channels are padded with ``pad_value``
    (one value, or one per channel). Each window's prediction is weighted by ``weight``
    (:func:`window_weight`'s kind, or a tensor of the window's shape); voxels no window covers
    are 0.

    Args:
        predict: maps a batch ``(B, C, *window)`` to ``(B, K, *window)`` (e.g. softmax
            probabilities).
        inputs: ``(C, *S)``, on the CPU; windows are moved to the model's device by ``predict``.
        window: the window's shape (one entry per axis of ``S``).
        corners: ``(N, len(S))`` integer start positions (may be negative or reach past ``S``).
        weight: see above.
        pad_value: the channels' value outside ``inputs``.
        batch_size: windows per call of ``predict``.

    Shape:
        output ``(K, *S)`` float32 on the CPU.

    Examples:
        >>> x = torch.arange(6.0).view(1, 6)
        >>> sliding_window(lambda b: b * 2, x, (4,), [[0], [2]], weight="uniform")
        tensor([[ 0.,  2.,  4.,  6.,  8., 10.]])
    """
    check_int("batch_size", batch_size, low=1)
    dims = tuple(int(n) for n in inputs.shape[1:])
    win = tuple(int(n) for n in window)
    if len(win) != len(dims):
        raise ValueError(
            f"window must have one entry per spatial axis of inputs {tuple(inputs.shape)}; "
            f"got {win}"
        )
    starts = torch.as_tensor(np.asarray(corners, dtype=np.int64)).reshape(-1, len(dims))
    w = window_weight(win, weight) if isinstance(weight, str) else weight.float()
    if tuple(w.shape) != win:
        raise ValueError(f"weight must have the window's shape {win}; got {tuple(w.shape)}")
    if len(starts) == 0:
        raise ValueError("corners must hold at least one window start")
    lo = [min(0, int(v)) for v in starts.min(0).values]
    hi = [max(n, int(v) + k) for n, v, k in zip(dims, starts.max(0).values, win)]
    channels = inputs.shape[0]
    pads = (
        [float(pad_value)] * channels
        if isinstance(pad_value, (int, float))
        else [float(v) for v in pad_value]
    )
    if len(pads) != channels:
        raise ValueError(
            f"pad_value must be one value or one per channel ({channels}); got {len(pads)}"
        )
    inner = tuple(slice(-a, -a + n) for a, n in zip(lo, dims))
    if lo == [0] * len(dims) and hi == list(dims):
        padded = inputs.float()
    else:
        padded = torch.empty((channels, *(b - a for a, b in zip(lo, hi))), dtype=torch.float32)
        for c, v in enumerate(pads):
            padded[c] = v
        padded[(slice(None), *inner)] = inputs.float()
    total: torch.Tensor | None = None
    norm = torch.zeros(padded.shape[1:])
    shifted = starts - torch.tensor(lo)
    for i in range(0, len(shifted), batch_size):
        boxes = [
            tuple(slice(int(s), int(s) + k) for s, k in zip(row, win))
            for row in shifted[i : i + batch_size]
        ]
        out = predict(torch.stack([padded[(slice(None), *box)] for box in boxes])).float().cpu()
        if total is None:
            total = torch.zeros((out.shape[1], *padded.shape[1:]))
        for j, box in enumerate(boxes):
            total[(slice(None), *box)] += out[j] * w
            norm[box] += w
    assert total is not None  # at least one window
    mean = torch.where(norm > 0, total / norm.clamp_min(1e-12), torch.zeros(()))
    return mean[(slice(None), *inner)].contiguous()
