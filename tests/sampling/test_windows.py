"""extract_windows against explicit padding and slicing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl.sampling import extract_windows


@settings(deadline=None, max_examples=30)
@given(
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**16),
)
def test_2d_windows_match_padded_slicing(H, W, h, w, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(H, W))
    cen = np.stack([rng.integers(0, H, 7), rng.integers(0, W, 7)], 1)
    out = extract_windows(x, cen, (h, w), pad_value=-5.0)
    padded = np.pad(x, ((h, h), (w, w)), constant_values=-5.0)
    for p, (i, j) in enumerate(cen):
        np.testing.assert_array_equal(
            out[p].numpy(),
            padded[i - h // 2 + h : i - h // 2 + 2 * h, j - w // 2 + w : j - w // 2 + 2 * w],
        )
    assert out.dtype == torch.float64


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_3d_windows_follow_the_slice_axis(axis):
    x = torch.arange(5 * 6 * 7).view(5, 6, 7)
    cen = torch.tensor([[1, 2, 3], [0, 0, 0]])
    out = extract_windows(x, cen, 3, axis=axis)
    plane = x.movedim(axis, 0)[1]
    assert torch.equal(out[0], plane[1:4, 2:5])
    assert out[1, 0].tolist() == [0, 0, 0] and out[1, 1, 0] == 0


def test_errors():
    with pytest.raises(ValueError, match="centres must be an integer"):
        extract_windows(np.zeros((4, 4)), np.zeros((2, 3), int), 2)
    with pytest.raises(ValueError, match="centres must lie inside"):
        extract_windows(np.zeros((4, 4)), np.array([[4, 0]]), 2)
    with pytest.raises(ValueError, match="array must be"):
        extract_windows(np.zeros(4), np.zeros((1, 1), int), 2)
    with pytest.raises(ValueError, match="patch_size"):
        extract_windows(np.zeros((4, 4)), np.zeros((1, 2), int), 0)
