"""ResNet encoders (18/34/50/101/152) with torchvision-compatible state-dict keys.

The layout follows He et al. (basic blocks for 18/34, bottleneck blocks with the stride on the
3x3 conv for 50+); parameter names are the ones torchvision uses (``conv1``, ``bn1``,
``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), so published ImageNet weights load with
``load_state_dict`` unchanged. For an output stride of 16 or 8 the last one or two stages keep
their resolution and dilate their 3x3 convs instead (DeepLab); the first block of a dilated stage
keeps the previous dilation, as torchvision's ``replace_stride_with_dilation`` does.

Contract (used by the decoders and ``agcl.models.segmentation``):

* ``forward_features(x)`` -> list of 4 maps (layer1..layer4), channels ``out_channels``, strides
  ``feature_strides`` (``(4, 8, 16, 32)`` at OS 32, ``(4, 8, 16, 16)`` at 16, ``(4, 8, 8, 8)``
  at 8); ``features[0]`` is the low-level map for a DeepLabV3+ skip (``low_level_channels``).
* ``forward_pooled(x)`` -> ``(B, num_features)`` global-average-pooled last map (stage 2).
* ``forward(x)`` -> ``fc(pooled)`` when ``num_classes > 0``, else the pooled vector.

Spatial sizes need not be multiples of the output stride: every map has size
``ceil(H / stride)`` and the decoders upsample to explicit sizes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn

from agcl._validation import check_int, check_ndim, check_output_stride, check_tensor
from agcl.models._adapt import adapt_input_conv
from agcl.models._blocks import BasicBlock, Bottleneck
from agcl.models._registry import register_model

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]

logger = logging.getLogger("agcl.models")
OutputStride = Literal[8, 16, 32]


class ResNet(nn.Module):
    """A ResNet encoder; build it with :func:`resnet50` and friends.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage, e.g. ``(3, 4, 6, 3)`` for ResNet-50.
        in_chans: input channels (2 in AGCL: image and attention).
        output_stride: 32 (classification), 16 or 8 (dilated, DeepLab).
        num_classes: 0 for no ``fc`` (the encoder returns the pooled vector), else the ``fc`` size.
        base_width: stem width; stage widths are ``base_width * (1, 2, 4, 8)`` (x4 for bottleneck
            outputs). 64 is the standard ResNet; 16 or 32 make a slim CPU encoder.
        zero_init_residual: start each residual branch's last BN at zero.

    Shape:
        - x: ``(B, in_chans, H, W)``.
        - ``forward`` output: ``(B, num_features)`` or ``(B, num_classes)``.

    Raises:
        ValueError: a bad option, or input with the wrong rank or channel count.

    Examples:
        >>> enc = ResNet(Bottleneck, (1, 1, 1, 1), in_chans=2, output_stride=8, base_width=4)
        >>> enc.out_channels, enc.feature_strides
        ((16, 32, 64, 128), (4, 8, 8, 8))
        >>> enc(torch.zeros(2, 2, 24, 24)).shape
        torch.Size([2, 128])
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        *,
        in_chans: int = 3,
        output_stride: OutputStride = 32,
        num_classes: int = 0,
        base_width: int = 64,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        in_chans = check_int("in_chans", in_chans, low=1)
        num_classes = check_int("num_classes", num_classes, low=0)
        base_width = check_int("base_width", base_width, low=1)
        check_output_stride(output_stride)
        self.in_chans = in_chans
        self.output_stride = int(output_stride)
        self.num_classes = num_classes
        self.base_width = base_width
        self.inplanes = base_width
        self.dilation = 1
        self.conv1 = nn.Conv2d(in_chans, base_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base_width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        # a stage is dilated instead of strided once the running stride would pass output_stride
        dilate = (False, output_stride < 16, output_stride < 32)
        self.layer1 = self._make_layer(block, base_width, layers[0])
        self.layer2 = self._make_layer(block, base_width * 2, layers[1], stride=2, dilate=dilate[0])
        self.layer3 = self._make_layer(block, base_width * 4, layers[2], stride=2, dilate=dilate[1])
        self.layer4 = self._make_layer(block, base_width * 8, layers[3], stride=2, dilate=dilate[2])
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.out_channels = tuple(base_width * m * block.expansion for m in (1, 2, 4, 8))
        self.feature_strides = tuple(min(s, self.output_stride) for s in (4, 8, 16, 32))
        self.low_level_channels = self.out_channels[0]
        self.num_features = self.out_channels[-1]
        if num_classes > 0:
            self.fc = nn.Linear(self.num_features, num_classes)
        self._init_weights(zero_init_residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        mods = [
            block(
                self.inplanes,
                planes,
                stride=stride,
                dilation=previous_dilation,
                downsample=downsample,
            )
        ]
        self.inplanes = planes * block.expansion
        mods += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*mods)

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                last = (
                    getattr(m, "bn3", None)
                    if isinstance(m, Bottleneck)
                    else (getattr(m, "bn2", None) if isinstance(m, BasicBlock) else None)
                )
                if last is not None:
                    nn.init.zeros_(last.weight)

    def _check_input(self, x: torch.Tensor) -> None:
        check_tensor("x", x)
        check_ndim("x", x, (4,), f"(B, {self.in_chans}, H, W)")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"x must have in_chans={self.in_chans} channels, shape (B, {self.in_chans}, H, W); "
                f"got shape {tuple(x.shape)} with {x.shape[1]} channels. Build the encoder with "
                f"in_chans={x.shape[1]} or feed {self.in_chans}-channel images"
            )

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four stage outputs, shallow to deep.

        Shape:
            - x: ``(B, in_chans, H, W)``.
            - output[i]: ``(B, out_channels[i], ceil(H / feature_strides[i]), ceil(W / ...))``.
        """
        self._check_input(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats

    def forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The global-average-pooled last map, ``(B, num_features)`` (2048 for ResNet-50)."""
        return torch.flatten(self.avgpool(self.forward_features(x)[-1]), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fc(pooled)`` when the encoder has an ``fc`` (``num_classes > 0``), else ``pooled``."""
        pooled = self.forward_pooled(x)
        return self.fc(pooled) if self.num_classes > 0 else pooled

    def load_pretrained(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load torchvision-layout weights, adapting ``conv1`` to ``in_chans`` if needed.

        ``conv1.weight`` goes through :func:`adapt_input_conv` when its input channels differ
        from ``in_chans``; ``fc.*`` is dropped when this encoder has no ``fc`` or a different
        number of classes (its ``fc`` then keeps its fresh initialisation). Both are logged on
        the ``agcl.models`` logger. ``fc.*`` and the BN ``num_batches_tracked`` counters (absent
        from older published checkpoints) may be missing; everything else must match exactly.

        Raises:
            TypeError: ``state_dict`` is not a mapping.
            ValueError: keys are missing or unexpected, or shapes differ (e.g. another
                ``base_width`` or depth).
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(
                f"state_dict must be a mapping of tensors; got {type(state_dict).__name__}"
            )
        sd = dict(state_dict)
        w = sd.get("conv1.weight")
        if isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] != self.in_chans:
            sd["conv1.weight"] = adapt_input_conv(w, self.in_chans)
            logger.info(
                "load_pretrained: conv1.weight adapted from %d to %d input channels",
                w.shape[1],
                self.in_chans,
            )
        fc_w = sd.get("fc.weight")
        if fc_w is not None and (self.num_classes == 0 or fc_w.shape[0] != self.num_classes):
            sd.pop("fc.weight")
            sd.pop("fc.bias", None)
            logger.info(
                "load_pretrained: dropped the pretrained fc (%d classes); this encoder has %s",
                fc_w.shape[0],
                "no fc"
                if self.num_classes == 0
                else f"a freshly initialised fc with {self.num_classes} classes",
            )
        own = self.state_dict()
        if self.num_classes > 0 and "fc.weight" not in sd:
            logger.info(
                "load_pretrained: no usable pretrained fc; the fc (%d classes) keeps its "
                "fresh initialisation",
                self.num_classes,
            )
        # fc is optional; num_batches_tracked is absent from older published checkpoints
        missing = sorted(
            k
            for k in set(own) - set(sd)
            if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
        )
        unexpected = sorted(set(sd) - set(own))
        bad = [
            f"{k}: expected {tuple(own[k].shape)}, got {tuple(sd[k].shape)}"
            for k in sorted(set(own) & set(sd))
            if tuple(own[k].shape) != tuple(sd[k].shape)
        ]
        if missing or unexpected or bad:
            raise ValueError(
                "state_dict does not fit this encoder (check the depth and base_width it was "
                f"trained with): missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}, "
                f"{len(bad)} shape mismatches {bad[:3]}{'...' if len(bad) > 3 else ''}"
            )
        self.load_state_dict(sd, strict=False)


def _build(
    block: type[BasicBlock] | type[Bottleneck],
    layers: tuple[int, int, int, int],
    *,
    pretrained_state_dict: Mapping[str, torch.Tensor] | None,
    **kwargs: object,
) -> ResNet:
    model = ResNet(block, layers, **kwargs)  # type: ignore[arg-type]
    if pretrained_state_dict is not None:
        model.load_pretrained(pretrained_state_dict)
    return model


def _doc(depth: int, feats: int) -> str:
    return f"""ResNet-{depth} encoder (torchvision state-dict layout).

    Args:
        in_chans: input channels (2 in AGCL: image and attention).
        output_stride: 32, 16 or 8; 16 and 8 dilate the last stages instead of striding.
        num_classes: 0 (default) for no ``fc``: ``forward`` returns the pooled
            ``{feats}``-d vector (for ``base_width=64``); > 0 adds an ``fc``.
        pretrained_state_dict: weights you loaded yourself (nothing is downloaded); ``conv1``
            is adapted to ``in_chans`` by :func:`agcl.models.adapt_input_conv` (logged).
        base_width: stem width, 64 for the standard network; smaller makes a slim encoder.
        zero_init_residual: zero the last BN of each residual branch.

    Shape:
        - x: ``(B, in_chans, H, W)``; output ``(B, num_features)`` or ``(B, num_classes)``.

    Returns:
        A :class:`agcl.models.resnet.ResNet`.

    Raises:
        ValueError: bad ``in_chans``/``output_stride``/``num_classes``/``base_width``, or a
            ``pretrained_state_dict`` that does not fit.

    References:
        K. He et al., Deep Residual Learning for Image Recognition, CVPR 2016; L.-C. Chen et
        al., Rethinking Atrous Convolution for Semantic Image Segmentation, 2017; the AGCL
        paper (H. H. Lee et al.), supplementary section 6.1.

    Examples:
        >>> enc = resnet{depth}(in_chans=2, output_stride=16, base_width=8)
        >>> [tuple(f.shape) for f in enc.forward_features(torch.zeros(1, 2, 32, 32))][-1][2:]
        (2, 2)
    """


_ARCH = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _make_builder(depth: int):  # noqa: ANN202 - returns a typed closure
    kind, layers = _ARCH[depth]
    block = BasicBlock if kind == "basic" else Bottleneck

    def builder(
        *,
        in_chans: int = 3,
        output_stride: OutputStride = 32,
        num_classes: int = 0,
        pretrained_state_dict: Mapping[str, torch.Tensor] | None = None,
        base_width: int = 64,
        zero_init_residual: bool = False,
    ) -> ResNet:
        return _build(
            block,
            layers,
            pretrained_state_dict=pretrained_state_dict,
            in_chans=in_chans,
            output_stride=output_stride,
            num_classes=num_classes,
            base_width=base_width,
            zero_init_residual=zero_init_residual,
        )

    builder.__name__ = builder.__qualname__ = f"resnet{depth}"
    builder.__doc__ = _doc(depth, 8 * 64 * block.expansion)
    return register_model(f"resnet{depth}")(builder)


resnet18 = _make_builder(18)
resnet34 = _make_builder(34)
resnet50 = _make_builder(50)
resnet101 = _make_builder(101)
resnet152 = _make_builder(152)
