"""A small 3D U-Net: the coarse multi-organ segmenter of stage 1.

The paper's coarse stage uses RAP-Net; any 3D segmenter that gives per-organ masks will do, and
this one is small enough to train on a 2-core CPU on downsampled volumes (~64 x 64 x 32) in
minutes. Inputs whose sizes are not multiples of ``2 ** depth`` are zero-padded at the far end
internally and the logits are cropped back, so any size works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from agcl._validation import check_int, check_ndim, check_tensor
from agcl.models._registry import register_model

__all__ = ["CoarseUNet3D", "unet3d"]


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(cin, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        nn.InstanceNorm3d(cout, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


class CoarseUNet3D(nn.Module):
    """3D U-Net with instance norm producing multi-organ logits.

    ``depth`` max-pool steps halve the resolution; level ``i`` has ``base_channels * 2**i``
    channels; each level holds two 3x3x3 conv + InstanceNorm + LeakyReLU blocks; the decoder
    upsamples with 2x2x2 transposed convs and concatenates the skip; a 1x1x1 conv gives the logits.

    Args:
        in_channels: input channels (1 for a CT volume).
        num_classes: output channels (background + organs).
        base_channels: width of the first level (8..16 trains fast on a CPU).
        depth: number of down-sampling steps (>= 1).

    Shape:
        - x: ``(B, in_channels, D, H, W)``, any sizes.
        - output: ``(B, num_classes, D, H, W)`` logits.

    Raises:
        ValueError: bad options; ``x`` not 5-D or with the wrong channels; a volume so small
            that the bottleneck holds a single voxel (instance norm needs more than one).

    References:
        O. Cicek et al., 3D U-Net, MICCAI 2016; D. Ulyanov et al., Instance Normalization, 2016;
        the AGCL paper, section 3 (stage 1, coarse attention).

    Examples:
        >>> net = CoarseUNet3D(1, 3, base_channels=4, depth=2)
        >>> net(torch.randn(1, 1, 10, 13, 9)).shape
        torch.Size([1, 3, 10, 13, 9])
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 2, *, base_channels: int = 8, depth: int = 3
    ) -> None:
        super().__init__()
        in_channels, num_classes, base_channels, depth = (
            check_int(name, value, low=1)
            for name, value in (
                ("in_channels", in_channels),
                ("num_classes", num_classes),
                ("base_channels", base_channels),
                ("depth", depth),
            )
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList(
            [_double_conv(in_channels, widths[0])]
            + [_double_conv(widths[i - 1], widths[i]) for i in range(1, depth + 1)]
        )
        self.pool = nn.MaxPool3d(2)
        self.upsamplers = nn.ModuleList(
            [nn.ConvTranspose3d(widths[i], widths[i - 1], 2, stride=2) for i in range(depth, 0, -1)]
        )
        self.decoders = nn.ModuleList(
            [_double_conv(2 * widths[i - 1], widths[i - 1]) for i in range(depth, 0, -1)]
        )
        self.head = nn.Conv3d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        check_ndim("x", x, (5,), f"(B, {self.in_channels}, D, H, W)")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x must have in_channels={self.in_channels} channels, shape (B, "
                f"{self.in_channels}, D, H, W); got shape {tuple(x.shape)}. Build the network "
                f"with in_channels={x.shape[1]} or add a channel axis with x.unsqueeze(1)"
            )
        size = tuple(x.shape[2:])
        m = 2**self.depth
        padded = [-(-s // m) * m for s in size]
        bottleneck = 1
        for s in padded:
            bottleneck *= s // m
        if bottleneck < 2:
            raise ValueError(
                f"x is too small for depth={self.depth}: spatial size {size} leaves a single voxel "
                f"at the bottleneck (instance norm needs more). Use depth={max(1, self.depth - 1)} "
                f"or an input with some side larger than {m}"
            )
        pads: list[int] = []
        for s, p in zip(reversed(size), reversed(padded)):
            pads += [0, p - s]
        h = F.pad(x, pads) if any(pads) else x
        skips = []
        for i, enc in enumerate(self.encoders):
            h = enc(h if i == 0 else self.pool(h))
            skips.append(h)
        h = skips.pop()
        for up, dec in zip(self.upsamplers, self.decoders):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        out = self.head(h)
        return out[..., : size[0], : size[1], : size[2]]


@register_model("unet3d")
def unet3d(
    *, in_channels: int = 1, num_classes: int = 2, base_channels: int = 8, depth: int = 3
) -> CoarseUNet3D:
    """The stage-1 coarse segmenter, :class:`CoarseUNet3D` (see there for the arguments).

    Examples:
        >>> unet3d(num_classes=4, base_channels=4, depth=1)(torch.randn(1, 1, 4, 6, 6)).shape
        torch.Size([1, 4, 4, 6, 6])
    """
    return CoarseUNet3D(in_channels, num_classes, base_channels=base_channels, depth=depth)
