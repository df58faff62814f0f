"""Sparse per-organ attention: one bounding box and one mask inside it per organ.

An attention is a dict ``{organ code: (box, mask)}``: ``box`` a tuple of three slices into the
volume and ``mask`` an array of the box's shape: bool, or float (a *graded* attention, values in
``[0, 1]``, 0 outside; see :data:`ATTENTION_CHANNELS`). Thirteen organs of a 512 x 512 x 100 scan
need a few tens of MB this way instead of a dense ``(13, 512, 512, 100)`` stack (340 MB).
:class:`agcl.AttentionPatchSampler` and :class:`agcl.sampling.PatchStream` take it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from agcl._validation import check_choice

__all__ = [
    "ATTENTION_CHANNELS",
    "Attention",
    "attention_from_labels",
    "attention_recall",
    "densify",
    "organ_bboxes",
]

Box = tuple[slice, slice, slice]
Attention = dict[int, tuple[Box, np.ndarray]]

#: What an attention mask holds, i.e. what the network's attention channel sees:
#: ``"mask"`` -- bool, 1 inside the organ's dilated region (the paper's binary map);
#: ``"probability"`` -- float16, 0 outside the region and ``0.5 + 0.5 * p / max(p)`` inside it,
#: ``p`` the organ's coarse probability and ``max(p)`` its highest in the volume (from labels: 1
#: on the organ, 0.5 in the margin). The region, and so
#: where patches are drawn and predictions are kept, is the same for both.
ATTENTION_CHANNELS = ("mask", "probability")

_GRADED_FLOOR = 0.5  # the value of a graded attention where the organ is improbable but inside


def graded(region: np.ndarray, score: np.ndarray) -> np.ndarray:
    """The graded mask ``0.5 + 0.5 * score`` inside ``region`` (bool), 0 outside, as float16.

    Examples:
        >>> graded(np.array([True, True, False]), np.array([0.0, 1.0, 1.0])).tolist()
        [0.5, 1.0, 0.0]
    """
    value = _GRADED_FLOOR + (1.0 - _GRADED_FLOOR) * np.clip(np.asarray(score, np.float32), 0.0, 1.0)
    return np.where(region, value, 0.0).astype(np.float16)


def organ_bboxes(labels: np.ndarray, organ_ids: Sequence[int]) -> dict[int, tuple[slice, ...]]:
    """Bounding-box slices of every organ of ``organ_ids`` present in ``labels`` (one pass).

    Examples:
        >>> lab = np.zeros((5, 5, 2), np.uint8); lab[1:3, 2:4, 1] = 6
        >>> organ_bboxes(lab, [1, 6])
        {6: (slice(1, 3, None), slice(2, 4, None), slice(1, 2, None))}
    """
    from scipy import ndimage

    top = int(max(organ_ids)) if len(organ_ids) else 0
    lab = np.where((labels > 0) & (labels <= top), labels, 0).astype(np.int32)
    boxes = ndimage.find_objects(lab, max_label=top) if top else []
    return {int(k): boxes[int(k) - 1] for k in organ_ids if boxes[int(k) - 1] is not None}


def attention_from_labels(
    labels: np.ndarray,
    organ_ids: Sequence[int],
    *,
    margin_mm: float,
    spacing: Sequence[float],
    channel: str = "mask",
) -> Attention:
    """Per-organ attention of a label map: each organ's mask dilated by ``margin_mm``.

    The dilation is a Euclidean ball in mm (``spacing`` the voxel size), computed inside the
    organ's bounding box grown by the margin, never over the whole volume. ``channel``
    (:data:`ATTENTION_CHANNELS`): ``"mask"`` gives bool masks, ``"probability"`` float16 masks
    that are 1 on the organ and 0.5 in its margin.

    Shape:
        labels: ``(X, Y, Z)`` organ codes; output ``{code: (box, mask)}`` for the organs present.

    Examples:
        >>> lab = np.zeros((9, 9, 1), np.uint8); lab[4, 4, 0] = 2
        >>> box, mask = attention_from_labels(lab, [2], margin_mm=1.0, spacing=(1, 1, 1))[2]
        >>> box[:2], int(mask.sum())  # the voxel and its 4 neighbours within 1 mm
        ((slice(3, 6, None), slice(3, 6, None)), 5)
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    check_choice("channel", channel, ATTENTION_CHANNELS)
    if margin_mm < 0 or not math.isfinite(margin_mm):
        raise ValueError(f"margin_mm must be a finite number >= 0; got {margin_mm}")
    grow = [int(math.ceil(margin_mm / float(s))) for s in spacing]
    out: Attention = {}
    for organ, box in organ_bboxes(labels, organ_ids).items():
        big = tuple(
            slice(max(b.start - g, 0), min(b.stop + g, n))
            for b, g, n in zip(box, grow, labels.shape)
        )
        organ_mask = labels[big] == organ
        mask = organ_mask
        if margin_mm > 0:
            mask = (
                ndimage.distance_transform_edt(
                    ~organ_mask, sampling=tuple(float(s) for s in spacing)
                )
                <= margin_mm
            )
        if channel == "probability":
            mask = graded(mask, organ_mask)
        out[int(organ)] = (big, mask)  # type: ignore[assignment]
    return out


def densify(
    attention: Mapping[int, tuple[Box, np.ndarray]], organ_ids: Sequence[int], shape: Sequence[int]
) -> np.ndarray:
    """The dense ``(K, X, Y, Z)`` stack of a sparse attention (for code that needs one).

    bool, or float16 if any mask is graded (float).

    Examples:
        >>> att = {3: ((slice(0, 1), slice(0, 2), slice(0, 1)), np.ones((1, 2, 1), bool))}
        >>> densify(att, [1, 3], (2, 2, 1)).sum(axis=(1, 2, 3)).tolist()
        [0, 2]
    """
    floating = any(
        np.asarray(attention[int(o)][1]).dtype.kind == "f" for o in organ_ids if int(o) in attention
    )
    out = np.zeros((len(organ_ids), *(int(s) for s in shape)), np.float16 if floating else bool)
    for k, organ in enumerate(organ_ids):
        if int(organ) in attention:
            box, mask = attention[int(organ)]
            out[k][box] = mask
    return out


def attention_recall(
    attention: Mapping[int, tuple[Box, np.ndarray]], labels: np.ndarray, organ_ids: Sequence[int]
) -> dict[int, float | None]:
    """Fraction of each organ's ground-truth voxels inside its attention (``None``: organ absent).

    Examples:
        >>> lab = np.zeros((4, 4, 1), np.uint8); lab[0, :2, 0] = 5; lab[3, 3, 0] = 7
        >>> att = {5: ((slice(0, 1), slice(0, 1), slice(0, 1)), np.ones((1, 1, 1), bool))}
        >>> attention_recall(att, lab, [5, 6, 7])
        {5: 0.5, 6: None, 7: 0.0}
    """
    out: dict[int, float | None] = {}
    boxes = organ_bboxes(labels, organ_ids)
    for organ in organ_ids:
        if int(organ) not in boxes:
            out[int(organ)] = None
            continue
        gt_box = boxes[int(organ)]
        total = int((labels[gt_box] == organ).sum())
        if int(organ) not in attention:
            out[int(organ)] = 0.0
            continue
        box, mask = attention[int(organ)]
        out[int(organ)] = float(((labels[box] == organ) & (np.asarray(mask) != 0)).sum()) / total
    return out
