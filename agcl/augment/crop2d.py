"""2-D training crops of whole images (stage 1 of the 2-D pipeline): pad, random crop, flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agcl._validation import check_int

__all__ = ["RandomCropFlip2D"]


class RandomCropFlip2D:
    """Pad an image and its mask to at least ``size``, cut a random ``size x size`` crop and
    mirror it left-right with probability 1/2 (``hflip``).

    Called as ``augment(image, mask, generator=...)``; padding is 0 in the image and ``void`` in
    the mask (left out of the loss).

    Shape:
        image: ``(C, H, W)`` float; mask: ``(H, W)`` int64; outputs ``(C, size, size)`` and
        ``(size, size)``.

    Examples:
        >>> aug = RandomCropFlip2D(4, hflip=False)
        >>> x, y = aug(torch.ones(3, 2, 6), torch.zeros(2, 6, dtype=torch.long),
        ...            generator=torch.Generator())
        >>> tuple(x.shape), int(y.max())
        ((3, 4, 4), 255)
    """

    def __init__(self, size: int, *, hflip: bool = True, void: int = 255) -> None:
        self.size = check_int("size", size, low=1)
        self.hflip = bool(hflip)
        self.void = check_int("void", void)

    def __repr__(self) -> str:
        return f"RandomCropFlip2D(size={self.size}, hflip={self.hflip}, void={self.void})"

    def __call__(
        self, image: torch.Tensor, mask: torch.Tensor, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if image.ndim != 3 or mask.shape != image.shape[1:]:
            raise ValueError(
                "image must be (C, H, W) and mask (H, W) of the same size; "
                f"got {tuple(image.shape)} and {tuple(mask.shape)}"
            )
        size = self.size
        h, w = mask.shape
        ph, pw = max(0, size - h), max(0, size - w)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0.0)
            mask = F.pad(mask, (0, pw, 0, ph), value=self.void)
        h, w = mask.shape
        i = int(torch.randint(0, h - size + 1, (1,), generator=generator))
        j = int(torch.randint(0, w - size + 1, (1,), generator=generator))
        image, mask = image[:, i : i + size, j : j + size], mask[i : i + size, j : j + size]
        if self.hflip and bool(torch.rand(1, generator=generator) < 0.5):
            image, mask = image.flip(-1), mask.flip(-1)
        return image, mask
