"""The three-stage AGCL pipeline: coarse attention, contrastive pre-training, segmentation.

The folders name the stages and what they share:

* :mod:`~agcl.pipeline.coarse` -- stage 1: the coarse segmenters (a 3D U-Net on CT, a
  DeepLabV3+ on 2-D images), their training crops, inference and the attention they give;
* :mod:`~agcl.pipeline.pretrain` -- stage 2: attention-guided contrastive pre-training of the
  encoder (and the baselines);
* :mod:`~agcl.pipeline.segment` -- stage 3: the frozen encoder + ASPP decoder, sliding-window
  inference inside the attention, label fusion;
* :mod:`~agcl.pipeline.toolkit` -- what every stage shares: the epoch loop, checkpoints and the
  one loader of run files, the per-stage fingerprint, component factories, patch streams, DDP,
  sliding windows;
* :mod:`~agcl.pipeline.run` -- the run folder and its manifest (``run.json``);
* :mod:`~agcl.pipeline.domains` -- CT volumes and 2-D images;
* :mod:`~agcl.pipeline.config` -- :class:`PipelineConfig` and its sections;
* :mod:`~agcl.pipeline.report` -- results files, the ablation's statistics, figures.

:func:`run_pipeline` runs all three stages in a run folder and evaluates held-out cases;
:func:`predict_volume` segments a new scan with a finished run. See docs/pipeline.md.

Examples:
    >>> from agcl.pipeline import PipelineConfig, fuse_labels
    >>> PipelineConfig.quick().pretrain.method
    'agcl'
"""

from __future__ import annotations

from agcl.data import (
    ImageVolumes,
    TrainingVolumes,
    case_stem,
    find_coarse_file,
    image_tensor,
    image_volume,
    load_coarse_labels,
    remap_labels,
)
from agcl.pipeline.coarse import (
    CoarseCropDataset,
    ImageCropDataset,
    attention_2d,
    build_coarse_augment,
    build_coarse_loss,
    build_coarse_model,
    build_coarse_model_2d,
    coarse_attention,
    coarse_grid,
    coarse_probabilities,
    labels_from_probabilities,
    load_coarse,
    load_coarse_2d,
    predict_coarse,
    predict_probabilities_2d,
    train_coarse,
    train_coarse_2d,
)
from agcl.pipeline.config import (
    DOMAINS,
    PRETRAIN_METHODS,
    Coarse2DConfig,
    CoarseConfig,
    DataConfig,
    PipelineConfig,
    PretrainConfig,
    SegmentConfig,
    parse_overrides,
)
from agcl.pipeline.predict import (
    Prediction,
    TrainedRun,
    load_run,
    predict_volume,
)
from agcl.pipeline.pretrain import (
    PRETRAIN_STEPS,
    PretrainClassifier,
    build_pair_aug,
    build_pretrain_loss,
    build_pretrain_model,
    embed_patches,
    load_pretrain_model,
    pretrain_encoder,
    pretrain_step,
)
from agcl.pipeline.report import (
    ablation_markdown,
    ablation_statistics,
    ablation_table,
    case_dice,
    pca_2d,
    plot_embeddings,
    plot_overlays,
    results_entry,
    write_ablation,
    write_results,
)
from agcl.pipeline.run import (
    RunExistsError,
    RunFolder,
    RunFolderError,
)
from agcl.pipeline.runner import (
    run_pipeline,
)
from agcl.pipeline.segment import (
    build_segment_loss,
    build_segment_model,
    fuse_labels,
    load_segment_model,
    segment_image_2d,
    segment_step,
    segment_with_attention,
    train_segmenter,
)
from agcl.pipeline.toolkit import (
    EpochLog,
    barrier,
    build_encoder,
    build_optimizer,
    capture_rng,
    init_distributed,
    load_checkpoint,
    load_stage,
    restore_rng,
    save_stage,
    seed_everything,
    sliding_window,
    window_starts,
    window_weight,
)
from agcl.sampling import (
    CaseAttention,
)

__all__ = [
    "CaseAttention",
    "Coarse2DConfig",
    "CoarseConfig",
    "CoarseCropDataset",
    "DOMAINS",
    "DataConfig",
    "EpochLog",
    "ImageCropDataset",
    "ImageVolumes",
    "PRETRAIN_METHODS",
    "PRETRAIN_STEPS",
    "PipelineConfig",
    "Prediction",
    "PretrainClassifier",
    "PretrainConfig",
    "RunExistsError",
    "RunFolder",
    "RunFolderError",
    "SegmentConfig",
    "TrainedRun",
    "TrainingVolumes",
    "ablation_markdown",
    "ablation_statistics",
    "ablation_table",
    "attention_2d",
    "barrier",
    "build_coarse_augment",
    "build_coarse_loss",
    "build_coarse_model",
    "build_coarse_model_2d",
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
    "coarse_probabilities",
    "embed_patches",
    "find_coarse_file",
    "fuse_labels",
    "image_tensor",
    "image_volume",
    "init_distributed",
    "labels_from_probabilities",
    "load_checkpoint",
    "load_coarse",
    "load_coarse_2d",
    "load_coarse_labels",
    "load_pretrain_model",
    "load_run",
    "load_segment_model",
    "load_stage",
    "parse_overrides",
    "pca_2d",
    "plot_embeddings",
    "plot_overlays",
    "predict_coarse",
    "predict_probabilities_2d",
    "predict_volume",
    "pretrain_encoder",
    "pretrain_step",
    "remap_labels",
    "restore_rng",
    "results_entry",
    "run_pipeline",
    "save_stage",
    "seed_everything",
    "segment_image_2d",
    "segment_step",
    "segment_with_attention",
    "sliding_window",
    "train_coarse",
    "train_coarse_2d",
    "train_segmenter",
    "window_starts",
    "window_weight",
    "write_ablation",
    "write_results",
]
