"""The three-stage AGCL pipeline: coarse attention, contrastive pre-training, segmentation.

See docs/pipeline.md. Stage functions, ``predict_volume`` and ``run_pipeline`` are re-exported
here together with the configuration, checkpoint and fusion helpers.
"""

from __future__ import annotations

from agcl.pipeline.checkpoint import (
    EpochLog,
    capture_rng,
    load_stage,
    restore_rng,
    save_stage,
    seed_everything,
)
from agcl.pipeline.config import (
    PRETRAIN_METHODS,
    CoarseConfig,
    PipelineConfig,
    PretrainConfig,
    SegmentConfig,
)
from agcl.pipeline.fusion import fuse_labels

__all__ = [
    "PRETRAIN_METHODS",
    "CoarseConfig",
    "EpochLog",
    "PipelineConfig",
    "PretrainConfig",
    "SegmentConfig",
    "capture_rng",
    "fuse_labels",
    "load_stage",
    "restore_rng",
    "save_stage",
    "seed_everything",
]
