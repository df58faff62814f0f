"""Private helpers: prepared (loaded + preprocessed) cases, resampling, attention maps."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

__all__ = [
    "LazyCases",
    "PreparedCase",
    "attention_from_labels",
    "organ_bboxes",
    "prepare_case",
    "resample",
]


@dataclass
class PreparedCase:
    """One case ready for the stages: the normalised image, labels and where it came from."""

    case_id: str
    modality: int
    modality_name: str
    image: np.ndarray  # float32, canonical RAS, preprocessed
    label: np.ndarray | None  # int16 organ codes or None
    spacing: tuple[float, float, float]
    reference: Any  # agcl.data.Volume of the image (for save_like)


def prepare_case(case: Any, modality: int, *, clip_hu: Sequence[float] | None,
                 percentiles: Sequence[float] | None, organs: Mapping[int, str]) -> PreparedCase:
    """Load a :class:`agcl.data.Case` (grid and label codes checked) and preprocess its image."""
    from agcl.data import load_case, preprocess_ct

    image, label = load_case(case, organs=organs)
    array = preprocess_ct(
        image.array,
        window=(float(clip_hu[0]), float(clip_hu[1])) if clip_hu is not None else None,
        percentiles=(float(percentiles[0]), float(percentiles[1])) if percentiles is not None else None,
        source=getattr(case, "image_path", None),
    )
    return PreparedCase(
        case_id=str(case.case_id),
        modality=int(modality),
        modality_name=str(case.modality),
        image=np.ascontiguousarray(array, dtype=np.float32),
        label=None if label is None else np.ascontiguousarray(label.array, dtype=np.int16),
        spacing=tuple(float(s) for s in image.spacing),  # type: ignore[arg-type]
        reference=image,
    )


class LazyCases(Sequence[PreparedCase]):
    """A sequence of cases loaded on first access, keeping the ``cache`` most recent in memory."""

    def __init__(self, cases: Sequence[Any], modality_ids: Sequence[int], *, clip_hu: Sequence[float] | None,
                 percentiles: Sequence[float] | None, organs: Mapping[int, str], cache: int = 64) -> None:
        if len(cases) != len(modality_ids):
            raise ValueError(f"modality_ids must have one entry per case ({len(cases)}); got {len(modality_ids)}")
        self.cases = list(cases)
        self.modality_ids = [int(m) for m in modality_ids]
        self._kw = {"clip_hu": clip_hu, "percentiles": percentiles, "organs": dict(organs)}
        self._cache: OrderedDict[int, PreparedCase] = OrderedDict()
        self._size = max(1, int(cache))

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> PreparedCase:  # type: ignore[override]
        if index < 0:
            index += len(self)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        item = prepare_case(self.cases[index], self.modality_ids[index], **self._kw)  # type: ignore[arg-type]
        self._cache[index] = item
        while len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return item


def resample(array: np.ndarray | torch.Tensor, shape: Sequence[int], *, mode: str) -> torch.Tensor:
    """Resize a 3-D volume (``"trilinear"`` for images, ``"nearest"`` for labels) to ``shape``."""
    t = torch.as_tensor(array)
    dtype = t.dtype
    x = t[None, None].float()
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(x, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0, 0]
    return out if mode == "trilinear" else out.round().to(dtype)


def organ_bboxes(labels: np.ndarray, organ_ids: Sequence[int]) -> dict[int, tuple[slice, ...]]:
    """Bounding-box slices of every organ present in ``labels`` (one ``find_objects`` pass)."""
    top = int(max(organ_ids)) if len(organ_ids) else 0
    lab = np.where((labels > 0) & (labels <= top), labels, 0).astype(np.int32)
    boxes = ndimage.find_objects(lab, max_label=top)
    return {int(k): boxes[int(k) - 1] for k in organ_ids if boxes[int(k) - 1] is not None}


def attention_from_labels(labels: np.ndarray, organ_ids: Sequence[int], *, margin_mm: float,
                          spacing: Sequence[float]) -> np.ndarray:
    """Per-organ attention: each organ's mask dilated by ``margin_mm`` (a Euclidean ball in mm).

    Shape:
        labels: ``(X, Y, Z)`` organ codes; output ``(K, X, Y, Z)`` bool, one map per organ id
        (all False for an organ absent from ``labels``).
    """
    out = np.zeros((len(organ_ids), *labels.shape), dtype=bool)
    boxes = organ_bboxes(labels, organ_ids)
    grow = [int(math.ceil(margin_mm / s)) for s in spacing]
    for k, organ in enumerate(organ_ids):
        box = boxes.get(int(organ))
        if box is None:
            continue
        big = tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, grow, labels.shape))
        mask = labels[big] == organ
        if margin_mm > 0:
            dist = ndimage.distance_transform_edt(~mask, sampling=tuple(spacing))
            mask = dist <= margin_mm
        out[k][big] = mask
    return out
