"""ASPP and the two decoders of the segmentation stage (DeepLabV3-style and DeepLabV3+).

Decoders take the encoder's feature maps (``encoder.forward_features(x)``, shallow to deep) and
the input's spatial size, and return logits bilinearly upsampled to that size. Because every
upsampling goes to an explicit size, inputs need not be multiples of the output stride.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from agcl._validation import check_int as _check_int
from agcl._validation import check_int_sequence, check_output_stride, check_tensor

__all__ = ["ASPP", "ASPPDecoder", "DeepLabV3PlusDecoder", "scaled_dilations"]


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def scaled_dilations(dilations: Sequence[int], output_stride: int) -> tuple[int, ...]:
    """ASPP rates given at output stride 16, rescaled to ``output_stride`` (x2 at 8, /2 at 32).

    Examples:
        >>> scaled_dilations((6, 12, 18), 8), scaled_dilations((6, 12, 18), 32)
        ((12, 24, 36), (3, 6, 9))
    """
    check_output_stride(output_stride)
    rates = check_int_sequence("dilations", dilations, low=1)  # 1.5 is refused, not rounded
    return tuple(max(1, round(d * 16 / output_stride)) for d in rates)


class _ImagePooling(nn.Sequential):
    """Global average pool, 1x1 conv + BN + ReLU, upsampled back to the map's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling followed by the 1x1 projection.

    Branches (each conv followed by BN and ReLU): a 1x1 conv; one 3x3 conv per rate in
    ``dilations`` (padding = dilation, so sizes are kept); image pooling (global average pool,
    1x1 conv, upsampled back). Their outputs are concatenated (``(2 + len(dilations)) *
    out_channels``) and projected by a 1x1 conv + BN + ReLU to ``out_channels`` (the first of
    the paper's two decoder convs).

    Args:
        in_channels: channels of the encoder's last map (2048 for ResNet-50).
        out_channels: width of every branch and of the projection (512 in the paper).
        dilations: rates of the 3x3 branches, used as given.

    Shape:
        - x: ``(B, in_channels, h, w)``; output ``(B, out_channels, h, w)``.

    Raises:
        ValueError: bad sizes or rates; ``x`` with the wrong channels; batch size 1 in training
            mode (the pooling branch's BN has a single value per channel).

    References:
        L.-C. Chen et al., Rethinking Atrous Convolution for Semantic Image Segmentation, 2017;
        the AGCL paper, supplementary 6.1.

    Examples:
        >>> aspp = ASPP(32, 16, dilations=(1, 2, 3))
        >>> aspp(torch.randn(2, 32, 5, 7)).shape
        torch.Size([2, 16, 5, 7])
    """

    def __init__(
        self, in_channels: int, out_channels: int = 512, dilations: Sequence[int] = (6, 12, 18)
    ) -> None:
        super().__init__()
        in_channels = _check_int("in_channels", in_channels, low=1)
        out_channels = _check_int("out_channels", out_channels, low=1)
        dilations = tuple(check_int_sequence("dilations", dilations, low=1))
        if not dilations:
            raise ValueError("dilations must hold at least one rate; got ()")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.dilations = dilations
        branches: list[nn.Module] = [_conv_bn_relu(in_channels, out_channels, 1)]
        branches += [_conv_bn_relu(in_channels, out_channels, 3, d) for d in dilations]
        branches.append(
            _ImagePooling(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, out_channels, 1))
        )
        self.branches = nn.ModuleList(branches)
        self.project = _conv_bn_relu(len(branches) * out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have shape (B, in_channels={self.in_channels}, h, w); got "
                f"shape {tuple(x.shape)}"
            )
        if self.training and x.shape[0] == 1:
            raise ValueError(
                "x must hold at least 2 samples in training mode (the image-pooling "
                "branch's BatchNorm sees one value per channel); got batch size 1. "
                "Use a batch of >= 2 or call .eval()"
            )
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def _check_features(features: Sequence[torch.Tensor], encoder_channels: tuple[int, ...]) -> None:
    if isinstance(features, torch.Tensor) or not isinstance(features, Sequence):
        raise TypeError(
            "features must be the list of maps from encoder.forward_features(x); got "
            f"{type(features).__name__}"
        )
    got = tuple(
        int(f.shape[1]) if isinstance(f, torch.Tensor) and f.ndim == 4 else -1 for f in features
    )
    if got != encoder_channels:
        raise ValueError(
            f"features must be {len(encoder_channels)} maps (B, C, h, w) with channels "
            f"{encoder_channels} (encoder_channels); got channels {got} "
            f"(shapes {[tuple(getattr(f, 'shape', ())) for f in features]}). Build "
            "the decoder with encoder_channels=encoder.out_channels"
        )


def _check_size(input_size: Sequence[int]) -> tuple[int, int]:
    size = tuple(check_int_sequence("input_size", input_size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"input_size must be (H, W) of the input image; got {tuple(input_size)}")
    return size[0], size[1]


class ASPPDecoder(nn.Module):
    """The paper's segmentation decoder: ASPP on the last map, 1x1 classifier, bilinear upsampling.

    Args:
        encoder_channels: ``encoder.out_channels`` (the last entry feeds the ASPP).
        num_classes: output channels (1 or 2 for a binary organ patch).
        output_stride: the encoder's output stride; scales the rates (x2 at 8, /2 at 32).
        aspp_channels: ASPP width (512 in the paper).
        dilations: ASPP rates at output stride 16.

    Shape:
        - features: maps from ``encoder.forward_features``; input_size ``(H, W)``.
        - output: ``(B, num_classes, H, W)`` logits (no BN or activation on the last conv).

    Raises:
        ValueError: bad options, or features that do not match ``encoder_channels``.

    References:
        The AGCL paper, supplementary 6.1; L.-C. Chen et al., DeepLabV3, 2017.

    Examples:
        >>> dec = ASPPDecoder((8, 16, 32, 64), 2, output_stride=16, aspp_channels=16)
        >>> feats = [torch.randn(2, c, 5, 5) for c in (8, 16, 32, 64)]
        >>> dec(feats, (70, 70)).shape
        torch.Size([2, 2, 70, 70])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        *,
        output_stride: int = 16,
        aspp_channels: int = 512,
        dilations: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.encoder_channels = tuple(
            check_int_sequence("encoder_channels", encoder_channels, low=1)
        )
        if not self.encoder_channels:
            raise ValueError("encoder_channels must list at least one map's channels; got ()")
        self.num_classes = _check_int("num_classes", num_classes, low=1)
        self.output_stride = output_stride
        self.aspp = ASPP(
            self.encoder_channels[-1], aspp_channels, scaled_dilations(dilations, output_stride)
        )
        self.classifier = nn.Conv2d(aspp_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        _check_features(features, self.encoder_channels)
        size = _check_size(input_size)
        logits = self.classifier(self.aspp(features[-1]))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLabV3+: ASPP on the last map, fused with a projected low-level (stride 4) map.

    The ASPP output is upsampled to the low-level map's size, concatenated with the low-level
    map reduced to ``low_level_reduced`` channels by a 1x1 conv, refined by two 3x3 convs
    (``decoder_channels``, BN, ReLU), classified by a 1x1 conv and upsampled to the input size.

    Args:
        encoder_channels: ``encoder.out_channels``; ``[low_level_index]`` is the skip.
        num_classes: output channels.
        output_stride: the encoder's output stride (scales the ASPP rates).
        aspp_channels: ASPP width (512, as in the paper's ASPP).
        decoder_channels: width of the two 3x3 refinement convs.
        low_level_reduced: channels of the projected skip (48 in DeepLabV3+).
        low_level_index: which map is the skip (0: layer1, stride 4).
        dilations: ASPP rates at output stride 16.

    Shape:
        - features: maps from ``encoder.forward_features``; input_size ``(H, W)``.
        - output: ``(B, num_classes, H, W)`` logits.

    References:
        L.-C. Chen et al., Encoder-Decoder with Atrous Separable Convolution (DeepLabV3+), ECCV
        2018; the AGCL paper, supplementary 6.1.

    Examples:
        >>> dec = DeepLabV3PlusDecoder((8, 16, 32, 64), 3, aspp_channels=16, decoder_channels=16)
        >>> feats = [torch.randn(2, c, s, s) for c, s in zip((8, 16, 32, 64), (9, 5, 3, 3))]
        >>> dec(feats, (33, 33)).shape
        torch.Size([2, 3, 33, 33])
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        num_classes: int,
        *,
        output_stride: int = 16,
        aspp_channels: int = 512,
        decoder_channels: int = 256,
        low_level_reduced: int = 48,
        low_level_index: int = 0,
        dilations: Sequence[int] = (6, 12, 18),
    ) -> None:
        super().__init__()
        self.encoder_channels = tuple(
            check_int_sequence("encoder_channels", encoder_channels, low=1)
        )
        n = len(self.encoder_channels)
        if n < 2 or not (0 <= low_level_index < n - 1):
            raise ValueError(
                f"low_level_index must point at a map before the last of "
                f"encoder_channels={self.encoder_channels}; got {low_level_index}"
            )
        self.num_classes = _check_int("num_classes", num_classes, low=1)
        self.output_stride = output_stride
        self.low_level_index = low_level_index
        self.aspp = ASPP(
            self.encoder_channels[-1], aspp_channels, scaled_dilations(dilations, output_stride)
        )
        self.low_level = _conv_bn_relu(
            self.encoder_channels[low_level_index],
            _check_int("low_level_reduced", low_level_reduced, low=1),
            1,
        )
        self.refine = nn.Sequential(
            _conv_bn_relu(
                aspp_channels + low_level_reduced,
                _check_int("decoder_channels", decoder_channels, low=1),
                3,
            ),
            _conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], input_size: Sequence[int]) -> torch.Tensor:
        _check_features(features, self.encoder_channels)
        size = _check_size(input_size)
        low = self.low_level(features[self.low_level_index])
        high = F.interpolate(
            self.aspp(features[-1]), size=low.shape[-2:], mode="bilinear", align_corners=False
        )
        logits = self.classifier(self.refine(torch.cat([high, low], dim=1)))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
