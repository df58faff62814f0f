"""Two random views of multi-channel patches (image + attention [+ label]) for contrastive learning.

Each view is a random resized crop (area fraction ``scale``, aspect ratio ``ratio``) back to
the input size combined with a rotation about the crop centre and an optional horizontal
flip, built as one ``(B, 2, 3)`` affine matrix per sample and applied with one
``affine_grid`` and two ``grid_sample`` calls for the whole batch: bilinear for the image
channels, nearest for the mask channels (so they stay binary), on the same grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from agcl._validation import (
    check_generator,
    check_int,
    check_ndim,
    check_positive,
    check_tensor,
    is_int,
    is_real,
)

__all__ = ["PairAug", "affine_view"]


def affine_view(
    x: torch.Tensor,
    theta: torch.Tensor,
    *,
    mask_channels: Sequence[int] = (1,),
    image_padding: Literal["zeros", "border", "reflection"] = "zeros",
) -> torch.Tensor:
    """Warp every sample with its affine matrix: images bilinear, masks nearest, one grid.

    ``theta`` maps output coordinates to input coordinates in ``[-1, 1]`` units
    (``align_corners=False``), as ``torch.nn.functional.affine_grid``. Samples whose matrix is
    exactly the identity are returned unchanged (bit for bit).

    Shape:
        x ``(B, C, H, W)``, theta ``(B, 2, 3)``; output ``(B, C, H, W)``.

    Examples:
        >>> x = torch.rand(2, 2, 4, 4)
        >>> eye = torch.eye(2, 3).expand(2, 2, 3)
        >>> torch.equal(affine_view(x, eye), x)
        True
    """
    b, c, h, w = x.shape
    masks = sorted({m % c for m in mask_channels})
    images = [k for k in range(c) if k not in masks]
    theta = theta.to(device=x.device, dtype=x.dtype if x.is_floating_point() else torch.float32)
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
    out = torch.empty_like(x)
    src = x if x.is_floating_point() else x.float()
    if images:
        out[:, images] = F.grid_sample(
            src[:, images], grid, mode="bilinear", padding_mode=image_padding, align_corners=False
        ).to(x.dtype)
    if masks:
        out[:, masks] = F.grid_sample(
            src[:, masks], grid, mode="nearest", padding_mode="zeros", align_corners=False
        ).to(x.dtype)
    ident = (theta == torch.eye(2, 3, dtype=theta.dtype, device=theta.device)).flatten(1).all(1)
    if bool(ident.any()):
        out[ident] = x[ident]
    return out


class PairAug:
    """Draw two independent augmented views of a batch of patches.

    Args:
        scale: range of the crop's area as a fraction of the patch (paper: 0.3-0.7).
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        degrees: rotation uniform in ``[-degrees, degrees]`` (paper: 30).
        hflip: random horizontal flips (off by default: a flip swaps left and right organs).
        intensity_jitter: image channels become ``x * (1 + a) + b`` with ``a, b`` uniform in
            ``[-intensity_jitter, intensity_jitter]`` per sample.
        color_distortion: strength ``s`` of brightness, contrast and (with 3+ image
            channels) saturation jitter, factors uniform in ``[1 - 0.8 s, 1 + 0.8 s]``, for
            natural images.
        mask_channels: channels treated as binary masks (nearest sampling, no intensity
            change); negative indices count from the end. Default ``(1,)``: the attention.
        generator: the ``torch.Generator`` the parameters are drawn from (on the CPU).
        image_padding: ``grid_sample`` padding of the image channels; masks pad with 0.

    Shape:
        Input ``(B, C, H, W)``; each view ``(B, C, H, W)``, same dtype and device.

    References:
        Lee et al., AGCL (random resized crop 0.3-0.7 and rotation +-30 degrees); Chen et
        al., A Simple Framework for Contrastive Learning of Visual Representations (SimCLR).

    Examples:
        >>> aug = PairAug(generator=torch.Generator().manual_seed(0))
        >>> x = torch.rand(4, 2, 16, 16); x[:, 1] = (x[:, 1] > 0.5).float()
        >>> v1, v2 = aug(x)
        >>> v1.shape, bool(((v1[:, 1] == 0) | (v1[:, 1] == 1)).all()), torch.equal(v1, v2)
        (torch.Size([4, 2, 16, 16]), True, False)
    """

    def __init__(
        self,
        *,
        scale: tuple[float, float] = (0.3, 0.7),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        degrees: float = 30.0,
        hflip: bool = False,
        intensity_jitter: float = 0.0,
        color_distortion: float = 0.0,
        mask_channels: Sequence[int] = (1,),
        generator: torch.Generator | None = None,
        image_padding: Literal["zeros", "border", "reflection"] = "zeros",
    ) -> None:
        self.scale = _range("scale", scale, 0.0, 1.0, open_low=True)
        self.ratio = _range("ratio", ratio, 0.0, math.inf, open_low=True)
        self.degrees = check_positive("degrees", degrees, allow_zero=True)
        self.intensity_jitter = check_positive(
            "intensity_jitter", intensity_jitter, allow_zero=True
        )
        self.color_distortion = check_positive(
            "color_distortion", color_distortion, allow_zero=True
        )
        if self.color_distortion > 1.25:
            raise ValueError(
                "color_distortion must lie in [0, 1.25] (factors stay positive); "
                f"got {color_distortion}"
            )
        if isinstance(mask_channels, (str, bytes)) or not all(is_int(m) for m in mask_channels):
            raise TypeError(f"mask_channels must be a sequence of ints; got {mask_channels!r}")
        if image_padding not in ("zeros", "border", "reflection"):
            raise ValueError(
                "image_padding must be one of 'zeros', 'border', 'reflection'; "
                f"got {image_padding!r}"
            )
        self.hflip = bool(hflip)
        self.mask_channels = tuple(int(m) for m in mask_channels)
        self.image_padding = image_padding
        self.generator = check_generator("generator", generator)

    def __repr__(self) -> str:
        return (
            f"PairAug(scale={self.scale}, ratio={self.ratio}, degrees={self.degrees}, "
            f"hflip={self.hflip}, "
            f"intensity_jitter={self.intensity_jitter}, color_distortion={self.color_distortion}, "
            f"mask_channels={self.mask_channels})"
        )

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two independent views of ``x``."""
        self._check(x)
        return self.view(x), self.view(x)

    def _check(self, x: torch.Tensor) -> None:
        check_tensor("x", x)
        check_ndim("x", x, (4,), "(B, C, H, W)")
        c = x.shape[1]
        bad = [m for m in self.mask_channels if not -c <= m < c]
        if bad:
            raise ValueError(
                f"mask_channels {bad} out of range for x with C={c} channels; "
                f"got shape {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor; got {x.dtype}")
        if x.shape[0] > 0 and (x.shape[2] == 0 or x.shape[3] == 0):
            raise ValueError(
                f"x must have patches of at least 1 x 1 pixels; got shape {tuple(x.shape)}"
            )
        if x.device.type != "meta" and not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).sum())
            raise ValueError(
                f"x must be finite; got {bad} NaN/inf values in a tensor of shape {tuple(x.shape)}"
            )

    def sample_theta(self, n: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Draw ``n`` affine matrices ``(n, 2, 3)`` (output -> input coordinates, CPU, float64).

        ``size`` is the patch's ``(H, W)``: the rotation is applied in pixels, so a disk stays a
        disk in a non-square patch. ``None`` means a square patch: pass ``size`` whenever the
        matrices will warp non-square patches (:meth:`view` does), or a rotation there
        stretches shapes.
        """
        n = check_int("n", n, low=0)
        if size is not None:
            if isinstance(size, (str, bytes)) or not hasattr(size, "__len__") or len(size) != 2:
                raise TypeError(f"size must be None or the patch's (H, W); got {size!r}")
            size = (
                check_int("size[0] (H)", size[0], low=1),
                check_int("size[1] (W)", size[1], low=1),
            )
        g = self.generator
        u = torch.rand(n, 5, generator=g, dtype=torch.float64)
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0]
        lr = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        r = torch.exp(lr[0] + (lr[1] - lr[0]) * u[:, 1])
        fw = torch.sqrt(area * r).clamp(max=1.0)
        fh = torch.sqrt(area / r).clamp(max=1.0)
        cx = (2 * u[:, 2] - 1) * (1 - fw)
        cy = (2 * u[:, 3] - 1) * (1 - fh)
        ang = torch.deg2rad((2 * u[:, 4] - 1) * self.degrees)
        flip = torch.ones(n, dtype=torch.float64)
        if self.hflip:
            flip = torch.where(torch.rand(n, generator=g, dtype=torch.float64) < 0.5, -1.0, 1.0)
        cos, sin = torch.cos(ang), torch.sin(ang)
        sx = fw * flip
        # the rotation acts in pixels: normalised x spans W/2 pixels and y H/2, so conjugating
        # R diag(sx, fh) with diag(W/2, H/2) scales the off-diagonal terms by H/W and W/H
        hw = 1.0 if size is None else size[0] / size[1]
        theta = torch.stack(
            [
                torch.stack([cos * sx, -sin * fh * hw, cx], 1),
                torch.stack([sin * sx / hw, cos * fh, cy], 1),
            ],
            1,
        )
        return theta

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """One random view of ``x`` ``(B, C, H, W)``."""
        self._check(x)
        if x.shape[0] == 0:  # an empty batch in, an empty batch out
            return x.clone()
        out = affine_view(
            x,
            self.sample_theta(x.shape[0], (x.shape[2], x.shape[3])),
            mask_channels=self.mask_channels,
            image_padding=self.image_padding,
        )
        images = [
            k for k in range(x.shape[1]) if k not in {m % x.shape[1] for m in self.mask_channels}
        ]
        if images and (self.intensity_jitter > 0 or self.color_distortion > 0):
            out[:, images] = self._intensity(out[:, images])
        return out

    def _intensity(self, img: torch.Tensor) -> torch.Tensor:
        b, g = img.shape[0], self.generator

        def draw(strength: float) -> torch.Tensor:
            u = torch.rand(b, 1, 1, 1, generator=g, dtype=torch.float64)
            return ((2 * u - 1) * strength).to(device=img.device, dtype=img.dtype)

        if self.intensity_jitter > 0:
            img = img * (1 + draw(self.intensity_jitter)) + draw(self.intensity_jitter)
        if self.color_distortion > 0:
            s = 0.8 * self.color_distortion
            img = img * (1 + draw(s))  # brightness
            mean = img.mean(dim=(1, 2, 3), keepdim=True)
            img = (img - mean) * (1 + draw(s)) + mean  # contrast
            if img.shape[1] >= 3:
                grey = img[:, :3].mean(dim=1, keepdim=True)
                img = torch.cat(
                    [(img[:, :3] - grey) * (1 + draw(s)) + grey, img[:, 3:]], 1
                )  # saturation
        return img


def _range(
    name: str, value: Sequence[float], low: float, high: float, *, open_low: bool
) -> tuple[float, float]:
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_real(v) for v in pair):  # "0.3" is not a number
        raise TypeError(f"{name} must be a pair of numbers (low, high); got {value!r}")
    a, b = float(pair[0]), float(pair[1])
    ok = (a > low if open_low else a >= low) and a <= b <= high
    if not ok:
        raise ValueError(
            f"{name} must satisfy {low} {'<' if open_low else '<='} low <= high <= {high}; "
            f"got {value!r}"
        )
    return a, b
