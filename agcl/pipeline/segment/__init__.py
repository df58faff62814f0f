"""Stage 3: the frozen encoder + ASPP decoder, its training and its inference.

* :mod:`~agcl.pipeline.segment.train`: :func:`train_segmenter` (soft Dice on binary per-organ
  patches streamed by :class:`agcl.sampling.PatchStream`) and its factories;
* :mod:`~agcl.pipeline.segment.predict`: sliding windows inside each organ's attention on CT
  volumes (:func:`segment_with_attention`);
* :mod:`~agcl.pipeline.segment.image2d`: whole-image inference on 2-D images;
* :mod:`~agcl.pipeline.segment.fusion`: per-organ probabilities fused into one label map.
"""

from __future__ import annotations

from agcl.pipeline.segment.fusion import fuse_labels
from agcl.pipeline.segment.image2d import segment_image_2d
from agcl.pipeline.segment.predict import (
    segment_as_configured,
    segment_with_attention,
    upsample_in_box,
)
from agcl.pipeline.segment.train import (
    build_segment_loss,
    build_segment_model,
    load_segment_model,
    segment_step,
    train_segmenter,
)

__all__ = [
    "build_segment_loss",
    "build_segment_model",
    "fuse_labels",
    "load_segment_model",
    "segment_as_configured",
    "segment_image_2d",
    "segment_step",
    "segment_with_attention",
    "train_segmenter",
    "upsample_in_box",
]
