"""RandomCropFlip2D: the 2-D stage 1's crops of whole images."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.augment import RandomCropFlip2D


def test_small_images_are_padded_with_void_and_image_and_mask_flip_together():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).view(2, 3, 4) + 1
    y = torch.ones(3, 4, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    cx, cy = RandomCropFlip2D(5, hflip=False)(x, y, generator=gen)
    assert cx.shape == (2, 5, 5) and cy.shape == (5, 5)
    assert int((cy == 255).sum()) == 25 - 12 and bool((cx[:, cy == 255] == 0).all())
    seen_flip = False
    aug = RandomCropFlip2D(3, hflip=True)
    for _ in range(20):
        fx, fy = aug(x, torch.arange(12).view(3, 4), generator=gen)
        # image and label cut and flipped together: the label still indexes the same pixels
        np.testing.assert_array_equal(fx[0].numpy(), (fy.float() + 1).numpy())
        seen_flip |= bool(fy[0, 0] > fy[0, 1])
    assert seen_flip
    never = RandomCropFlip2D(3, hflip=False)
    assert all(
        bool((never(x, torch.arange(12).view(3, 4), generator=gen)[1].diff(dim=1) > 0).all())
        for _ in range(20)
    )


def test_crops_are_seeded_by_the_generator_and_bad_input_is_refused():
    x, y = torch.rand(3, 10, 10), torch.zeros(10, 10, dtype=torch.long)
    a = RandomCropFlip2D(4)(x, y, generator=torch.Generator().manual_seed(3))
    b = RandomCropFlip2D(4)(x, y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0])
    with pytest.raises(ValueError, match="size"):
        RandomCropFlip2D(0)
    with pytest.raises(ValueError, match="same size"):
        RandomCropFlip2D(4)(x, y[:5], generator=torch.Generator())
