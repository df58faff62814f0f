"""``predict_volume``: a trained run applied to a new scan (stage 1, then stage 3, then fusion)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from agcl._validation import check_in_range, check_int
from agcl.pipeline.segment.fusion import check_threshold
from agcl.sampling.attention_maps import attention_from_labels

__all__ = ["predict_volume"]


def predict_volume(
    image: Any,
    *,
    coarse_checkpoint: str | os.PathLike[str] | None,
    segment_checkpoint: str | os.PathLike[str],
    device: str | torch.device = "cpu",
    spacing: Sequence[float] | None = None,
    coarse_labels: Any = None,
    threshold: float | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    coarse_weight: float | None = None,
) -> np.ndarray:
    """Segment a new CT volume with trained stage-1 and stage-3 checkpoints.

    Attention comes from the coarse model (or ``coarse_labels``), each organ is refined by
    sliding windows inside its attention and the organ probabilities are fused.

    Args:
        image: a NIfTI path, an :class:`agcl.data.Volume`, or a ``(X, Y, Z)`` HU array in
            canonical (RAS) orientation (then ``spacing`` is required).
        coarse_checkpoint: ``checkpoints/coarse.pt`` of a run (may be ``None`` when
            ``coarse_labels`` is given).
        segment_checkpoint: ``checkpoints/segment.pt`` of a run.
        device: where the models run.
        spacing: voxel size in mm (only for an array ``image``).
        coarse_labels: your own coarse label map for this image (array in canonical
            orientation, or a NIfTI path) instead of the coarse model's.
        threshold, stride, batch_size, coarse_weight: override the checkpoint config's inference
            settings (``coarse_weight`` blends in the coarse model's probabilities; it has no
            effect with ``coarse_labels``, which carry none).

    Returns:
        An ``int16`` label map (organ codes) in canonical orientation, the shape of the image;
        write it next to the scan with ``agcl.data.save_like(labels, image_path, out_path)``.

    Raises:
        TypeError: a non-number ``threshold``, non-int ``stride``/``batch_size``.
        ValueError: an array without spacing, a checkpoint of the wrong stage or without its
            keys, coarse labels of another shape, ``threshold`` outside ``[0, 1)`` or NaN,
            ``stride < 1`` or ``batch_size < 1`` (checked before any file is read).

    References:
        The AGCL paper, Fig. 2 (coarse attention, per-organ refinement, label fusion).
    """
    if threshold is not None:
        check_threshold(threshold)
    if stride is not None:
        check_int("stride", stride, low=1)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    if coarse_weight is not None:
        check_in_range("coarse_weight", coarse_weight, 0.0, 1.0)
    from agcl.data import load_volume, preprocess_ct
    from agcl.pipeline.coarse import coarse_probabilities, load_coarse
    from agcl.pipeline.segment import load_segment_model, segment_as_configured
    from agcl.sampling.coarse_attention import attention_from_probabilities

    if isinstance(image, (str, os.PathLike)):
        vol = load_volume(image, kind="image")
        hu, spacing = vol.array, vol.spacing
    elif hasattr(image, "array") and hasattr(image, "spacing"):
        hu, spacing = image.array, image.spacing
    else:
        hu = np.asarray(image, dtype=np.float32)
        if spacing is None:
            raise ValueError("spacing is required when image is an array; pass spacing=(sx, sy, sz) in mm")
    if hu.ndim != 3:
        raise ValueError(f"image must be a 3-D volume; got shape {hu.shape}")
    model, organ_ids, config = load_segment_model(segment_checkpoint, device)
    source = image if isinstance(image, (str, os.PathLike)) else None
    norm = preprocess_ct(hu, window=tuple(config.clip_hu), percentiles=tuple(config.percentiles), source=source)
    coarse_prob = None
    if coarse_labels is None:
        if coarse_checkpoint is None:
            raise ValueError("coarse_checkpoint is required unless coarse_labels is given")
        coarse_model, coarse_ids, coarse_cfg = load_coarse(coarse_checkpoint, device)
        # float16 as the pipeline stores them, so both give the same attention
        prob = coarse_probabilities(coarse_model, norm, coarse_cfg.coarse, spacing=spacing, device=device).half().float()
        # sparse, as the pipeline evaluates (never a dense (K, X, Y, Z) stack)
        attention = attention_from_probabilities(prob, coarse_ids, norm.shape, spacing=spacing,
                                                 margin_mm=config.coarse.margin_mm,
                                                 threshold=config.coarse.attention_threshold,
                                                 channel=config.coarse.attention_channel)
        coarse_prob = (prob, coarse_ids)
    else:
        coarse = load_volume(coarse_labels, kind="label").array if isinstance(coarse_labels, (str, os.PathLike)) \
            else np.asarray(coarse_labels)
        if coarse.shape != hu.shape:
            raise ValueError(f"coarse_labels must have the image's shape {hu.shape}; got {coarse.shape}")
        attention = attention_from_labels(coarse, organ_ids, margin_mm=config.coarse.margin_mm, spacing=spacing,
                                          channel=config.coarse.attention_channel)
    given = {"segment.stride": stride, "segment.threshold": threshold, "segment.inference_batch_size": batch_size,
             "segment.coarse_weight": coarse_weight}
    config = config.override(**{k: v for k, v in given.items() if v is not None})
    return segment_as_configured(model, norm, attention, organ_ids, config, device=device,
                                  coarse_probability=None if coarse_prob is None else coarse_prob[0],
                                  coarse_ids=None if coarse_prob is None else coarse_prob[1])
