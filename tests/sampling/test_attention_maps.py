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
        want = (
            ndimage.distance_transform_edt(lab != organ, sampling=spacing) <= margin
            if organ in sparse
            else np.zeros_like(lab, bool)
        )
        assert np.array_equal(dense[k], want), organ
        if (
            organ in sparse
        ):  # the box is tight around the dilated region's bounding box (within the volume)
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
    s = AttentionPatchSampler(
        patch_size=10, patches_per_slice=4, centre_mode=mode, margin=margin, seed=0
    )
    b = s.sample(img, sparse, label=lab, modality=2)
    s_dense = AttentionPatchSampler(
        patch_size=10, patches_per_slice=4, centre_mode=mode, margin=margin, seed=0
    )
    d = s_dense.sample(img, lab, label=lab)
    # the same number of patches per organ and slice as with the label map
    key = lambda x: sorted(zip(x.target.tolist(), x.slice_index.tolist()))  # noqa: E731
    assert key(b) == key(d)
    # windows cut from the sparse attention equal those cut from the dense stack at the same centres
    stack = densify(sparse, [1, 6, 13], lab.shape)
    again = s.cut(
        img,
        stack,
        torch.cat([b.slice_index[:, None], b.centre], 1),
        b.target,
        label=lab,
        targets=[1, 6, 13],
    )
    assert torch.equal(again.attention, b.attention) and torch.equal(again.image, b.image)
    assert torch.equal(again.label, b.label)
    # centres inside the organ's region grown by the margin (in-plane)
    for j in range(len(b)):
        t, sl = int(b.target[j]), int(b.slice_index[j])
        i, k = b.centre[j].tolist()
        ys, xs = np.nonzero(lab[:, :, sl] == t)
        assert (
            ys.min() - margin <= i <= ys.max() + margin
            and xs.min() - margin <= k <= xs.max() + margin
        )


def test_sparse_entries_are_checked():
    s = AttentionPatchSampler(patch_size=4)
    with pytest.raises(ValueError, match="box's shape"):
        s.plan({1: ((slice(0, 2), slice(0, 2), slice(0, 1)), np.ones((3, 2, 1), bool))}, (5, 5, 2))
    with pytest.raises(TypeError, match="three slices"):
        s.plan({1: ((slice(0, 2),), np.ones((2,), bool))}, (5, 5, 2))
    with pytest.raises(TypeError, match="pair"):
        s.plan({1: np.ones((5, 5, 2), bool)}, (5, 5, 2))


def test_probability_channel_of_labels_is_one_on_the_organ_and_half_in_the_margin():
    lab = _labels()
    spacing = (1.5, 1.0, 3.0)
    binary = attention_from_labels(lab, [1, 6, 13], margin_mm=4.0, spacing=spacing)
    soft = attention_from_labels(
        lab, [1, 6, 13], margin_mm=4.0, spacing=spacing, channel="probability"
    )
    for organ, (box, mask) in soft.items():
        assert box == binary[organ][0] and mask.dtype == np.float16
        np.testing.assert_array_equal(mask != 0, binary[organ][1])  # the same region
        on = lab[box] == organ
        assert (mask[on] == 1).all() and (mask[~on & (mask != 0)] == 0.5).all()
    with pytest.raises(ValueError, match="channel must be one of"):
        attention_from_labels(lab, [1], margin_mm=1.0, spacing=(1, 1, 1), channel="labels")


def test_recall_and_densify_treat_a_graded_mask_as_inside_where_non_zero():
    lab = _labels()
    soft = attention_from_labels(
        lab, [1, 6, 13], margin_mm=2.0, spacing=(1, 1, 1), channel="probability"
    )
    box, mask = soft[6]
    mask = mask.copy()
    mask[: mask.shape[0] // 2] = 0  # half of the region (and of the organ's rows) removed
    soft[6] = (box, mask)
    binary = {k: (b, m != 0) for k, (b, m) in soft.items()}
    assert attention_recall(soft, lab, [1, 6, 13]) == attention_recall(binary, lab, [1, 6, 13])
    assert attention_recall(soft, lab, [6])[6] < 0.9
    dense = densify(soft, [1, 6, 13], lab.shape)
    assert dense.dtype == np.float16 and set(np.unique(dense).tolist()) == {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(dense != 0, densify(binary, [1, 6, 13], lab.shape))


def test_sampler_cuts_a_graded_mask_with_its_values():
    """Centres come from where the mask is non-zero (as for its bool version, same draws); the
    attention channel holds the mask's values, not 0/1."""
    lab = _labels()
    img = np.random.default_rng(2).random(lab.shape, dtype=np.float32)
    soft = attention_from_labels(
        lab, [1, 6, 13], margin_mm=3.0, spacing=(1, 1, 1), channel="probability"
    )
    binary = {k: (b, m != 0) for k, (b, m) in soft.items()}
    b = AttentionPatchSampler(patch_size=10, patches_per_slice=3, seed=4).sample(
        img, soft, label=lab
    )
    ref = AttentionPatchSampler(patch_size=10, patches_per_slice=3, seed=4).sample(
        img, binary, label=lab
    )
    assert torch.equal(b.slice_index, ref.slice_index) and torch.equal(b.centre, ref.centre)
    assert torch.equal(b.attention != 0, ref.attention != 0) and torch.equal(b.label, ref.label)
    assert b.attention.dtype == torch.float32 and set(torch.unique(b.attention).tolist()) == {
        0.0,
        0.5,
        1.0,
    }
    # each window's value is the mask's own at that voxel
    j = 0
    t, sl = int(b.target[j]), int(b.slice_index[j])
    ci, cj = b.centre[j].tolist()
    box, mask = soft[t]
    assert float(b.attention[j, 0, 5, 5]) == float(
        mask[ci - box[0].start, cj - box[1].start, sl - box[2].start]
    )


def test_a_graded_mask_outside_zero_one_is_refused():
    s = AttentionPatchSampler(patch_size=4)
    box = (slice(0, 2), slice(0, 2), slice(0, 1))
    for bad in (1.5, -0.1, float("nan")):
        mask = np.full((2, 2, 1), 0.5, np.float32)
        mask[0, 0, 0] = bad
        with pytest.raises(
            ValueError, match=r"attention\[3\]'s float mask must hold values in \[0, 1\]"
        ):
            s.plan({3: (box, mask)}, (5, 5, 2))


def test_a_float_stack_is_cut_with_its_values_like_the_sparse_graded_mask():
    lab = _labels()
    img = np.random.default_rng(3).random(lab.shape, dtype=np.float32)
    soft = attention_from_labels(
        lab, [1, 6, 13], margin_mm=2.0, spacing=(1, 1, 1), channel="probability"
    )
    b = AttentionPatchSampler(patch_size=10, patches_per_slice=2, seed=5).sample(img, soft)
    stack = densify(soft, [1, 6, 13], lab.shape).astype(np.float32)
    s = AttentionPatchSampler(patch_size=10)
    centres = torch.cat([b.slice_index[:, None], b.centre], 1)
    again = s.cut(img, stack, centres, b.target, targets=[1, 6, 13])
    assert torch.equal(again.attention, b.attention) and set(
        torch.unique(again.attention).tolist()
    ) == {0.0, 0.5, 1.0}
    stack[0][stack[0] == 1] = 2.0  # not a graded attention any more
    with pytest.raises(ValueError, match="attention map 0's float mask must hold values in"):
        s.cut(img, stack, centres, b.target, targets=[1, 6, 13])
