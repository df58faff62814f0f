"""RandomAffineCrop3D: stage 1's crops (zoom, rotation in mm, intensity; never a mirror)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.augment import RandomAffineCrop3D
from agcl.augment.crop3d import _affine_crop, crop_matrix, extract, rotation_matrix

PLAIN = RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.0)


def test_rotation_matrix_is_a_rotation_in_the_right_sense():
    r = rotation_matrix((10.0, -25.0, 40.0))
    assert np.allclose(r @ r.T, np.eye(3)) and np.isclose(np.linalg.det(r), 1.0)
    assert np.allclose(rotation_matrix((0, 0, 90)) @ [1, 0, 0], [0, 1, 0])  # about axis 2: x -> y
    assert np.allclose(rotation_matrix((90, 0, 0)) @ [0, 1, 0], [0, 0, 1])  # about axis 0: y -> z
    assert np.allclose(rotation_matrix((0, 0, 0)), np.eye(3))


def test_affine_crop_resamples_like_a_plain_crop_and_a_rot90():
    g = torch.Generator().manual_seed(0)
    image = torch.rand((12, 12, 6), generator=g).half()
    label = (torch.rand((12, 12, 6), generator=g) * 4).to(torch.uint8)
    # the identity at integer voxel centres is a plain crop, padded outside the volume
    img, lab = _affine_crop(image, label, -1.0, (8, 8, 4), np.array([3.5, 7.5, 2.5]), np.eye(3))
    want_img, want_lab = (
        extract(image.float(), (0, 4, 1), (8, 8, 4), -1.0),
        extract(label, (0, 4, 1), (8, 8, 4), 0),
    )
    assert torch.allclose(img, want_img, atol=1e-6) and torch.equal(lab, want_lab)
    # 90 degrees about axis 2: crop[x, y] = volume[R (x, y)], the volume turned the other way in
    # the x-y plane
    img, lab = _affine_crop(
        image, label, -1.0, (12, 12, 6), np.array([5.5, 5.5, 2.5]), rotation_matrix((0, 0, 90))
    )
    assert torch.allclose(img, torch.rot90(image.float(), 1, (1, 0)), atol=1e-5)
    assert torch.equal(lab, torch.rot90(label, 1, (1, 0)))


def test_a_plain_crop_of_the_whole_volume_is_the_volume():
    label = torch.zeros((40, 40, 20), dtype=torch.uint8)
    label[10:30, 15:25, 5:15] = 1
    img, lab = PLAIN(
        label.half(), label, crop_shape=(40, 40, 20), centre=None, rng=np.random.default_rng(0)
    )
    assert (
        torch.equal(lab, label.long()) and lab.dtype == torch.int64 and img.dtype == torch.float32
    )


def test_rotations_are_in_mm_on_anisotropic_voxels():
    # a bar 20 voxels (40 mm) long along y on 2 x 2 x 4 mm voxels; turned 90 degrees about x it
    # lies along z and is 10 voxels (40 mm) long there: the rotation is physical, not in voxels
    label = torch.zeros((24, 24, 24), dtype=torch.uint8)
    label[11:13, 2:22, 11:13] = 1
    centre = np.array([11.5, 11.5, 11.5])
    _, lab = _affine_crop(
        label.half(),
        label,
        0.0,
        (24, 24, 24),
        centre,
        crop_matrix((90, 0, 0), 1.0, (2.0, 2.0, 4.0)),
    )
    where = torch.nonzero(lab == 1)
    assert where[:, 1].unique().numel() <= 4  # thin along y now
    assert (
        abs(int(where[:, 2].max() - where[:, 2].min()) + 1 - 10) <= 1
    )  # 40 mm along z = 10 voxels
    # zoom: factor 2 reads twice the extent, so the bar is half as long in the crop
    _, lab = _affine_crop(
        label.half(), label, 0.0, (24, 24, 24), centre, crop_matrix((0, 0, 0), 2.0)
    )
    where = torch.nonzero(lab == 1)
    assert abs(int(where[:, 1].max() - where[:, 1].min()) + 1 - 10) <= 1
    with pytest.raises(ValueError, match="spacing"):
        crop_matrix((0, 0, 0), 1.0, (1.0, 0.0, 1.0))


def test_crops_are_seeded_padded_and_never_mirrored():
    label = torch.zeros((10, 10, 10), dtype=torch.uint8)
    label[2:5, 2:5, 2:5] = 1
    aug = RandomAffineCrop3D()
    a = aug(label.half(), label, crop_shape=(16, 16, 4), centre=None, rng=np.random.default_rng(5))
    b = aug(label.half(), label, crop_shape=(16, 16, 4), centre=None, rng=np.random.default_rng(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    img, lab = PLAIN(
        label.half(), label, crop_shape=(16, 16, 16), centre=None, rng=np.random.default_rng(1)
    )
    assert img.shape == (16, 16, 16) and int((lab == 1).sum()) == int(
        (label == 1).sum()
    )  # padded around
    # left half class 1, right half class 2 (axis 0 is left-right): augmentation keeps the order
    lr = torch.zeros((30, 20, 10), dtype=torch.uint8)
    lr[:15], lr[15:] = 1, 2
    rng = np.random.default_rng(0)
    for aug in (
        RandomAffineCrop3D(),
        RandomAffineCrop3D(rotation_deg=20.0, spacing=(2.0, 2.0, 3.0)),
    ):
        for _ in range(100):
            centre = np.array([int(rng.integers(30)), int(rng.integers(20)), int(rng.integers(10))])
            img, lab = aug(lr.half(), lr, crop_shape=(12, 8, 6), centre=centre, rng=rng)
            xs1, xs2 = torch.nonzero(lab == 1)[:, 0].float(), torch.nonzero(lab == 2)[:, 0].float()
            if len(xs1) > 5 and len(xs2) > 5:
                assert xs1.mean() < xs2.mean()
            assert img.shape == (12, 8, 6) and set(lab.unique().tolist()) <= {0, 1, 2}


def test_intensity_augmentation_stays_in_its_range():
    # a * v + b with a in [0.9, 1.1], b in [-0.05, 0.05]
    flat = torch.full((8, 8, 8), 0.5, dtype=torch.float16)
    aug = RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.1)
    rng = np.random.default_rng(0)
    values = [
        float(
            aug(
                flat,
                torch.zeros((8, 8, 8), dtype=torch.uint8),
                crop_shape=(8, 8, 8),
                centre=None,
                rng=rng,
            )[0].mean()
        )
        for _ in range(200)
    ]
    assert 0.40 <= min(values) < 0.47 and 0.53 < max(values) <= 0.60
    assert PLAIN(
        flat, torch.zeros((8, 8, 8), dtype=torch.uint8), crop_shape=(8, 8, 8), centre=None, rng=rng
    )[0].unique().tolist() == [0.5]


def test_bad_settings_and_shapes_are_refused():
    for kwargs, match in (
        ({"rotation_deg": -1.0}, "rotation_deg"),
        ({"zoom": 1.0}, "zoom"),
        ({"intensity": float("nan")}, "intensity"),
        ({"zoom": True}, "zoom"),
    ):
        with pytest.raises(ValueError, match=match):
            RandomAffineCrop3D(**kwargs)
    with pytest.raises(ValueError, match="3-D grid"):
        PLAIN(
            torch.zeros(4, 4, 4),
            torch.zeros(4, 4, 3),
            crop_shape=(2, 2, 2),
            centre=None,
            rng=np.random.default_rng(0),
        )


def test_extract_pads_outside_the_volume():
    a = torch.arange(27.0).reshape(3, 3, 3)
    out = extract(a, (-1, 1, 2), (3, 3, 3), pad=-5.0)
    assert out.shape == (3, 3, 3)
    assert torch.equal(out[1:, :2, :1], a[:2, 1:, 2:])
    assert (out[0] == -5).all() and (out[:, 2] == -5).all() and (out[:, :, 1:] == -5).all()
