"""Embeddings of held-out patches for the PCA figure (paper Fig. 3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["held_out_embeddings"]


def held_out_embeddings(
    ckpt: Any,
    cases: Sequence[Any],
    config: Any,
    organ_ids: Sequence[int],
    per_slice: int,
    device: Any,
    max_patches: int = 400,
) -> dict[str, torch.Tensor] | None:
    """Projected embeddings of at most ``max_patches`` held-out patches inside their ground-truth
    organs: ``{"embedding": (N, D), "target": (N,), "modality": (N,)}`` (``None``: no patch)."""
    from agcl.pipeline.pretrain import embed_patches, load_pretrain_model
    from agcl.sampling import AttentionPatchSampler, PatchBatch, attention_from_labels

    cap = max(1, max_patches // max(1, len(cases)))
    sampler = AttentionPatchSampler(
        patch_size=config.pretrain.patch_size,
        patches_per_slice=per_slice,
        max_patches=cap,
        seed=config.seed + 99,
    )
    parts = []
    for i in range(len(cases)):
        case = cases[i]
        att = attention_from_labels(case.label, organ_ids, margin_mm=0.0, spacing=case.spacing)
        if att:
            batch = sampler.sample(case.image, att, modality=case.modality, volume_index=i)
            if len(batch):
                parts.append(batch)
    if not parts:
        return None
    pool = PatchBatch.cat(parts)
    z = embed_patches(load_pretrain_model(ckpt, device), pool.inputs(), device=device)
    return {"embedding": z, "target": pool.target, "modality": pool.modality}
