"""The AGCL query-patch sampler: patches per organ and per slice, inside each organ's attention.

For every target organ and every slice where its attention is present, ``patches_per_slice``
centres are drawn uniformly over the attention's voxels on that slice (or over its bounding
box) and ``patch_size`` windows are cut from the image, the organ's attention (binary; a sparse
attention's float masks are cut with their values, a graded attention channel) and, optionally,
its binary ground truth.

One ``torch.nonzero`` over the volume finds every attention voxel; they are grouped by
(organ, slice) with one sort, centres are drawn for all groups at once and all windows are
gathered with one flat ``torch.take`` per channel (in chunks, to bound memory).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch

from agcl._validation import (
    check_choice,
    check_finite_real,
    check_generator,
    check_int,
    check_int_sequence,
    is_int,
)
from agcl.sampling._centres import attention_groups, draw_centres
from agcl.sampling.windows import as_tensor, gather_windows, normalise_axis, pair

__all__ = ["AttentionPatchSampler", "PatchBatch"]


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
        """The network input: image and attention stacked, ``(P, C + 1, h, w)`` (``C + 2`` with the label)."""
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
        the same shape (organ codes, 0 background) or a stack ``(K, D0, D1, D2)`` (one map per
        organ: bool/integer binary, float graded in ``[0, 1]``); ``label`` an integer label map
        ``(D0, D1, D2)``. Numpy or torch.

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
        self.patches_per_slice = check_int("patches_per_slice", patches_per_slice, low=1)
        self.centre_mode = check_choice("centre_mode", centre_mode, ("mask", "bbox"))
        self.margin = check_int("margin", margin, low=0)
        self.max_patches = (
            None if max_patches is None else check_int("max_patches", max_patches, low=0)
        )
        check_generator("generator", generator)
        if seed is not None and generator is not None:
            raise ValueError("pass seed or generator, not both; got both")
        if seed is not None:  # torch.Generator seeds are 64-bit: a larger one would overflow
            seed = check_int("seed", seed, low=0, high=2**64 - 1)
        if image_pad_value is not None:
            image_pad_value = check_finite_real("image_pad_value", image_pad_value)
        self.axis = normalise_axis(axis)
        self.image_pad_value = image_pad_value
        if generator is None:
            generator = torch.Generator()
            generator.manual_seed(seed) if seed is not None else generator.seed()
        self.generator = generator

    def __repr__(self) -> str:
        return (
            f"AttentionPatchSampler(patch_size={self.patch_size}, patches_per_slice={self.patches_per_slice}, "
            f"axis={self.axis}, centre_mode={self.centre_mode!r}, margin={self.margin}, max_patches={self.max_patches})"
        )

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
        """Sample the patches of one volume (:meth:`plan` then :meth:`cut`).

        Args:
            image: the image volume ``(D0, D1, D2)``, or ``(C, D0, D1, D2)`` with channels.
            attention: a label map of the image's shape, a stack ``(K, D0, D1, D2)`` (bool or
                integer: binary; float: graded values in ``[0, 1]``, kept in the attention
                channel, inside where non-zero), or sparse ``{code: (box, mask)}`` (``box``
                three slices, ``mask`` a bool array of the box's shape, or a float one in
                ``[0, 1]`` whose values the attention channel keeps; see :meth:`plan`).
            label: optional ground-truth label map ``(D0, D1, D2)``.
            modality: the volume's modality id.
            targets: organ codes to sample. Label-map attention: default every code present;
                codes that are absent are skipped. Stack: the code of each of the ``K`` maps
                (default ``1..K``). Sparse: a subset of its keys (default all, sorted).
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
        modality = check_int("modality", modality, low=0)
        volume_index = check_int("volume_index", volume_index, low=0)
        targets = None if targets is None else check_int_sequence("targets", targets)
        img = self._image(image)
        shape = tuple(img.shape[-3:])
        if not isinstance(attention, Mapping):
            attention = as_tensor("attention", attention).cpu()
            label = attention if label is not None and label is attention else label
        _label_tensor(label, attention, attention, shape)  # refuse a bad label before any work
        centres, target = self.plan(attention, shape, targets, generator=generator)
        if centres.shape[0] == 0:
            want = "any organ" if targets is None else f"targets {list(targets)}"
            warnings.warn(
                f"no attention voxels for {want} in this volume (volume_index={volume_index}); "
                "returning an empty PatchBatch",
                stacklevel=2,
            )
            return PatchBatch.empty(
                self.patch_size, with_label=label is not None, channels=img.shape[0]
            )
        return self.cut(
            img,
            attention,
            centres,
            target,
            label=label,
            modality=modality,
            volume_index=volume_index,
            targets=targets,
        )

    def _image(self, image: Any) -> torch.Tensor:
        img = as_tensor("image", image).cpu()  # sampling runs on the CPU; move the batch after
        if img.ndim == 3:
            img = img.unsqueeze(0)
        if img.ndim != 4:
            raise ValueError(
                f"image must be a 3-D volume (D0, D1, D2) or (C, D0, D1, D2); got shape {tuple(img.shape)}"
            )
        return img

    def plan(
        self,
        attention: Any,
        shape: Sequence[int],
        targets: Sequence[int] | None = None,
        *,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a volume's patch centres without cutting any window.

        Args:
            attention: a label map of ``shape``, a stack ``(K, *shape)`` (non-zero = inside),
                or sparse ``{code: (box, mask)}``: ``box`` a tuple of three slices into the volume and
                ``mask`` a bool array of the box's shape, the organ's attention inside it (no
                dense map of every organ is ever built); a float mask (values in ``[0, 1]``)
                counts as inside where it is non-zero and :meth:`cut` keeps its values.
            shape: the volume's shape ``(D0, D1, D2)``.
            targets: as in :meth:`sample`.
            generator: overrides the sampler's generator for this call.

        Returns:
            ``(centres, target)``: ``(P, 3)`` long centres as (slice, i, j) (``i``, ``j`` along
            the two in-plane axes in order) and ``(P,)`` long organ codes, in the order of
            :meth:`sample`. ``max_patches`` is applied.

        Examples:
            >>> import numpy as np
            >>> box = (slice(2, 6), slice(2, 6), slice(0, 2))
            >>> s = AttentionPatchSampler(patch_size=4, patches_per_slice=3, seed=0)
            >>> c, t = s.plan({5: (box, np.ones((4, 4, 2), bool))}, (10, 10, 3))
            >>> c.shape, t.tolist(), bool(((c[:, 1:] >= 2) & (c[:, 1:] < 6)).all())
            (torch.Size([6, 3]), [5, 5, 5, 5, 5, 5], True)
        """
        gen = check_generator("generator", generator) if generator is not None else self.generator
        shape = tuple(check_int_sequence("shape", shape, low=0))
        if len(shape) != 3:
            raise ValueError(f"shape must be a 3-D volume shape (D0, D1, D2); got {shape}")
        targets = None if targets is None else check_int_sequence("targets", targets)
        if isinstance(attention, Mapping):
            centres, target = self._plan_sparse(attention, shape, targets, gen)
        else:
            att = as_tensor("attention", attention).cpu()
            if not (tuple(att.shape) == shape or (att.ndim == 4 and tuple(att.shape[1:]) == shape)):
                raise ValueError(
                    f"attention must have the image's shape {shape} or (K, *{shape}); got shape {tuple(att.shape)}"
                )
            if att.ndim == 3 and (att.is_floating_point() or att.is_complex()):
                _check_integral_codes(att)
            groups, flat, starts, counts = attention_groups(att, targets, self.axis)
            centres, group = draw_centres(
                groups,
                flat,
                starts,
                counts,
                shape,
                gen,
                axis=self.axis,
                per_slice=self.patches_per_slice,
                mode=self.centre_mode,
                margin=self.margin,
            )
            slot = group // shape[self.axis]
            if att.ndim == 4:
                codes = (
                    torch.arange(1, att.shape[0] + 1) if targets is None else torch.tensor(targets)
                )
                target = codes[slot] if slot.numel() else slot
            else:
                target = slot
        if self.max_patches is not None and centres.shape[0] > self.max_patches:
            keep = torch.randperm(centres.shape[0], generator=gen)[: self.max_patches].sort().values
            centres, target = centres[keep], target[keep]
        return centres, target.long()

    def _plan_sparse(
        self,
        attention: Mapping[int, Any],
        shape: tuple[int, ...],
        targets: Sequence[int] | None,
        gen: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        codes = sorted(_sparse_codes(attention)) if targets is None else list(targets)
        a = self.axis
        b, c = (d for d in range(3) if d != a)
        out_c, out_t = [torch.zeros(0, 3, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
        for code in codes:
            if code not in attention:
                continue
            box, mask = _sparse_entry(attention, code, shape)
            mask = mask != 0  # where patches may be centred (a graded mask: wherever it is > 0)
            # grow the box in-plane by the sampler's margin so the margin is not clipped at its edge
            grown = [
                slice(
                    max(box[d].start - (self.margin if d != a else 0), 0),
                    min(box[d].stop + (self.margin if d != a else 0), shape[d]),
                )
                for d in range(3)
            ]
            if grown != list(box):
                big = torch.zeros([g.stop - g.start for g in grown], dtype=torch.bool)
                big[
                    tuple(
                        slice(box[d].start - grown[d].start, box[d].stop - grown[d].start)
                        for d in range(3)
                    )
                ] = mask
                mask = big
            sub = tuple(int(g.stop - g.start) for g in grown)
            groups, flat, starts, counts = attention_groups(mask, None, a)
            cen, _ = draw_centres(
                groups,
                flat,
                starts,
                counts,
                sub,
                gen,
                axis=a,
                per_slice=self.patches_per_slice,
                mode=self.centre_mode,
                margin=self.margin,
            )
            out_c.append(cen + torch.tensor([grown[a].start, grown[b].start, grown[c].start]))
            out_t.append(torch.full((cen.shape[0],), code, dtype=torch.long))
        return torch.cat(out_c), torch.cat(out_t)

    def pad_attention(
        self, attention: Mapping[int, Any], shape: Sequence[int], *, codes: Any = None
    ) -> Mapping[int, Any]:
        """A sparse attention with each mask zero-padded in-plane by half a patch, for :meth:`cut`.

        Every window then lies inside its padded mask, so it is read with one strided gather;
        pad once per volume when cutting its patches in many chunks. ``codes`` restricts it to
        those organs.
        """
        shape = tuple(check_int_sequence("shape", shape, low=0))
        a = self.axis
        b, c = (d for d in range(3) if d != a)
        grow = {a: 0, b: self.patch_size[0] // 2 + 1, c: self.patch_size[1] // 2 + 1}
        wanted = (
            None
            if codes is None
            else set(check_int_sequence("codes", torch.as_tensor(codes).unique()))
        )
        out = _PaddedSparse()
        for code in _sparse_codes(attention):
            if wanted is not None and int(code) not in wanted:
                continue
            box, mask = _sparse_entry(attention, int(code), shape)
            big = torch.zeros([mask.shape[d] + 2 * grow[d] for d in range(3)], dtype=mask.dtype)
            big[tuple(slice(grow[d], grow[d] + mask.shape[d]) for d in range(3))] = mask
            origin = torch.tensor(
                [box[a].start - grow[a], box[b].start - grow[b], box[c].start - grow[c]]
            )
            out[int(code)] = (origin, big)
        return out

    def cut(
        self,
        image: Any,
        attention: Any,
        centres: torch.Tensor,
        target: torch.Tensor,
        *,
        label: Any = None,
        modality: int = 0,
        volume_index: int = 0,
        targets: Sequence[int] | None = None,
        pad_value: float | None = None,
        ignore: Any = None,
    ) -> PatchBatch:
        """Cut the windows at ``centres`` (from :meth:`plan`; any subset, in any order).

        Cutting a volume's planned centres in chunks bounds the memory of a volume with many
        patches (:class:`agcl.sampling.PatchStream` does this).

        Args:
            image: ``(D0, D1, D2)`` or ``(C, D0, D1, D2)``.
            attention: the attention given to :meth:`plan`.
            centres, target: ``(P, 3)`` and ``(P,)`` from :meth:`plan`.
            label: optional integer label map ``(D0, D1, D2)``; each patch's label is the mask
                of its own target organ.
            modality, volume_index: stored in the batch.
            targets: for a ``(K, ...)`` stack, the code of each map (as given to :meth:`plan`;
                default ``1..K``).
            pad_value: the image value outside the volume (default: the sampler's
                ``image_pad_value``, else the image's minimum; pass it when cutting one volume
                in many chunks to compute it once).
            ignore: optional bool map ``(D0, D1, D2)`` of pixels to leave out of the loss;
                cut into ``PatchBatch.ignore`` (outside the volume: ignored).

        Shape:
            Output image ``(P, C, h, w)``; attention and label ``(P, 1, h, w)``.
        """
        modality = check_int("modality", modality, low=0)
        volume_index = check_int("volume_index", volume_index, low=0)
        targets = None if targets is None else check_int_sequence("targets", targets)
        img = self._image(image)
        shape = tuple(img.shape[1:])
        att = (
            attention if isinstance(attention, Mapping) else as_tensor("attention", attention).cpu()
        )
        lab = _label_tensor(label, attention, att, shape)
        centres, target = torch.as_tensor(centres), torch.as_tensor(target)
        for name, value in (("centres", centres), ("target", target)):
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{name} must hold integers (from plan()); got dtype {value.dtype}")
        centres, target = centres.long(), target.long()
        if centres.ndim != 2 or centres.shape[1] != 3 or target.shape != (centres.shape[0],):
            raise ValueError(
                f"centres must be (P, 3) and target (P,); got {tuple(centres.shape)} and {tuple(target.shape)}"
            )
        if centres.shape[0] == 0:
            return PatchBatch.empty(
                self.patch_size, with_label=lab is not None, channels=img.shape[0]
            )
        # the image minimum is only computed when some window crosses the border
        if pad_value is None and self.image_pad_value is not None:
            pad_value = self.image_pad_value
        pad: Any = (
            (lambda: float(img.min()))
            if pad_value is None
            else check_finite_real("pad_value", pad_value)
        )
        p = centres.shape[0]
        image_w = torch.stack(
            [
                gather_windows(img[ch], self.axis, centres, self.patch_size, pad)
                for ch in range(img.shape[0])
            ],
            1,
        ).float()
        win = (p, *self.patch_size)
        if isinstance(attention, Mapping):
            padded = (
                attention
                if isinstance(attention, _PaddedSparse)
                else self.pad_attention(attention, shape, codes=target)
            )
            wanted = torch.unique(target).tolist()
            graded = any(padded[int(c)][1].is_floating_point() for c in wanted if int(c) in padded)
            attention_w = torch.zeros(win, dtype=torch.float16 if graded else torch.bool)
            for code in wanted:
                if int(code) not in padded:
                    raise ValueError(f"target {code} has no entry in the sparse attention")
                origin, mask = padded[int(code)]
                sel = torch.nonzero(target == code).squeeze(1)
                rel = centres[sel] - origin
                inside = (rel[:, 0] >= 0) & (rel[:, 0] < mask.shape[self.axis])
                if not bool(inside.all()):
                    raise ValueError(
                        f"centres of organ {code} must lie on the slices of its attention box; got some outside"
                    )
                attention_w[sel] = gather_windows(
                    mask, self.axis, rel, self.patch_size, 0 if graded else False
                ).to(attention_w.dtype)
        else:
            if att.ndim == 4:
                graded = att.is_floating_point()  # a float stack is cut with its values
                attention_w = torch.empty(win, dtype=torch.float32 if graded else torch.bool)
                if targets is not None and len(targets) != att.shape[0]:
                    raise ValueError(
                        f"targets must give one code per attention map (K={att.shape[0]}); got {len(targets)}"
                    )
                codes = (
                    torch.arange(1, att.shape[0] + 1) if targets is None else torch.tensor(targets)
                )
                for ch in range(att.shape[0]):  # one gather per organ map
                    sel = torch.nonzero(target == codes[ch]).squeeze(1)
                    if sel.numel():
                        w = gather_windows(att[ch], self.axis, centres[sel], self.patch_size, 0)
                        if graded:
                            _check_unit_range(w, f"attention map {ch}'s")
                        attention_w[sel] = w.float() if graded else w != 0
            else:
                attention_w = _equals(
                    gather_windows(att, self.axis, centres, self.patch_size, 0), target
                )
        attention_f = attention_w.float().unsqueeze(1)
        label_w = None
        if lab is not None and lab is att:  # ground truth used as attention: one gather serves both
            label_w = attention_f.clone()
        elif lab is not None:
            label_w = (
                _equals(gather_windows(lab, self.axis, centres, self.patch_size, 0), target)
                .float()
                .unsqueeze(1)
            )
        ignore_w = None
        if ignore is not None:
            ign = as_tensor("ignore", ignore).cpu()
            if tuple(ign.shape) != shape:
                raise ValueError(
                    f"ignore must have the image's shape {shape}; got shape {tuple(ign.shape)}"
                )
            ignore_w = (
                gather_windows(
                    ign if ign.dtype == torch.bool else ign != 0,
                    self.axis,
                    centres,
                    self.patch_size,
                    True,
                )
            ).unsqueeze(1)
        full = lambda v: torch.full((p,), int(v), dtype=torch.long)  # noqa: E731
        return PatchBatch(
            image=image_w,
            attention=attention_f,
            label=label_w,
            target=target.clone(),
            modality=full(modality),
            volume_index=full(volume_index),
            slice_index=centres[:, 0].clone(),
            centre=centres[:, 1:].clone(),
            ignore=ignore_w,
        )


class _PaddedSparse(dict):
    """``{code: (origin (3,) in (slice, i, j) order, padded bool mask)}`` from :meth:`AttentionPatchSampler.pad_attention`."""


def _label_tensor(
    label: Any, attention: Any, att: Any, shape: tuple[int, ...]
) -> torch.Tensor | None:
    """``label`` as a checked CPU tensor (``att`` itself when the label is the attention)."""
    if label is None:
        return None
    if label is attention and not isinstance(attention, Mapping):
        lab = att
    else:
        lab = as_tensor("label", label).cpu()
    if tuple(lab.shape) != shape:
        raise ValueError(f"label must have the image's shape {shape}; got shape {tuple(lab.shape)}")
    if lab.is_floating_point():
        raise TypeError(f"label must be an integer label map; got dtype {lab.dtype}")
    return lab


def _sparse_codes(attention: Mapping[Any, Any]) -> list[int]:
    """The organ codes (keys) of a sparse attention, which must be integers (2.7 is refused, not
    truncated to 2)."""
    codes = list(attention)
    bad = [k for k in codes if not is_int(k)]
    if bad:
        raise TypeError(
            f"a sparse attention's keys must be integer organ codes; got {bad[0]!r} "
            f"({type(bad[0]).__name__})"
        )
    return [int(k) for k in codes]


def _sparse_entry(
    attention: Mapping[int, Any], code: int, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], torch.Tensor]:
    """``(box, mask)`` of ``code`` in a sparse attention, checked against the volume ``shape``.

    The mask comes back bool (integer masks: non-zero), or float16 for a float (graded) mask.
    """
    entry = attention[code]
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
        raise TypeError(f"attention[{code}] must be a (box, mask) pair; got {type(entry).__name__}")
    box, mask = entry
    if len(box) != 3 or not all(isinstance(s, slice) for s in box):
        raise TypeError(f"attention[{code}]'s box must be a tuple of three slices; got {box!r}")
    if any(s.step not in (None, 1) for s in box):
        raise ValueError(f"attention[{code}]'s box must use unit steps; got {box!r}")
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, shape))
    m = as_tensor(f"attention[{code}] mask", mask).cpu()
    want = tuple(s.stop - s.start for s in box)
    if tuple(m.shape) != want:
        raise ValueError(
            f"attention[{code}]'s mask must have its box's shape {want}; got {tuple(m.shape)}"
        )
    if m.is_floating_point():
        _check_unit_range(m, f"attention[{code}]'s")
        return box, m.to(torch.float16)
    return box, m if m.dtype == torch.bool else m != 0


def _check_unit_range(values: torch.Tensor, name: str) -> None:
    """A graded (float) attention holds values in [0, 1] (NaN is refused too)."""
    ok = (values >= 0) & (values <= 1)
    if values.numel() and not bool(ok.all()):
        raise ValueError(
            f"{name} float mask must hold values in [0, 1] (a graded attention); got {values[~ok][0].item()}"
        )


def _check_integral_codes(att: torch.Tensor) -> None:
    """A float label map must hold whole organ codes (``.long()`` would truncate 0.5 to 0)."""
    nz = att[att != 0]
    if nz.numel() and not bool((torch.isfinite(nz) & (nz == nz.round())).all()):
        bad = nz[~(torch.isfinite(nz) & (nz == nz.round()))][0].item()
        raise ValueError(
            "attention of the image's shape is a label map and must hold whole organ codes "
            f"(0 background); got the non-integer value {bad}. For graded or binary per-organ "
            "attention pass a (K, D0, D1, D2) stack (non-zero = inside)"
        )


def _equals(windows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``windows == target`` per patch, compared in the windows' own dtype (no upcast)."""
    if windows.dtype == torch.bool:
        return windows & (target == 1).view(-1, 1, 1)
    return windows == target.to(windows.dtype).view(-1, 1, 1)
