"""Per-organ attention from a coarse segmenter's probabilities (sparse: one box + mask per organ).

Organ ``k``'s attention is where its coarse softmax probability reaches ``threshold``; where no
voxel does, its most probable connected region (the 26-connected component of
``prob >= fraction * max(prob)`` that holds the arg-max). So an organ that never wins the
arg-max against its neighbours (an adrenal next to the kidney and the liver) still gets a region
to look at. The coarse-grid region is brought to the full grid with the same nearest rule as
:func:`agcl.data.resample` and dilated by ``margin_mm`` (a Euclidean ball in mm).

The representation, per case: ``{organ code: (box, mask)}`` with ``box`` a tuple of three slices
into the full grid and ``mask`` an array of the box's shape (bool; with ``channel="probability"``
float16 ``0.5 + 0.5 * p / max(p)`` inside the region, ``p`` the organ's nearest-upsampled coarse
probability and ``max(p)`` its highest in the volume, 0 outside); never a dense ``(K, X, Y, Z)``
stack. An organ with a probability of 0 everywhere is left out.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from agcl._validation import check_choice
from agcl.sampling.attention_maps import ATTENTION_CHANNELS, Attention, graded

__all__ = [
    "ATTENTION_KINDS",
    "attention_from_probabilities",
    "attention_kinds",
    "coarse_body",
    "load_probabilities",
    "save_probabilities",
]

#: where an organ's attention came from (:func:`attention_kinds`)
ATTENTION_KINDS = ("threshold", "fallback", "none")


def _coarse_region(prob: np.ndarray, threshold: float, fraction: float) -> np.ndarray | None:
    from scipy import ndimage

    region = prob >= threshold
    if region.any():
        return region
    top = float(prob.max())
    if top <= 0.0:
        return None
    components, _ = ndimage.label(prob >= fraction * top, structure=np.ones((3, 3, 3), bool))
    peak = np.unravel_index(int(np.argmax(prob)), prob.shape)
    return components == components[peak]


def _full_indices(lo: int, hi: int, coarse: int, full: int) -> tuple[int, int]:
    # nearest resampling (align_corners=False, PyTorch's rule): full voxel i reads coarse voxel
    # floor(i * coarse / full); so coarse voxels [lo, hi) cover full voxels
    # [ceil(lo*f/c), ceil(hi*f/c))
    return math.ceil(lo * full / coarse), min(full, math.ceil(hi * full / coarse))


def _nearest_index(lo: int, hi: int, coarse: int, full: int) -> np.ndarray:
    # the coarse voxel that full voxels lo..hi-1 read with nearest resampling
    return np.clip(np.floor(np.arange(lo, hi) * coarse / full).astype(np.int64), 0, coarse - 1)


def attention_from_probabilities(
    prob: np.ndarray | torch.Tensor,
    organ_ids: Sequence[int],
    full_shape: Sequence[int],
    *,
    spacing: Sequence[float],
    margin_mm: float,
    threshold: float = 0.1,
    fraction: float = 0.5,
    channel: str = "mask",
    body: np.ndarray | None = None,
) -> Attention:
    """Sparse per-organ attention on the full grid from coarse-grid class probabilities.

    Args:
        prob: softmax probabilities on the coarse grid, channel 0 the background and channel
            ``i`` organ ``organ_ids[i - 1]``.
        organ_ids: the organ codes of channels ``1..K``.
        full_shape: the full-resolution grid ``(X, Y, Z)``.
        spacing: the full grid's voxel size in mm.
        margin_mm: dilation of each region (Euclidean, in mm).
        threshold: probability an attention voxel must reach (below 0.5 so that a second-ranked
            organ still counts).
        fraction: where no voxel reaches ``threshold``, the region is the component of
            ``prob >= fraction * max(prob)`` holding the organ's most probable voxel.
        channel: what the masks hold (:data:`agcl.sampling.attention_maps.ATTENTION_CHANNELS`):
            ``"mask"`` bool; ``"probability"`` float16 ``0.5 + 0.5 * p / max(p)`` inside the
            region, ``max(p)`` the organ's highest probability in the volume (so the network
            sees where inside the region the organ is likeliest, even for an organ stage 1 is
            unsure of everywhere), 0 outside. The region is the same for both.
        body: a full-grid bool mask (e.g. :func:`agcl.data.body_mask`) the attention may not
            leave: the organ probabilities are zeroed on the coarse voxels outside it (so neither
            the threshold region nor the most probable region lies there) and every region is
            cut to it after the dilation. ``None``: no bound.

    Shape:
        prob: ``(K + 1, x, y, z)``; output ``{code: (box, mask)}``, ``mask.shape`` the box's.

    Examples:
        >>> import numpy as np
        >>> p = np.zeros((2, 4, 4, 1), np.float32)
        >>> p[0] = 0.9; p[1, 1, 1, 0] = 0.2; p[0, 1, 1, 0] = 0.8
        >>> att = attention_from_probabilities(p, [6], (8, 8, 1), spacing=(1, 1, 1), margin_mm=0)
        >>> # never the arg-max, still a 2 x 2 region on the full grid
        >>> att[6][0], int(att[6][1].sum())
        ((slice(2, 4, None), slice(2, 4, None), slice(0, 1, None)), 4)
    """
    p = (
        prob.detach().cpu().float().numpy()
        if isinstance(prob, torch.Tensor)
        else np.asarray(prob, np.float32)
    )
    if p.ndim != 4 or p.shape[0] != len(organ_ids) + 1:
        raise ValueError(
            f"prob must be (K + 1, x, y, z) with K = len(organ_ids) = {len(organ_ids)}; "
            f"got {p.shape}"
        )
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must lie in (0, 1]; got {threshold}")
    check_choice("channel", channel, ATTENTION_CHANNELS)
    from scipy import ndimage

    full = tuple(int(s) for s in full_shape)
    if body is not None:
        body = np.asarray(body, bool)
        if body.shape != full:
            raise ValueError(
                f"body must be a bool mask of the full grid {full}; got shape {body.shape}"
            )
        p = p * coarse_body(body, p.shape[1:])[None]
    grow = [int(math.ceil(margin_mm / s)) for s in spacing]
    out: Attention = {}
    for k, organ in enumerate(organ_ids, start=1):
        region = _coarse_region(p[k], threshold, fraction)
        if region is None:
            continue
        cbox = ndimage.find_objects(region.astype(np.int8))[0]
        fbox = [_full_indices(b.start, b.stop, c, f) for b, c, f in zip(cbox, p.shape[1:], full)]
        index = [_nearest_index(lo, hi, c, f) for (lo, hi), c, f in zip(fbox, p.shape[1:], full)]
        mask = region[np.ix_(*index)]
        box = tuple(slice(lo, hi) for lo, hi in fbox)
        if margin_mm > 0:
            big = tuple(
                slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, full)
            )
            inner = np.zeros(tuple(b.stop - b.start for b in big), bool)
            inner[tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, big))] = (
                mask
            )
            mask = (
                ndimage.distance_transform_edt(~inner, sampling=tuple(float(s) for s in spacing))
                <= margin_mm
            )
            box = big
        if body is not None:
            mask = mask & body[box]
            if not mask.any():
                continue
        if channel == "probability":
            index = [
                _nearest_index(b.start, b.stop, c, f) for b, c, f in zip(box, p.shape[1:], full)
            ]
            # relative to the organ's highest probability in the volume: an organ stage 1 is
            # unsure of everywhere still shows where it is likeliest (measured, docs/results.md)
            mask = graded(mask, p[k][np.ix_(*index)] / float(p[k].max()))
        out[int(organ)] = (box, mask)  # type: ignore[assignment]
    return out


def coarse_body(body: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """A full-grid body mask on a coarse grid: a coarse voxel is inside when any full voxel that
    reads it (nearest resampling, the rule of :func:`agcl.data.resample`) is.

    Examples:
        >>> b = np.zeros((4, 4, 1), bool); b[3, 3, 0] = True
        >>> coarse_body(b, (2, 2, 1))[:, :, 0].tolist()
        [[False, False], [False, True]]
    """
    out = np.asarray(body, bool)
    for axis, n in enumerate(shape):
        full = out.shape[axis]
        owner = np.clip(np.floor(np.arange(full) * int(n) / full).astype(np.int64), 0, int(n) - 1)
        moved = np.moveaxis(out, axis, 0)
        pooled = np.zeros((int(n), *moved.shape[1:]), bool)
        np.logical_or.at(pooled, owner, moved)
        out = np.moveaxis(pooled, 0, axis)
    return out


def attention_kinds(
    prob: np.ndarray | torch.Tensor,
    organ_ids: Sequence[int],
    *,
    threshold: float = 0.1,
    body: np.ndarray | None = None,
) -> dict[int, str]:
    """Where each organ's attention comes from (:func:`attention_from_probabilities`' rule):
    ``"threshold"`` (some voxel reaches ``threshold``), ``"fallback"`` (none does: the organ's
    most probable region, which may mean the organ is absent from the scan) or ``"none"``
    (probability 0 everywhere, inside ``body`` when given).

    Examples:
        >>> p = np.zeros((3, 2, 2, 1), np.float32); p[0] = 0.9; p[1, 0, 0] = 0.5; p[2, 1, 1] = 0.05
        >>> attention_kinds(p, [6, 7])
        {6: 'threshold', 7: 'fallback'}
    """
    p = (
        prob.detach().cpu().float().numpy()
        if isinstance(prob, torch.Tensor)
        else np.asarray(prob, np.float32)
    )
    if body is not None:
        p = p * coarse_body(body, p.shape[1:])[None]
    out = {}
    for k, organ in enumerate(organ_ids, start=1):
        top = float(p[k].max()) if p[k].size else 0.0
        out[int(organ)] = "threshold" if top >= threshold else "fallback" if top > 0 else "none"
    return out


def save_probabilities(
    path: str | os.PathLike[str],
    prob: torch.Tensor,
    organ_ids: Sequence[int],
    full_shape: Sequence[int],
) -> Path:
    """Write coarse probabilities (float16) atomically as a ``weights_only``-safe ``.pt``.

    Shape:
        prob: ``(K + 1, x, y, z)`` on the coarse grid; ``full_shape`` the image's ``(X, Y, Z)``.
    """
    from agcl._io import atomic_save

    return atomic_save(
        {
            "prob": prob.detach().cpu().to(torch.float16),
            "organ_ids": [int(i) for i in organ_ids],
            "full_shape": [int(s) for s in full_shape],
        },
        path,
    )


def load_probabilities(
    path: str | os.PathLike[str],
) -> tuple[torch.Tensor, list[int], tuple[int, ...]]:
    """``(prob float32, organ_ids, full_shape)`` from :func:`save_probabilities`' file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a damaged, cut-short or foreign file (the path is named).
    """
    from agcl._io import safe_load

    data = safe_load(path)
    if not isinstance(data, dict) or not {"prob", "organ_ids", "full_shape"} <= set(data):
        raise ValueError(
            f"{path} is not a coarse-probability file (a dict with 'prob', 'organ_ids' and "
            "'full_shape'); it is damaged or was written by something else"
        )
    prob = data["prob"]
    if (
        not isinstance(prob, torch.Tensor)
        or prob.ndim != 4
        or prob.shape[0] != len(data["organ_ids"]) + 1
    ):
        raise ValueError(
            f"{path} holds probabilities of shape {getattr(prob, 'shape', None)} for "
            f"{len(data['organ_ids'])} organs; expected (K + 1, x, y, z)"
        )
    return (
        prob.float(),
        [int(i) for i in data["organ_ids"]],
        tuple(int(s) for s in data["full_shape"]),
    )
