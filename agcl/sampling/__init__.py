"""Patch sampling: the AGCL attention-guided patch sampler, its dataset wrapper and windows.

Imports only torch and numpy.
"""

from __future__ import annotations

from agcl.sampling.attention_patches import AttentionPatchSampler, PatchBatch
from agcl.sampling.windows import extract_windows

__all__ = [
    "AttentionPatchSampler",
    "PatchBatch",
    "extract_windows",
]
