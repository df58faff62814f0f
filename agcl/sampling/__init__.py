"""Patch sampling: per-organ attention, the attention-guided patch sampler, its streams and windows.

* attention: :func:`attention_from_labels`, :func:`attention_from_probabilities` (a coarse
  segmenter's softmax output) and :class:`CaseAttention` (which of them a case uses);
* patches: :class:`AttentionPatchSampler`, the streaming :class:`PatchStream` (what the
  pipeline trains on) and the map-style :class:`AttentionPatchDataset`, both over the same
  volumes (e.g. :class:`agcl.data.TrainingVolumes`).

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
from agcl.sampling.attention_patches import AttentionPatchSampler
from agcl.sampling.case_attention import (
    ATTENTION_SOURCES,
    CaseAttention,
    bound_by,
    check_coarse_map,
)
from agcl.sampling.coarse_attention import (
    ATTENTION_KINDS,
    attention_from_probabilities,
    attention_kinds,
    coarse_body,
    load_probabilities,
    save_probabilities,
)
from agcl.sampling.dataset import AttentionPatchDataset, collate_patch_batches, minibatches
from agcl.sampling.patch_batch import PatchBatch
from agcl.sampling.stream import PatchStream
from agcl.sampling.windows import extract_windows

__all__ = [
    "ATTENTION_CHANNELS",
    "ATTENTION_KINDS",
    "ATTENTION_SOURCES",
    "CaseAttention",
    "attention_from_labels",
    "attention_from_probabilities",
    "attention_kinds",
    "bound_by",
    "coarse_body",
    "check_coarse_map",
    "load_probabilities",
    "save_probabilities",
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
