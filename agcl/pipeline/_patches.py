"""Private: per-epoch patch pools from the attention maps (AttentionPatchSampler)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from agcl.pipeline._volumes import PreparedCase

__all__ = ["PatchPool", "sample_pool"]


@dataclass
class PatchPool:
    """Patches of one epoch: ``x (P, 2, h, w)`` image + attention, labels and where they came from."""

    x: torch.Tensor
    target: torch.Tensor  # (P,) organ codes
    modality: torch.Tensor  # (P,)
    label: torch.Tensor | None  # (P, h, w) long 0/1
    volume_index: torch.Tensor  # (P,)

    def __len__(self) -> int:
        return int(self.x.shape[0])


def sample_pool(
    cases: Sequence[PreparedCase],
    attention: Callable[[int], np.ndarray],
    organ_ids: Sequence[int],
    *,
    patch_size: int,
    patches_per_slice: int,
    max_patches: int | None,
    seed: int,
    with_label: bool,
    allow_empty: bool = False,
) -> PatchPool | None:
    """Sample every case's patches with one seeded :class:`agcl.AttentionPatchSampler` per case.

    ``attention(i)`` returns case ``i``'s ``(K, X, Y, Z)`` boolean attention stack (one map per
    entry of ``organ_ids``). The seed of case ``i`` is derived from ``seed`` and ``i``, so the
    pool is a deterministic function of ``(seed, cases)``. No patch at all raises (or returns
    ``None`` with ``allow_empty``).
    """
    import warnings

    from agcl import AttentionPatchSampler

    parts = []
    for i, case in enumerate(cases):
        sampler = AttentionPatchSampler(patch_size=patch_size, patches_per_slice=patches_per_slice,
                                        max_patches=max_patches, seed=int(seed) * 1_000_003 + i)
        label = None
        if with_label:
            if case.label is None:
                raise ValueError(f"cases must be labelled for stage 3 training; case {case.case_id} has none")
            label = case.label
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="no attention voxels")  # reported below if nothing at all
            batch = sampler.sample(case.image, attention(i), label=label, modality=case.modality,
                                   targets=list(organ_ids), volume_index=i)
        if len(batch) > 0:
            parts.append(batch)
    if not parts:
        if allow_empty:
            return None
        raise RuntimeError(
            f"no patches: none of the {len(cases)} cases has attention for organs {list(organ_ids)}. The coarse "
            "model predicted none of them: train stage 1 longer (coarse.epochs), use the ground truth as "
            "training attention (coarse.source='gt', --attention gt) or pass your own maps (--coarse-dir)")
    x = torch.cat([torch.cat([b.image, b.attention], 1) for b in parts]).float()
    label_t = None
    if with_label:
        label_t = torch.cat([b.label for b in parts if b.label is not None])[:, 0].round().long()
    return PatchPool(
        x=x,
        target=torch.cat([b.target for b in parts]).long(),
        modality=torch.cat([b.modality for b in parts]).long(),
        label=label_t,
        volume_index=torch.cat([b.volume_index for b in parts]).long(),
    )
