"""The pipeline's configuration: one dataclass per stage, with the paper's defaults and presets.

``PipelineConfig.paper()`` follows the AGCL paper's supplementary material (T = 0.1, 128 x 128
patches, 30 patches per organ per axial slice, ResNet-50, SGD lr 5e-4 for 5 pre-training epochs,
Adam 1e-4 for 10 decoder epochs, batch size 4, ASPP with 512 channels and dilations 6/12/18).
``PipelineConfig.quick()`` shrinks everything so the whole pipeline runs on a 2-core CPU in a
few minutes on the synthetic phantoms: a slim ResNet-18 (base width 16), 64 x 64 patches, few
patches per slice, few epochs and larger learning rates (SGD 0.05 with momentum for
pre-training, Adam 1e-3 for the decoder), because the paper's values need far more steps than a
demo can afford. Every field can be overridden (``dataclasses.replace`` or :meth:`override`).

Every field is checked when a config is built (``__post_init__``, so also by ``override``,
``from_dict`` and ``dataclasses.replace``), before any work: types (int fields refuse floats,
strings and bools; float fields accept ints), ranges and choices, each from the ``RULES`` table
of its class. A new field needs an entry there (a field without one raises).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agcl._validation import check_choice, check_int
from agcl.sampling.attention_maps import ATTENTION_CHANNELS

__all__ = [
    "CoarseConfig",
    "DataConfig",
    "PipelineConfig",
    "PretrainConfig",
    "PretrainMethod",
    "SegmentConfig",
    "PRETRAIN_METHODS",
    "parse_overrides",
]

PretrainMethod = Literal["agcl", "sscl", "supcon", "ce", "none"]
PRETRAIN_METHODS: tuple[str, ...] = ("agcl", "sscl", "supcon", "ce", "none")


# --- field rules: each takes (name, value) and returns the (normalised) value or raises ---
Rule = Callable[[str, Any], Any]


def _int(low: int | None = None, high: int | None = None, *, optional: bool = False) -> Rule:
    def rule(name: str, value: Any) -> Any:
        return None if optional and value is None else check_int(name, value, low=low, high=high)
    return rule


def _float(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = False) -> Rule:
    def rule(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{name} must be a number; got {type(value).__name__} {value!r}")
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok or not math.isfinite(value):
            lo, hi = "(" if low_open else "[", ")" if high_open or high == math.inf else "]"
            raise ValueError(f"{name} must lie in {lo}{low}, {high}{hi}; got {value!r}")
        return float(value)
    return rule


def _choice(options: tuple[Any, ...]) -> Rule:
    def rule(name: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in options:
            check_choice(name, value, options)  # raises with the list of options
        return value
    return rule


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty string; got {type(value).__name__} {value!r}")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return value


def _tuple(item: Rule, length: int | None, *, increasing: bool = False, optional: bool = False) -> Rule:
    def rule(name: str, value: Any) -> Any:
        if optional and value is None:
            return None
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)):
            raise TypeError(f"{name} must be a tuple of {length or 'any number of'} values; got {type(value).__name__} {value!r}")
        if length is not None and len(value) != length:
            raise ValueError(f"{name} must have {length} entries; got {len(value)}: {tuple(value)!r}")
        out = tuple(item(f"{name}[{i}]", v) for i, v in enumerate(value))
        if increasing and not all(a < b for a, b in zip(out, out[1:])):
            raise ValueError(f"{name} must be increasing (low < high); got {out!r}")
        return out
    return rule


def _check_fields(obj: Any, where: str) -> None:
    """Apply ``obj.RULES`` to every field (each field must have a rule) before any work is done."""
    for f in dataclasses.fields(obj):
        if f.name not in obj.RULES:
            raise TypeError(f"{type(obj).__name__}.{f.name} has no validation rule; add one to RULES")
        rule = obj.RULES[f.name]
        if rule is not None:
            object.__setattr__(obj, f.name, rule(f"{where}{f.name}", getattr(obj, f.name)))


_POS = _int(1)
_MAX_PATCHES = _int(0, optional=True)
_LR = _float(0.0, low_open=True)


#: the values of the stages' ``amp`` fields (see :func:`agcl.pipeline._training.amp_dtype`)
AMP_CHOICES = ("off", "bf16", "fp16", "auto")


@dataclass
class CoarseConfig:
    """Stage 1: the coarse 3D U-Net on downsampled volumes and the attention maps it gives.

    Attributes:
        spacing_mm: the voxel size in mm (canonical axes) the U-Net trains and predicts at:
            every volume is resampled with its own spacing to it (trilinear image, nearest
            labels), so the coarse grid keeps each scan's physical extent. ``None``: the
            fixed-``shape`` mode (every volume resized to ``shape`` whatever its size and
            trained whole; ``crop_shape``, ``foreground_fraction``, ``crops_per_case``,
            ``overlap`` and ``augment`` are then unused).
        shape: the fixed grid of the ``spacing_mm=None`` mode (canonical axes).
        crop_shape: training crops (voxels of the resampled grid) and the inference window;
            a volume smaller than the crop is padded; a larger one is predicted by sliding
            windows overlapping by ``overlap`` (Gaussian-weighted).
        foreground_fraction: the fraction of crops centred on a voxel of an organ class drawn
            uniformly from the classes present in the case (nnU-Net's class-by-class
            oversampling, so small organs are seen often); the rest are placed at random.
        crops_per_case: crops drawn from each training case per epoch.
        augment: augmentation of the crops: a random isotropic zoom in ``[1 - zoom, 1 + zoom]``,
            a rotation in ``[-rotation_deg, rotation_deg]`` about each axis (in mm, so
            anisotropic voxels rotate correctly) and an intensity scale in [0.9, 1.1] and shift
            in [-0.05, 0.05] (no flips: left and right organs differ).
        zoom, rotation_deg: the ranges of the spatial augmentation (``rotation_deg=0``: none).
        amp: mixed-precision training of the U-Net: "off" (float32), "bf16" or "fp16" (autocast;
            fp16 with a gradient scaler), or "auto": fp16 on CUDA, bf16 on a CPU with native
            bf16 support (AVX512-BF16/AMX; a quick-preset step takes 0.52x of float32 on this
            project's CPU), float32 otherwise.
            Prediction stays in float32. Not part of the resume check.
        lr_decay: the polynomial learning-rate decay of nnU-Net, ``lr * (1 - (e - 1) /
            epochs) ** 0.9`` in epoch ``e`` (voxel-size mode only; otherwise a constant ``lr``).
        base_channels, depth: U-Net width and number of down-sampling levels.
        epochs, lr, batch_size: Adam training (Dice + cross-entropy loss) on crops (or on whole
            volumes when ``spacing_mm`` is ``None``).
        margin_mm: each organ's attention region is dilated by this many mm (15 by default;
            see ``attention_threshold`` for what was measured).
        attention_threshold: organ k's attention is where its coarse softmax probability reaches
            this (well below 0.5, so an organ that loses the arg-max, or shares its voxels'
            probability with a neighbour, as thin veins next to the pancreas, still counts); where
            no voxel does, its most probable connected region (see
            :mod:`agcl.pipeline._coarse_attention`). The attention bounds where stage 3 may
            predict an organ, so it errs on the side of recall: 0.1 with ``margin_mm=15`` left 1
            of those 260 pairs below 0.95 (0.3 with 10 mm: 21), for an attention 3.9x the
            foreground's size instead of 2.3x (docs/results.md, stop 20).
        attention_channel: what stages 2 and 3 see in the attention channel (the region, where
            patches are drawn and predictions kept, is the same): "mask" (default, the paper's
            binary map, 1 inside the dilated region) or "probability" (0.5 + 0.5 p / max(p) inside
            the region, p the organ's coarse probability and max(p) its highest in the volume, 0
            outside; label maps give 1 on the organ and 0.5 in the margin), so the network also
            sees where the organ is likeliest, not only where it may be. The quick preset uses
            "probability" (measured better on the phantoms, docs/results.md stop 22).
        source: "coarse" (default: the coarse predictions, as at test time) or "gt" (the
            training cases' ground truth as attention, the paper's experiment option).
    """

    spacing_mm: tuple[float, float, float] | None = (2.0, 2.0, 3.0)
    shape: tuple[int, int, int] = (96, 96, 48)
    crop_shape: tuple[int, int, int] = (128, 128, 64)
    foreground_fraction: float = 0.33
    crops_per_case: int = 4
    overlap: float = 0.5
    augment: bool = True
    zoom: float = 0.1
    rotation_deg: float = 15.0
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    lr_decay: bool = True
    base_channels: int = 16
    depth: int = 3
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 2
    margin_mm: float = 15.0
    source: Literal["coarse", "gt"] = "coarse"
    attention_threshold: float = 0.1
    attention_channel: Literal["mask", "probability"] = "mask"

    RULES: ClassVar[dict[str, Rule | None]] = {
        "spacing_mm": _tuple(_float(0.0, low_open=True), 3, optional=True), "shape": _tuple(_POS, 3),
        "crop_shape": _tuple(_POS, 3), "foreground_fraction": _float(0.0, 1.0), "crops_per_case": _POS,
        "overlap": _float(0.0, 1.0, high_open=True), "augment": _bool, "lr_decay": _bool,
        "zoom": _float(0.0, 1.0, high_open=True), "rotation_deg": _float(0.0, 180.0),
        "amp": _choice(AMP_CHOICES),
        "base_channels": _POS, "depth": _POS, "epochs": _POS, "lr": _LR,
        "batch_size": _POS, "margin_mm": _float(0.0), "source": _choice(("coarse", "gt")),
        "attention_threshold": _float(0.0, 1.0, low_open=True),
        "attention_channel": _choice(ATTENTION_CHANNELS),
    }

    def __post_init__(self) -> None:
        _check_fields(self, "coarse.")


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
        queue_size: rows of earlier batches kept as extra contrast rows by the loss's memory
            queue (``ModalTargetSupConLoss(queue_size=...)``; "agcl"/"supcon" only); 0 = off.
        epochs, lr, momentum, weight_decay, batch_size: SGD (the paper: 5 epochs, lr 5e-4, batch 4).
        projection_dim: the projection head's output size (256).
        aug_scale, aug_degrees: PairAug's random-resized-crop area range and rotation range.
        aug_ratio, aug_hflip, aug_intensity_jitter, aug_color_distortion: PairAug's aspect-ratio
            range, horizontal flips, intensity jitter and colour distortion (see :class:`agcl.PairAug`).
        image_channels: channels of the image volumes (1 for CT; the encoder takes
            ``image_channels + 1`` inputs: the image and the organ's attention).
        steps_per_epoch: at most this many optimisation steps per epoch (``None``: one pass
            over the epoch's sampled patches), e.g. to check a configuration in minutes.
        amp: mixed-precision training, as ``coarse.amp`` ("auto": fp16 on CUDA, bf16 on a CPU
            with native bf16 kernels, float32 otherwise; not part of the resume check).
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
    queue_size: int = 0
    epochs: int = 5
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 4
    projection_dim: int = 256
    aug_scale: tuple[float, float] = (0.3, 0.7)
    aug_degrees: float = 30.0
    aug_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    aug_hflip: bool = False
    aug_intensity_jitter: float = 0.0
    aug_color_distortion: float = 0.0
    image_channels: int = 1
    steps_per_epoch: int | None = None
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"

    RULES: ClassVar[dict[str, Rule | None]] = {
        "aug_ratio": _tuple(_float(0.0, low_open=True), 2, increasing=False), "aug_hflip": _bool,
        "aug_intensity_jitter": _float(0.0), "aug_color_distortion": _float(0.0, 1.0), "image_channels": _POS,
        "method": _choice(PRETRAIN_METHODS), "encoder": _str, "base_width": _POS,
        "output_stride": _choice((8, 16, 32)), "patch_size": _POS, "patches_per_slice": _POS,
        "max_patches_per_volume": _MAX_PATCHES, "temperature": _float(0.0, low_open=True),
        "partial_weight": _float(0.0, 1.0), "epochs": _POS, "lr": _LR, "momentum": _float(0.0, 1.0),
        "weight_decay": _float(0.0), "batch_size": _POS, "projection_dim": _POS,
        "aug_scale": _tuple(_float(0.0, 1.0, low_open=True), 2), "aug_degrees": _float(0.0, 180.0),
        "queue_size": _int(0), "steps_per_epoch": _int(1, optional=True), "amp": _choice(AMP_CHOICES),
    }

    def __post_init__(self) -> None:
        _check_fields(self, "pretrain.")
        if self.aug_scale[0] > self.aug_scale[1]:
            raise ValueError(f"pretrain.aug_scale must be (low, high) with low <= high; got {self.aug_scale!r}")
        if self.aug_ratio[0] > self.aug_ratio[1]:
            raise ValueError(f"pretrain.aug_ratio must be (low, high) with low <= high; got {self.aug_ratio!r}")


@dataclass
class SegmentConfig:
    """Stage 3: frozen encoder + ASPP decoder on binary per-organ patches, then fusion.

    Attributes:
        patches_per_slice, max_patches_per_volume: training patches (same sampler as stage 2).
        aspp_channels: the ASPP width (512 in the paper).
        decoder: ``"aspp"`` (the paper's) or ``"deeplabv3plus"`` (ASPP + a low-level skip).
        decoder_channels: width of DeepLabV3+'s two 3 x 3 refinement convs at stride 4 (256 in
            DeepLabV3+; unused by ``"aspp"``). Their cost grows with its square.
        loss: ``"dice"`` (the paper's soft Dice on the organ channel) or ``"dice_ce"`` (soft
            Dice plus cross-entropy, :class:`agcl.DiceCELoss`, as nnU-Net and stage 1 train).
        epochs, lr, batch_size: Adam with ``loss`` (the paper: 10 epochs, 1e-4, 4).
        stride: sliding-window stride at inference (<= the patch size).
        threshold: label fusion threshold on the foreground probability.
        inference_batch_size: windows per forward pass at inference.
        steps_per_epoch: at most this many optimisation steps per epoch (``None``: one pass).
        coarse_weight: at inference each organ's score is ``(1 - w) p3 + w pc``, the stage-3
            probability blended with the stage-1 probability (upsampled); 0 is the paper's fusion
            of ``p3`` alone. Used where the coarse probabilities exist (stage 1 of the run or
            ``predict_volume`` with a coarse checkpoint), not with your own label maps. 0.5
            ensembles the two stages (see :func:`agcl.pipeline.segment_with_attention`;
            docs/results.md has the measurement).
        window: how overlapping inference windows are averaged: "uniform" or "gaussian"
            (:func:`agcl.pipeline.predict.window_weight`).
        amp: mixed-precision training, as ``coarse.amp`` ("auto": fp16 on CUDA, bf16 on a CPU
            with native bf16 kernels, float32 otherwise; not part of the resume check).
    """

    patches_per_slice: int = 30
    max_patches_per_volume: int | None = None
    aspp_channels: int = 512
    decoder: Literal["aspp", "deeplabv3plus"] = "aspp"
    decoder_channels: int = 256
    loss: Literal["dice", "dice_ce"] = "dice"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 4
    stride: int = 64
    threshold: float = 0.5
    inference_batch_size: int = 32
    steps_per_epoch: int | None = None
    coarse_weight: float = 0.5
    window: Literal["uniform", "gaussian"] = "uniform"
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"

    RULES: ClassVar[dict[str, Rule | None]] = {
        "patches_per_slice": _POS, "max_patches_per_volume": _MAX_PATCHES, "aspp_channels": _POS,
        "decoder": _choice(("aspp", "deeplabv3plus")), "decoder_channels": _POS,
        "loss": _choice(("dice", "dice_ce")),
        "epochs": _POS, "lr": _LR, "batch_size": _POS, "stride": _POS,
        "threshold": _float(0.0, 1.0, high_open=True), "inference_batch_size": _POS,
        "steps_per_epoch": _int(1, optional=True), "coarse_weight": _float(0.0, 1.0),
        "window": _choice(("uniform", "gaussian")), "amp": _choice(AMP_CHOICES),
    }

    def __post_init__(self) -> None:
        _check_fields(self, "segment.")


@dataclass
class DataConfig:
    """How stages 2 and 3 read their patches (:class:`agcl.sampling.PatchStream`).

    Attributes:
        cache_mb: loaded training volumes (image, labels, attention) kept in memory, in MiB,
            per process (each DataLoader worker has its own); 0 reloads a volume every epoch.
        num_workers: DataLoader worker processes (0: sample in the training process). The
            batches are the same for every value.
        shards, streams: independent sub-streams (a worker's unit of work) and volumes each
            samples from at once; a batch mixes the patches of ``streams`` volumes or more
            (what is left in the buffer from earlier ones), and at most ``shards * streams``
            volumes are open at a time (plus the cache).
        shuffle_buffer: patches in each shard's shuffle buffer (>= the batch sizes).
        chunk_size: patches cut from a volume at a time.
    """

    cache_mb: int = 512
    num_workers: int = 0
    shards: int = 2
    streams: int = 2
    shuffle_buffer: int = 1024
    chunk_size: int = 128

    RULES: ClassVar[dict[str, Rule | None]] = {
        "cache_mb": _int(0), "num_workers": _int(0), "shards": _POS, "streams": _POS,
        "shuffle_buffer": _POS, "chunk_size": _POS,
    }

    def __post_init__(self) -> None:
        _check_fields(self, "data.")


_SECTIONS = ("coarse", "pretrain", "segment", "data")


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
    data: DataConfig = field(default_factory=DataConfig)

    RULES: ClassVar[dict[str, Rule | None]] = {
        "seed": _int(0), "clip_hu": _tuple(_float(-math.inf), 2, increasing=True),
        "percentiles": _tuple(_float(0.0, 100.0), 2, increasing=True),
        "organs": _tuple(_int(1, 32767), None, optional=True), "preset": _str,
        "coarse": None, "pretrain": None, "segment": None, "data": None,  # checked by their own __post_init__
    }

    def __post_init__(self) -> None:
        _check_fields(self, "")
        for name, cls in (("coarse", CoarseConfig), ("pretrain", PretrainConfig), ("segment", SegmentConfig),
                          ("data", DataConfig)):
            if not isinstance(getattr(self, name), cls):
                raise TypeError(f"{name} must be a {cls.__name__}; got {type(getattr(self, name)).__name__}")
        if self.organs is not None and len(set(self.organs)) != len(self.organs):
            raise ValueError(f"organs must be distinct label ids; got {self.organs!r}")
        for stage in ("pretrain", "segment"):
            if self.data.shuffle_buffer < getattr(self, stage).batch_size:
                raise ValueError(f"data.shuffle_buffer must be >= {stage}.batch_size="
                                 f"{getattr(self, stage).batch_size}; got {self.data.shuffle_buffer}")
        if self.segment.stride > self.pretrain.patch_size:
            raise ValueError(
                f"segment.stride must be <= pretrain.patch_size={self.pretrain.patch_size} (the "
                f"inference window); got {self.segment.stride}"
            )

    @classmethod
    def paper(cls) -> PipelineConfig:
        """The paper's settings (stage 1 is agcl's own small U-Net; the paper used RAP-Net)."""
        return cls(preset="paper")

    @classmethod
    def quick(cls) -> PipelineConfig:
        """A CPU demo preset: minutes on 2 cores for ~8 small synthetic cases."""
        return cls(
            preset="quick",
            coarse=CoarseConfig(spacing_mm=(5.5, 5.5, 5.0), crop_shape=(48, 48, 24), crops_per_case=6,
                                shape=(40, 40, 20), base_channels=8, depth=2, epochs=60, lr=1e-2,
                                batch_size=2, margin_mm=15.0, attention_channel="probability"),
            pretrain=PretrainConfig(encoder="resnet18", base_width=16, output_stride=8, patch_size=64,
                                    patches_per_slice=4, max_patches_per_volume=400, epochs=4,
                                    lr=0.05, batch_size=64, projection_dim=64),
            segment=SegmentConfig(patches_per_slice=4, max_patches_per_volume=400, aspp_channels=64,
                                  decoder="deeplabv3plus", decoder_channels=64, loss="dice_ce", epochs=12,
                                  lr=1e-3, batch_size=32, stride=32, inference_batch_size=64),
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
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys and invalid values raise)."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict (PipelineConfig.to_dict()'s output); got {type(data).__name__}")
        data = dict(data)
        sections = {"coarse": CoarseConfig, "pretrain": PretrainConfig, "segment": SegmentConfig, "data": DataConfig}
        kwargs: dict[str, Any] = {}
        for name, section in sections.items():
            kwargs[name] = _build(section, data.pop(name, {}), name)
        kwargs.update(_build(cls, data, "config", as_kwargs=True))
        return cls(**kwargs)

    def override(self, **changes: Any) -> PipelineConfig:
        """A copy with fields changed; nested fields as ``"section.field"`` keys.

        Raises:
            ValueError, TypeError: an unknown field, or a value of the wrong type or range (the
                message names the field as ``section.field``).
        """
        data = self.to_dict()
        for key, value in changes.items():
            section, _, name = key.rpartition(".")
            target = data[section] if section else data
            if section and section not in _SECTIONS:
                raise ValueError(f"unknown config section {section!r} in {key!r}; use {', '.join(_SECTIONS)}")
            if name not in target:
                raise ValueError(f"unknown config field {key!r}; valid: {sorted(target)}")
            target[name] = value
        return PipelineConfig.from_dict(data)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (a command line's ``--set``) as :meth:`PipelineConfig.override` keywords.

    Values are JSON (lists become tuples); a value that is not JSON is kept as a bare string.

    Examples:
        >>> parse_overrides(["segment.epochs=5", "coarse.shape=[48,48,24]", "pretrain.encoder=resnet50"])
        {'segment.epochs': 5, 'coarse.shape': (48, 48, 24), 'pretrain.encoder': 'resnet50'}
    """
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as resnet50
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: dict[str, Any], where: str, *, as_kwargs: bool = False) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"{where} must be a dict of fields; got {type(data).__name__} {data!r}")
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
