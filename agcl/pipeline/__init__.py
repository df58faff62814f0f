"""The three-stage AGCL pipeline: coarse attention, contrastive pre-training, segmentation.

* Stage 1 (:mod:`~agcl.pipeline.stage1_coarse`): a small 3D U-Net on downsampled volumes gives
  coarse organ masks, dilated into per-organ attention maps.
* Stage 2 (:mod:`~agcl.pipeline.stage2_pretrain`): attention-guided patches, two augmented
  views, encoder + projection, the modal-target contrastive loss (or a baseline).
* Stage 3 (:mod:`~agcl.pipeline.stage3_segment`): frozen encoder + ASPP decoder with the soft
  Dice loss; sliding-window inference inside the attention and label fusion
  (:mod:`~agcl.pipeline.predict`).

:func:`run_pipeline` runs all three and evaluates held-out cases; :func:`predict_volume`
segments a new scan from the saved checkpoints. See docs/pipeline.md.

Examples:
    >>> from agcl.pipeline import PipelineConfig, fuse_labels
    >>> PipelineConfig.quick().pretrain.method
    'agcl'
"""

from __future__ import annotations

from agcl.pipeline._distributed import barrier, init_distributed
from agcl.pipeline.ablation import ablation_markdown, ablation_statistics, case_dice, write_ablation
from agcl.pipeline.checkpoint import (
    EpochLog,
    capture_rng,
    load_stage,
    restore_rng,
    save_stage,
    seed_everything,
)
from agcl.pipeline.coarse_labels import load_coarse_labels, remap_labels
from agcl.pipeline.config import (
    PRETRAIN_METHODS,
    CoarseConfig,
    DataConfig,
    PipelineConfig,
    PretrainConfig,
    SegmentConfig,
    parse_overrides,
)
from agcl.pipeline.figures import pca_2d, plot_embeddings, plot_overlays
from agcl.pipeline.fusion import fuse_labels
from agcl.pipeline.image2d import (
    Coarse2DConfig,
    ImageVolumes,
    attention_2d,
    build_coarse_model_2d,
    image_tensor,
    image_volume,
    load_coarse_2d,
    predict_probabilities_2d,
    segment_image_2d,
    train_coarse_2d,
)
from agcl.pipeline.predict import predict_volume, segment_with_attention, window_starts
from agcl.pipeline.report import ablation_table, results_entry, write_results
from agcl.pipeline.runner import run_pipeline
from agcl.pipeline.stage1_coarse import (
    build_coarse_model,
    coarse_attention,
    coarse_grid,
    load_coarse,
    predict_coarse,
    train_coarse,
)
from agcl.pipeline.stage2_pretrain import (
    PRETRAIN_STEPS,
    PretrainClassifier,
    build_encoder,
    build_optimizer,
    build_pair_aug,
    build_pretrain_loss,
    build_pretrain_model,
    embed_patches,
    load_pretrain_model,
    pretrain_encoder,
    pretrain_step,
)
from agcl.pipeline.stage3_segment import (
    build_segment_loss,
    build_segment_model,
    load_segment_model,
    segment_step,
    train_segmenter,
)
from agcl.pipeline.volumes import CaseAttention, TrainingVolumes, case_stem, find_coarse_file

__all__ = [
    "Coarse2DConfig",
    "ImageVolumes",
    "attention_2d",
    "build_coarse_model_2d",
    "image_tensor",
    "image_volume",
    "load_coarse_2d",
    "predict_probabilities_2d",
    "segment_image_2d",
    "train_coarse_2d",
    "PRETRAIN_METHODS",
    "PRETRAIN_STEPS",
    "CaseAttention",
    "CoarseConfig",
    "DataConfig",
    "EpochLog",
    "PipelineConfig",
    "PretrainClassifier",
    "PretrainConfig",
    "SegmentConfig",
    "ablation_markdown",
    "ablation_statistics",
    "TrainingVolumes",
    "ablation_table",
    "barrier",
    "build_coarse_model",
    "build_encoder",
    "build_optimizer",
    "build_pair_aug",
    "build_pretrain_loss",
    "build_pretrain_model",
    "build_segment_loss",
    "build_segment_model",
    "capture_rng",
    "case_dice",
    "case_stem",
    "coarse_attention",
    "coarse_grid",
    "embed_patches",
    "find_coarse_file",
    "fuse_labels",
    "init_distributed",
    "load_coarse",
    "load_coarse_labels",
    "load_pretrain_model",
    "load_segment_model",
    "load_stage",
    "parse_overrides",
    "pca_2d",
    "plot_embeddings",
    "plot_overlays",
    "predict_coarse",
    "predict_volume",
    "pretrain_encoder",
    "pretrain_step",
    "remap_labels",
    "restore_rng",
    "results_entry",
    "run_pipeline",
    "save_stage",
    "seed_everything",
    "segment_step",
    "segment_with_attention",
    "train_coarse",
    "train_segmenter",
    "window_starts",
    "write_ablation",
    "write_results",
]
