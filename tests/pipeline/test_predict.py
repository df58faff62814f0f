from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl.pipeline import fuse_labels, segment_with_attention, window_starts


class PointwiseModel(torch.nn.Module):
    """Foreground logit = 8 * (image - 0.5): a window's output depends on each pixel only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = 8.0 * (x[:, :1] - 0.5)
        return torch.cat([torch.zeros_like(fg), fg], 1)


@settings(deadline=None, max_examples=40)
@given(lo=st.integers(-3, 20), length=st.integers(1, 40), size=st.integers(1, 12), data=st.data())
def test_window_starts_cover_the_range(lo, length, size, data):
    stride = data.draw(st.integers(1, size))
    hi = lo + length - 1
    starts = window_starts(lo, hi, size, stride)
    covered = np.zeros(length + 2 * size, bool)
    for s in starts:
        covered[s - lo + size: s - lo + 2 * size] = True
    assert covered[size: size + length].all()
    assert (np.diff(starts) <= stride).all() and (np.diff(starts) > 0).all()


def _volume(seed: int):
    rng = np.random.default_rng(seed)
    image = rng.random((20, 18, 4)).astype(np.float32)
    att = np.zeros((3, 20, 18, 4), bool)
    att[0, 2:9, 3:10, 1:3] = True
    att[1, 6:15, 5:17, 0:1] = True  # same rows/columns as organ 0, another slice
    att[2, 0:3, 0:4, 3] = True  # touches the border
    return image, att


@pytest.mark.parametrize("stride", [1, 3, 8])
def test_segmentation_equals_fusion_of_pointwise_probabilities(stride):
    image, att = _volume(0)
    ids = [2, 6, 11]
    out = segment_with_attention(PointwiseModel(), image, att, ids, patch_size=8, stride=stride, threshold=0.5,
                                 batch_size=5)
    prob = torch.sigmoid(8.0 * (torch.from_numpy(image) - 0.5)).numpy()
    # every attention voxel is covered by some window, so the averaged probability is exact
    # (float32 sigmoid and the mean of equal values agree to rounding: compare the fused labels)
    want = fuse_labels(prob[None] * att, ids, threshold=0.5)
    np.testing.assert_array_equal(out, want)
    assert set(np.unique(out)) <= {0, 2, 6, 11}
    assert (out[~att.any(0)] == 0).all()  # nothing outside the attention


def test_overlapping_attention_goes_to_one_of_the_organs():
    image, att = _volume(3)
    att[1, 2:9, 3:10, 1] = True  # organ 1 now overlaps organ 0 on slice 1
    out = segment_with_attention(PointwiseModel(), image, att, [4, 5, 9], patch_size=8, stride=3)
    prob = 1 / (1 + np.exp(-8.0 * (image - 0.5)))
    overlap = att[0] & att[1]
    assert set(np.unique(out[overlap])) <= {0, 4, 5}
    np.testing.assert_array_equal(out[overlap] > 0, prob[overlap] > 0.5)


def test_segmentation_errors():
    image, att = _volume(1)
    with pytest.raises(ValueError, match="attention"):
        segment_with_attention(PointwiseModel(), image, att[:2], [1, 2, 3], patch_size=8, stride=4)
    with pytest.raises(ValueError, match="stride"):
        segment_with_attention(PointwiseModel(), image, att, [1, 2, 3], patch_size=8, stride=9)


def test_empty_attention_gives_background():
    image, att = _volume(2)
    out = segment_with_attention(PointwiseModel(), image, np.zeros_like(att), [1, 2, 3], patch_size=8, stride=8)
    assert out.dtype == np.int16 and not out.any()


def test_sparse_attention_predicts_like_the_dense_stack():
    import torch

    from agcl.pipeline.predict import segment_with_attention
    from agcl.sampling import attention_from_labels, densify

    class Model(torch.nn.Module):  # organ probability = the image value, background 1 - it
        def forward(self, x):
            p = x[:, :1].clamp(1e-4, 1 - 1e-4)
            return torch.cat([torch.log(1 - p), torch.log(p)], 1)

    lab = np.zeros((40, 36, 4), np.uint8)
    lab[5:15, 6:18, :] = 1
    lab[20:34, 20:30, 1:3] = 6
    img = np.random.default_rng(0).random(lab.shape, dtype=np.float32)
    sparse = attention_from_labels(lab, [1, 6, 7], margin_mm=3.0, spacing=(1, 1, 1))
    dense = densify(sparse, [1, 6, 7], lab.shape)
    a = segment_with_attention(Model(), img, sparse, [1, 6, 7], patch_size=16, stride=8)
    b = segment_with_attention(Model(), img, dense, [1, 6, 7], patch_size=16, stride=8)
    assert np.array_equal(a, b) and set(np.unique(a)) >= {1, 6}
