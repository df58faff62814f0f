"""ModalTargetSupConLoss / modal_target_supcon_loss: values, properties, edge cases, errors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl import ModalTargetSupConLoss
from agcl.functional import modal_target_supcon_loss

# float64 comparisons: the backends sum the same terms in a different order (class sums vs
# masks, blocked vs full lse), so agreement is to a few ulps times M; 1e-9 is far below any
# real discrepancy (a missing or extra pair changes the loss by >= 1e-3 here).
TOL64 = dict(rtol=1e-9, atol=1e-9)


def _feats(b: int, v: int, d: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, v, d, generator=gen, dtype=dtype).requires_grad_()


def _eq3_brute_force(z, mod, tgt, temperature, w):
    """Eq. 3 as a double loop over anchors and rows, in float64 (z already normalised, (M, D))."""
    m = z.shape[0]
    losses, valid = [], []
    for k in range(m):
        den = sum(math.exp(float(z[k] @ z[j]) / temperature) for j in range(m) if j != k)
        num, weight = 0.0, 0.0
        for j in range(m):
            if j == k:
                continue
            wj = 1.0 if (mod[j], tgt[j]) == (mod[k], tgt[k]) else (w if mod[j] == mod[k] else 0.0)
            if wj:
                num += wj * (float(z[k] @ z[j]) / temperature - math.log(den))
                weight += wj
        losses.append(-num / weight if weight else 0.0)
        valid.append(weight > 0)
    return torch.tensor(losses, dtype=torch.float64), torch.tensor(valid)


def test_hand_computed_value():
    # rows e1, e1, e2, T = 1, classes (0, 0, 1): anchors 0 and 1 have loss log(e + 1) - 1
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss, valid = modal_target_supcon_loss(
        z, torch.tensor([0, 0, 1]), temperature=1.0, reduction="none", return_valid=True
    )
    want = math.log(math.e + 1) - 1
    torch.testing.assert_close(loss, torch.tensor([want, want, 0.0], dtype=torch.float64), **TOL64)
    assert valid.tolist() == [True, True, False]
    mean = modal_target_supcon_loss(z, torch.tensor([0, 0, 1]), temperature=1.0)
    torch.testing.assert_close(mean, torch.tensor(want, dtype=torch.float64), **TOL64)


@pytest.mark.parametrize("backend", ["torch", "naive"])
@pytest.mark.parametrize("w", [0.0, 0.4, 1.0])
def test_brute_force_eq3(backend, w):
    b, v = 7, 2
    f = _feats(b, v, 5, seed=11)
    mod, tgt = torch.tensor([0, 0, 0, 1, 1, 1, 1]), torch.tensor([0, 1, 1, 0, 0, 2, 3])
    loss, valid = modal_target_supcon_loss(
        f,
        modality=mod,
        target=tgt,
        temperature=0.3,
        partial_weight=w,
        reduction="none",
        backend=backend,
        block_size=3,
        return_valid=True,
    )
    z = torch.nn.functional.normalize(torch.cat(f.detach().unbind(1)), dim=1)
    ref, ref_valid = _eq3_brute_force(z, mod.repeat(v).tolist(), tgt.repeat(v).tolist(), 0.3, w)
    torch.testing.assert_close(loss.T.reshape(-1), ref, **TOL64)  # (B, V) -> view-major rows
    assert torch.equal(valid.T.reshape(-1), ref_valid)


@settings(deadline=None, max_examples=30)
@given(
    b=st.integers(1, 10),
    v=st.integers(1, 3),
    d=st.integers(1, 5),
    n_mod=st.integers(1, 3),
    n_tgt=st.integers(1, 4),
    labels=st.sampled_from(["pair", "target", "labels", "modality", "none"]),
    w=st.sampled_from([0.0, 0.25, 1.0]),
    temperature=st.floats(0.05, 2.0),
    block=st.integers(1, 7),
    flat=st.booleans(),
    normalize=st.booleans(),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    seed=st.integers(0, 2**16),
)
def test_torch_matches_naive(
    b, v, d, n_mod, n_tgt, labels, w, temperature, block, flat, normalize, reduction, seed
):
    gen = torch.Generator().manual_seed(seed)
    mod = torch.randint(0, n_mod, (b,), generator=gen)
    tgt = torch.randint(0, n_tgt, (b,), generator=gen)
    kwargs = {
        "pair": dict(modality=mod, target=tgt),
        "target": dict(target=tgt),
        "labels": dict(labels=tgt),
        "modality": dict(modality=mod),
        "none": {},
    }[labels]
    f = _feats(b, v, d, seed)
    x = f
    if flat:  # (M, D) rows, per-row labels (or views=V without labels)
        x = torch.cat(f.unbind(1))
        kwargs = {k: t.repeat(v) for k, t in kwargs.items()} or dict(views=v)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no-positive batches and ignored partial_weight warn
        for backend in ("torch", "naive"):
            loss = modal_target_supcon_loss(
                x,
                **kwargs,
                temperature=temperature,
                partial_weight=w,
                normalize=normalize,
                reduction=reduction,
                backend=backend,
                block_size=block,
            )
            (grad,) = torch.autograd.grad(loss.sum(), f)
            out[backend] = (loss, grad)
    torch.testing.assert_close(out["torch"][0], out["naive"][0], **TOL64)
    torch.testing.assert_close(out["torch"][1], out["naive"][1], **TOL64)
    assert torch.isfinite(out["torch"][1]).all()


def test_invariances():
    f = _feats(12, 2, 6, seed=4).detach()
    gen = torch.Generator().manual_seed(0)
    mod, tgt = torch.randint(0, 2, (12,), generator=gen), torch.randint(0, 3, (12,), generator=gen)
    kw = dict(temperature=0.2, partial_weight=0.5, reduction="none")
    base = modal_target_supcon_loss(f, modality=mod, target=tgt, **kw)
    perm = torch.randperm(12, generator=gen)
    permuted = modal_target_supcon_loss(f[perm], modality=mod[perm], target=tgt[perm], **kw)
    torch.testing.assert_close(permuted, base[perm], **TOL64)
    relabelled = modal_target_supcon_loss(
        f, modality=7 - 3 * mod, target=torch.tensor([5, 0, 9])[tgt], **kw
    )
    torch.testing.assert_close(relabelled, base, **TOL64)
    scale = torch.rand(12, 2, 1, generator=gen, dtype=torch.float64) * 10 + 0.1
    torch.testing.assert_close(
        modal_target_supcon_loss(f * scale, modality=mod, target=tgt, **kw), base, **TOL64
    )


def _supcon_reference(rows, labels, temperature):
    """Khosla et al. (2020) Eq. 2 (L^sup_out) in float64, written from the paper with a full
    masked log-softmax; NT-Xent (SimCLR) is the case where every sample has its own label."""
    z = torch.nn.functional.normalize(rows.to(torch.float64), dim=1)
    eye = torch.eye(z.shape[0], dtype=torch.bool)
    log_prob = (z @ z.T / temperature).masked_fill(eye, float("-inf")).log_softmax(dim=1)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    return -(log_prob.masked_fill(~pos, 0.0).sum(1) / pos.sum(1)).mean()


def test_one_modality_equals_supcon():
    f = _feats(16, 2, 8, seed=2).detach()
    tgt = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    ours = modal_target_supcon_loss(
        f, modality=torch.zeros(16, dtype=torch.long), target=tgt, temperature=0.1
    )
    ref = _supcon_reference(torch.cat(f.unbind(1)), tgt.repeat(2), 0.1)
    torch.testing.assert_close(ours, ref, **TOL64)
    # a second modality splits the classes: then it is SupCon over (modality, target) pairs
    mod = torch.arange(16) % 2
    ours2 = modal_target_supcon_loss(f, modality=mod, target=tgt, temperature=0.1)
    ref2 = _supcon_reference(torch.cat(f.unbind(1)), (mod * 4 + tgt).repeat(2), 0.1)
    torch.testing.assert_close(ours2, ref2, **TOL64)


def test_unique_labels_equal_nt_xent():
    f = _feats(10, 2, 8, seed=3).detach()
    ref = _supcon_reference(torch.cat(f.unbind(1)), torch.arange(10).repeat(2), 0.5)
    ours_sscl = modal_target_supcon_loss(f, temperature=0.5)  # no labels: sample index
    ours_flat = modal_target_supcon_loss(torch.cat(f.unbind(1)), views=2, temperature=0.5)
    ours_labels = modal_target_supcon_loss(f, torch.arange(10), temperature=0.5)
    for ours in (ours_sscl, ours_flat, ours_labels):
        torch.testing.assert_close(ours, ref, **TOL64)


def test_supcon_and_nt_xent_match_pytorch_metric_learning():
    # What users would otherwise pick (installed with the `bench` extra).
    pml = pytest.importorskip("pytorch_metric_learning.losses")
    f = _feats(16, 2, 8, seed=2).detach()
    tgt = torch.randint(0, 4, (16,), generator=torch.Generator().manual_seed(1))
    ours = modal_target_supcon_loss(f, target=tgt, temperature=0.1)
    theirs = pml.SupConLoss(temperature=0.1)(torch.cat(f.unbind(1)), tgt.repeat(2))
    torch.testing.assert_close(ours, theirs, **TOL64)
    ours_sscl = modal_target_supcon_loss(f, temperature=0.5)
    theirs = pml.NTXentLoss(temperature=0.5)(torch.cat(f.unbind(1)), torch.arange(16).repeat(2))
    torch.testing.assert_close(ours_sscl, theirs, **TOL64)


@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_log_count_lower_bound(w):
    f = _feats(20, 3, 4, seed=8).detach()
    mod, tgt = torch.arange(20) % 2, torch.arange(20) % 3
    loss, valid = modal_target_supcon_loss(
        f,
        modality=mod,
        target=tgt,
        partial_weight=w,
        reduction="none",
        temperature=0.07,
        return_valid=True,
    )
    m_rows, t_rows = mod.repeat(3), tgt.repeat(3)
    same_mod = m_rows[:, None] == m_rows[None, :]
    full = (same_mod & (t_rows[:, None] == t_rows[None, :])).sum(1) - 1
    partial = same_mod.sum(1) - 1 - full
    bound = torch.log(full + w * partial).reshape(3, 20).T
    assert valid.all() and (loss >= bound - 1e-12).all()


def test_no_positive_anywhere_is_zero_attached_and_warns():
    f = torch.randn(5, 4, requires_grad=True)
    with pytest.warns(UserWarning, match="no anchor has a positive"):
        loss = modal_target_supcon_loss(f, torch.arange(5))
    assert loss.item() == 0.0 and loss.dtype == torch.float32
    loss.backward()
    assert torch.equal(f.grad, torch.zeros_like(f))
    with pytest.warns(UserWarning, match="no anchor"):  # V = 1 without labels: no other view
        none = modal_target_supcon_loss(torch.randn(4, 1, 3), reduction="none")
    assert none.shape == (4, 1) and torch.equal(none, torch.zeros(4, 1))


def test_degenerate_batches():
    one_class = modal_target_supcon_loss(torch.randn(6, 2, 3), torch.zeros(6, dtype=torch.long))
    assert torch.isfinite(one_class) and one_class.item() >= math.log(11) - 1e-6  # bound
    two = modal_target_supcon_loss(torch.randn(1, 2, 3), temperature=0.1)  # M = 2: lse = s_12
    assert abs(two.item()) < 1e-5
    with pytest.warns(UserWarning, match="no anchor"):
        single = modal_target_supcon_loss(torch.randn(1, 3, requires_grad=True), torch.tensor([0]))
    assert single.item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_give_finite_float32(dtype):
    f = torch.randn(8, 2, 16).to(dtype).requires_grad_()
    loss = modal_target_supcon_loss(f, torch.arange(8) % 3)
    loss.backward()
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(f.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = modal_target_supcon_loss(torch.randn(8, 2, 16), torch.arange(8) % 3)
    assert auto.dtype == torch.float32 and torch.isfinite(auto)


def test_module_matches_functional_and_reprs():
    f = _feats(6, 2, 4, seed=9).detach()
    mod, tgt = torch.tensor([0, 0, 0, 1, 1, 1]), torch.tensor([0, 1, 1, 0, 1, 1])
    loss_fn = ModalTargetSupConLoss(0.2, partial_weight=0.3, backend="torch", block_size=4)
    fn = modal_target_supcon_loss(f, modality=mod, target=tgt, temperature=0.2, partial_weight=0.3)
    torch.testing.assert_close(loss_fn(f, modality=mod, target=tgt), fn, **TOL64)
    positional = ModalTargetSupConLoss(0.2)(f, tgt)  # labels positionally, as in SupContrast
    torch.testing.assert_close(
        positional, modal_target_supcon_loss(f, tgt, temperature=0.2), **TOL64
    )
    assert "temperature=0.2" in repr(loss_fn)


def test_whole_loss_saves_no_quadratic_tensor():
    # the torch backend's graph keeps O(M * D) tensors only (the naive one keeps M x M ones)
    m, d = 512, 4
    f = torch.randn(m // 2, 2, d, requires_grad=True)
    labels = dict(modality=torch.arange(m // 2) % 2, target=torch.arange(m // 2) % 5)
    sizes: dict[str, list[int]] = {}
    for backend in ("torch", "naive"):
        sizes[backend] = []
        with torch.autograd.graph.saved_tensors_hooks(
            lambda t, b=backend: sizes[b].append(t.numel()) or t, lambda t: t
        ):
            modal_target_supcon_loss(f, **labels, partial_weight=0.5, backend=backend).backward()
    assert max(sizes["torch"]) <= m * d
    assert max(sizes["naive"]) >= m * m  # the check can tell the two apart


def test_ignored_options_warn():
    f = torch.randn(4, 2, 3)
    with pytest.warns(UserWarning, match="partial_weight"):
        modal_target_supcon_loss(f, target=torch.tensor([0, 1, 0, 1]), partial_weight=0.5)
    with pytest.warns(UserWarning, match="views"):
        modal_target_supcon_loss(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]), views=2)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (
            lambda: modal_target_supcon_loss(torch.randn(4)),
            ValueError,
            r"features must be .*got shape \(4,\)",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), torch.arange(3)),
            ValueError,
            "labels must have 4 entries",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 3), target=torch.arange(5)),
            ValueError,
            "target must have 4",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 3), torch.rand(4)),
            TypeError,
            "labels must be an integer",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 3), torch.tensor([0, -1, 0, 1])),
            ValueError,
            "labels must be non-negative",
        ),
        (
            lambda: modal_target_supcon_loss(
                torch.randn(4, 3), torch.arange(4), modality=torch.arange(4)
            ),
            ValueError,
            "labels cannot be combined",
        ),
        (lambda: modal_target_supcon_loss(torch.randn(4, 3)), ValueError, "views=V"),
        (
            lambda: modal_target_supcon_loss(torch.randn(5, 3), views=2),
            ValueError,
            "views=2 must divide",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), views=3),
            ValueError,
            "views=3 disagrees",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), temperature=0.0),
            ValueError,
            "temperature",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), partial_weight=1.5),
            ValueError,
            "partial_weight",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), reduction="avg"),
            ValueError,
            "reduction must be one of 'mean', 'sum', 'none'",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), backend="cuda"),
            ValueError,
            "backend must be one of",
        ),
        (
            lambda: modal_target_supcon_loss(torch.full((4, 2, 3), float("nan"))),
            ValueError,
            "features must be finite",
        ),
        (
            lambda: modal_target_supcon_loss(torch.ones(4, 2, 3, dtype=torch.long)),
            TypeError,
            "features must be a floating",
        ),
        (lambda: modal_target_supcon_loss([[0.0]]), TypeError, "features must be a torch.Tensor"),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), block_size=0),
            ValueError,
            "block_size must be an int >= 1; got 0",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 2, 3), block_size=2.0),
            TypeError,
            "block_size must be an int; got float",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 3), views=0),
            ValueError,
            "views must be an int >= 1; got 0",
        ),
        (
            lambda: modal_target_supcon_loss(torch.randn(4, 3), views=True),
            TypeError,
            "views must be an int; got bool",
        ),
        (lambda: ModalTargetSupConLoss(-1.0), ValueError, "temperature"),
        (
            lambda: modal_target_supcon_loss(torch.randn(0, 2, 3)),
            ValueError,
            r"at least one row.*\(0, 2, 3\)",
        ),
    ],
)
def test_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_warning_points_at_the_callers_line():
    # attributed to this file (not agcl or torch.nn) so the default filter shows it once per site
    for call in (
        lambda x: modal_target_supcon_loss(x, torch.arange(3)),
        lambda x: ModalTargetSupConLoss()(x, torch.arange(3)),
    ):
        with pytest.warns(UserWarning, match="no anchor") as record:
            call(torch.randn(3, 4))
        assert record[0].filename == __file__
