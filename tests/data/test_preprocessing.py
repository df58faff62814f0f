"""Clipping and percentile normalisation on known arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.data import clip_hu, percentile_normalize, preprocess_ct


def test_percentiles_match_hand_computed_values():
    v = np.arange(101, dtype=np.float64)  # percentile p of 0..100 is exactly p
    out = percentile_normalize(v)
    np.testing.assert_allclose(out, (v - 1) / 98, rtol=1e-6)  # float32 output: ~1e-7 relative
    assert out.dtype == np.float32


def test_paper_pipeline_on_known_values():
    v = np.array([-1000, -175, -100, 0, 100, 250, 1000], np.float32)
    # after clipping: [-175, -175, -100, 0, 100, 250, 250]; with (0, 100) percentiles the span
    # is 425
    out = preprocess_ct(v, percentiles=(0, 100))
    np.testing.assert_allclose(out, (np.clip(v, -175, 250) + 175) / 425, atol=1e-6)


def test_matches_float64_oracle_on_random_volume():
    v = np.random.default_rng(0).normal(0, 300, (20, 20, 10)).astype(np.float32)
    c = np.clip(v.astype(np.float64), -175, 250)
    lo, hi = np.percentile(c, [1, 99])
    np.testing.assert_allclose(
        preprocess_ct(v), (c - lo) / (hi - lo), atol=1e-5
    )  # float32 rounding


def test_constant_volume_gives_zeros_not_nan():
    out = preprocess_ct(np.full((3, 3, 3), 42.0))
    assert np.array_equal(out, np.zeros((3, 3, 3), np.float32))
    # a volume entirely outside the window is constant after clipping
    assert not np.isnan(preprocess_ct(np.full((4,), -3000.0))).any()


def test_steps_are_optional_and_torch_round_trips():
    v = torch.tensor([-500.0, 0.0, 500.0])
    assert preprocess_ct(v, window=None, percentiles=None).tolist() == [-500.0, 0.0, 500.0]
    out = preprocess_ct(v, window=(-100, 100), percentiles=None)
    assert isinstance(out, torch.Tensor) and out.tolist() == [-100.0, 0.0, 100.0]
    assert clip_hu(np.array([5.0]), (0, 1)).tolist() == [1.0]


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="window"):
        clip_hu(np.zeros(3), (10, -10))
    with pytest.raises(ValueError, match="percentiles"):
        percentile_normalize(np.zeros(3), (1, 120))
    with pytest.raises(TypeError, match="volume"):
        preprocess_ct([1.0, 2.0])


def test_non_finite_error_names_the_source_file(tmp_path):
    import nibabel as nib

    from agcl.data import discover_btcv
    from agcl.sampling import AttentionPatchDataset, AttentionPatchSampler

    arr = np.zeros((8, 8, 2), np.float32)
    arr[1, 1, 0] = np.nan
    lab = np.zeros((8, 8, 2), np.int16)
    lab[2:5, 2:5, :] = 1
    for sub, name, data in (("img", "img0001.nii.gz", arr), ("label", "label0001.nii.gz", lab)):
        (tmp_path / sub).mkdir(exist_ok=True)
        nib.save(nib.Nifti1Image(data, np.eye(4)), str(tmp_path / sub / name))
    with pytest.raises(ValueError, match="x.nii.gz: volume must be finite; got 1 non-finite"):
        preprocess_ct(arr, source="x.nii.gz")
    cases = discover_btcv(tmp_path)
    ds = AttentionPatchDataset(cases, AttentionPatchSampler(patch_size=4, patches_per_slice=1))
    with pytest.raises(ValueError, match="img0001.nii.gz: volume must be finite"):
        ds[0]
