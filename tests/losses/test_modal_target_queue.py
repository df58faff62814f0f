"""The label-aware memory queue of ``ModalTargetSupConLoss(queue_size=K)`` and the functional
``queue=`` argument, against a brute-force float64 double loop.

The reference keeps its own FIFO of normalised rows, rounded to float32 as the module's buffers
store them, so loss and gradients can be compared in float64 at 1e-10 (ulps times the set size).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl import ModalTargetSupConLoss
from agcl.functional import modal_target_supcon_loss
from agcl.kernels import contrastive_lse_torch


def _brute(z, cols, q_z, q_cols, temperature, w, pairs):
    """Per-anchor loss and validity: anchors are the rows of z, the set is z then the queue."""
    s_z = torch.cat([z, q_z])
    s_c = torch.cat([cols, q_cols])
    losses, valid = [], []
    for i in range(z.shape[0]):
        terms, pos, cnt = [], 0.0, 0.0
        for j in range(s_z.shape[0]):
            if j == i:
                continue
            s = (z[i] * s_z[j]).sum() / temperature
            terms.append(s)
            if bool((s_c[j] == s_c[i]).all()):
                pos, cnt = pos + s, cnt + 1.0
            elif pairs and bool(s_c[j, 0] == s_c[i, 0]):
                pos, cnt = pos + w * s, cnt + w
        lse = torch.logsumexp(torch.stack(terms), 0) if terms else torch.tensor(-math.inf).double()
        valid.append(cnt > 0)
        losses.append(lse - pos / cnt if cnt > 0 else z.sum() * 0.0)
    return torch.stack(losses), torch.tensor(valid)


def _reduce(loss, valid, reduction):
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / max(int(valid.sum()), 1)


@settings(deadline=None, max_examples=25)
@given(
    b=st.integers(1, 5),
    v=st.integers(1, 2),
    d=st.integers(1, 4),
    k=st.integers(1, 12),
    calls=st.integers(1, 4),
    pairs=st.booleans(),
    n_lab=st.integers(1, 3),
    w=st.sampled_from([0.0, 0.3, 1.0]),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    backend=st.sampled_from(["torch", "naive"]),
    block=st.integers(1, 4),
    seed=st.integers(0, 99),
)
def test_queue_matches_brute_force(
    b, v, d, k, calls, pairs, n_lab, w, reduction, backend, block, seed
):
    gen = torch.Generator().manual_seed(seed)
    loss_fn = ModalTargetSupConLoss(
        0.3,
        partial_weight=w if pairs else 0.0,
        reduction=reduction,
        backend=backend,
        block_size=block,
        queue_size=k,
    )
    q_z = torch.zeros(0, d, dtype=torch.float64)
    q_c = torch.zeros(0, 2 if pairs else 1, dtype=torch.long)
    for _ in range(calls):  # fill levels: empty, partial, full and wrapped
        x = torch.randn(b, v, d, generator=gen, dtype=torch.float64, requires_grad=True)
        mod = torch.randint(0, 2, (b,), generator=gen)
        tgt = torch.randint(0, n_lab, (b,), generator=gen)
        kw = dict(modality=mod, target=tgt) if pairs else dict(labels=tgt)
        out = loss_fn(x, **kw)
        (out.sum() if reduction == "none" else out).backward()
        # reference
        x_ref = x.detach().clone().requires_grad_(True)
        z = F.normalize(x_ref.transpose(0, 1).reshape(v * b, d), dim=1)
        cols = (torch.stack([mod, tgt], 1) if pairs else tgt[:, None]).repeat(v, 1)
        loss, valid = _brute(z, cols, q_z, q_c, 0.3, w, pairs)
        want = _reduce(loss, valid, reduction)
        if reduction == "none":
            want = want.reshape(v, b).T
        torch.testing.assert_close(out.detach(), want.detach(), rtol=1e-10, atol=1e-10)
        if bool(valid.any()):
            want.sum().backward()
            torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-10)
        # FIFO of the reference, float32 like the buffers
        q_z = torch.cat([q_z, z.detach().float().double()])[-k:]
        q_c = torch.cat([q_c, cols])[-k:]
        got_z, got_c = loss_fn.queue()
        torch.testing.assert_close(got_z.double(), q_z, rtol=0, atol=0)
        assert torch.equal(got_c, q_c)


def test_fifo_order_and_overflow():
    loss_fn = ModalTargetSupConLoss(queue_size=5, queue_dim=2)
    seen = []
    for step, n in enumerate([2, 2, 3, 7, 1]):
        x = torch.randn(n, 2)
        lab = torch.arange(n) + 10 * step
        loss_fn(x, lab)
        seen += lab.tolist()
        feats, keys = loss_fn.queue()
        assert keys[:, 0].tolist() == seen[-5:]  # oldest first, newest last
        torch.testing.assert_close(feats[-min(n, 5) :], F.normalize(x, dim=1)[-5:])
    assert loss_fn.queue_state[0] == 5


def test_queue_changes_loss_and_grad_only_through_anchors():
    torch.manual_seed(0)
    x = torch.randn(4, 8, requires_grad=True)
    lab = torch.tensor([0, 1, 2, 3])  # no positive in the batch: only the queue provides them
    q = F.normalize(torch.randn(6, 8), dim=1)
    q_keys = torch.tensor([0, 1, 2, 3, 0, 1])[:, None]
    with pytest.warns(UserWarning, match="no anchor has a positive"):
        assert modal_target_supcon_loss(x, lab) == 0
    out = modal_target_supcon_loss(x, lab, queue=(q.requires_grad_(True), q_keys))
    out.backward()
    assert out > 0 and q.grad is None  # the queue is detached inside
    assert x.grad.abs().sum() > 0


def test_torch_backward_skips_queue_rows():
    # grad_rows: the queue rows' gradient is zero, the batch rows' equals the full backward's
    torch.manual_seed(1)
    z = F.normalize(torch.randn(10, 4, dtype=torch.float64), dim=1).requires_grad_(True)
    g = torch.rand(3, dtype=torch.float64)
    full = torch.autograd.grad(
        (contrastive_lse_torch(z, 0.5, num_anchors=3, block_size=2) * g).sum(), z
    )[0]
    part = torch.autograd.grad(
        (contrastive_lse_torch(z, 0.5, num_anchors=3, block_size=2, grad_rows=4) * g).sum(), z
    )[0]
    torch.testing.assert_close(part[:4], full[:4], rtol=1e-12, atol=1e-12)
    assert bool((part[4:] == 0).all()) and bool((full[4:] != 0).any())
    with pytest.raises(ValueError, match="grad_rows"):
        contrastive_lse_torch(z, 0.5, num_anchors=3, grad_rows=2)


def _filled(queue_dim=None, steps=3):
    torch.manual_seed(2)
    loss_fn = ModalTargetSupConLoss(queue_size=6, queue_dim=queue_dim, partial_weight=0.5)
    for _ in range(steps):
        loss_fn(
            torch.randn(4, 2, 3),
            modality=torch.tensor([0, 0, 1, 1]),
            target=torch.tensor([0, 1, 0, 1]),
        )
    return loss_fn


@pytest.mark.parametrize("queue_dim", [None, 3])
def test_state_dict_resumes(queue_dim):
    a = _filled(queue_dim)
    b = ModalTargetSupConLoss(queue_size=6, queue_dim=queue_dim, partial_weight=0.5)
    b.load_state_dict(a.state_dict())  # a fresh module: lazy D is taken from the checkpoint
    assert set(a.state_dict()) == {"queue_features", "queue_keys", "queue_state"}
    for x, y in zip(a.queue(), b.queue()):
        assert torch.equal(x, y)
    torch.manual_seed(3)
    x = torch.randn(4, 2, 3)
    kw = dict(modality=torch.tensor([0, 1, 1, 1]), target=torch.tensor([0, 1, 1, 0]))
    assert torch.equal(a(x, **kw), b(x, **kw))
    assert torch.equal(a.queue_state, b.queue_state)


def test_views_and_2d_rows_agree():
    torch.manual_seed(4)
    a, b = ModalTargetSupConLoss(queue_size=7), ModalTargetSupConLoss(queue_size=7)
    for _ in range(3):
        x, lab = torch.randn(3, 2, 5), torch.randint(0, 2, (3,))
        va = a(x, lab)
        vb = b(torch.cat(x.unbind(1)), lab.repeat(2))  # (M, D) view-major rows, per-row labels
        torch.testing.assert_close(va, vb)
    torch.testing.assert_close(a.queue()[0], b.queue()[0])


def test_queue_errors():
    with pytest.raises(ValueError, match="queue_size"):
        ModalTargetSupConLoss(queue_size=-1)
    with pytest.raises(TypeError, match="queue_dim"):
        ModalTargetSupConLoss(queue_size=2, queue_dim=2.0)
    loss_fn = ModalTargetSupConLoss(queue_size=4, queue_dim=3)
    with pytest.raises(ValueError, match="D=3"):
        loss_fn(torch.randn(2, 5), torch.tensor([0, 1]))
    loss_fn(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="label column"):
        loss_fn(torch.randn(2, 3), modality=torch.tensor([0, 1]), target=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="queue needs labels"):
        ModalTargetSupConLoss(queue_size=4)(torch.randn(2, 2, 3))
    with pytest.raises(ValueError, match="no queue"):
        ModalTargetSupConLoss().queue()
    x, lab = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(TypeError, match="queue must be"):
        modal_target_supcon_loss(x, lab, queue=torch.zeros(1, 3))
    with pytest.raises(ValueError, match="queue_features"):
        modal_target_supcon_loss(
            x, lab, queue=(torch.zeros(1, 4), torch.zeros(1, 1, dtype=torch.long))
        )
    with pytest.raises(ValueError, match="queue_keys"):
        modal_target_supcon_loss(
            x, lab, queue=(torch.zeros(1, 3), torch.zeros(1, 2, dtype=torch.long))
        )
    with pytest.raises(TypeError, match="queue_keys"):
        modal_target_supcon_loss(x, lab, queue=(torch.zeros(1, 3), torch.zeros(1, 1)))


def test_repr_and_no_queue_has_no_buffers():
    assert "queue_size=3" in repr(ModalTargetSupConLoss(queue_size=3))
    assert ModalTargetSupConLoss().state_dict() == {}


def test_docs_example_runs():
    import doctest
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "docs" / "loss.md"
    result = doctest.testfile(str(path), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
