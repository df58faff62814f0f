from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agcl.metrics import average_surface_distance, dice, hausdorff_distance, surface_distances

from ._oracle import brute_directed


def _cubes():
    a = np.zeros((10, 10, 10), bool)
    a[2:6, 2:6, 2:6] = True
    b = np.zeros_like(a)
    b[3:7, 2:6, 2:6] = True  # shifted by one voxel along axis 0
    return a, b


SPACING = (2.0, 1.0, 0.5)


def test_cube_vs_shifted_cube_anisotropic_by_hand():
    # Surface of a 4^3 cube: 56 voxels. d(A->B): the x=2 face (16 voxels) is 2.0 mm from B's
    # x=3 face; the 4 inner voxels of A's x=5 face are 0.5 mm (one z step) from B's z-faces;
    # the other 36 lie on B's surface. d(B->A) is the mirror image.
    a, b = _cubes()
    d_ab, d_ba = surface_distances(a, b, SPACING)
    expected = np.sort(np.r_[np.full(16, 2.0), np.full(4, 0.5), np.zeros(36)])
    np.testing.assert_array_equal(np.sort(d_ab), expected)
    np.testing.assert_array_equal(np.sort(d_ba), expected)
    assert dice(a, b) == 2 * 48 / 128
    assert hausdorff_distance(a, b, SPACING) == 2.0
    assert hausdorff_distance(a, b, SPACING, percentile=95) == 2.0
    # 65th percentile: position 0.65 * 55 = 35.75 between sorted[35] = 0 and sorted[36] = 0.5
    assert hausdorff_distance(a, b, SPACING, percentile=65) == pytest.approx(0.375, abs=1e-12)
    assert average_surface_distance(a, b, SPACING) == pytest.approx(
        2 * (16 * 2.0 + 4 * 0.5) / 112, abs=1e-12
    )


def test_spacing_axis_order_matters():
    a, b = _cubes()
    # the shift is along axis 0, so only spacing[0] sets the Hausdorff distance
    assert hausdorff_distance(a, b, (3.0, 1.0, 1.0)) == 3.0
    assert hausdorff_distance(a, b, (1.0, 3.0, 3.0)) == 1.0


def test_identical_masks_and_torch_input():
    a, _ = _cubes()
    t = torch.from_numpy(a)
    assert hausdorff_distance(t, t, SPACING) == 0.0
    assert average_surface_distance(t, a.astype(np.uint8), SPACING) == 0.0


def test_empty_mask_conventions():
    a, _ = _cubes()
    empty = np.zeros_like(a)
    assert dice(empty, empty) == 1.0
    assert hausdorff_distance(empty, empty) == 0.0
    assert average_surface_distance(empty, empty) == 0.0
    for p, g in ((a, empty), (empty, a)):
        assert dice(p, g) == 0.0
        assert math.isinf(hausdorff_distance(p, g, percentile=95))
        assert math.isinf(average_surface_distance(p, g))


def test_mask_touching_the_border_has_a_surface_there():
    a = np.ones((3, 4), bool)
    b = np.zeros_like(a)
    b[:, :2] = True
    # every voxel of a lies on a's surface (3 x 4 array: the inner 1 x 2 block is interior)
    d_ab, _ = surface_distances(a, b)
    assert d_ab.size == 10
    assert hausdorff_distance(a, b) == 2.0


masks = arrays(np.bool_, st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 5)))


@settings(deadline=None, max_examples=40)
@given(a=masks, data=st.data())
def test_matches_brute_force_oracle_and_is_symmetric(a, data):
    b = data.draw(arrays(np.bool_, a.shape))
    spacing = tuple(data.draw(st.floats(0.25, 4.0)) for _ in range(3))
    if not a.any() or not b.any():
        return  # the empty conventions are tested separately
    d_ab, d_ba = brute_directed(a, b, spacing), brute_directed(b, a, spacing)
    # float64 throughout; EDT and the oracle differ only by rounding
    for q in (100, 95, 50):
        want = max(np.percentile(d_ab, q), np.percentile(d_ba, q))
        assert hausdorff_distance(a, b, spacing, percentile=q) == pytest.approx(
            want, rel=1e-9, abs=1e-9
        )
        assert hausdorff_distance(b, a, spacing, percentile=q) == pytest.approx(
            want, rel=1e-9, abs=1e-9
        )
    want_assd = (d_ab.sum() + d_ba.sum()) / (d_ab.size + d_ba.size)
    assert average_surface_distance(a, b, spacing) == pytest.approx(want_assd, rel=1e-9, abs=1e-9)
    assert average_surface_distance(b, a, spacing) == pytest.approx(want_assd, rel=1e-9, abs=1e-9)
    assert dice(a, b) == dice(b, a)


def test_errors_name_the_argument():
    a, b = _cubes()
    with pytest.raises(ValueError, match="same shape"):
        hausdorff_distance(a, b[:5])
    with pytest.raises(ValueError, match="spacing"):
        hausdorff_distance(a, b, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        average_surface_distance(a, b, spacing=(1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="percentile"):
        hausdorff_distance(a, b, percentile=0)
    with pytest.raises(ValueError, match="pred"):
        dice(a.astype(np.int64) * 3, b)
    with pytest.raises(TypeError, match="gt"):
        dice(a, b.tolist())
