"""Stage 2: attention-guided contrastive pre-training of the encoder (and its baselines).

* :mod:`~agcl.pipeline.pretrain.train`: :func:`pretrain_encoder` and its factories;
* :mod:`~agcl.pipeline.pretrain.steps`: the loss of one batch per method
  (:data:`PRETRAIN_STEPS`: ``agcl``, ``supcon``, ``sscl``, ``ce``).
"""

from __future__ import annotations

from agcl.pipeline.pretrain.steps import PRETRAIN_STEPS, PretrainStep, pretrain_step
from agcl.pipeline.pretrain.train import (
    PretrainClassifier,
    build_pair_aug,
    build_pretrain_loss,
    build_pretrain_model,
    embed_patches,
    load_pretrain_model,
    pretrain_encoder,
)

__all__ = [
    "PRETRAIN_STEPS",
    "PretrainClassifier",
    "PretrainStep",
    "build_pair_aug",
    "build_pretrain_loss",
    "build_pretrain_model",
    "embed_patches",
    "load_pretrain_model",
    "pretrain_encoder",
    "pretrain_step",
]
