"""PairAug: masks stay binary, identity is exact, one transform per sample, brute-force oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl import PairAug
from agcl.augment import affine_view


def _batch(b=6, h=16, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 2, h, w, generator=g)
    x[:, 1] = (torch.rand(b, h, w, generator=g) > 0.6).float()
    return x


def _oracle_bilinear(img: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Per-pixel inverse mapping with bilinear interpolation, zero padding, float64."""
    h, w = img.shape
    out = np.zeros((h, w))
    for r in range(h):
        for c in range(w):
            xo, yo = (2 * c + 1) / w - 1, (2 * r + 1) / h - 1  # align_corners=False centres
            xi, yi = theta @ np.array([xo, yo, 1.0])
            px, py = ((xi + 1) * w - 1) / 2, ((yi + 1) * h - 1) / 2
            x0, y0 = math.floor(px), math.floor(py)
            acc = 0.0
            for dy in (0, 1):
                for dx in (0, 1):
                    xx, yy = x0 + dx, y0 + dy
                    wgt = (1 - abs(px - xx)) * (1 - abs(py - yy))
                    if 0 <= xx < w and 0 <= yy < h:
                        acc += wgt * img[yy, xx]
            out[r, c] = acc
    return out


def test_image_channels_match_bruteforce_oracle():
    aug = PairAug(generator=torch.Generator().manual_seed(3))
    x = _batch(3, 9, 11).double()
    theta = aug.sample_theta(3)
    out = affine_view(x, theta)
    for i in range(3):
        # float64 all the way: differences are rounding only
        np.testing.assert_allclose(
            out[i, 0].numpy(), _oracle_bilinear(x[i, 0].numpy(), theta[i].numpy()), atol=1e-10
        )


def test_same_transform_on_every_channel():
    # a 3-channel batch whose channels 0 and 2 are identical images: they must stay identical,
    # and the nearest-sampled mask channel must equal the image sampled with mode="nearest"
    x = _batch(5)
    x = torch.cat([x, x[:, :1]], 1)
    aug = PairAug(degrees=45.0, generator=torch.Generator().manual_seed(1))
    v = aug.view(x)
    assert torch.equal(v[:, 0], v[:, 2])
    theta = PairAug(degrees=45.0, generator=torch.Generator().manual_seed(1)).sample_theta(5)
    grid = torch.nn.functional.affine_grid(theta.float(), [5, 1, 16, 16], align_corners=False)
    near = torch.nn.functional.grid_sample(x[:, 1:2], grid, mode="nearest", align_corners=False)
    assert torch.equal(v[:, 1:2], near)


@settings(deadline=None, max_examples=15)
@given(
    st.integers(1, 6), st.integers(2, 20), st.integers(2, 20), st.integers(0, 2**16), st.booleans()
)
def test_masks_stay_binary_views_differ_no_nan(b, h, w, seed, hflip):
    x = _batch(b, h, w, seed)
    aug = PairAug(hflip=hflip, intensity_jitter=0.1, generator=torch.Generator().manual_seed(seed))
    v1, v2 = aug(x)
    for v in (v1, v2):
        assert v.shape == x.shape and v.dtype == x.dtype
        assert torch.isfinite(v).all()
        assert set(torch.unique(v[:, 1]).tolist()) <= {0.0, 1.0}
    assert not torch.equal(v1[:, 0], v2[:, 0])


def test_identity_parameters_return_input_exactly():
    x = _batch(4)
    aug = PairAug(
        scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, generator=torch.Generator().manual_seed(0)
    )
    v1, v2 = aug(x)
    assert torch.equal(v1, x) and torch.equal(v2, x)
    assert v1.data_ptr() != x.data_ptr()  # a copy, not the input itself


def test_deterministic_with_generator():
    x = _batch(4)
    a = PairAug(generator=torch.Generator().manual_seed(5))(x)
    b = PairAug(generator=torch.Generator().manual_seed(5))(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("size", [None, (16, 64), (64, 16)])
@pytest.mark.parametrize("hflip", [False, True])
def test_crop_area_and_rotation_ranges(hflip, size):
    # every draw is a crop of area fraction 0.3-0.7, rotated by at most 30 degrees in pixels
    # and (hflip) mirrored: checked on the matrix in pixel units, with and without a flip and
    # for non-square patches (issue 26, rows 3 and 32)
    aug = PairAug(hflip=hflip, generator=torch.Generator().manual_seed(0))
    theta = aug.sample_theta(2000, size)
    h, w = size or (1, 1)
    to_px = torch.diag(torch.tensor([w / 2, h / 2], dtype=torch.float64))  # normalised -> pixels
    a = to_px @ theta[:, :, :2] @ torch.linalg.inv(to_px)  # the linear part in pixels
    det = torch.linalg.det(a)
    area = det.abs()  # |det| = fw * fh = the crop's area fraction
    assert area.min() >= 0.3 - 1e-9 and area.max() <= 0.7 + 1e-9
    assert bool((det < 0).any()) == hflip  # mirrored draws exist exactly when asked for
    # a = R diag(f fw, fh), f = sign(det): the columns are orthogonal and R's angle is read off
    # the first column with the flip undone
    cross = (a[:, :, 0] * a[:, :, 1]).sum(1)
    assert cross.abs().max() < 1e-12
    f = det.sign()
    ang = torch.rad2deg(torch.atan2(a[:, 1, 0] * f, a[:, 0, 0] * f))
    assert ang.abs().max() <= 30 + 1e-9 and ang.abs().max() > 25
    assert (theta[:, :, 2].abs() <= 1).all()


def test_hflip_mirrors_and_default_does_not():
    assert (
        torch.linalg.det(
            PairAug(generator=torch.Generator().manual_seed(0)).sample_theta(200)[:, :, :2]
        )
        > 0
    ).all()
    det = torch.linalg.det(
        PairAug(hflip=True, generator=torch.Generator().manual_seed(0)).sample_theta(200)[:, :, :2]
    )
    assert (det < 0).any() and (det > 0).any()
    # a flip alone, on a 1 x 4 row: exact reversal
    x = torch.arange(4.0).view(1, 1, 1, 4)
    flip = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]])
    assert affine_view(x, flip, mask_channels=()).flatten().tolist() == [3.0, 2.0, 1.0, 0.0]


def test_colour_distortion_changes_only_images():
    x = torch.rand(3, 4, 8, 8)
    x[:, 3] = (x[:, 3] > 0.5).float()
    aug = PairAug(
        scale=(1, 1),
        ratio=(1, 1),
        degrees=0,
        color_distortion=0.5,
        mask_channels=(-1,),
        generator=torch.Generator().manual_seed(0),
    )
    v = aug.view(x)
    assert torch.equal(v[:, 3], x[:, 3]) and not torch.equal(v[:, :3], x[:, :3])


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale"):
        PairAug(scale=(0.7, 0.3))
    with pytest.raises(ValueError, match="ratio"):
        PairAug(ratio=(0.0, 1.0))
    with pytest.raises(ValueError, match="degrees"):
        PairAug(degrees=-1.0)
    with pytest.raises(ValueError, match="image_padding"):
        PairAug(image_padding="wrap")  # type: ignore[arg-type]
    aug = PairAug()
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\); got shape \(2, 8, 8\)"):
        aug(torch.rand(2, 8, 8))
    with pytest.raises(ValueError, match="mask_channels"):
        PairAug(mask_channels=(3,))(torch.rand(2, 2, 8, 8))
    with pytest.raises(TypeError, match="x must be a floating"):
        aug(torch.zeros(2, 2, 8, 8, dtype=torch.long))


def test_non_finite_or_empty_patches_refused():
    aug = PairAug(generator=torch.Generator().manual_seed(0))
    x = torch.rand(2, 2, 8, 8)
    x[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="x must be finite; got 1 NaN/inf"):
        aug(x)
    with pytest.raises(ValueError, match="at least 1 x 1"):
        aug(torch.rand(1, 2, 0, 0))
