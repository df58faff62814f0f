"""AttentionPatchSampler and PatchBatch: properties against a brute-force numpy oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl import AttentionPatchSampler, PatchBatch


def _oracle_window(
    vol: np.ndarray, axis: int, s: int, i: int, j: int, h: int, w: int, pad: float
) -> np.ndarray:
    """The window by explicit padding and slicing (float64), the reference for the gather."""
    plane = np.moveaxis(vol, axis, 0)[s].astype(np.float64)
    padded = np.pad(plane, ((h, h), (w, w)), constant_values=pad)
    r0, c0 = i - h // 2 + h, j - w // 2 + w
    return padded[r0 : r0 + h, c0 : c0 + w]


@st.composite
def volumes(draw):
    shape = tuple(draw(st.integers(3, 12)) for _ in range(3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int16)
    for code in draw(st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True)):
        lo = [rng.integers(0, n) for n in shape]
        hi = [lo_k + rng.integers(1, 4) for lo_k in lo]
        lab[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = code
    img = rng.normal(size=shape).astype(np.float32)
    return img, lab, draw(st.sampled_from([-3, -2, -1, 0, 1, 2])), seed


@settings(deadline=None, max_examples=30)
@given(volumes(), st.integers(1, 7), st.integers(1, 4), st.booleans())
def test_patches_match_oracle_and_centres_lie_in_attention(vol, patch, k, same_object):
    img, lab, axis, seed = vol
    s = AttentionPatchSampler(patch_size=patch, patches_per_slice=k, axis=axis, seed=seed)
    # the same object shares one mask gather; a copy takes the separate label gather
    b = s.sample(img, lab, label=lab if same_object else lab.copy(), modality=2, volume_index=5)
    ax = axis % 3
    moved = np.moveaxis(lab, ax, 0)
    # counts: k per (organ, slice) where the organ is present, nothing else
    expected = {
        (int(t), int(z)): k for z in range(moved.shape[0]) for t in np.unique(moved[z]) if t > 0
    }
    got: dict[tuple[int, int], int] = {}
    for t, z in zip(b.target.tolist(), b.slice_index.tolist()):
        got[(t, z)] = got.get((t, z), 0) + 1
    assert got == expected
    P = len(b)
    assert b.image.shape == b.attention.shape == b.label.shape == (P, 1, patch, patch)
    assert (
        b.image.dtype == torch.float32 and b.target.dtype == torch.long and b.centre.shape == (P, 2)
    )
    assert b.modality.tolist() == [2] * P and b.volume_index.tolist() == [5] * P
    pad = float(img.min())
    for p in range(P):
        z, (i, j), t = int(b.slice_index[p]), b.centre[p].tolist(), int(b.target[p])
        assert moved[z, i, j] == t  # the centre lies in the organ's attention
        assert b.attention[p, 0, patch // 2, patch // 2] == 1
        np.testing.assert_array_equal(
            b.image[p, 0].numpy(), _oracle_window(img, ax, z, i, j, patch, patch, pad)
        )
        mask = _oracle_window((lab == t).astype(np.float32), ax, z, i, j, patch, patch, 0.0)
        np.testing.assert_array_equal(b.attention[p, 0].numpy(), mask)
        np.testing.assert_array_equal(b.label[p, 0].numpy(), mask)
    assert set(np.unique(b.attention.numpy())) <= {0.0, 1.0}


@settings(deadline=None, max_examples=20)
@given(volumes(), st.integers(0, 2))
def test_bbox_mode_centres_lie_in_the_slice_box(vol, margin):
    img, lab, axis, seed = vol
    b = AttentionPatchSampler(
        patch_size=3, patches_per_slice=5, axis=axis, centre_mode="bbox", margin=margin, seed=seed
    ).sample(img, lab)
    moved = np.moveaxis(lab, axis % 3, 0)
    assert len(b) > 0
    for z, (i, j), t in zip(b.slice_index.tolist(), b.centre.tolist(), b.target.tolist()):
        ii, jj = np.nonzero(moved[z] == t)
        assert (
            ii.min() - margin <= i <= ii.max() + margin
            and jj.min() - margin <= j <= jj.max() + margin
        )
        assert 0 <= i < moved.shape[1] and 0 <= j < moved.shape[2]


@settings(deadline=None, max_examples=20)
@given(volumes(), st.integers(1, 2))
def test_mask_margin_centres_lie_in_the_dilated_attention(vol, margin):
    img, lab, axis, seed = vol
    b = AttentionPatchSampler(
        patch_size=3, patches_per_slice=5, axis=axis, margin=margin, seed=seed
    ).sample(img, lab)
    moved = np.moveaxis(lab, axis % 3, 0)
    expected = {
        (int(t), int(z)) for z in range(moved.shape[0]) for t in np.unique(moved[z]) if t > 0
    }
    assert set(zip(b.target.tolist(), b.slice_index.tolist())) == expected
    for z, (i, j), t in zip(b.slice_index.tolist(), b.centre.tolist(), b.target.tolist()):
        ii, jj = np.nonzero(moved[z] == t)
        assert np.maximum(np.abs(ii - i), np.abs(jj - j)).min() <= margin  # Chebyshev distance


def test_hand_example_counts_and_order():
    lab = torch.zeros(10, 10, 4, dtype=torch.long)
    lab[2:4, 2:4, 1:3] = 6  # liver on slices 1, 2
    lab[7, 7, 0] = 1  # one spleen voxel on slice 0
    b = AttentionPatchSampler(patch_size=5, patches_per_slice=3, seed=0).sample(
        torch.zeros(10, 10, 4), lab
    )
    assert b.target.tolist() == [1] * 3 + [6] * 6
    assert b.slice_index.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert b.centre[:3].tolist() == [[7, 7]] * 3  # a single voxel: every centre is it
    b6 = AttentionPatchSampler(patch_size=5, patches_per_slice=3, seed=0).sample(
        torch.zeros(10, 10, 4), lab, targets=[6]
    )
    assert b6.target.tolist() == [6] * 6


def test_deterministic_with_seed_and_generator():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 4, (16, 16, 5)).astype(np.int16)
    img = rng.normal(size=(16, 16, 5)).astype(np.float32)
    a = AttentionPatchSampler(patch_size=6, patches_per_slice=4, seed=7).sample(img, lab)
    b = AttentionPatchSampler(patch_size=6, patches_per_slice=4, seed=7).sample(img, lab)
    c = AttentionPatchSampler(patch_size=6, patches_per_slice=4, seed=8).sample(img, lab)
    assert torch.equal(a.centre, b.centre) and torch.equal(a.image, b.image)
    assert not torch.equal(a.centre, c.centre)
    g = torch.Generator().manual_seed(7)
    d = AttentionPatchSampler(patch_size=6, patches_per_slice=4, generator=g).sample(img, lab)
    assert torch.equal(a.centre, d.centre)


def test_stack_attention_equals_label_map_attention():
    rng = np.random.default_rng(1)
    lab = rng.integers(0, 4, (9, 8, 5))
    stack = np.stack([lab == c for c in (1, 2, 3)])
    img = rng.normal(size=lab.shape).astype(np.float32)
    a = AttentionPatchSampler(patch_size=4, patches_per_slice=3, seed=3).sample(img, lab, label=lab)
    b = AttentionPatchSampler(patch_size=4, patches_per_slice=3, seed=3).sample(
        img, stack, label=lab
    )
    for f in ("image", "attention", "label", "target", "slice_index", "centre"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    # custom codes for the maps
    c = AttentionPatchSampler(patch_size=4, patches_per_slice=3, seed=3).sample(
        img, stack[:2], targets=[11, 4]
    )
    assert set(c.target.tolist()) == {11, 4}


def test_border_padding_uses_configured_value():
    img = torch.ones(5, 5, 1)
    lab = torch.zeros(5, 5, 1, dtype=torch.long)
    lab[0, 0, 0] = 1
    b = AttentionPatchSampler(
        patch_size=3, patches_per_slice=1, image_pad_value=-9.0, seed=0
    ).sample(img, lab)
    assert b.image[0, 0].tolist() == [[-9, -9, -9], [-9, 1, 1], [-9, 1, 1]]
    assert b.attention[0, 0].tolist() == [[0, 0, 0], [0, 1, 0], [0, 0, 0]]


def test_max_patches_caps_and_empty_volume_warns():
    lab = np.ones((6, 6, 4), np.int16)
    b = AttentionPatchSampler(patch_size=2, patches_per_slice=5, max_patches=7, seed=0).sample(
        np.zeros((6, 6, 4)), lab
    )
    assert len(b) == 7 and (b.slice_index.diff() >= 0).all()
    s = AttentionPatchSampler(patch_size=4, seed=0)
    with pytest.warns(UserWarning, match="empty PatchBatch"):
        e = s.sample(
            np.zeros((6, 6, 4)), np.zeros((6, 6, 4), np.int16), label=np.zeros((6, 6, 4), np.int16)
        )
    assert len(e) == 0 and e.image.shape == (0, 1, 4, 4) and e.label is not None
    with pytest.warns(UserWarning, match="targets"):
        assert len(s.sample(np.zeros((6, 6, 4)), lab, targets=[3])) == 0


def test_patch_batch_cat_index_to_and_inputs():
    lab = np.zeros((8, 8, 3), np.int16)
    lab[2:5, 2:5, :] = 2
    s = AttentionPatchSampler(patch_size=4, patches_per_slice=2, seed=0)
    a = s.sample(np.zeros((8, 8, 3)), lab, label=lab, volume_index=0)
    b = s.sample(np.zeros((8, 8, 3)), lab, label=lab, volume_index=1)
    both = PatchBatch.cat([a, b])
    assert len(both) == 12 and both.volume_index.tolist() == [0] * 6 + [1] * 6
    assert len(both[both.volume_index == 1]) == 6 and len(both[0]) == 1 and len(both[2:5]) == 3
    assert both.to("cpu").inputs(with_label=True).shape == (12, 3, 4, 4)
    assert both.inputs().shape == (12, 2, 4, 4)
    with pytest.raises(ValueError, match="batches"):
        PatchBatch.cat([])
    with pytest.raises(ValueError, match="labels"):
        PatchBatch.cat([a, s.sample(np.zeros((8, 8, 3)), lab)])
    with pytest.raises(ValueError, match="with_label"):
        s.sample(np.zeros((8, 8, 3)), lab).inputs(with_label=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match="centre_mode"):
        AttentionPatchSampler(centre_mode="grid")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patches_per_slice"):
        AttentionPatchSampler(patches_per_slice=0)
    with pytest.raises(ValueError, match="margin"):
        AttentionPatchSampler(margin=-1)
    with pytest.raises(ValueError, match="axis"):
        AttentionPatchSampler(axis=3)
    with pytest.raises(ValueError, match="seed or generator"):
        AttentionPatchSampler(seed=1, generator=torch.Generator())
    s = AttentionPatchSampler(patch_size=4)
    with pytest.raises(ValueError, match=r"image must be a 3-D.*\(4, 4\)"):
        s.sample(np.zeros((4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"attention must have.*\(4, 4, 3\)"):
        s.sample(np.zeros((4, 4, 4)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="label must have"):
        s.sample(np.zeros((4, 4, 4)), np.zeros((4, 4, 4), int), label=np.zeros((4, 4, 3), int))
    with pytest.raises(ValueError, match="attention label map must hold codes >= 0"):
        s.sample(np.zeros((4, 4, 4)), -np.ones((4, 4, 4), int))
    with pytest.raises(ValueError, match="targets must give one code"):
        s.sample(np.zeros((4, 4, 4)), np.ones((2, 4, 4, 4), bool), targets=[1])
    with pytest.raises(TypeError, match="image"):
        s.sample([[[0.0]]], np.zeros((1, 1, 1)))
