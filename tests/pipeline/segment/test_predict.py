from __future__ import annotations

import math

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
        covered[s - lo + size : s - lo + 2 * size] = True
    assert covered[size : size + length].all()
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
    out = segment_with_attention(
        PointwiseModel(), image, att, ids, patch_size=8, stride=stride, threshold=0.5, batch_size=5
    )
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
    out = segment_with_attention(
        PointwiseModel(), image, np.zeros_like(att), [1, 2, 3], patch_size=8, stride=8
    )
    assert out.dtype == np.int16 and not out.any()


def test_window_weight_shapes_and_values():
    from agcl.pipeline.toolkit import window_weight

    w = window_weight(9)
    assert w.shape == (9, 9) and w.dtype == torch.float32
    assert float(w[4, 4]) == 1.0 and float(w.min()) >= 1e-3
    torch.testing.assert_close(w, w.T)
    torch.testing.assert_close(w, w.flip(0))
    # sigma = patch / 8: one sigma from the centre the weight is exp(-1/2) (times the other axis' 1)
    w16 = window_weight(17)
    assert float(w16[8, 8 + 2]) == pytest.approx(np.exp(-0.5 * (2 / (17 / 8)) ** 2), rel=1e-5)
    assert torch.equal(window_weight(5, "uniform"), torch.ones(5, 5))
    with pytest.raises(ValueError, match="window weight"):
        window_weight(5, "cosine")
    with pytest.raises(TypeError, match="shape"):
        window_weight(5.0)


@pytest.mark.parametrize(
    "coarse, full, box",
    [
        ((5, 7, 3), (13, 20, 11), (slice(2, 9), slice(0, 20), slice(4, 11))),
        ((4, 4, 2), (4, 4, 2), (slice(0, 4), slice(1, 3), slice(0, 2))),  # same grid: the identity
        (
            (3, 6, 4),
            (10, 5, 9),
            (slice(9, 10), slice(0, 5), slice(0, 1)),
        ),  # downsampling an axis, 1-voxel box
    ],
)
def test_upsample_in_box_equals_interpolate_cropped(coarse, full, box):
    from agcl.pipeline.segment import upsample_in_box

    c = np.random.default_rng(0).random(coarse).astype(np.float32)
    want = torch.nn.functional.interpolate(
        torch.from_numpy(c)[None, None], size=full, mode="trilinear", align_corners=False
    )[0, 0].numpy()[box]
    np.testing.assert_allclose(upsample_in_box(c, full, box), want, atol=1e-6)
    np.testing.assert_allclose(upsample_in_box(torch.from_numpy(c), full, box), want, atol=1e-6)
    with pytest.raises(ValueError, match="coarse must be"):
        upsample_in_box(c[0], full, box)


def _coarse_probability(shape, n_organs, seed=5):
    p = np.random.default_rng(seed).random((n_organs + 1, *shape)).astype(np.float32)
    return p / p.sum(0, keepdims=True)


@pytest.mark.parametrize("weight", [0.25, 0.5, 1.0])
def test_coarse_weight_blends_the_coarse_probability(weight):
    from agcl.pipeline.segment import upsample_in_box

    image, att = _volume(4)
    ids = [2, 6, 11]
    cp = _coarse_probability((5, 6, 2), 3)
    out = segment_with_attention(
        PointwiseModel(),
        image,
        att,
        ids,
        patch_size=8,
        stride=3,
        threshold=0.5,
        coarse_probability=cp,
        coarse_weight=weight,
    )
    p3 = torch.sigmoid(8.0 * (torch.from_numpy(image) - 0.5)).numpy()
    full = tuple(slice(0, n) for n in image.shape)
    pc = np.stack([upsample_in_box(cp[k + 1], image.shape, full) for k in range(3)])
    score = ((1 - weight) * p3[None] + weight * pc) * att
    np.testing.assert_array_equal(out, fuse_labels(score, ids, threshold=0.5))
    assert (out[~att.any(0)] == 0).all()  # still nothing outside the attention
    if weight == 1.0:  # stage 3 ignored: the coarse probabilities alone decide
        assert not np.array_equal(out, fuse_labels(p3[None] * att, ids, threshold=0.5))


def test_coarse_weight_zero_or_no_probability_is_the_paper_fusion():
    image, att = _volume(6)
    ids = [2, 6, 11]
    plain = segment_with_attention(PointwiseModel(), image, att, ids, patch_size=8, stride=4)
    cp = _coarse_probability((4, 4, 2), 3)
    assert np.array_equal(
        plain,
        segment_with_attention(
            PointwiseModel(),
            image,
            att,
            ids,
            patch_size=8,
            stride=4,
            coarse_probability=cp,
            coarse_weight=0.0,
        ),
    )
    assert np.array_equal(
        plain,
        segment_with_attention(
            PointwiseModel(), image, att, ids, patch_size=8, stride=4, coarse_weight=0.5
        ),
    )


def test_half_weight_keeps_what_stage_3_is_sure_of():
    class Sure(torch.nn.Module):  # p3 = 1 where the image > 0.5, else 0 (to float32 precision)
        def forward(self, x):
            fg = torch.where(x[:, :1] > 0.5, 50.0, -50.0)
            return torch.cat([torch.zeros_like(fg), fg], 1)

    image, att = _volume(7)
    ids = [2, 6, 11]
    for value in (
        0.01,
        0.3,
        1.0,
    ):  # any coarse probability above 0, up to 1 (the attention maps do not overlap)
        cp = np.full((4, 4, 4, 2), value, np.float32)
        out = segment_with_attention(
            Sure(),
            image,
            att,
            ids,
            patch_size=8,
            stride=4,
            coarse_probability=cp,
            coarse_weight=0.5,
        )
        np.testing.assert_array_equal(
            out, segment_with_attention(Sure(), image, att, ids, patch_size=8, stride=4)
        )


def test_organ_without_a_coarse_channel_is_scored_by_stage_3_alone():
    image, att = _volume(8)
    ids = [2, 6, 11]
    cp = _coarse_probability((4, 4, 2), 2)  # channels for organs 6 and 11 only
    out = segment_with_attention(
        PointwiseModel(),
        image,
        att,
        ids,
        patch_size=8,
        stride=4,
        coarse_probability=cp,
        coarse_ids=[6, 11],
        coarse_weight=1.0,
    )
    p3 = torch.sigmoid(8.0 * (torch.from_numpy(image) - 0.5)).numpy()
    only0 = att[0] & ~att[1] & ~att[2]
    np.testing.assert_array_equal(out[only0] == 2, p3[only0] > 0.5)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"coarse_weight": 1.5}, ValueError, "coarse_weight"),
        ({"coarse_weight": "0.5"}, TypeError, "coarse_weight"),
        ({"window": "cosine"}, ValueError, "window"),
        (
            {"coarse_probability": np.zeros((3, 4, 4, 2), np.float32)},
            ValueError,
            "coarse_probability",
        ),
        (
            {"coarse_probability": np.zeros((4, 4, 4, 2), np.float32), "coarse_ids": [1, 2]},
            ValueError,
            "coarse_ids",
        ),
    ],
)
def test_blending_options_are_checked(kwargs, err, match):
    image, att = _volume(1)
    with pytest.raises(err, match=match):
        segment_with_attention(
            PointwiseModel(), image, att, [1, 2, 3], patch_size=8, stride=4, **kwargs
        )


@pytest.mark.parametrize("stride", [2, 5])
def test_gaussian_window_averages_with_the_window_weight(stride):
    from agcl.pipeline.toolkit import window_weight

    class Ramp(
        torch.nn.Module
    ):  # p = column index inside the window / patch: depends on the window
        def forward(self, x):
            n = x.shape[-1]
            p = (torch.arange(n, dtype=torch.float32) + 0.5) / n
            fg = torch.logit(p).expand(x.shape[0], 1, n, n)
            return torch.cat([torch.zeros_like(fg), fg], 1)

    image = np.zeros((8, 14, 1), np.float32)
    att = np.zeros((1, 8, 14, 1), bool)
    att[0, :, 0:14] = True
    outs = {
        w: segment_with_attention(
            Ramp(), image, att, [1], patch_size=8, stride=stride, threshold=0.5, window=w
        )
        for w in ("uniform", "gaussian")
    }
    # the expected averaged probability of each column, computed from the windows' starts
    from agcl.pipeline.toolkit import window_starts

    starts = window_starts(0, 13, 8, stride)
    wcol = window_weight(8, "gaussian")[
        4
    ].numpy()  # the weight along the columns (row 4: the centre)
    for kind, out in outs.items():
        for col in range(14):
            covering = [s for s in starts if s <= col < s + 8]
            p = np.array([(col - s + 0.5) / 8 for s in covering])
            w = (
                np.ones(len(covering))
                if kind == "uniform"
                else np.array([wcol[col - s] for s in covering])
            )
            assert (out[4, col, 0] == 1) == (float((p * w).sum() / w.sum()) > 0.5), (kind, col)
    assert not np.array_equal(outs["uniform"], outs["gaussian"]) or stride == 5


def test_sparse_attention_predicts_like_the_dense_stack():
    import torch

    from agcl.pipeline.segment import segment_with_attention
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


def test_graded_attention_feeds_its_values_and_bounds_by_non_zero():
    """A graded mask reaches the model's attention channel with its values (as in training),
    and only decides *where* an organ may be: the kept probability is not scaled by it."""
    import torch

    from agcl.pipeline.segment import segment_with_attention
    from agcl.sampling import attention_from_labels, densify

    class Echo(torch.nn.Module):  # organ probability = the attention channel's value
        def forward(self, x):
            p = x[:, 1:2].clamp(1e-4, 1 - 1e-4)
            return torch.cat([torch.log(1 - p), torch.log(p)], 1)

    class Sure(torch.nn.Module):  # p = 0.9 everywhere
        def forward(self, x):
            return torch.cat(
                [torch.zeros_like(x[:, :1]), torch.full_like(x[:, :1], math.log(9.0))], 1
            )

    lab = np.zeros((30, 30, 2), np.uint8)
    lab[10:20, 10:20, :] = 3
    img = np.zeros(lab.shape, np.float32)
    soft = attention_from_labels(lab, [3], margin_mm=3.0, spacing=(1, 1, 1), channel="probability")
    region = densify(soft, [3], lab.shape)[0] != 0
    for att in (soft, densify(soft, [3], lab.shape)):
        # the channel holds 1 on the organ and 0.5 in the margin: with threshold 0.6 only the
        # organ stays
        echo = segment_with_attention(Echo(), img, att, [3], patch_size=8, stride=4, threshold=0.6)
        np.testing.assert_array_equal(echo == 3, lab == 3)
        # p = 0.9 in the margin too (not 0.9 * 0.5 < 0.6): the whole region, nothing outside it
        sure = segment_with_attention(Sure(), img, att, [3], patch_size=8, stride=4, threshold=0.6)
        np.testing.assert_array_equal(sure == 3, region)
        # the same with the coarse blend (coarse probability 0.9 everywhere: the blend is 0.9)
        cp = np.stack([np.full(lab.shape, 0.1, np.float32), np.full(lab.shape, 0.9, np.float32)])
        blended = segment_with_attention(
            Sure(),
            img,
            att,
            [3],
            patch_size=8,
            stride=4,
            threshold=0.6,
            coarse_probability=cp,
            coarse_ids=[3],
            coarse_weight=0.5,
        )
        np.testing.assert_array_equal(blended == 3, region)
