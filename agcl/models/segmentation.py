"""Whole models for stage 2 (encoder + projection) and stage 3 (encoder + decoder)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import nn

from agcl._validation import check_choice
from agcl.models._registry import create_model
from agcl.models.aspp import ASPPDecoder, DeepLabV3PlusDecoder

__all__ = ["AGCLPretrainModel", "SegmentationModel", "build_segmentation_model"]


class SegmentationModel(nn.Module):
    """Encoder + decoder; ``forward(x)`` returns logits at the input's size (stage 3).

    The encoder must provide ``forward_features`` and ``out_channels`` (as the ResNets here do);
    the decoder must take ``(features, input_size)`` and carry ``encoder_channels``.
    :meth:`freeze_encoder` fixes the encoder as the paper does after pre-training: its
    parameters stop requiring gradients, its BatchNorm layers use (and keep) their running
    statistics even after ``model.train()``, and its forward runs without autograd.

    Args:
        encoder: e.g. ``resnet50(in_chans=2, output_stride=16)``.
        decoder: e.g. ``ASPPDecoder(encoder.out_channels, 2, output_stride=16)``.

    Shape:
        - x: ``(B, in_chans, H, W)``; output ``(B, num_classes, H, W)``.

    Raises:
        ValueError: the decoder was built for other encoder channels.

    References:
        The AGCL paper, section 3 (frozen pre-trained encoder, ASPP decoder, Dice loss).

    Examples:
        >>> from agcl.models import resnet18
        >>> enc = resnet18(in_chans=2, output_stride=16, base_width=8)
        >>> model = SegmentationModel(enc, ASPPDecoder(enc.out_channels, 2, aspp_channels=16))
        >>> model.freeze_encoder().train().encoder.training
        False
        >>> model(torch.randn(2, 2, 40, 40)).shape
        torch.Size([2, 2, 40, 40])
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        enc_ch = tuple(getattr(encoder, "out_channels", ()))
        dec_ch = tuple(getattr(decoder, "encoder_channels", ()))
        if enc_ch != dec_ch:
            raise ValueError(
                f"decoder.encoder_channels must equal encoder.out_channels; got "
                f"{dec_ch} and {enc_ch}. Build the decoder with "
                "encoder_channels=encoder.out_channels"
            )
        enc_os = getattr(encoder, "output_stride", None)
        dec_os = getattr(decoder, "output_stride", None)
        if enc_os is not None and dec_os is not None and enc_os != dec_os:
            raise ValueError(
                f"decoder.output_stride must equal encoder.output_stride; got {dec_os} "
                f"and {enc_os} (the ASPP rates are scaled by it)"
            )
        self.encoder = encoder
        self.decoder = decoder
        self.encoder_frozen = False

    def freeze_encoder(self) -> SegmentationModel:
        """Stop training the encoder: no gradients, BN in eval mode for good. Returns ``self``."""
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder_frozen = True
        self.encoder.eval()
        return self

    def unfreeze_encoder(self) -> SegmentationModel:
        """Undo :meth:`freeze_encoder` (the encoder follows ``self.training`` again)."""
        for p in self.encoder.parameters():
            p.requires_grad_(True)
        self.encoder_frozen = False
        self.encoder.train(self.training)
        return self

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        if self.encoder_frozen:
            self.encoder.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        encoder: Any = self.encoder  # any module with forward_features (see the class docstring)
        if self.encoder_frozen:
            with torch.no_grad():
                feats = encoder.forward_features(x)
        else:
            feats = encoder.forward_features(x)
        return self.decoder(feats, x.shape[-2:])


class AGCLPretrainModel(nn.Module):
    """Encoder + projection head for contrastive pre-training (stage 2).

    Args:
        encoder: provides ``forward_pooled(x) -> (B, num_features)`` and ``num_features``.
        projection: e.g. ``ProjectionHead(encoder.num_features, 2048, 256)``.

    Shape:
        - x: ``(B, in_chans, H, W)`` (image and attention channels in AGCL).
        - output: ``(B, projection.out_features)`` un-normalised embeddings (the loss normalises).

    Raises:
        ValueError: ``projection.in_features`` differs from ``encoder.num_features``.

    References:
        The AGCL paper, section 3 and supplementary 6.1; P. Khosla et al., Supervised
        Contrastive Learning, NeurIPS 2020.

    Examples:
        >>> from agcl.models import ProjectionHead, resnet18
        >>> enc = resnet18(in_chans=2, base_width=8)
        >>> model = AGCLPretrainModel(enc, ProjectionHead(enc.num_features, 32, 16))
        >>> model(torch.randn(2, 2, 32, 32)).shape, model.features(torch.randn(2, 2, 32, 32)).shape
        (torch.Size([2, 16]), torch.Size([2, 64]))
    """

    def __init__(self, encoder: nn.Module, projection: nn.Module) -> None:
        super().__init__()
        nf = getattr(encoder, "num_features", None)
        pin = getattr(projection, "in_features", None)
        if nf is not None and pin is not None and nf != pin:
            raise ValueError(
                f"projection.in_features must equal encoder.num_features; got {pin} and "
                f"{nf}. Build the head with in_features=encoder.num_features"
            )
        self.encoder = encoder
        self.projection = projection

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled encoder vector, ``(B, num_features)``, before the projection."""
        encoder: Any = self.encoder  # any module with forward_pooled (see the class docstring)
        return encoder.forward_pooled(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.features(x))


def build_segmentation_model(
    encoder: str = "resnet50",
    num_classes: int = 2,
    *,
    in_chans: int = 2,
    output_stride: Literal[8, 16, 32] = 16,
    decoder: Literal["aspp", "deeplabv3plus"] = "aspp",
    aspp_channels: int = 512,
    encoder_kwargs: dict[str, Any] | None = None,
) -> SegmentationModel:
    """Build a registered ResNet encoder and a matching decoder in one call.

    Args:
        encoder: a registry name (``resnet18`` ... ``resnet152``).
        num_classes: decoder output channels.
        in_chans: encoder input channels.
        output_stride: 8, 16 or 32, shared by encoder and decoder.
        decoder: ``"aspp"`` (the paper's) or ``"deeplabv3plus"``.
        aspp_channels: ASPP width.
        encoder_kwargs: more builder options (``base_width``, ``pretrained_state_dict``, ...).

    Returns:
        A :class:`SegmentationModel` (encoder not frozen).

    Examples:
        >>> m = build_segmentation_model("resnet18", 2, encoder_kwargs={"base_width": 8},
        ...                              aspp_channels=16, decoder="deeplabv3plus")
        >>> m(torch.randn(2, 2, 32, 32)).shape
        torch.Size([2, 2, 32, 32])
    """
    check_choice("decoder", decoder, ("aspp", "deeplabv3plus"))
    enc: Any = create_model(
        encoder, in_chans=in_chans, output_stride=output_stride, **(encoder_kwargs or {})
    )
    cls = ASPPDecoder if decoder == "aspp" else DeepLabV3PlusDecoder
    dec = cls(
        enc.out_channels, num_classes, output_stride=output_stride, aspp_channels=aspp_channels
    )
    return SegmentationModel(enc, dec)
