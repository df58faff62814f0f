"""Malformed inputs thrown at the public entry points (hypothesis).

Every call must either succeed with finite output or raise ``ValueError``/``TypeError`` whose
message names one of the arguments; any other exception (or a NaN result) fails.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agcl import PairAug
from agcl.data import preprocess_ct
from agcl.functional import modal_target_supcon_loss, soft_dice_loss
from agcl.losses import ModalTargetSupConLoss, SoftDiceLoss
from agcl.metrics import dice, hausdorff_distance
from agcl.pipeline import fuse_labels
from agcl.sampling import AttentionPatchSampler, extract_windows

# derandomize: the same examples on every run, so CI cannot fail by chance on a case no one saw
SETTINGS = settings(
    max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

dims = st.integers(0, 4)
shapes = st.lists(dims, min_size=0, max_size=5).map(tuple)
dtypes = st.sampled_from(
    [torch.float32, torch.float64, torch.float16, torch.int64, torch.int32, torch.bool]
)
specials = st.sampled_from([None, float("nan"), float("inf"), -float("inf"), 1e30])
numbers = st.one_of(
    st.sampled_from([0, 1, -1, 0.5, 2, float("nan"), float("inf"), "1", None, True]),
    st.floats(-3, 3, allow_nan=False),
)


@st.composite
def tensors(draw, shape=shapes, dtype=dtypes, low=-3, high=3):
    shp, dt, special = draw(shape), draw(dtype), draw(specials)
    if dt == torch.bool:
        return torch.rand(shp) > 0.5
    if not dt.is_floating_point:
        return torch.randint(low, high + 1, shp, dtype=dt)
    x = (torch.rand(shp, dtype=torch.float64) * (high - low) + low).to(dt)
    if special is not None and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = special
    return x


def check(call, names):
    """Run ``call``; finite output, or a ValueError/TypeError naming one of ``names``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = call()
        except (ValueError, TypeError) as exc:
            msg = str(exc)
            assert any(n in msg for n in names), (
                f"{type(exc).__name__} names none of {names}: {msg}"
            )
            return
    outs = out if isinstance(out, (tuple, list)) else [out]
    for o in outs:
        if isinstance(o, torch.Tensor) and o.is_floating_point():
            assert bool(torch.isfinite(o).all()), f"non-finite output {o}"
        elif isinstance(o, np.ndarray) and o.dtype.kind == "f":
            assert np.isfinite(o).all(), f"non-finite output {o}"
        elif isinstance(o, float):
            assert np.isfinite(o) or o == float("inf"), o  # inf: an empty mask's Hausdorff distance


@SETTINGS
@given(
    feats=tensors(),
    labels=st.one_of(st.none(), tensors(st.lists(dims, max_size=2).map(tuple))),
    temperature=numbers,
    normalize=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none", "avg"]),
)
def test_modal_target_loss(feats, labels, temperature, normalize, reduction):
    names = ["features", "labels", "temperature", "reduction", "views"]
    check(
        lambda: modal_target_supcon_loss(
            feats, labels, temperature=temperature, normalize=normalize, reduction=reduction
        ),
        names,
    )
    check(lambda: ModalTargetSupConLoss(temperature=temperature)(feats, labels), names)


@SETTINGS
@given(
    logits=tensors(st.lists(dims, min_size=3, max_size=5).map(tuple)),
    target=tensors(st.lists(dims, min_size=2, max_size=5).map(tuple), low=-1, high=3),
    activation=st.sampled_from(["softmax", "sigmoid", None, "relu"]),
    smooth=numbers,
)
def test_soft_dice(logits, target, activation, smooth):
    names = ["logits", "target", "activation", "smooth_nr", "smooth_dr", "C=", "include_background"]
    check(lambda: soft_dice_loss(logits, target, activation=activation, smooth_nr=smooth), names)
    check(lambda: SoftDiceLoss(activation=activation, smooth_dr=smooth)(logits, target), names)


@SETTINGS
@given(
    image=tensors(
        st.lists(st.integers(0, 6), min_size=2, max_size=4).map(tuple), dtype=st.just(torch.float32)
    ),
    att=tensors(st.lists(st.integers(0, 6), min_size=2, max_size=4).map(tuple), low=-1, high=3),
    patch=st.sampled_from([1, 3, (2, 4), 0, 2.5, "3", (3,)]),
    per_slice=st.sampled_from([1, 2, 0, 1.0]),
)
def test_attention_patch_sampler(image, att, patch, per_slice):
    names = ["patch_size", "patches_per_slice", "image", "attention", "label"]
    check(lambda: AttentionPatchSampler(patch, per_slice, seed=0).sample(image, att), names)


@SETTINGS
@given(x=tensors(), degrees=numbers)
def test_pair_aug(x, degrees):
    check(
        lambda: PairAug(degrees=degrees, generator=torch.Generator().manual_seed(0))(x),
        ["x", "degrees", "mask_channels"],
    )


@SETTINGS
@given(
    vol=tensors(dtype=st.sampled_from([torch.float32, torch.float64, torch.int32])),
    window=st.sampled_from([None, (-175, 250), (250, -175), (0, 0), "ab", (1, 2, 3)]),
    percentiles=st.sampled_from([None, (1, 99), (0, 100), (99, 1), (-1, 50), (50, 101)]),
    as_numpy=st.booleans(),
)
def test_preprocess_ct(vol, window, percentiles, as_numpy):
    v = vol.numpy() if as_numpy else vol
    check(
        lambda: preprocess_ct(v, window=window, percentiles=percentiles),
        ["volume", "window", "percentiles"],
    )


@SETTINGS
@given(
    probs=tensors(dtype=st.sampled_from([torch.float32, torch.float64]), low=0, high=1),
    ids=st.one_of(st.none(), st.lists(st.integers(-1, 40000), max_size=4)),
    threshold=numbers,
)
def test_fuse_labels(probs, ids, threshold):
    check(
        lambda: fuse_labels(probs, organ_ids=ids, threshold=threshold),
        ["probabilities", "organ_ids", "threshold"],
    )


@SETTINGS
@given(
    pred=tensors(low=0, high=2),
    gt=tensors(low=0, high=2),
    spacing=st.sampled_from([None, 1.0, (1.0, 2.0), (1.0, 1.0, 1.0), (0.0, 1.0), "x", -1.0]),
    percentile=st.sampled_from([95, 100, 0, 101, "95", 50.5]),
)
def test_metrics(pred, gt, spacing, percentile):
    names = ["pred", "gt", "spacing", "percentile", "mask"]
    check(lambda: dice(pred, gt), names)
    check(lambda: hausdorff_distance(pred, gt, spacing=spacing, percentile=percentile), names)


@SETTINGS
@given(
    arr=tensors(),
    centres=tensors(st.lists(st.integers(0, 4), min_size=1, max_size=3).map(tuple), low=-1, high=4),
    patch=st.sampled_from([1, 3, (2, 4), 0, 2.5, "3"]),
    axis=st.sampled_from([-1, 0, 2, 3, 1.0]),
)
def test_extract_windows(arr, centres, patch, axis):
    check(
        lambda: extract_windows(arr, centres, patch, axis=axis),
        ["array", "centres", "patch_size", "axis"],
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_check_helper_rejects_non_finite_output(bad):
    with pytest.raises(AssertionError, match="non-finite"):
        check(lambda: torch.tensor([1.0, bad]), ["x"])
    with pytest.raises(AssertionError, match="names none"):
        check(lambda: (_ for _ in ()).throw(ValueError("something vague")), ["x"])
