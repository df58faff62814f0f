"""SoftDiceLoss / soft_dice_loss (AGCL Eq. 1)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl import SoftDiceLoss
from agcl.functional import soft_dice_loss

# float32 sums of <= a few hundred terms in [0, 1]: 1e-6 relative is the float32 budget
TOL32 = dict(rtol=1e-5, atol=1e-6)


def _dice_brute_force(prob, onehot, smooth_nr, smooth_dr):
    """Per (batch, channel) loss with explicit loops over pixels."""
    b, c = prob.shape[:2]
    out = torch.zeros(b, c, dtype=torch.float64)
    for i in range(b):
        for k in range(c):
            p, y = prob[i, k].reshape(-1).tolist(), onehot[i, k].reshape(-1).tolist()
            inter = sum(pp * yy for pp, yy in zip(p, y))
            out[i, k] = 1 - (2 * inter + smooth_nr) / (sum(p) + sum(y) + smooth_dr)
    return out


def test_hand_computed_binary_sigmoid():
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[1, 0], [0, 0]]])
    want = 1 - (2 * 0.5 + 1e-5) / (2.0 + 1 + 1e-5)
    torch.testing.assert_close(
        soft_dice_loss(logits, target, activation="sigmoid"), torch.tensor(want), **TOL32
    )


@settings(deadline=None, max_examples=20)
@given(
    b=st.integers(1, 3),
    c=st.integers(2, 4),
    h=st.integers(1, 5),
    w=st.integers(1, 5),
    three_d=st.booleans(),
    activation=st.sampled_from(["softmax", "sigmoid", None]),
    seed=st.integers(0, 2**16),
)
def test_matches_brute_force(b, c, h, w, three_d, activation, seed):
    gen = torch.Generator().manual_seed(seed)
    spatial = (h, w, 2) if three_d else (h, w)
    logits = torch.randn(b, c, *spatial, generator=gen)
    if activation is None:
        logits = logits.softmax(1)
    labels = torch.randint(0, c, (b, *spatial), generator=gen)
    loss = soft_dice_loss(logits, labels, activation=activation, reduction="none")
    prob = {"softmax": logits.softmax(1), "sigmoid": logits.sigmoid(), None: logits}[activation]
    onehot = torch.nn.functional.one_hot(labels, c).movedim(-1, 1).float()
    ref = _dice_brute_force(prob.double(), onehot.double(), 1e-5, 1e-5).float()
    torch.testing.assert_close(loss, ref, **TOL32)
    # the same target given one-hot, or as (B, 1, ...), gives the same loss
    torch.testing.assert_close(
        soft_dice_loss(logits, onehot, activation=activation, reduction="none"), loss
    )
    torch.testing.assert_close(
        soft_dice_loss(logits, labels.unsqueeze(1), activation=activation, reduction="none"), loss
    )


def test_empty_target_and_prediction_is_zero():
    logits = torch.full((2, 1, 4, 4), -30.0, requires_grad=True)  # sigmoid ~ 0: empty prediction
    loss = soft_dice_loss(logits, torch.zeros(2, 4, 4, dtype=torch.long), activation="sigmoid")
    assert loss.item() < 1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    empty = soft_dice_loss(torch.zeros(1, 1, 3, 3), torch.zeros(1, 3, 3), activation=None)
    assert empty.item() == 0.0


def test_binary_sigmoid_c1_equals_softmax_c2_foreground():
    # softmax over (0, x) has foreground probability sigmoid(x): the foreground Dice agrees
    x = torch.randn(2, 1, 5, 5)
    y = (torch.rand(2, 5, 5) > 0.5).long()
    sig = soft_dice_loss(x, y, activation="sigmoid", reduction="none")
    soft = soft_dice_loss(
        torch.cat([torch.zeros_like(x), x], 1), y, activation="softmax", reduction="none"
    )
    torch.testing.assert_close(sig[:, 0], soft[:, 1], **TOL32)
    no_bg = soft_dice_loss(
        torch.cat([torch.zeros_like(x), x], 1), y, include_background=False, reduction="none"
    )
    torch.testing.assert_close(no_bg[:, 0], soft[:, 1], **TOL32)


def test_reductions_and_batch_dice():
    logits, y = torch.randn(3, 2, 4, 4), torch.randint(0, 2, (3, 4, 4))
    per = soft_dice_loss(logits, y, reduction="none")
    assert per.shape == (3, 2)
    torch.testing.assert_close(soft_dice_loss(logits, y), per.mean())
    torch.testing.assert_close(soft_dice_loss(logits, y, reduction="sum"), per.sum())
    pooled = soft_dice_loss(logits, y, batch_dice=True, reduction="none")
    prob, onehot = logits.softmax(1), torch.nn.functional.one_hot(y, 2).movedim(-1, 1).float()
    ref = 1 - (2 * (prob * onehot).sum((0, 2, 3)) + 1e-5) / (
        prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3)) + 1e-5
    )
    torch.testing.assert_close(pooled, ref, **TOL32)


def test_module_matches_functional_and_half_precision():
    logits, y = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    mod = SoftDiceLoss(include_background=False, reduction="sum", batch_dice=True)
    torch.testing.assert_close(
        mod(logits, y),
        soft_dice_loss(logits, y, include_background=False, reduction="sum", batch_dice=True),
    )
    half = SoftDiceLoss()(logits.half(), y)
    assert half.dtype == torch.float32 and torch.isfinite(half)


def test_single_channel_background_flag_warns():
    with pytest.warns(UserWarning, match="include_background"):
        soft_dice_loss(
            torch.randn(1, 1, 2, 2),
            torch.ones(1, 2, 2, dtype=torch.long),
            activation="sigmoid",
            include_background=False,
        )


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: soft_dice_loss(torch.randn(2, 3, 4), torch.zeros(2, 4)),
            ValueError,
            r"logits must be .*\(2, 3, 4\)",
        ),
        (
            lambda: soft_dice_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 5, 4, dtype=torch.long)),
            ValueError,
            r"logits \(2, 3, 4, 4\) and target \(2, 5, 4\)",
        ),
        (
            lambda: soft_dice_loss(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4)),
            TypeError,
            "integer tensor",
        ),
        (
            lambda: soft_dice_loss(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 3)),
            ValueError,
            r"target class indices must lie in \[0, 2\]",
        ),
        (
            lambda: soft_dice_loss(torch.randn(1, 1, 2, 2), torch.zeros(1, 2, 2)),
            ValueError,
            "softmax.*C=1",
        ),
        (
            lambda: soft_dice_loss(
                torch.randn(1, 1, 2, 2), torch.full((1, 2, 2), 2), activation="sigmoid"
            ),
            ValueError,
            r"\[0, 1\] for C=1",
        ),
        (lambda: SoftDiceLoss(activation="relu"), ValueError, "activation must be one of"),
        (lambda: SoftDiceLoss(reduction="avg"), ValueError, "reduction must be one of"),
        (lambda: SoftDiceLoss(smooth_nr=-1.0), ValueError, "smooth_nr"),
        (lambda: soft_dice_loss("x", torch.zeros(1)), TypeError, "logits must be a torch.Tensor"),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


# --- DiceCELoss ---


def test_dice_ce_is_the_weighted_sum_of_its_terms():
    from agcl import DiceCELoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3, 5, 6), generator=g)
    dice = SoftDiceLoss(activation="softmax", include_background=False)(logits, y)
    ce = torch.nn.functional.cross_entropy(logits, y)
    for wd, wc in ((1.0, 1.0), (0.3, 2.0), (0.0, 1.0), (1.0, 0.0)):
        got = DiceCELoss(dice_weight=wd, ce_weight=wc)(logits, y)
        torch.testing.assert_close(got, wd * dice + wc * ce)
    # the background flag reaches the Dice term; a (B, 1, ...) target is accepted
    with_bg = SoftDiceLoss(activation="softmax", include_background=True)(logits, y)
    torch.testing.assert_close(
        DiceCELoss(include_background=True)(logits, y[:, None]), with_bg + ce
    )


def test_dice_ce_gradient_reaches_every_pixel():
    from agcl import DiceCELoss

    # an empty target: the Dice term's gradient is tiny, the cross-entropy's is not
    logits = torch.zeros(2, 2, 8, 8, requires_grad=True)
    DiceCELoss(dice_weight=0.0)(logits, torch.zeros(2, 8, 8, dtype=torch.long)).backward()
    assert logits.grad is not None and bool((logits.grad[:, 1] > 0).all())


@pytest.mark.parametrize(
    "kwargs, args, exc, match",
    [
        ({"dice_weight": -1.0}, None, ValueError, "dice_weight"),
        ({"dice_weight": 0.0, "ce_weight": 0.0}, None, ValueError, "both be 0"),
        (
            {},
            (torch.zeros(2, 1, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)),
            ValueError,
            "C >= 2",
        ),
        ({}, (torch.zeros(2, 2, 4, 4), torch.zeros(2, 4, 4)), TypeError, "integer class indices"),
        ({}, (torch.zeros(2, 2, 4, 4), torch.full((2, 4, 4), 5)), ValueError, "class indices"),
    ],
)
def test_dice_ce_errors(kwargs, args, exc, match):
    from agcl import DiceCELoss

    with pytest.raises(exc, match=match):
        loss = DiceCELoss(**kwargs)
        loss(*args)
