"""What each stage's result depends on: one declared fingerprint per stage.

A stage's fingerprint is the config fields its result depends on (:data:`STAGE_FIELDS`) plus
what the run adds (the organ codes, the number of modalities, the world size under torchrun).
It is stored in the stage's checkpoint (``config``) and in the run's manifest (``run.json``), and
a stage resumes only onto a checkpoint with the same fingerprint (and, in a run folder, the same
inputs: see :mod:`agcl.pipeline.run.manifest`).

Every config field is declared once: in the fingerprint of the stages whose result it changes,
or in :data:`NOT_FINGERPRINTED` with the reason (precision, memory, workers and the inference
settings change how fast a run goes or how it is scored, not what it trains).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

__all__ = [
    "ATTENTION_FIELDS",
    "NOT_FINGERPRINTED",
    "STAGE_FIELDS",
    "components_record",
    "flatten",
    "stage_fingerprint",
]

_STREAM = ("data.shards", "data.streams", "data.shuffle_buffer", "data.chunk_size")
_PREPROCESS = ("seed", "clip_hu", "percentiles", "domain")
_ENCODER = (
    "pretrain.method",
    "pretrain.encoder",
    "pretrain.base_width",
    "pretrain.output_stride",
    "pretrain.patch_size",
    "pretrain.image_channels",
)

#: the config fields each stage's result depends on ("section.field", or a top-level field)
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    # stage 1 on CT volumes: the U-Net's training
    "coarse": (
        "seed",
        "clip_hu",
        "percentiles",
        "coarse.spacing_mm",
        "coarse.shape",
        "coarse.crop_shape",
        "coarse.foreground_fraction",
        "coarse.crops_per_case",
        "coarse.augment",
        "coarse.zoom",
        "coarse.rotation_deg",
        "coarse.lr_decay",
        "coarse.base_channels",
        "coarse.depth",
        "coarse.epochs",
        "coarse.lr",
        "coarse.batch_size",
    ),
    # stage 1's probability maps of every case (inference with the trained U-Net)
    "coarse_maps": ("clip_hu", "percentiles", "coarse.overlap"),
    # stage 1 on 2-D images: the DeepLabV3+'s training
    "coarse2d": (
        "seed",
        "coarse2d.encoder",
        "coarse2d.base_width",
        "coarse2d.output_stride",
        "coarse2d.aspp_channels",
        "coarse2d.decoder_channels",
        "coarse2d.low_level_reduced",
        "coarse2d.epochs",
        "coarse2d.optimizer",
        "coarse2d.lr",
        "coarse2d.momentum",
        "coarse2d.weight_decay",
        "coarse2d.batch_size",
        "coarse2d.crop_size",
        "coarse2d.hflip",
    ),
    "pretrain": (
        *_PREPROCESS,
        *_ENCODER,
        "pretrain.max_patches_per_volume",
        "pretrain.patches_per_slice",
        "pretrain.temperature",
        "pretrain.partial_weight",
        "pretrain.queue_size",
        "pretrain.epochs",
        "pretrain.lr",
        "pretrain.momentum",
        "pretrain.weight_decay",
        "pretrain.batch_size",
        "pretrain.projection_dim",
        "pretrain.aug_scale",
        "pretrain.aug_degrees",
        "pretrain.aug_ratio",
        "pretrain.aug_hflip",
        "pretrain.aug_intensity_jitter",
        "pretrain.aug_color_distortion",
        "pretrain.steps_per_epoch",
        *_STREAM,
    ),
    "segment": (
        *_PREPROCESS,
        *_ENCODER,
        "segment.patches_per_slice",
        "segment.max_patches_per_volume",
        "segment.aspp_channels",
        "segment.decoder",
        "segment.decoder_channels",
        "segment.loss",
        "segment.epochs",
        "segment.lr",
        "segment.batch_size",
        "segment.steps_per_epoch",
        "segment.label_fraction",
        *_STREAM,
    ),
}

#: the fields that decide where stages 2-3 draw patches and what the attention channel holds
ATTENTION_FIELDS: dict[str, tuple[str, ...]] = {
    "ct": (
        "coarse.source",
        "coarse.margin_mm",
        "coarse.attention_threshold",
        "coarse.attention_channel",
    ),
    "image2d": (
        "coarse.source",
        "coarse2d.attention_threshold",
        "coarse2d.fraction",
        "coarse2d.margin_px",
        "coarse2d.presence_threshold",
    ),
}

#: the fields no stage's result depends on, with the reason
NOT_FINGERPRINTED: dict[str, str] = {
    "preset": "a label of where the settings came from; the settings themselves are fingerprinted",
    "organs": "enters every fingerprint as the organ codes the run segments",
    "coarse.amp": "precision may change between machines without changing the run",
    "pretrain.amp": "precision may change between machines without changing the run",
    "segment.amp": "precision may change between machines without changing the run",
    "data.cache_mb": "memory only: the batches are the same for any cache size",
    "data.num_workers": "speed only: the batches are the same for any number of workers",
    "segment.stride": "inference only (re-scored on every run)",
    "segment.threshold": "inference only (re-scored on every run)",
    "segment.inference_batch_size": "inference only (re-scored on every run)",
    "segment.coarse_weight": "inference only (re-scored on every run)",
    "segment.window": "inference only (re-scored on every run)",
    "coarse.body_mask": "inference only (re-scored on every run)",
}


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"section.field": value}`` of a nested config dict (top-level fields keep their name).

    Examples:
        >>> flatten({"seed": 1, "coarse": {"epochs": 2}})
        {'seed': 1, 'coarse.epochs': 2}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def stage_fingerprint(stage: str, config: Any, **context: Any) -> dict[str, Any]:
    """The fingerprint of ``stage`` under ``config``: its fields (stages 2-3 also the attention
    fields of ``config.domain``) and ``context`` (organ codes, modalities, world size, ...).

    Raises:
        ValueError: an unknown stage (the valid ones are listed).

    Examples:
        >>> from agcl.pipeline import PipelineConfig
        >>> fp = stage_fingerprint("coarse", PipelineConfig.quick(), organ_ids=[1, 6])
        >>> fp["fields"]["coarse.epochs"], fp["organ_ids"]
        (60, [1, 6])
    """
    if stage not in STAGE_FIELDS:
        raise ValueError(
            f"stage must be one of {', '.join(map(repr, STAGE_FIELDS))}; got {stage!r}"
        )
    flat = flatten(config.to_dict())
    names = STAGE_FIELDS[stage]
    if stage in ("pretrain", "segment"):
        names = (*names, *ATTENTION_FIELDS[config.domain])
    return {"stage": stage, "fields": {name: flat[name] for name in names}, **_plain(context)}


def components_record(**components: Any) -> dict[str, str]:
    """``{name: "default", or the class (or function) of the component passed in}``: part of a
    stage's fingerprint, so a run resumed with another model, loss, optimizer or augmentation is
    redone rather than continued.

    Examples:
        >>> import torch
        >>> components_record(model=None, loss_fn=torch.nn.MSELoss())
        {'model': 'default', 'loss_fn': 'torch.nn.modules.loss.MSELoss'}
    """
    out = {}
    for name, value in components.items():
        if value is None:
            out[name] = "default"
            continue
        kind = value if inspect.isfunction(value) or inspect.isclass(value) else type(value)
        out[name] = f"{kind.__module__}.{kind.__qualname__}"
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
