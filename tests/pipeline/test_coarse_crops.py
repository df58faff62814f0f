from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.data.prepared import resample
from agcl.pipeline._coarse_crops import (
    GridCase,
    _affine_crop,
    crop_matrix,
    extract,
    gaussian_weights,
    grid_shape,
    rotation_matrix,
    sample_crop,
    sliding_window,
    to_grid,
    window_starts,
)


def test_grid_shape_keeps_the_physical_extent():
    assert grid_shape((128, 128, 40), (2.75, 2.75, 5.0), (5.5, 5.5, 5.0)) == (64, 64, 40)
    # real CT: 512 x 512 x 100 at 0.78 x 0.78 x 2.5 mm to 2 x 2 x 3 mm -> 200 x 200 x 83
    assert grid_shape((512, 512, 100), (0.78, 0.78, 2.5), (2.0, 2.0, 3.0)) == (200, 200, 83)
    assert grid_shape((3, 3, 3), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0)) == (1, 1, 1)  # never empty
    with pytest.raises(ValueError, match="spacing_mm"):
        grid_shape((8, 8, 8), (1.0, 1.0, 1.0), (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="3 entries"):
        grid_shape((8, 8), (1.0, 1.0), (1.0, 1.0))


def test_to_grid_maps_codes_to_classes_and_records_their_voxels():
    image = np.linspace(0, 1, 20 * 20 * 10, dtype=np.float32).reshape(20, 20, 10)
    label = np.zeros((20, 20, 10), np.int16)
    label[2:8, 2:8, 2:6] = 6   # organ code 6 -> class 2
    label[12:18, 12:18, 4:8] = 1  # code 1 -> class 1
    lut = np.zeros(7, np.int64)
    lut[1], lut[6] = 1, 2
    g = to_grid(image, label, lut, (10, 10, 5), rng=np.random.default_rng(0))
    assert tuple(g.image.shape) == (10, 10, 5) and g.image.dtype == torch.float16
    assert g.label.dtype == torch.uint8
    assert torch.equal(g.label, resample(torch.from_numpy(lut[label]).to(torch.uint8), (10, 10, 5), mode="nearest"))
    assert sorted(g.locations) == [1, 2]
    for k, where in g.locations.items():
        assert (g.label.numpy()[tuple(where.T)] == k).all()
        assert len(where) == int((g.label == k).sum())
    assert g.pad == pytest.approx(float(resample(image, (10, 10, 5), mode="trilinear").min()))


def _two_organ_case(n: int = 40) -> GridCase:
    label = torch.zeros((n, n, n), dtype=torch.uint8)
    label[5:25, 5:25, 5:25] = 1            # a large organ
    label[33:35, 33:35, 33:35] = 2         # a small one (8 voxels) far from it
    locations = {k: np.argwhere(label.numpy() == k).astype(np.int32) for k in (1, 2)}
    return GridCase(image=label.to(torch.float16) / 2, label=label, locations=locations, pad=0.0)


def test_foreground_crops_find_a_small_organ_at_the_configured_rate():
    case = _two_organ_case()
    rng = np.random.default_rng(0)
    n = 3000
    crops = [sample_crop(case, (8, 8, 8), rng, foreground=0.33, augment=False) for _ in range(n)]
    chosen = np.array([c for _, _, c in crops])
    # class by class: half of the foreground crops are centred on the small organ
    assert abs((chosen == 2).mean() - 0.33 / 2) < 0.025
    assert abs((chosen == 1).mean() - 0.33 / 2) < 0.025
    for _, lab, c in crops:
        if c == 2:
            assert (lab == 2).any()  # the crop holds the organ it was centred on
    hit = np.mean([bool((lab == 2).any()) for _, lab, _ in crops])
    rng = np.random.default_rng(0)
    random_hit = np.mean([bool((sample_crop(case, (8, 8, 8), rng, foreground=0.0, augment=False)[1] == 2).any())
                          for _ in range(n)])
    assert hit >= 0.33 / 2 - 0.02 and random_hit < 0.08 and hit > random_hit + 0.1


def test_crops_are_seeded_padded_and_never_mirrored():
    case = _two_organ_case(10)
    a = sample_crop(case, (16, 16, 4), np.random.default_rng(5), foreground=0.5)
    b = sample_crop(case, (16, 16, 4), np.random.default_rng(5), foreground=0.5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    img, lab, _ = sample_crop(case, (16, 16, 16), np.random.default_rng(1), foreground=0.0, augment=False)
    assert img.shape == (16, 16, 16) and lab.dtype == torch.int64
    assert int((lab == 1).sum()) == int((case.label == 1).sum())  # the whole small volume, padded around
    # left half class 1, right half class 2 (axis 0 is left-right): augmentation keeps the order
    label = torch.zeros((30, 20, 10), dtype=torch.uint8)
    label[:15], label[15:] = 1, 2
    lr = GridCase(image=label.half(), label=label, locations={1: np.argwhere(label.numpy() == 1).astype(np.int32),
                                                              2: np.argwhere(label.numpy() == 2).astype(np.int32)})
    rng = np.random.default_rng(0)
    for _ in range(100):
        img, lab, _ = sample_crop(lr, (12, 8, 6), rng, foreground=0.5, augment=True)
        xs1, xs2 = torch.nonzero(lab == 1)[:, 0], torch.nonzero(lab == 2)[:, 0]
        if len(xs1) and len(xs2):
            assert xs1.max() < xs2.min()
        assert img.shape == (12, 8, 6)
    # rotated crops tilt the boundary but never swap the sides
    for _ in range(100):
        img, lab, _ = sample_crop(lr, (12, 8, 6), rng, foreground=0.5, augment=True, rotation_deg=20.0,
                                  spacing=(2.0, 2.0, 3.0))
        xs1, xs2 = torch.nonzero(lab == 1)[:, 0].float(), torch.nonzero(lab == 2)[:, 0].float()
        if len(xs1) > 5 and len(xs2) > 5:
            assert xs1.mean() < xs2.mean()
        assert img.shape == (12, 8, 6) and set(lab.unique().tolist()) <= {0, 1, 2}
    # intensity augmentation stays light: a * v + b with a in [0.9, 1.1], b in [-0.05, 0.05]
    flat = GridCase(image=torch.full((8, 8, 8), 0.5, dtype=torch.float16), label=torch.zeros((8, 8, 8), dtype=torch.uint8))
    values = [float(sample_crop(flat, (8, 8, 8), rng, foreground=0.0, zoom=0.0)[0].mean()) for _ in range(200)]
    assert 0.40 <= min(values) < 0.47 and 0.53 < max(values) <= 0.60


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
    case = GridCase(image=image, label=label, pad=-1.0)
    # the identity at integer voxel centres is a plain crop, padded outside the volume
    img, lab = _affine_crop(case, (8, 8, 4), np.array([3.5, 7.5, 2.5]), np.eye(3))
    want_img, want_lab = extract(image.float(), (0, 4, 1), (8, 8, 4), -1.0), extract(label, (0, 4, 1), (8, 8, 4), 0)
    assert torch.allclose(img, want_img, atol=1e-6) and torch.equal(lab, want_lab)
    # 90 degrees about axis 2: crop[x, y] = volume[R (x, y)], the volume turned the other way in the x-y plane
    img, lab = _affine_crop(case, (12, 12, 6), np.array([5.5, 5.5, 2.5]), rotation_matrix((0, 0, 90)))
    assert torch.allclose(img, torch.rot90(image.float(), 1, (1, 0)), atol=1e-5)
    assert torch.equal(lab, torch.rot90(label, 1, (1, 0)))
    # anisotropic voxels: sample_crop rotates in mm, so a rotation keeps a 2:1 box's physical shape
    case = GridCase(image=torch.zeros((40, 40, 20)).half(), label=torch.zeros((40, 40, 20), dtype=torch.uint8), pad=0.0)
    case.label[10:30, 15:25, 5:15] = 1  # 20 x 10 voxels in-plane
    sq = sample_crop(case, (40, 40, 20), np.random.default_rng(0), foreground=0.0, zoom=0.0, intensity=0.0)
    assert torch.equal(sq[1], case.label.long())
    with pytest.raises(ValueError, match="rotation_deg"):
        sample_crop(case, (8, 8, 8), np.random.default_rng(0), foreground=0.0, rotation_deg=-1.0)


def test_rotations_are_in_mm_on_anisotropic_voxels():
    # a bar 20 voxels (40 mm) long along y on 2 x 2 x 4 mm voxels; turned 90 degrees about x it
    # lies along z and is 10 voxels (40 mm) long there: the rotation is physical, not in voxels
    label = torch.zeros((24, 24, 24), dtype=torch.uint8)
    label[11:13, 2:22, 11:13] = 1
    case = GridCase(image=label.half(), label=label)
    _, lab = _affine_crop(case, (24, 24, 24), np.array([11.5, 11.5, 11.5]), crop_matrix((90, 0, 0), 1.0, (2.0, 2.0, 4.0)))
    where = torch.nonzero(lab == 1)
    assert where[:, 1].unique().numel() <= 4  # thin along y now
    assert abs(int(where[:, 2].max() - where[:, 2].min()) + 1 - 10) <= 1  # 40 mm along z = 10 voxels
    # zoom: factor 2 reads twice the extent, so the bar is half as long in the crop
    _, lab = _affine_crop(case, (24, 24, 24), np.array([11.5, 11.5, 11.5]), crop_matrix((0, 0, 0), 2.0))
    where = torch.nonzero(lab == 1)
    assert abs(int(where[:, 1].max() - where[:, 1].min()) + 1 - 10) <= 1
    with pytest.raises(ValueError, match="spacing"):
        crop_matrix((0, 0, 0), 1.0, (1.0, 0.0, 1.0))


def test_extract_pads_outside_the_volume():
    a = torch.arange(27.0).reshape(3, 3, 3)
    out = extract(a, (-1, 1, 2), (3, 3, 3), pad=-5.0)
    assert out.shape == (3, 3, 3)
    assert torch.equal(out[1:, :2, :1], a[:2, 1:, 2:])
    assert (out[0] == -5).all() and (out[:, 2] == -5).all() and (out[:, :, 1:] == -5).all()


def test_window_starts_cover_the_axis_with_the_overlap():
    for n, size in [(10, 4), (64, 24), (25, 25), (26, 25), (5, 8)]:
        starts = window_starts(n, size, 0.5)
        covered = np.zeros(max(n, size), bool)
        for s in starts:
            covered[s: s + size] = True
            assert 0 <= s and s + size <= max(n, size)
        assert covered[:n].all()
        assert all(b - a <= size // 2 for a, b in zip(starts, starts[1:]))


def test_gaussian_weights_peak_in_the_centre_and_stay_positive():
    w = gaussian_weights((9, 8, 5))
    assert w.shape == (9, 8, 5) and (w > 0).all() and float(w.max()) == pytest.approx(1.0)
    assert float(w[4, 3, 2]) > float(w[0, 0, 0]) * 100
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))


def _unet():
    from agcl.models import create_model

    torch.manual_seed(0)
    return create_model("unet3d", in_channels=1, num_classes=3, base_channels=2, depth=1).eval()


def test_sliding_window_is_the_single_pass_when_the_volume_fits_one_window():
    model = _unet()
    vol = torch.rand(12, 10, 8)
    single = torch.softmax(model(vol[None, None]), 1)[0]
    assert torch.allclose(sliding_window(model, vol, (12, 10, 8), overlap=0.5, pad=0.0), single, atol=1e-6)
    # smaller than the crop: padded as in training, then cropped back
    padded = extract(vol, (0, 0, 0), (16, 16, 8), 0.0)
    ref = torch.softmax(model(padded[None, None]), 1)[0][:, :12, :10, :8]
    assert torch.allclose(sliding_window(model, vol, (16, 16, 8), overlap=0.5, pad=0.0), ref, atol=1e-6)


def test_sliding_window_stitches_every_voxel():
    torch.manual_seed(0)
    pointwise = torch.nn.Conv3d(1, 4, 1).eval()  # no context: the stitched output must equal one pass
    vol = torch.rand(23, 17, 9)
    with torch.no_grad():
        whole = torch.softmax(pointwise(vol[None, None]), 1)[0]
    out = sliding_window(pointwise, vol, (8, 8, 4), overlap=0.5, pad=0.0)
    assert out.shape == (4, 23, 17, 9) and torch.isfinite(out).all()
    assert torch.allclose(out, whole, atol=1e-5)
    # a context model: valid probabilities everywhere
    out = sliding_window(_unet(), vol, (8, 8, 4), overlap=0.5, pad=0.0)
    assert out.shape == (3, 23, 17, 9) and torch.allclose(out.sum(0), torch.ones(23, 17, 9), atol=1e-5)
