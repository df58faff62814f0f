"""The AGCL query-patch sampler: patches per organ and per slice, inside each organ's attention.

For every target organ and every slice where its attention is present, ``patches_per_slice``
centres are drawn uniformly over the attention's voxels on that slice (or over its bounding
box) and ``patch_size`` windows are cut from the image, the organ's binary attention and,
optionally, its binary ground truth.

One ``torch.nonzero`` over the volume finds every attention voxel; they are grouped by
(organ, slice) with one sort, centres are drawn for all groups at once and all windows are
gathered with one flat ``torch.take`` per channel (in chunks, to bound memory).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from agcl._validation import check_choice, check_generator, check_int
from agcl.sampling._centres import attention_groups, draw_centres
from agcl.sampling.windows import as_tensor, gather_windows, normalise_axis, pair

__all__ = ["AttentionPatchSampler", "PatchBatch"]

@dataclass
class PatchBatch:
    """Patches with their attention, optional ground truth and provenance.

    Shape:
        - image, attention: ``(P, 1, h, w)`` float32; attention is 0/1 (the target organ only).
        - label: ``(P, 1, h, w)`` float32 0/1 ground truth of the target organ, or ``None``.
        - target, modality, volume_index, slice_index: ``(P,)`` long.
        - centre: ``(P, 2)`` long, the in-plane centre (indices along the two non-slice axes).

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

    def __len__(self) -> int:
        return int(self.target.shape[0])

    def to(self, device: torch.device | str) -> PatchBatch:
        """A copy with every tensor on ``device``."""
        parts: dict[str, Any] = {f.name: None if getattr(self, f.name) is None else getattr(self, f.name).to(device)
                                 for f in fields(self)}
        return PatchBatch(**parts)

    def __getitem__(self, index: Any) -> PatchBatch:
        """The patches selected by ``index`` (an int, slice, index or boolean tensor)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        parts: dict[str, Any] = {f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                                 for f in fields(self)}
        return PatchBatch(**parts)

    def inputs(self, *, with_label: bool = False) -> torch.Tensor:
        """The network input: image and attention stacked, ``(P, 2, h, w)`` (3 with the label)."""
        parts = [self.image, self.attention]
        if with_label:
            if self.label is None:
                raise ValueError("with_label=True needs a batch sampled with label=...; this one has label=None")
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
        parts: dict[str, Any] = {f.name: None if getattr(batches[0], f.name) is None
                                 else torch.cat([getattr(b, f.name) for b in batches]) for f in fields(PatchBatch)}
        return PatchBatch(**parts)

    @staticmethod
    def empty(patch_size: int | Sequence[int], *, with_label: bool = False) -> PatchBatch:
        """A batch with no patches."""
        h, w = pair("patch_size", patch_size)
        img = torch.zeros(0, 1, h, w)
        long = torch.zeros(0, dtype=torch.long)
        return PatchBatch(img, img.clone(), img.clone() if with_label else None, long, long.clone(),
                          long.clone(), long.clone(), torch.zeros(0, 2, dtype=torch.long))


class AttentionPatchSampler:
    """Sample 2-D patches per organ and per slice inside each organ's attention.

    Args:
        patch_size: window size ``h`` or ``(h, w)`` in voxels (paper: 128).
        patches_per_slice: centres drawn per organ per slice where it is present (paper: 30).
        axis: the slice axis of the volumes (``-1``: axial slices of a RAS volume).
        centre_mode: ``"mask"`` draws centres uniformly over the attention's voxels on the
            slice; ``"bbox"`` uniformly over the integer points of its in-plane bounding box.
        margin: enlarge the sampling region by this many pixels in-plane (``"mask"``: a square
            dilation; ``"bbox"``: the box grows), clipped to the image.
        max_patches: cap on the patches of one volume; above it a uniform random subset is kept
            (in sampling order).
        image_pad_value: image value outside the volume; ``None`` uses the image's minimum.
            Masks are padded with 0.
        seed: seed of the sampler's own generator (repeated calls continue its stream).
        generator: a ``torch.Generator`` to use instead of ``seed``.

    Shape:
        ``sample`` takes ``image (D0, D1, D2)``; ``attention`` either an integer label map of
        the same shape (organ codes, 0 background) or a binary stack ``(K, D0, D1, D2)`` (one
        map per organ); ``label`` an integer label map ``(D0, D1, D2)``. Numpy or torch.

    References:
        Lee et al., Attention-Guided Supervised Contrastive Learning for Semantic Segmentation
        (AGCL): query-patch extraction, 30 patches per organ per axial slice, 128 x 128.

    Examples:
        >>> import torch
        >>> lab = torch.zeros(20, 20, 3, dtype=torch.long); lab[5:9, 5:9, 1] = 6; lab[12:15, 2:4, :2] = 2
        >>> s = AttentionPatchSampler(patch_size=8, patches_per_slice=4, seed=0)
        >>> b = s.sample(torch.randn(20, 20, 3), lab, label=lab, modality=1)
        >>> len(b), b.image.shape, b.target.tolist()
        (12, torch.Size([12, 1, 8, 8]), [2, 2, 2, 2, 2, 2, 2, 2, 6, 6, 6, 6])
        >>> bool((b.attention[:, 0, 4, 4] == 1).all())
        True
    """

    def __init__(
        self,
        patch_size: int | Sequence[int] = 128,
        patches_per_slice: int = 30,
        *,
        axis: int = -1,
        centre_mode: Literal["mask", "bbox"] = "mask",
        margin: int = 0,
        max_patches: int | None = None,
        image_pad_value: float | None = None,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.patch_size = pair("patch_size", patch_size)
        check_int("patches_per_slice", patches_per_slice, low=1)
        check_choice("centre_mode", centre_mode, ("mask", "bbox"))
        check_int("margin", margin, low=0)
        if max_patches is not None:
            check_int("max_patches", max_patches, low=0)
        check_generator("generator", generator)
        if seed is not None and generator is not None:
            raise ValueError("pass seed or generator, not both; got both")
        self.patches_per_slice = patches_per_slice
        self.axis = normalise_axis(axis)
        self.centre_mode = centre_mode
        self.margin = margin
        self.max_patches = max_patches
        self.image_pad_value = image_pad_value
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(seed) if seed is not None else generator.seed()
        self.generator = generator

    def __repr__(self) -> str:
        return (f"AttentionPatchSampler(patch_size={self.patch_size}, patches_per_slice={self.patches_per_slice}, "
                f"axis={self.axis}, centre_mode={self.centre_mode!r}, margin={self.margin}, max_patches={self.max_patches})")

    def sample(
        self,
        image: Any,
        attention: Any,
        label: Any = None,
        modality: int = 0,
        targets: Sequence[int] | None = None,
        volume_index: int = 0,
        *,
        generator: torch.Generator | None = None,
    ) -> PatchBatch:
        """Sample the patches of one volume.

        Args:
            image: the image volume ``(D0, D1, D2)``.
            attention: a label map of the same shape, or a binary stack ``(K, D0, D1, D2)``.
            label: optional ground-truth label map ``(D0, D1, D2)``.
            modality: the volume's modality id.
            targets: organ codes to sample. Label-map attention: default every code present;
                codes that are absent are skipped. Stack: the code of each of the ``K`` maps
                (default ``1..K``).
            volume_index: stored in ``PatchBatch.volume_index``.
            generator: overrides the sampler's generator for this call.

        Returns:
            A :class:`PatchBatch` on the CPU (inputs on another device are copied to the CPU
            first; use ``batch.to(device)``), ordered by organ code (map order for a stack),
            then slice. An empty batch (with a warning) when no target has attention.

        Raises:
            TypeError, ValueError: inputs of the wrong type, rank or shape (shapes printed),
                negative or non-integer codes in a label-map attention, or ``targets``
                inconsistent with a stack.
        """
        gen = check_generator("generator", generator) if generator is not None else self.generator
        img = as_tensor("image", image).cpu()  # sampling runs on the CPU; move the batch after
        if img.ndim != 3:
            raise ValueError(f"image must be a 3-D volume (D0, D1, D2); got shape {tuple(img.shape)}")
        shape = tuple(img.shape)
        att = as_tensor("attention", attention).cpu()
        if att.shape == shape or (att.ndim == 4 and tuple(att.shape[1:]) == shape):
            pass
        else:
            raise ValueError(f"attention must have the image's shape {shape} or (K, *{shape}); got shape {tuple(att.shape)}")
        if att.ndim == 3 and (att.is_floating_point() or att.is_complex()):
            _check_integral_codes(att)
        lab = None if label is None else att if label is attention else as_tensor("label", label).cpu()
        if lab is not None and tuple(lab.shape) != shape:
            raise ValueError(f"label must have the image's shape {shape}; got shape {tuple(lab.shape)}")
        if lab is not None and lab.is_floating_point():
            raise TypeError(f"label must be an integer label map; got dtype {lab.dtype}")
        groups, flat, starts, counts = attention_groups(att, targets, self.axis)
        centres, group = draw_centres(groups, flat, starts, counts, shape, gen, axis=self.axis,
                                      per_slice=self.patches_per_slice, mode=self.centre_mode,
                                      margin=self.margin)
        if self.max_patches is not None and centres.shape[0] > self.max_patches:
            keep = torch.randperm(centres.shape[0], generator=gen)[: self.max_patches].sort().values
            centres, group = centres[keep], group[keep]
        if centres.shape[0] == 0:
            want = "any organ" if targets is None else f"targets {list(targets)}"
            warnings.warn(f"no attention voxels for {want} in this volume (volume_index={volume_index}); "
                          "returning an empty PatchBatch", stacklevel=2)
            return PatchBatch.empty(self.patch_size, with_label=lab is not None)
        return self._cut(img, att, lab, centres, group, targets, modality, volume_index)

    def _cut(self, img: torch.Tensor, att: torch.Tensor, lab: torch.Tensor | None, centres: torch.Tensor,
             group: torch.Tensor, targets: Sequence[int] | None, modality: int, volume_index: int) -> PatchBatch:
        n_sl = img.shape[self.axis]
        slot = group // n_sl
        if att.ndim == 4:
            codes = torch.arange(1, att.shape[0] + 1) if targets is None else torch.tensor([int(t) for t in targets])
            target = codes[slot]
        else:
            target = slot
        # the image minimum is only computed when some window crosses the border
        pad: Any = (lambda: float(img.min())) if self.image_pad_value is None else float(self.image_pad_value)
        p = centres.shape[0]
        image = gather_windows(img, self.axis, centres, self.patch_size, pad).float()
        if att.ndim == 4:
            attention = torch.empty(image.shape, dtype=torch.bool)
            for ch in torch.unique(slot).tolist():  # one gather per organ map
                sel = torch.nonzero(slot == ch).squeeze(1)
                attention[sel] = gather_windows(att[ch], self.axis, centres[sel], self.patch_size, 0) != 0
        else:
            attention = _equals(gather_windows(att, self.axis, centres, self.patch_size, 0), target)
        label = None
        attention = attention.float().unsqueeze(1)
        if lab is not None and lab is att:  # ground truth used as attention: one gather serves both
            label = attention.clone()
        elif lab is not None:
            label = _equals(gather_windows(lab, self.axis, centres, self.patch_size, 0), target).float().unsqueeze(1)
        full = lambda v: torch.full((p,), int(v), dtype=torch.long)  # noqa: E731
        return PatchBatch(
            image=image.unsqueeze(1), attention=attention, label=label,
            target=target, modality=full(modality), volume_index=full(volume_index),
            slice_index=centres[:, 0].clone(), centre=centres[:, 1:].clone(),
        )


def _check_integral_codes(att: torch.Tensor) -> None:
    """A float label map must hold whole organ codes (``.long()`` would truncate 0.5 to 0)."""
    nz = att[att != 0]
    if nz.numel() and not bool((torch.isfinite(nz) & (nz == nz.round())).all()):
        bad = nz[~(torch.isfinite(nz) & (nz == nz.round()))][0].item()
        raise ValueError(
            "attention of the image's shape is a label map and must hold whole organ codes "
            f"(0 background); got the non-integer value {bad}. For soft or binary per-organ "
            "attention pass a (K, D0, D1, D2) stack (non-zero = inside)"
        )


def _equals(windows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``windows == target`` per patch, compared in the windows' own dtype (no upcast)."""
    if windows.dtype == torch.bool:
        return windows & (target == 1).view(-1, 1, 1)
    return windows == target.to(windows.dtype).view(-1, 1, 1)
