"""body_mask: the trunk only (table and arms dropped), holes filled slice-wise, its threshold."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from agcl.data import body_mask
from agcl.data.synthetic import make_phantom

SPACING = (1.5, 1.5, 4.0)  # in-plane finer than opening_mm / 3: the opening works on a coarser grid
SHAPE = (241, 199, 6)  # odd sizes: the coarse grid needs padding


def _scene(bridge_mm=0.0, shell_hu=None, arm_gap_mm=10.0, bridge_y_mm=0.0):
    """An axial scene repeated along z: a trunk ellipse (240 x 160 mm) with a lung and a gas
    pocket, two arms ``arm_gap_mm`` beside it, a table slab 12 mm below it; optionally a bridge of
    soft tissue ``bridge_mm`` wide from the trunk to the right arm (centred at ``bridge_y_mm``
    antero-posterior), and an outer shell of the
    trunk at ``shell_hu``. Returns ``(hu, trunk, right_arm)`` (masks of the filled shapes)."""
    x = (np.arange(SHAPE[0]) - (SHAPE[0] - 1) / 2) * SPACING[0]
    y = (np.arange(SHAPE[1]) - (SHAPE[1] - 1) / 2) * SPACING[1]
    xx, yy = np.meshgrid(x, y, indexing="ij")
    trunk = (xx / 120) ** 2 + (yy / 80) ** 2 <= 1
    centre = 140 + arm_gap_mm  # the trunk's edge is at x = +-120 mm, an arm's half-width 20 mm
    arms = [((xx - s * centre) / 20) ** 2 + (yy / 25) ** 2 <= 1 for s in (1, -1)]
    hu = np.full(xx.shape, -1000.0, np.float32)
    hu[trunk] = 40.0
    if shell_hu is not None:
        hu[trunk & ((xx / 110) ** 2 + (yy / 70) ** 2 > 1)] = shell_hu
    hu[((xx - 40) / 30) ** 2 + (yy / 35) ** 2 <= 1] = -850.0  # a lung, through every slice
    hu[((xx + 50) / 10) ** 2 + ((yy - 20) / 10) ** 2 <= 1] = -700.0  # bowel gas
    for arm in arms:
        hu[arm] = 60.0
    hu[(yy < -92) & (yy > -100) & (np.abs(xx) < 170)] = 300.0  # the table
    if bridge_mm:
        hu[(xx > 100) & (xx < 140) & (np.abs(yy - bridge_y_mm) < bridge_mm / 2)] = 50.0
    rng = np.random.default_rng(0)
    vol = np.repeat(hu[:, :, None], SHAPE[2], axis=2) + rng.normal(0, 20, SHAPE).astype(np.float32)
    rep = lambda m: np.repeat(m[:, :, None], SHAPE[2], axis=2)  # noqa: E731
    return vol, rep(trunk), rep(arms[0])


@pytest.mark.parametrize("opening_mm", [0.0, 10.0])
def test_trunk_only_holes_filled(opening_mm):
    hu, trunk, _ = _scene()
    mask = body_mask(hu, spacing=SPACING, opening_mm=opening_mm)
    assert mask.dtype == bool and mask.shape == hu.shape
    # exactly the trunk: arms and table gone, lung and gas inside (they reach the volume's
    # first and last slices, so a 3-D hole filling would leave them out)
    assert np.array_equal(mask, trunk)
    assert not ndimage.binary_fill_holes(hu > -500)[trunk & (hu < -500)].all()


def test_touching_arm_cut_by_the_opening():
    hu, trunk, arm = _scene(bridge_mm=8.0)
    kept = body_mask(hu, spacing=SPACING, opening_mm=0.0)
    assert kept[arm].all() and kept[trunk].all()  # one component with the arm
    mask = body_mask(hu, spacing=SPACING, opening_mm=10.0)
    assert mask[trunk].all() and np.array_equal(mask, _oracle(mask.astype(np.float32), 0.5))
    # what remains outside the trunk lies within the opening radius (+ one coarse voxel
    # diagonal, the coarse grid's resolution) of the trunk
    dist = ndimage.distance_transform_edt(~trunk, sampling=SPACING)
    coarse_diag = np.sqrt(2 * (2 * SPACING[0]) ** 2 + SPACING[2] ** 2)
    assert (mask & ~trunk).any() and dist[mask & ~trunk].max() <= 10.0 + coarse_diag
    assert not (mask & arm & (dist > 10.0 + coarse_diag)).any()


def test_cut_arm_leaves_no_fragments():
    # an arm 4 mm from the flank lies partly within the opening's reach of the trunk, away from
    # the bridge; what is cut off must not stay as loose fragments: the mask is one body
    hu, trunk, arm = _scene(bridge_mm=8.0, arm_gap_mm=4.0, bridge_y_mm=18.0)
    mask = body_mask(hu, spacing=SPACING)
    assert mask[trunk].all() and mask[arm].mean() < 0.1
    assert ndimage.label(mask)[1] == 1


def test_wide_contact_needs_a_wider_opening():
    hu, trunk, arm = _scene(bridge_mm=30.0)
    assert body_mask(hu, spacing=SPACING, opening_mm=10.0)[arm].all()  # documented: not cut
    mask = body_mask(hu, spacing=SPACING, opening_mm=20.0)
    assert mask[trunk].all() and not mask[arm].all()
    assert mask[arm].mean() < 0.2


def test_threshold_is_respected():
    hu, trunk, _ = _scene(shell_hu=-300.0)
    shell = trunk & (hu > -500) & (hu < -100)
    assert shell.any()
    assert np.array_equal(body_mask(hu, spacing=SPACING), trunk)  # -300 > -500: body
    inner = body_mask(hu, spacing=SPACING, threshold=-200.0)
    assert not inner[shell].any() and inner[trunk & ~shell & (hu > 0)].all()
    tissue = np.full((40, 40, 4), -1000.0, np.float32)
    tissue[5:35, 5:35] = -500.0  # exactly at the threshold: not tissue
    tissue[10:30, 10:30] = 40.0
    strict = body_mask(tissue, opening_mm=0.0)
    assert strict.sum() == 20 * 20 * 4 and np.array_equal(strict, tissue > -500)


def test_axis_follows_the_slices():
    hu, trunk, _ = _scene()
    moved = np.moveaxis(hu, 2, 0)
    spacing = (SPACING[2], SPACING[0], SPACING[1])
    for opening_mm in (0.0, 10.0):
        mask = body_mask(moved, spacing=spacing, axis=0, opening_mm=opening_mm)
        assert np.array_equal(mask, np.moveaxis(trunk, 2, 0))
    # slicing along a wrong axis leaves the lung, which runs through the volume, unfilled
    wrong = body_mask(moved, spacing=spacing, axis=1, opening_mm=0.0)
    assert not np.array_equal(wrong, np.moveaxis(trunk, 2, 0))


def _oracle(hu, threshold=-500.0):
    """Largest component above the threshold, then scipy's hole filling slice by slice."""
    lab, _ = ndimage.label(hu > threshold)
    big = lab == np.bincount(lab[lab > 0]).argmax()
    return np.stack([ndimage.binary_fill_holes(big[..., k]) for k in range(hu.shape[2])], axis=2)


def test_phantom_organs_and_gas_inside():
    hu, labels = make_phantom(3, "contrast")
    assert np.array_equal(body_mask(hu, spacing=(2.75, 2.75, 5.0), opening_mm=0.0), _oracle(hu))
    mask = body_mask(hu, spacing=(2.75, 2.75, 5.0))
    assert np.array_equal(mask, _oracle(mask.astype(np.float32), threshold=0.5))  # hole-free
    assert mask[labels > 0].all()  # every organ voxel is in the body
    gas = hu < -500
    assert (mask & gas).sum() > 100  # the stomach's gas cap and gassy bowel loops are filled in
    assert not mask[0, 0].any()  # the corners of the field of view are air


def test_empty_and_airless_volumes():
    with pytest.raises(
        ValueError, match=r"no voxel of hu lies above threshold -500.0 HU \(maximum -1000\)"
    ):
        body_mask(np.full((8, 8, 4), -1000.0, np.float32))
    normalised = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="every voxel of hu lies above threshold .* no air"):
        assert body_mask(normalised).all()


def test_opening_that_would_erase_everything_warns():
    hu = np.full((20, 20, 4), -1000.0, np.float32)
    hu[5:10, 5:10] = 40.0  # 5 mm thin at 1 mm spacing
    with pytest.warns(UserWarning, match="an opening of 10.0 mm would erase the whole body"):
        mask = body_mask(hu)
    assert np.array_equal(mask, hu > -500)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(body_mask(hu, opening_mm=2.0), hu > -500)  # a 5 mm square survives


_Z = np.zeros((4, 4, 4))
_BAD = [
    (np.zeros((4, 4, 4), bool), {}, TypeError, "hu must be a real numeric array .* got dtype bool"),
    (np.zeros((4, 4, 4), complex), {}, TypeError, "got dtype complex"),
    (np.zeros((4, 4)), {}, ValueError, r"hu must be a 3-D volume \(D0, D1, D2\); got shape \(4, 4"),
    (np.full((4, 4, 4), np.nan), {}, ValueError, "hu holds 64 NaN or inf voxels"),
    (_Z, {"threshold": float("nan")}, ValueError, "threshold must be a finite number"),
    (_Z, {"threshold": "-500"}, TypeError, "threshold must be a number of HU; got str"),
    (_Z, {"spacing": (1.0, 1.0)}, ValueError, "spacing must be three positive"),
    (_Z, {"spacing": (1.0, 0.0, 1.0)}, ValueError, "spacing must be three positive"),
    (_Z, {"spacing": 1.0}, ValueError, "spacing must be three positive"),
    (_Z, {"opening_mm": -1.0}, ValueError, "opening_mm must be a finite number >= 0"),
    (_Z, {"opening_mm": "10"}, TypeError, "opening_mm must be a real number"),
    (_Z, {"axis": 3}, ValueError, "axis must be an integer axis of a 3-D volume"),
    (_Z, {"axis": 1.0}, ValueError, "axis must be an integer axis"),
]


@pytest.mark.parametrize("hu, kw, err, match", _BAD)
def test_bad_input(hu, kw, err, match):
    with pytest.raises(err, match=match):
        body_mask(hu, **kw)


def test_integer_volumes_and_tensors():
    hu, trunk, _ = _scene()
    as_int = np.rint(hu).astype(np.int16)
    assert np.array_equal(body_mask(as_int, spacing=SPACING), trunk)
    torch = pytest.importorskip("torch")
    assert np.array_equal(body_mask(torch.from_numpy(hu), spacing=SPACING), trunk)
