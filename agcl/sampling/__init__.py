"""Patch sampling: the AGCL attention-guided patch sampler, its dataset wrapper and windows.

Imports only torch and numpy (scipy on first use of the attention-map helpers).
"""

from __future__ import annotations

from agcl.sampling.attention_maps import (
    ATTENTION_CHANNELS,
    attention_from_labels,
    attention_recall,
    densify,
    organ_bboxes,
)
from agcl.sampling.attention_patches import AttentionPatchSampler, PatchBatch
from agcl.sampling.dataset import AttentionPatchDataset, collate_patch_batches, minibatches
from agcl.sampling.stream import PatchStream
from agcl.sampling.windows import extract_windows

__all__ = [
    "ATTENTION_CHANNELS",
    "attention_from_labels",
    "attention_recall",
    "densify",
    "organ_bboxes",
    "AttentionPatchDataset",
    "AttentionPatchSampler",
    "PatchBatch",
    "PatchStream",
    "collate_patch_batches",
    "extract_windows",
    "minibatches",
]
