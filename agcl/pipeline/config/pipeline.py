"""``PipelineConfig``: every setting of the pipeline, with the paper's defaults and presets.

``PipelineConfig.paper()`` follows the AGCL paper's supplementary material (T = 0.1, 128 x 128
patches, 30 patches per organ per axial slice, ResNet-50, SGD lr 5e-4 for 5 pre-training epochs,
Adam 1e-4 for 10 decoder epochs, batch size 4, ASPP with 512 channels and dilations 6/12/18).
``PipelineConfig.quick()`` shrinks everything so the whole pipeline runs on a 2-core CPU in a
few minutes on the synthetic phantoms: a slim ResNet-18 (base width 16), 64 x 64 patches, few
patches per slice, few epochs and larger learning rates (SGD 0.05 with momentum for
pre-training, Adam 1e-3 for the decoder), because the paper's values need far more steps than a
demo can afford. ``domain="image2d"`` gives the presets of the 2-D experiment (natural images:
RGB input, flips, colour distortion, T = 0.07, a DeepLabV3+ stage 1 in ``coarse2d``).

Every field can be overridden (``dataclasses.replace`` or :meth:`PipelineConfig.override`), and
every field is checked when a config is built, before any work (see
:mod:`agcl.pipeline.config.rules`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from agcl.pipeline.config.image2d import Coarse2DConfig
from agcl.pipeline.config.rules import Rule, check_fields, choice, integer, number, text, tuple_of
from agcl.pipeline.config.sections import CoarseConfig, DataConfig, PretrainConfig, SegmentConfig

__all__ = ["DOMAINS", "PipelineConfig", "parse_overrides"]

#: the kinds of data the pipeline runs on: CT volumes, or 2-D images as one-slice volumes
DOMAINS: tuple[str, ...] = ("ct", "image2d")

_SECTIONS: dict[str, type] = {
    "coarse": CoarseConfig,
    "coarse2d": Coarse2DConfig,
    "pretrain": PretrainConfig,
    "segment": SegmentConfig,
    "data": DataConfig,
}

# the 2-D experiment's presets: the CT preset's stages 2-3 with these changes, and its stage 1
_IMAGE2D: dict[str, dict[str, Any]] = {
    "quick": {
        "coarse2d": {
            "encoder": "resnet18",
            "base_width": 16,
            "output_stride": 16,
            "aspp_channels": 48,
            "decoder_channels": 32,
            "low_level_reduced": 16,
            "epochs": 20,
            "optimizer": "adam",
            "lr": 2e-3,
            "weight_decay": 0.0,
            "batch_size": 8,
            "crop_size": 96,
            "margin_px": 6.0,
        },
        "fields": {
            "pretrain.temperature": 0.07,
            "pretrain.patch_size": 48,
            "pretrain.patches_per_slice": 6,
            "pretrain.epochs": 4,
            "pretrain.batch_size": 64,
            "pretrain.lr": 0.05,
            "pretrain.output_stride": 8,
            "segment.patches_per_slice": 6,
            "segment.epochs": 8,
            "segment.lr": 1e-3,
            "segment.batch_size": 32,
            "segment.stride": 48,
            "segment.aspp_channels": 64,
            "segment.decoder": "aspp",
        },
    },
    "paper": {
        "coarse2d": {
            "encoder": "resnet50",
            "base_width": 64,
            "output_stride": 16,
            "aspp_channels": 256,
            "epochs": 30,
            "optimizer": "sgd",
            "lr": 1e-3,
            "batch_size": 8,
            "crop_size": 321,
            "margin_px": 16.0,
        },
        "fields": {
            "pretrain.temperature": 0.07,
            "pretrain.batch_size": 8,
            "segment.batch_size": 8,
            "segment.epochs": 10,
            "segment.lr": 1e-4,
        },
    },
}
# natural images: RGB, mirror-symmetric classes, colour matters
_IMAGE2D_COMMON = {
    "pretrain.image_channels": 3,
    "pretrain.aug_hflip": True,
    "pretrain.aug_color_distortion": 0.5,
}


@dataclass
class PipelineConfig:
    """All settings of the three-stage pipeline (see the section classes for their fields).

    Attributes:
        seed: seeds torch, numpy, the sampler and PairAug generators.
        clip_hu, percentiles: CT preprocessing (clip to [-175, 250] HU, then 1st/99th percentile
            min-max normalisation).
        organs: the label codes to segment (default: the 13 BTCV organs present in the data).
        preset: the preset name the config came from (informative).
        domain: ``"ct"`` (volumes, stage 1 a 3D U-Net: ``coarse``) or ``"image2d"`` (RGB images
            as one-slice volumes, stage 1 a DeepLabV3+: ``coarse2d``).
        coarse, coarse2d, pretrain, segment, data: the sections.

    Examples:
        >>> cfg = PipelineConfig.quick()
        >>> cfg.pretrain.temperature, PipelineConfig.paper().pretrain.patch_size
        (0.1, 128)
        >>> PipelineConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> cfg.override(**{"pretrain.epochs": 2}).pretrain.epochs
        2
        >>> PipelineConfig.quick(domain="image2d").pretrain.image_channels
        3
    """

    seed: int = 0
    clip_hu: tuple[float, float] = (-175.0, 250.0)
    percentiles: tuple[float, float] = (1.0, 99.0)
    organs: tuple[int, ...] | None = None
    preset: str = "paper"
    domain: Literal["ct", "image2d"] = "ct"
    coarse: CoarseConfig = field(default_factory=CoarseConfig)
    coarse2d: Coarse2DConfig = field(default_factory=Coarse2DConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    segment: SegmentConfig = field(default_factory=SegmentConfig)
    data: DataConfig = field(default_factory=DataConfig)

    RULES: ClassVar[dict[str, Rule | None]] = {
        "seed": integer(0, 2**32 - 1),
        "clip_hu": tuple_of(number(-math.inf), 2, increasing=True),
        "percentiles": tuple_of(number(0.0, 100.0), 2, increasing=True),
        "organs": tuple_of(integer(1, 32767), None, optional=True, nonempty=True),
        "preset": text,
        "domain": choice(DOMAINS),
        # the sections are checked by their own __post_init__
        "coarse": None,
        "coarse2d": None,
        "pretrain": None,
        "segment": None,
        "data": None,
    }

    def __post_init__(self) -> None:
        check_fields(self, "")
        for name, cls in _SECTIONS.items():
            if not isinstance(getattr(self, name), cls):
                raise TypeError(
                    f"{name} must be a {cls.__name__}; got {type(getattr(self, name)).__name__}"
                )
        if self.organs is not None and len(set(self.organs)) != len(self.organs):
            raise ValueError(f"organs must be distinct label ids; got {self.organs!r}")
        for stage in ("pretrain", "segment"):
            if self.data.shuffle_buffer < getattr(self, stage).batch_size:
                raise ValueError(
                    f"data.shuffle_buffer must be >= {stage}.batch_size="
                    f"{getattr(self, stage).batch_size}; got {self.data.shuffle_buffer}"
                )
        if self.segment.stride > self.pretrain.patch_size:
            raise ValueError(
                f"segment.stride must be <= pretrain.patch_size={self.pretrain.patch_size} (the "
                f"inference window); got {self.segment.stride}"
            )

    @classmethod
    def paper(cls, *, domain: str = "ct") -> PipelineConfig:
        """The paper's settings (stage 1 is agcl's own small U-Net; the paper used RAP-Net)."""
        return cls(preset="paper")._for_domain(domain)

    @classmethod
    def quick(cls, *, domain: str = "ct") -> PipelineConfig:
        """A CPU demo preset: minutes on 2 cores for ~10 small synthetic cases (or 64 scenes)."""
        return cls(
            preset="quick",
            coarse=CoarseConfig(
                spacing_mm=(5.5, 5.5, 5.0),
                crop_shape=(48, 48, 24),
                crops_per_case=6,
                shape=(40, 40, 20),
                base_channels=8,
                depth=2,
                epochs=60,
                lr=1e-2,
                batch_size=2,
                margin_mm=15.0,
                attention_channel="probability",
            ),
            pretrain=PretrainConfig(
                encoder="resnet18",
                base_width=16,
                output_stride=8,
                patch_size=64,
                patches_per_slice=4,
                max_patches_per_volume=400,
                epochs=4,
                lr=0.05,
                batch_size=64,
                projection_dim=64,
            ),
            segment=SegmentConfig(
                patches_per_slice=4,
                max_patches_per_volume=400,
                aspp_channels=64,
                decoder="deeplabv3plus",
                decoder_channels=64,
                loss="dice_ce",
                epochs=12,
                lr=1e-3,
                batch_size=32,
                stride=32,
                inference_batch_size=64,
            ),
        )._for_domain(domain)

    @classmethod
    def preset_named(cls, name: str, *, domain: str = "ct") -> PipelineConfig:
        """``"quick"`` or ``"paper"``, for ``domain`` ``"ct"`` or ``"image2d"``."""
        if name not in ("quick", "paper"):
            raise ValueError(f"preset must be one of 'quick', 'paper'; got {name!r}")
        return cls.quick(domain=domain) if name == "quick" else cls.paper(domain=domain)

    def _for_domain(self, domain: str) -> PipelineConfig:
        choice(DOMAINS)("domain", domain)
        if domain == "ct":
            return self
        preset = _IMAGE2D[self.preset]
        return self.override(
            domain="image2d",
            coarse2d=dict(preset["coarse2d"]),
            **_IMAGE2D_COMMON,
            **preset["fields"],
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain Python data (lists for tuples), safe inside a ``weights_only`` checkpoint."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Rebuild a config from :meth:`to_dict`'s output (unknown keys and invalid values raise;
        a section missing from ``data`` takes its defaults)."""
        if not isinstance(data, Mapping):
            raise TypeError(
                "data must be a dict (PipelineConfig.to_dict()'s output); "
                f"got {type(data).__name__}"
            )
        data = dict(data)
        kwargs: dict[str, Any] = {}
        for name, section in _SECTIONS.items():
            kwargs[name] = _build(section, data.pop(name, {}), name)
        kwargs.update(_build(cls, data, "config", as_kwargs=True))
        return cls(**kwargs)

    def override(self, **changes: Any) -> PipelineConfig:
        """A copy with fields changed: ``"section.field"`` keys, top-level fields by name, and a
        whole section as a dict of its fields (merged into the current section: fields it does
        not name keep their values).

        Raises:
            ValueError, TypeError: an unknown section or field (the valid ones are listed), a
                nested key below a field, or a value of the wrong type or range (the message
                names the field as ``section.field``).
        """
        data = self.to_dict()
        for key, value in changes.items():
            if not isinstance(key, str) or not key:
                raise TypeError(f"config keys must be non-empty strings; got {key!r}")
            parts = key.split(".")
            if len(parts) > 2:
                raise ValueError(
                    f"unknown config field {key!r}: keys are 'field' or 'section.field' "
                    f"(sections: {', '.join(_SECTIONS)})"
                )
            if len(parts) == 1:
                if key in _SECTIONS:
                    if not isinstance(value, Mapping):
                        raise TypeError(
                            f"section {key!r} takes a dict of its fields (or set them one by one "
                            f"as {key}.FIELD); got {type(value).__name__} {value!r}"
                        )
                    for name, item in value.items():
                        _check_known(data[key], name, f"{key}.{name}")
                        data[key][name] = _plain(item)
                    continue
                _check_known({k: v for k, v in data.items() if k not in _SECTIONS}, key, key)
                data[key] = _plain(value)
                continue
            section, name = parts
            if section not in _SECTIONS:
                raise ValueError(
                    f"unknown config section {section!r} in {key!r}; valid sections: "
                    f"{', '.join(_SECTIONS)}"
                )
            _check_known(data[section], name, key)
            data[section][name] = _plain(value)
        return PipelineConfig.from_dict(data)


def _check_known(fields: Mapping[str, Any], name: str, key: str) -> None:
    if name not in fields:
        raise ValueError(f"unknown config field {key!r}; valid: {', '.join(sorted(fields))}")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (a command line's ``--set``) as :meth:`PipelineConfig.override`
    keywords.

    Values are JSON (lists become tuples, objects stay dicts: a whole section); a value that is
    not JSON is kept as a bare string.

    Raises:
        ValueError: an item without ``=`` or with an empty key.

    Examples:
        >>> parse_overrides(["segment.epochs=5", "coarse.shape=[48,48,24]",
        ...                  "pretrain.encoder=resnet50"])
        {'segment.epochs': 5, 'coarse.shape': (48, 48, 24), 'pretrain.encoder': 'resnet50'}
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text_value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"overrides must be KEY=VALUE (e.g. segment.epochs=5); got {item!r}")
        try:
            value = json.loads(text_value)
        except json.JSONDecodeError:
            value = text_value  # a bare string such as resnet50
        out[key.strip()] = tuple(value) if isinstance(value, list) else value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _build(cls: type, data: Any, where: str, *, as_kwargs: bool = False) -> Any:
    if not isinstance(data, Mapping):
        raise TypeError(f"{where} must be a dict of fields; got {type(data).__name__} {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {where} fields {sorted(unknown)}; valid: {sorted(names)}")
    defaults = cls() if not as_kwargs else PipelineConfig()
    kwargs = {}
    for key, value in data.items():
        default = getattr(defaults, key)
        if isinstance(value, list) and (isinstance(default, tuple) or default is None):
            value = tuple(value)
        kwargs[key] = value
    return kwargs if as_kwargs else cls(**kwargs)
