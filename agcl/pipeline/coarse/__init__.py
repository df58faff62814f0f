"""Stage 1: the coarse segmenters and the attention they give.

* CT (:mod:`~agcl.pipeline.coarse.model`, :mod:`~agcl.pipeline.coarse.crops`,
  :mod:`~agcl.pipeline.coarse.inference`): a small 3D U-Net trained on crops of the coarse grid,
  its sliding-window probabilities and their label map; the attention comes from the
  probabilities (:func:`agcl.sampling.attention_from_probabilities`).
* 2-D images (:mod:`~agcl.pipeline.coarse.image2d`): a DeepLabV3+ trained on whole-image crops.
* Your own coarse maps (another segmenter's label maps) with their codes translated
  (:func:`load_coarse_labels`, :func:`remap_labels`).
"""

from __future__ import annotations

from agcl.data.labels import load_coarse_labels, remap_labels
from agcl.pipeline.coarse.crops import CoarseCropDataset, GridCase, grid_shape, to_grid
from agcl.pipeline.coarse.image2d import (
    ImageCropDataset,
    attention_2d,
    build_coarse_model_2d,
    load_coarse_2d,
    predict_probabilities_2d,
    train_coarse_2d,
)
from agcl.pipeline.coarse.inference import (
    coarse_attention,
    coarse_probabilities,
    labels_from_probabilities,
    predict_coarse,
)
from agcl.pipeline.coarse.model import (
    build_coarse_augment,
    build_coarse_loss,
    build_coarse_model,
    coarse_grid,
    load_coarse,
    train_coarse,
)
from agcl.sampling.coarse_attention import (
    attention_from_probabilities,
    load_probabilities,
    save_probabilities,
)

__all__ = [
    "CoarseCropDataset",
    "GridCase",
    "ImageCropDataset",
    "attention_2d",
    "attention_from_probabilities",
    "build_coarse_augment",
    "build_coarse_loss",
    "build_coarse_model",
    "build_coarse_model_2d",
    "coarse_attention",
    "coarse_grid",
    "coarse_probabilities",
    "grid_shape",
    "labels_from_probabilities",
    "load_coarse",
    "load_coarse_2d",
    "load_coarse_labels",
    "load_probabilities",
    "predict_coarse",
    "predict_probabilities_2d",
    "remap_labels",
    "save_probabilities",
    "to_grid",
    "train_coarse",
    "train_coarse_2d",
]
