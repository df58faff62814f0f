"""The pipeline's configuration: one dataclass per stage, with the paper's defaults and presets.

``PipelineConfig.paper()`` follows the AGCL paper's supplementary material (T = 0.1, 128 x 128
patches, 30 patches per organ per axial slice, ResNet-50, SGD lr 5e-4 for 5 pre-training epochs,
Adam 1e-4 for 10 decoder epochs, batch size 4, ASPP with 512 channels and dilations 6/12/18).
``PipelineConfig.quick()`` shrinks everything so the whole pipeline runs on a 2-core CPU in a
few minutes on the synthetic phantoms: a slim ResNet-18 (base width 16), 64 x 64 patches, few
patches per slice, few epochs and larger learning rates (SGD 0.05 with momentum for
pre-training, Adam 1e-3 for the decoder), because the paper's values need far more steps than a
demo can afford. Every field can be overridden (``dataclasses.replace`` or :meth:`override`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CoarseConfig",
    "PipelineConfig",
    "PretrainConfig",
    "PretrainMethod",
    "SegmentConfig",
    "PRETRAIN_METHODS",
]

PretrainMethod = Literal["agcl", "sscl", "supcon", "ce", "none"]
PRETRAIN_METHODS: tuple[str, ...] = ("agcl", "sscl", "supcon", "ce", "none")


@dataclass
class CoarseConfig:
    """Stage 1: the coarse 3D U-Net on downsampled volumes and the attention maps it gives.

    Attributes:
        shape: the downsampled volume shape the U-Net trains and predicts on (canonical axes).
        base_channels, depth: U-Net width and number of down-sampling levels.
        epochs, lr, batch_size: Adam training on whole downsampled volumes (Dice + CE loss).
        margin_mm: each organ's attention region is dilated by this many mm.
        attention_threshold: organ k's attention is where its coarse softmax probability reaches
            this (below 0.5, so an organ that loses the arg-max still counts); where no voxel
            does, its most probable connected region (see :mod:`agcl.pipeline._coarse_attention`).
        source: "coarse" (default: the coarse predictions, as at test time) or "gt" (the
            training cases' ground truth as attention, the paper's experiment option).
    """

    shape: tuple[int, int, int] = (96, 96, 48)
    base_channels: int = 16
    depth: int = 3
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 2
    margin_mm: float = 10.0
    source: Literal["coarse", "gt"] = "coarse"
    attention_threshold: float = 0.3


@dataclass
class PretrainConfig:
    """Stage 2: attention-guided patches, two views, encoder + projection, contrastive loss.

    Attributes:
        method: "agcl" (modality x organ positives, Eq. 3), "sscl" (views only, Eq. 2),
            "supcon" (organ only), "ce" (cross-entropy over (modality, organ) classes) or
            "none" (random initialisation; the stage is skipped).
        encoder: a registered encoder name (``agcl.models.list_models()``); base_width 64 is the
            standard width.
        patch_size, patches_per_slice, max_patches_per_volume: the sampler's settings.
        temperature, partial_weight: the loss's settings (T = 0.1 in the paper).
        epochs, lr, momentum, weight_decay, batch_size: SGD (the paper: 5 epochs, lr 5e-4, batch 4).
        projection_dim: the projection head's output size (256).
        aug_scale, aug_degrees: PairAug's random-resized-crop area range and rotation range.
    """

    method: PretrainMethod = "agcl"
    encoder: str = "resnet50"
    base_width: int = 64
    output_stride: int = 16
    patch_size: int = 128
    patches_per_slice: int = 30
    max_patches_per_volume: int | None = None
    temperature: float = 0.1
    partial_weight: float = 0.0
    epochs: int = 5
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 4
    projection_dim: int = 256
    aug_scale: tuple[float, float] = (0.3, 0.7)
    aug_degrees: float = 30.0


@dataclass
class SegmentConfig:
    """Stage 3: frozen encoder + ASPP decoder on binary per-organ patches, then fusion.

    Attributes:
        patches_per_slice, max_patches_per_volume: training patches (same sampler as stage 2).
        aspp_channels: the ASPP width (512 in the paper).
        epochs, lr, batch_size: Adam with the soft Dice loss (the paper: 10 epochs, 1e-4, 4).
        stride: sliding-window stride at inference (<= the patch size).
        threshold: label fusion threshold on the foreground probability.
        inference_batch_size: windows per forward pass at inference.
    """

    patches_per_slice: int = 30
    max_patches_per_volume: int | None = None
    aspp_channels: int = 512
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 4
    stride: int = 64
    threshold: float = 0.5
    inference_batch_size: int = 32


@dataclass
class PipelineConfig:
    """All settings of the three-stage pipeline (see the stage classes for the fields).

    Attributes:
        seed: seeds torch, numpy, the sampler and PairAug generators.
        clip_hu, percentiles: preprocessing (clip to [-175, 250] HU, then 1st/99th percentile
            min-max normalisation).
        organs: the label ids to segment (default: the 13 BTCV organs present in the data).
        preset: the preset name the config came from (informative).

    Examples:
        >>> cfg = PipelineConfig.quick()
        >>> cfg.pretrain.temperature, PipelineConfig.paper().pretrain.patch_size
        (0.1, 128)
        >>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.override(**{"pretrain.epochs": 2}).pretrain.epochs
        2
    """

    seed: int = 0
    clip_hu: tuple[float, float] = (-175.0, 250.0)
    percentiles: tuple[float, float] = (1.0, 99.0)
    organs: tuple[int, ...] | None = None
    preset: str = "paper"
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)

    @classmethod
    def paper(cls) -> PipelineConfig:
        """The paper's settings (stage 1 is agcl's own small U-Net; the paper used RAP-Net)."""
        return cls(preset="paper")

    @classmethod
    def quick(cls) -> PipelineConfig:
        """A CPU demo preset: minutes on 2 cores for ~8 small synthetic cases."""
        return cls(
            preset="quick",
            coarse=CoarseConfig(shape=(40, 40, 20), base_channels=8, depth=2, epochs=80, lr=1e-2,
                                batch_size=1, margin_mm=10.0),
            pretrain=PretrainConfig(encoder="resnet18", base_width=16, output_stride=8, patch_size=64,
                                    patches_per_slice=4, max_patches_per_volume=400, epochs=4,
                                    lr=0.05, batch_size=64, projection_dim=64),
            segment=SegmentConfig(patches_per_slice=4, max_patches_per_volume=400, aspp_channels=64,
                                  epochs=6, lr=1e-3, batch_size=32, stride=32, inference_batch_size=64),
        )

    @classmethod
    def preset_named(cls, name: str) -> PipelineConfig:
        """``"quick"`` or ``"paper"``."""
        if name == "quick":
            return cls.quick()
        if name == "paper":
            return cls.paper()
        raise ValueError(f"preset must be one of 'quick', 'paper'; got {name!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists for tuples), safe inside a ``weights_only`` checkpoint."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys raise)."""
        data = dict(data)
        sections = {"coarse": CoarseConfig, "pretrain": PretrainConfig, "segment": SegmentConfig}
        kwargs: dict[str, Any] = {}
        for name, section in sections.items():
            kwargs[name] = _build(section, data.pop(name, {}), name)
        kwargs.update(_build(cls, data, "config", as_kwargs=True))
        return cls(**kwargs)

    def override(self, **changes: Any) -> PipelineConfig:
        """A copy with fields changed; nested fields as ``"section.field"`` keys."""
        data = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            target = data[section] if section else data
            if section and section not in ("coarse", "pretrain", "segment"):
                raise ValueError(f"unknown config section {section!r} in {key!r}; use coarse, pretrain or segment")
            if name not in target:
                raise ValueError(f"unknown config field {key!r}; valid: {sorted(target)}")
            target[name] = value
        return PipelineConfig.from_dict(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], where: str, *, as_kwargs: bool = False) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {where} fields {sorted(unknown)}; valid: {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        default = getattr(cls(), key) if not as_kwargs else getattr(PipelineConfig(), key)
        if isinstance(value, list) and (isinstance(default, tuple) or default is None):
            value = tuple(value)
        kwargs[key] = value
    return kwargs if as_kwargs else cls(**kwargs)
