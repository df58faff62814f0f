"""The kinds of data :func:`agcl.pipeline.run_pipeline` runs on (``config.domain``).

* :class:`CTDomain` (``"ct"``): CT volumes, a 3D U-Net stage 1 (or your own coarse maps), Dice,
  HD95 and ASSD per organ;
* :class:`ImageDomain` (``"image2d"``): RGB images (PASCAL VOC) as one-slice volumes, a
  DeepLabV3+ stage 1, IoU per class.

Stages 2-3, the run folder and its manifest are the same for both.
"""

from __future__ import annotations

from agcl.pipeline.domains.ct import CTDomain, labelled_indices, summarize_recalls
from agcl.pipeline.domains.embeddings import held_out_embeddings
from agcl.pipeline.domains.image2d import ImageDomain, gt_attention

__all__ = [
    "CTDomain",
    "ImageDomain",
    "gt_attention",
    "held_out_embeddings",
    "labelled_indices",
    "summarize_recalls",
]
