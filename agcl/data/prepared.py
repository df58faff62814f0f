"""Cases ready for training: loaded, checked, preprocessed, on demand and one at a time."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from agcl._validation import check_int, check_int_sequence
from agcl.data.cache import VolumeCache

__all__ = ["PreparedCase", "PreparedCases", "prepare_case", "resample"]


@dataclass
class PreparedCase:
    """One case ready for the stages.

    Attributes:
        case_id, modality (the integer id), modality_name: where it came from.
        image: ``(X, Y, Z)`` float32, canonical RAS, preprocessed.
        label: ``(X, Y, Z)`` uint8 organ codes (int16 when a code exceeds 255), or ``None``.
        spacing: voxel size in mm along the canonical axes.
        reference: the image's :class:`agcl.data.Volume` header and affines for
            :func:`agcl.data.save_like` (its ``array`` a zero-stride placeholder of the
            image's shape: the raw voxels are not kept).
        body: ``(X, Y, Z)`` bool, the patient's body (:func:`agcl.data.body_mask` of the HU
            image), when asked for (``prepare_case(..., body=True)``); else ``None``.
    """

    case_id: str
    modality: int
    modality_name: str
    image: np.ndarray
    label: np.ndarray | None
    spacing: tuple[float, float, float]
    reference: Any
    body: np.ndarray | None = None


def _compact_labels(label: np.ndarray) -> np.ndarray:
    top = int(label.max()) if label.size else 0
    return np.ascontiguousarray(
        label, dtype=np.uint8 if 0 <= top <= 255 and int(label.min()) >= 0 else np.int16
    )


def prepare_case(
    case: Any,
    modality: int,
    *,
    clip_hu: Sequence[float] | None = (-175.0, 250.0),
    percentiles: Sequence[float] | None = (1.0, 99.0),
    organs: Mapping[int, str] | None = None,
    unknown_labels: str = "error",
    body: bool = False,
) -> PreparedCase:
    """Load an :class:`agcl.data.Case` (grid and label codes checked) and preprocess its image.

    Args:
        case: the case (image path and optional label path).
        modality: its integer modality id.
        clip_hu, percentiles: :func:`agcl.data.preprocess_ct`'s window and normalisation.
        organs: the valid label codes (default: the BTCV organs).
        unknown_labels: :func:`agcl.data.load_case`'s handling of other codes.
        body: also keep the body mask (:func:`agcl.data.body_mask` of the HU image, before
            preprocessing), which bounds the attention at inference.
    """
    from agcl.data import load_case, preprocess_ct

    modality = check_int("modality", modality, low=0)
    kw: dict[str, Any] = {"unknown_labels": unknown_labels}
    if organs is not None:
        kw["organs"] = organs
    image, label = load_case(case, **kw)
    array = preprocess_ct(
        image.array,
        window=None if clip_hu is None else tuple(clip_hu),  # type: ignore[arg-type]
        percentiles=None if percentiles is None else tuple(percentiles),  # type: ignore[arg-type]
        source=getattr(case, "image_path", None),
    )
    shape = tuple(image.array.shape)
    mask = None
    if body:
        from agcl.data.body import body_mask

        mask = body_mask(image.array, spacing=image.spacing)
    reference = dataclasses.replace(image, array=np.broadcast_to(np.zeros((), np.float32), shape))
    return PreparedCase(
        case_id=str(case.case_id),
        modality=modality,
        modality_name=str(case.modality),
        image=np.ascontiguousarray(array, dtype=np.float32),
        label=None if label is None else _compact_labels(label.array),
        spacing=tuple(float(s) for s in image.spacing),  # type: ignore[arg-type]
        reference=reference,
        body=mask,
    )


class PreparedCases(Sequence[PreparedCase]):
    """A sequence of cases prepared on access (:func:`prepare_case`), optionally cached.

    Args:
        cases: :class:`agcl.data.Case` objects.
        modality_ids: one integer per case.
        cache: a :class:`VolumeCache` (shared or own) or ``None`` (load on every access).
        **prepare: :func:`prepare_case`'s keyword arguments.

    Examples:
        >>> PreparedCases([], []).cases
        []
    """

    def __init__(
        self,
        cases: Sequence[Any],
        modality_ids: Sequence[int],
        *,
        cache: VolumeCache | None = None,
        **prepare: Any,
    ) -> None:
        if len(cases) != len(modality_ids):
            raise ValueError(
                f"modality_ids must have one entry per case ({len(cases)}); got {len(modality_ids)}"
            )
        if cache is not None and not isinstance(cache, VolumeCache):
            raise TypeError(f"cache must be a VolumeCache or None; got {type(cache).__name__}")
        self.cases = list(cases)
        self.modality_ids = check_int_sequence("modality_ids", modality_ids, low=0)
        self.cache = cache
        self._prepare = prepare

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> PreparedCase:  # type: ignore[override]
        index = check_int("index", index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index = int(index) % len(self)

        def load() -> PreparedCase:
            return prepare_case(self.cases[index], self.modality_ids[index], **self._prepare)

        return load() if self.cache is None else self.cache.get(("prepared", id(self), index), load)


def resample(array: np.ndarray | torch.Tensor, shape: Sequence[int], *, mode: str) -> torch.Tensor:
    """Resize a 3-D volume (``"trilinear"`` for images, ``"nearest"`` for labels) to ``shape``.

    Examples:
        >>> resample(np.ones((4, 4, 2), np.float32), (2, 2, 1), mode="trilinear").shape
        torch.Size([2, 2, 1])
    """
    t = torch.as_tensor(array)
    dtype = t.dtype
    x = t[None, None].float()
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(x, size=tuple(int(s) for s in shape), mode=mode, **kwargs)[0, 0]
    return out if mode == "trilinear" else out.round().to(dtype)
