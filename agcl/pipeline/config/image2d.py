"""Stage 1 of the 2-D domain (natural images, PASCAL VOC): the ``coarse2d`` config section."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from agcl.pipeline.config.rules import (
    POSITIVE,
    boolean,
    check_fields,
    choice,
    integer,
    number,
    text,
)

__all__ = ["Coarse2DConfig"]


@dataclass
class Coarse2DConfig:
    """Stage 1 in 2-D: the coarse DeepLabV3+ segmenter and the attention it gives.

    Attributes:
        encoder, base_width, output_stride: the ResNet (the paper: ResNet-50, width 64).
        aspp_channels, decoder_channels, low_level_reduced: the DeepLabV3+ decoder's widths
            (ASPP, the two 3x3 refinement convs, the projected stride-4 skip).
        epochs, optimizer, lr, momentum, weight_decay, batch_size: training on whole images
            (the paper: SGD, lr 1e-3, batch 8), cross-entropy with void ignored.
        crop_size: training images are padded (image 0, label void) to at least this size and
            randomly cropped to it, so images of different sizes batch together.
        hflip: random horizontal flips while training.
        attention_threshold, fraction, margin_px: the attention rule (see the module docstring).
        presence_threshold: a class whose probability stays below this everywhere gets no
            attention in the image. CT organs are in every scan, so the CT rule always finds a
            region; a natural image lacks most classes, and their "most probable region" is
            arbitrary background whose patches would be labelled with the absent class (in
            stage 2 that made the contrastive loss collapse on the synthetic scenes). 0 restores
            the CT rule.
    """

    encoder: str = "resnet50"
    base_width: int = 64
    output_stride: int = 16
    aspp_channels: int = 256
    decoder_channels: int = 256
    low_level_reduced: int = 48
    epochs: int = 30
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    crop_size: int = 321
    hflip: bool = True
    attention_threshold: float = 0.3
    fraction: float = 0.5
    margin_px: float = 8.0
    presence_threshold: float = 0.1

    RULES: ClassVar[dict[str, Any]] = {
        "encoder": text,
        "base_width": POSITIVE,
        "output_stride": choice((8, 16, 32)),
        "aspp_channels": POSITIVE,
        "decoder_channels": POSITIVE,
        "low_level_reduced": POSITIVE,
        "epochs": POSITIVE,
        "optimizer": choice(("sgd", "adam")),
        "lr": number(0.0, low_open=True),
        "momentum": number(0.0, 1.0),
        "weight_decay": number(0.0),
        "batch_size": POSITIVE,
        "crop_size": integer(16),
        "hflip": boolean,
        "attention_threshold": number(0.0, 1.0, low_open=True),
        "fraction": number(0.0, 1.0, low_open=True),
        "margin_px": number(0.0),
        "presence_threshold": number(0.0, 1.0),
    }

    def __post_init__(self) -> None:
        check_fields(self, "coarse2d.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
