"""Sparse attention maps: equal to the dense computation, used by the sampler unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from agcl import AttentionPatchSampler
from agcl.sampling import attention_from_labels, attention_recall, densify


def _labels():
    lab = np.zeros((30, 26, 9), np.uint8)
    lab[3:10, 4:12, 2:7] = 1
    lab[15:25, 10:20, 0:4] = 6
    lab[24:29, 20:25, 6:9] = 13
    return lab


@pytest.mark.parametrize("margin", [0.0, 2.5, 9.0])
def test_sparse_attention_equals_the_whole_volume_dilation(margin):
    lab = _labels()
    spacing = (1.5, 1.0, 3.0)
    sparse = attention_from_labels(lab, [1, 6, 7, 13], margin_mm=margin, spacing=spacing)
    assert sorted(sparse) == [1, 6, 13]  # absent organ 7 left out
    dense = densify(sparse, [1, 6, 7, 13], lab.shape)
    for k, organ in enumerate([1, 6, 7, 13]):
        want = ndimage.distance_transform_edt(lab != organ, sampling=spacing) <= margin if organ in sparse else np.zeros_like(lab, bool)
        assert np.array_equal(dense[k], want), organ
        if organ in sparse:  # the box is tight around the dilated region's bounding box (within the volume)
            box, mask = sparse[organ]
            assert mask.shape == tuple(s.stop - s.start for s in box)


def test_recall_counts_ground_truth_inside_attention():
    lab = _labels()
    att = attention_from_labels(lab, [1, 6, 13], margin_mm=0.0, spacing=(1, 1, 1))
    box, mask = att[6]
    mask = mask.copy()
    mask[: mask.shape[0] // 2] = False  # half of organ 6's rows removed
    att[6] = (box, mask)
    del att[13]
    r = attention_recall(att, lab, [1, 6, 7, 13])
    assert r[1] == 1.0 and r[6] == pytest.approx(0.5) and r[7] is None and r[13] == 0.0


@pytest.mark.parametrize("mode,margin", [("mask", 0), ("mask", 2), ("bbox", 0), ("bbox", 3)])
def test_sampler_on_sparse_attention(mode, margin):
    lab = _labels()
    img = np.random.default_rng(1).random(lab.shape, dtype=np.float32)
    sparse = attention_from_labels(lab, [1, 6, 13], margin_mm=0.0, spacing=(1, 1, 1))
    s = AttentionPatchSampler(patch_size=10, patches_per_slice=4, centre_mode=mode, margin=margin, seed=0)
    b = s.sample(img, sparse, label=lab, modality=2)
    s_dense = AttentionPatchSampler(patch_size=10, patches_per_slice=4, centre_mode=mode, margin=margin, seed=0)
    d = s_dense.sample(img, lab, label=lab)
    # the same number of patches per organ and slice as with the label map
    key = lambda x: sorted(zip(x.target.tolist(), x.slice_index.tolist()))  # noqa: E731
    assert key(b) == key(d)
    # windows cut from the sparse attention equal those cut from the dense stack at the same centres
    stack = densify(sparse, [1, 6, 13], lab.shape)
    again = s.cut(img, stack, torch.cat([b.slice_index[:, None], b.centre], 1), b.target, label=lab, targets=[1, 6, 13])
    assert torch.equal(again.attention, b.attention) and torch.equal(again.image, b.image)
    assert torch.equal(again.label, b.label)
    # centres inside the organ's region grown by the margin (in-plane)
    for j in range(len(b)):
        t, sl = int(b.target[j]), int(b.slice_index[j])
        i, k = b.centre[j].tolist()
        ys, xs = np.nonzero(lab[:, :, sl] == t)
        assert ys.min() - margin <= i <= ys.max() + margin and xs.min() - margin <= k <= xs.max() + margin


def test_sparse_entries_are_checked():
    s = AttentionPatchSampler(patch_size=4)
    with pytest.raises(ValueError, match="box's shape"):
        s.plan({1: ((slice(0, 2), slice(0, 2), slice(0, 1)), np.ones((3, 2, 1), bool))}, (5, 5, 2))
    with pytest.raises(TypeError, match="three slices"):
        s.plan({1: ((slice(0, 2),), np.ones((2,), bool))}, (5, 5, 2))
    with pytest.raises(TypeError, match="pair"):
        s.plan({1: np.ones((5, 5, 2), bool)}, (5, 5, 2))
