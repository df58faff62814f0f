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
from typing import Any, Literal

import torch

from agcl._validation import (
    check_choice,
    check_finite_real,
    check_generator,
    check_int,
    check_int_sequence,
)
from agcl.sampling._centres import plan_dense
from agcl.sampling._cutting import (
    cut_dense_attention,
    cut_ignore,
    cut_image,
    cut_label,
    cut_sparse_attention,
    label_tensor,
)
from agcl.sampling._sparse_attention import PaddedSparse, pad_sparse, plan_sparse
from agcl.sampling.patch_batch import PatchBatch
from agcl.sampling.windows import as_tensor, normalise_axis, pair

__all__ = ["AttentionPatchSampler", "PatchBatch"]


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
        >>> lab = torch.zeros(20, 20, 3, dtype=torch.long)
        >>> lab[5:9, 5:9, 1] = 6; lab[12:15, 2:4, :2] = 2
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
            f"AttentionPatchSampler(patch_size={self.patch_size}, "
            f"patches_per_slice={self.patches_per_slice}, axis={self.axis}, "
            f"centre_mode={self.centre_mode!r}, margin={self.margin}, "
            f"max_patches={self.max_patches})"
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
        label_tensor(label, attention, attention, shape)  # refuse a bad label before any work
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
                "image must be a 3-D volume (D0, D1, D2) or (C, D0, D1, D2); "
                f"got shape {tuple(img.shape)}"
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
                or sparse ``{code: (box, mask)}``: ``box`` a tuple of three slices into the
                volume and ``mask`` a bool array of the box's shape, the organ's attention
                inside it (no dense map of every organ is ever built); a float mask (values in
                ``[0, 1]``) counts as inside where it is non-zero and :meth:`cut` keeps its
                values.
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
        opts: dict[str, Any] = {
            "axis": self.axis,
            "margin": self.margin,
            "per_slice": self.patches_per_slice,
            "mode": self.centre_mode,
        }
        if isinstance(attention, Mapping):
            centres, target = plan_sparse(attention, shape, targets, gen, **opts)
        else:
            att = as_tensor("attention", attention).cpu()
            if not (tuple(att.shape) == shape or (att.ndim == 4 and tuple(att.shape[1:]) == shape)):
                raise ValueError(
                    f"attention must have the image's shape {shape} or (K, *{shape}); "
                    f"got shape {tuple(att.shape)}"
                )
            if att.ndim == 3 and (att.is_floating_point() or att.is_complex()):
                _check_integral_codes(att)
            centres, target = plan_dense(att, shape, targets, gen, **opts)
        if self.max_patches is not None and centres.shape[0] > self.max_patches:
            keep = torch.randperm(centres.shape[0], generator=gen)[: self.max_patches].sort().values
            centres, target = centres[keep], target[keep]
        return centres, target.long()

    def pad_attention(
        self, attention: Mapping[int, Any], shape: Sequence[int], *, codes: Any = None
    ) -> Mapping[int, Any]:
        """A sparse attention with each mask zero-padded in-plane by half a patch, for :meth:`cut`.

        Every window then lies inside its padded mask, so it is read with one strided gather;
        pad once per volume when cutting its patches in many chunks. ``codes`` restricts it to
        those organs.
        """
        shape = tuple(check_int_sequence("shape", shape, low=0))
        return pad_sparse(attention, shape, axis=self.axis, patch_size=self.patch_size, codes=codes)

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
        lab = label_tensor(label, attention, att, shape)
        centres, target = torch.as_tensor(centres), torch.as_tensor(target)
        for name, value in (("centres", centres), ("target", target)):
            if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
                raise TypeError(f"{name} must hold integers (from plan()); got dtype {value.dtype}")
        centres, target = centres.long(), target.long()
        if centres.ndim != 2 or centres.shape[1] != 3 or target.shape != (centres.shape[0],):
            raise ValueError(
                "centres must be (P, 3) and target (P,); "
                f"got {tuple(centres.shape)} and {tuple(target.shape)}"
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
        image_w = cut_image(img, centres, self.axis, self.patch_size, pad)
        if isinstance(attention, Mapping):
            padded = (
                attention
                if isinstance(attention, PaddedSparse)
                else self.pad_attention(attention, shape, codes=target)
            )
            attention_w = cut_sparse_attention(padded, centres, target, self.axis, self.patch_size)
        else:
            attention_w = cut_dense_attention(
                att, centres, target, targets, self.axis, self.patch_size
            )
        attention_f = attention_w.float().unsqueeze(1)
        label_w = None
        if lab is not None and lab is att:  # ground truth used as attention: one gather serves both
            label_w = attention_f.clone()
        elif lab is not None:
            label_w = cut_label(lab, centres, target, self.axis, self.patch_size)
        ignore_w = (
            None
            if ignore is None
            else cut_ignore(ignore, shape, centres, self.axis, self.patch_size)
        )
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
