"""load_volume / save_like: round trips through known affines, orientations and broken files."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
import torch

from agcl.data import load_volume, save_like


def _write(path, arr, affine):
    nib.save(nib.Nifti1Image(arr, affine), str(path))
    return path


def test_ras_file_round_trips_unchanged(tmp_path):
    aff = np.diag([0.8, 0.7, 2.5, 1.0])
    aff[:3, 3] = [-10.0, 20.0, 30.0]
    arr = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    v = load_volume(_write(tmp_path / "a.nii.gz", arr, aff))
    np.testing.assert_array_equal(v.array, arr)
    np.testing.assert_allclose(v.affine, aff)
    assert v.spacing == pytest.approx((0.8, 0.7, 2.5), abs=1e-6)
    assert all(type(s) is float for s in v.spacing)
    assert v.array.dtype == np.float32 and v.path == tmp_path / "a.nii.gz"


def test_lps_file_is_flipped_to_ras_with_the_same_world_coordinates(tmp_path):
    lps = np.diag([-0.8, -0.8, 2.5, 1.0])
    lps[:3, 3] = [100.0, 50.0, -20.0]
    arr = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    v = load_volume(_write(tmp_path / "lps.nii.gz", arr, lps))
    np.testing.assert_array_equal(v.array, arr[::-1, ::-1, :].astype(np.float32))
    assert nib.aff2axcodes(v.affine) == ("R", "A", "S")
    # every voxel keeps its world position: canonical (i, j, k) == original (2-i, 3-j, k)
    for ijk in [(0, 0, 0), (2, 1, 3), (1, 3, 4)]:
        orig = (2 - ijk[0], 3 - ijk[1], ijk[2])
        np.testing.assert_allclose(v.affine @ [*ijk, 1], lps @ [*orig, 1])
    assert v.spacing == pytest.approx((0.8, 0.8, 2.5))


def test_permuted_axes_are_reordered(tmp_path):
    # file axes are (S, R, A): spacing must follow the canonical axis order
    aff = np.zeros((4, 4))
    aff[0, 1], aff[1, 2], aff[2, 0], aff[3, 3] = 0.5, 0.6, 3.0, 1.0
    arr = np.random.default_rng(1).normal(size=(2, 3, 4)).astype(np.float32)
    v = load_volume(_write(tmp_path / "p.nii", arr, aff))
    assert v.shape == (3, 4, 2)
    assert v.spacing == pytest.approx((0.5, 0.6, 3.0))
    np.testing.assert_array_equal(v.array, arr.transpose(1, 2, 0))


def test_scl_slope_applied_for_images(tmp_path):
    img = nib.Nifti1Image(np.array([[[1, 2]]], np.int16), np.eye(4))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, str(tmp_path / "s.nii.gz"))
    assert load_volume(tmp_path / "s.nii.gz").array.ravel().tolist() == [-1022.0, -1020.0]


def test_label_kind_returns_integers_and_rejects_fractions(tmp_path):
    v = load_volume(
        _write(tmp_path / "l.nii.gz", np.array([[[0.0, 3.0]]], np.float32), np.eye(4)), kind="label"
    )
    assert v.array.dtype == np.int16 and v.array.ravel().tolist() == [0, 3]
    _write(tmp_path / "f.nii.gz", np.array([[[0.5, 3.0]]], np.float32), np.eye(4))
    with pytest.raises(ValueError, match="f.nii.gz.*non-integer"):
        load_volume(tmp_path / "f.nii.gz", kind="label")
    with pytest.raises(ValueError, match="kind"):
        load_volume(tmp_path / "l.nii.gz", kind="mask")  # type: ignore[arg-type]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        load_volume(tmp_path / "nope.nii.gz")


def test_truncated_file_names_the_path(tmp_path):
    good = _write(tmp_path / "g.nii.gz", np.zeros((16, 16, 16), np.float32), np.eye(4))
    data = good.read_bytes()
    (tmp_path / "t.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="t.nii.gz"):
        load_volume(tmp_path / "t.nii.gz")


def test_garbage_file_names_the_path(tmp_path):
    (tmp_path / "x.nii.gz").write_bytes(gzip.compress(b"not a nifti at all" * 10))
    with pytest.raises(ValueError, match="x.nii.gz"):
        load_volume(tmp_path / "x.nii.gz")


def test_4d_file_is_rejected(tmp_path):
    _write(tmp_path / "4d.nii.gz", np.zeros((2, 2, 2, 3), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="3-D"):
        load_volume(tmp_path / "4d.nii.gz")


@pytest.mark.parametrize("codes", [("L", "P", "S"), ("R", "A", "S"), ("P", "I", "L")])
def test_save_like_round_trip_restores_original_orientation(tmp_path, codes):
    shape = (5, 6, 7)
    # build an affine with the requested axis codes
    ornt = nib.orientations.axcodes2ornt(codes)
    aff = np.eye(4)
    aff[:3, :3] = 0
    for i, (ax, flip) in enumerate(ornt):
        aff[int(ax), i] = flip * (0.5 + i)
    aff[:3, 3] = [7.0, -3.0, 12.0]
    ct = np.random.default_rng(2).integers(-100, 100, shape).astype(np.int16)
    hdr_img = nib.Nifti1Image(ct, aff)
    hdr_img.header["descrip"] = b"scanner X"
    nib.save(hdr_img, str(tmp_path / "ct.nii.gz"))
    ref = load_volume(tmp_path / "ct.nii.gz")
    pred = (ref.array > 0).astype(np.int64) * 6
    for reference in (ref, tmp_path / "ct.nii.gz"):
        out = nib.load(
            str(save_like(torch.from_numpy(pred), reference, tmp_path / "o" / "pred.nii.gz"))
        )
        np.testing.assert_allclose(out.affine, aff)
        assert out.header.get_data_dtype() == np.int16
        assert out.header["descrip"].tobytes().startswith(b"scanner X")
        np.testing.assert_array_equal(np.asarray(out.dataobj), (ct > 0) * 6)
        # and reading it back gives the prediction in canonical orientation
        np.testing.assert_array_equal(
            load_volume(tmp_path / "o" / "pred.nii.gz", kind="label").array, pred
        )


def test_save_like_rejects_wrong_shape(tmp_path):
    nib.save(
        nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), np.diag([-1.0, -1, 1, 1])),
        str(tmp_path / "c.nii.gz"),
    )
    ref = load_volume(tmp_path / "c.nii.gz")
    with pytest.raises(ValueError, match=r"label_array.*\(2, 3, 4\).*\(3, 2, 4\)"):
        save_like(np.zeros((3, 2, 4), int), ref, tmp_path / "bad.nii.gz")
