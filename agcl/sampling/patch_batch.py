"""A batch of patches: image, attention, optional ground truth and where each patch came from.

:class:`PatchBatch` is what :class:`agcl.sampling.AttentionPatchSampler` cuts and
:class:`agcl.sampling.PatchStream` yields; it moves between devices, pins its memory, indexes
and concatenates like one tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from agcl._validation import check_int, is_int
from agcl.sampling.windows import pair

__all__ = ["PatchBatch"]


@dataclass
class PatchBatch:
    """Patches with their attention, optional ground truth and provenance.

    Shape:
        - image: ``(P, C, h, w)`` float32 (``C = 1`` for a single-channel volume).
        - attention: ``(P, 1, h, w)`` float32 (the target organ only): 0/1, or a sparse
          attention's float mask values in ``[0, 1]``.
        - label: ``(P, 1, h, w)`` float32 0/1 ground truth of the target organ, or ``None``.
        - target, modality, volume_index, slice_index: ``(P,)`` long.
        - centre: ``(P, 2)`` long, the in-plane centre (indices along the two non-slice axes).
        - ignore: ``(P, 1, h, w)`` bool, pixels to leave out of the loss (e.g. VOC's void
          label; outside the volume counts as ignored), or ``None``.

    Examples:
        >>> a = PatchBatch.empty(8, with_label=True)
        >>> len(a), a.inputs(with_label=True).shape
        (0, torch.Size([0, 3, 8, 8]))
        >>> len(PatchBatch.cat([a, a]))
        0
    """

    image: torch.Tensor
    attention: torch.Tensor
    label: torch.Tensor | None
    target: torch.Tensor
    modality: torch.Tensor
    volume_index: torch.Tensor
    slice_index: torch.Tensor
    centre: torch.Tensor
    ignore: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str) -> PatchBatch:
        """A copy with every tensor on ``device``."""
        parts: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
            for f in fields(self)
        }
        return PatchBatch(**parts)

    def pin_memory(self) -> PatchBatch:
        """A copy in pinned memory (what ``DataLoader(pin_memory=True)`` calls)."""
        parts: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name).pin_memory()
            for f in fields(self)
        }
        return PatchBatch(**parts)

    def __getitem__(self, index: Any) -> PatchBatch:
        """The patches selected by ``index`` (an int, slice, index or boolean tensor)."""
        if is_int(index):  # a Python or numpy int: keep the patch dimension
            index = int(index)
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        parts: dict[str, Any] = {
            f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
            for f in fields(self)
        }
        return PatchBatch(**parts)

    def inputs(self, *, with_label: bool = False) -> torch.Tensor:
        """The network input: image and attention stacked, ``(P, C + 1, h, w)`` (``C + 2`` with
        the label)."""
        parts = [self.image, self.attention]
        if with_label:
            if self.label is None:
                raise ValueError(
                    "with_label=True needs a batch sampled with label=...; this one has label=None"
                )
            parts.append(self.label)
        return torch.cat(parts, 1)

    @staticmethod
    def cat(batches: Sequence[PatchBatch]) -> PatchBatch:
        """Concatenate batches (e.g. from several volumes) into one.

        Raises:
            ValueError: no batches, different patch sizes, or some with labels and some without.
        """
        if len(batches) == 0:
            raise ValueError("batches must hold at least one PatchBatch; got an empty sequence")
        sizes = {tuple(b.image.shape[2:]) for b in batches}
        if len(sizes) > 1:
            raise ValueError(f"batches must share one patch size; got {sorted(sizes)}")
        has = {b.label is not None for b in batches}
        if len(has) > 1:
            raise ValueError("batches must all have labels or all have label=None; got a mix")
        if len({b.ignore is not None for b in batches}) > 1:
            raise ValueError(
                "batches must all have an ignore mask or all have ignore=None; got a mix"
            )
        parts: dict[str, Any] = {
            f.name: None
            if getattr(batches[0], f.name) is None
            else torch.cat([getattr(b, f.name) for b in batches])
            for f in fields(PatchBatch)
        }
        return PatchBatch(**parts)

    @staticmethod
    def empty(
        patch_size: int | Sequence[int], *, with_label: bool = False, channels: int = 1
    ) -> PatchBatch:
        """A batch with no patches (``channels`` image channels)."""
        h, w = pair("patch_size", patch_size)
        img = torch.zeros(0, 1, h, w)
        long = torch.zeros(0, dtype=torch.long)
        channels = check_int("channels", channels, low=1)
        return PatchBatch(
            torch.zeros(0, channels, h, w),
            img.clone(),
            img.clone() if with_label else None,
            long,
            long.clone(),
            long.clone(),
            long.clone(),
            torch.zeros(0, 2, dtype=torch.long),
        )
