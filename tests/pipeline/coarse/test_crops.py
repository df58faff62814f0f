"""Stage 1's training data: the coarse grid and the crops of each epoch (through a DataLoader)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from agcl.augment import RandomAffineCrop3D
from agcl.data.prepared import resample
from agcl.pipeline.coarse.crops import CoarseCropDataset, GridCase, grid_shape, to_grid


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
    label[2:8, 2:8, 2:6] = 6  # organ code 6 -> class 2
    label[12:18, 12:18, 4:8] = 1  # code 1 -> class 1
    lut = np.zeros(7, np.int64)
    lut[1], lut[6] = 1, 2
    g = to_grid(image, label, lut, (10, 10, 5), rng=np.random.default_rng(0))
    assert tuple(g.image.shape) == (10, 10, 5) and g.image.dtype == torch.float16
    assert g.label.dtype == torch.uint8
    assert torch.equal(
        g.label, resample(torch.from_numpy(lut[label]).to(torch.uint8), (10, 10, 5), mode="nearest")
    )
    assert sorted(g.locations) == [1, 2]
    for k, where in g.locations.items():
        assert (g.label.numpy()[tuple(where.T)] == k).all()
        assert len(where) == int((g.label == k).sum())
    assert g.pad == pytest.approx(float(resample(image, (10, 10, 5), mode="trilinear").min()))


def _two_organ_case(n: int = 40) -> GridCase:
    label = torch.zeros((n, n, n), dtype=torch.uint8)
    label[5:25, 5:25, 5:25] = 1  # a large organ
    label[33:35, 33:35, 33:35] = 2  # a small one (8 voxels) far from it
    locations = {k: np.argwhere(label.numpy() == k).astype(np.int32) for k in (1, 2)}
    return GridCase(image=label.to(torch.float16) / 2, label=label, locations=locations, pad=0.0)


def test_foreground_crops_find_a_small_organ_at_the_configured_rate():
    case = _two_organ_case()
    ds = CoarseCropDataset([case], (8, 8, 8), crops_per_case=1, foreground=0.33)
    rng = np.random.default_rng(0)
    n = 3000
    picks = [ds.pick_centre(case, rng) for _ in range(n)]
    chosen = np.array([c for c, _ in picks])
    # class by class: half of the foreground crops are centred on the small organ
    assert abs((chosen == 2).mean() - 0.33 / 2) < 0.025
    assert abs((chosen == 1).mean() - 0.33 / 2) < 0.025
    for cls, centre in picks[:200]:
        if cls == 2:  # the crop holds the organ it was centred on
            _, lab = RandomAffineCrop3D()(
                case.image, case.label, crop_shape=(8, 8, 8), centre=centre, rng=rng
            )
            assert (lab == 2).any()
    never = CoarseCropDataset([case], (8, 8, 8), crops_per_case=1, foreground=0.0)
    assert all(never.pick_centre(case, rng) == (0, None) for _ in range(100))


def test_an_epoch_is_seeded_by_the_seed_the_epoch_and_the_index():
    cases = [_two_organ_case(12), _two_organ_case(14)]
    ds = CoarseCropDataset(
        cases, (8, 8, 8), crops_per_case=3, foreground=0.5, augment=RandomAffineCrop3D(), seed=2
    )
    assert len(ds) == 6 and sorted(ds.order.tolist()) == [0, 0, 0, 1, 1, 1]
    first = [ds[i] for i in range(len(ds))]
    again = [ds[i] for i in range(len(ds))]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, again))
    ds.set_epoch(2)
    second = [ds[i] for i in range(len(ds))]
    assert any(not torch.equal(a[0], b[0]) for a, b in zip(first, second))
    assert first[0][0].shape == (1, 8, 8, 8) and first[0][1].dtype == torch.int64
    other = CoarseCropDataset(
        cases, (8, 8, 8), crops_per_case=3, foreground=0.5, augment=RandomAffineCrop3D(), seed=3
    )
    assert any(not torch.equal(a[0], other[i][0]) for i, a in enumerate(first))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_a_loader_gives_the_same_batches_for_any_number_of_workers():
    cases = [_two_organ_case(12), _two_organ_case(14), _two_organ_case(10)]
    ds = CoarseCropDataset(
        cases, (8, 8, 8), crops_per_case=2, foreground=0.5, augment=RandomAffineCrop3D(), seed=1
    )
    ds.set_epoch(3)
    serial = list(DataLoader(ds, batch_size=2, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=2, num_workers=2))
    assert len(serial) == len(parallel) == 3
    for (a, y), (b, z) in zip(serial, parallel):
        assert torch.equal(a, b) and torch.equal(y, z)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="cases"):
        CoarseCropDataset([], (8, 8, 8))
    with pytest.raises(ValueError, match="foreground"):
        CoarseCropDataset([_two_organ_case(8)], (8, 8, 8), foreground=1.5)
    with pytest.raises(ValueError, match="crops_per_case"):
        CoarseCropDataset([_two_organ_case(8)], (8, 8, 8), crops_per_case=0)
    with pytest.raises(IndexError, match="index"):
        CoarseCropDataset([_two_organ_case(8)], (8, 8, 8))[5]
