"""Patch sampling: the AGCL attention-guided patch sampler, its dataset wrapper and windows.

Imports only torch and numpy.
"""

from __future__ import annotations

from agcl.sampling.attention_patches import AttentionPatchSampler, PatchBatch
from agcl.sampling.dataset import AttentionPatchDataset, collate_patch_batches, minibatches
from agcl.sampling.windows import extract_windows

__all__ = [
    "AttentionPatchDataset",
    "AttentionPatchSampler",
    "PatchBatch",
    "collate_patch_batches",
    "extract_windows",
    "minibatches",
]
