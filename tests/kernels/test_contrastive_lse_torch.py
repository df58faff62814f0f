"""The blocked torch log-sum-exp against the full-matrix reference (same contract)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl.kernels import (
    contrastive_lse_naive,
    contrastive_lse_torch,
    default_block_size,
    get_lse_fn,
    resolve_backend,
)

# float64 agreement: both compute the same sums in a different order/base, so the error is a
# few ulps times log(M); 1e-10 leaves room and still catches any wrong term (>= 1e-3 here).
TOL64 = dict(rtol=1e-10, atol=1e-10)


def _rows(m: int, d: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen, dtype=torch.float64), dim=1)
    return (z * scale).requires_grad_()


def _ref_grad(z, temperature, a, n, g):
    lse = contrastive_lse_naive(z, temperature, anchor_start=a, num_anchors=n)
    (dz,) = torch.autograd.grad((lse * g).sum(), z)
    return lse, dz


@settings(deadline=None, max_examples=40)
@given(
    m=st.integers(2, 24),
    d=st.integers(1, 6),
    start_frac=st.floats(0.0, 1.0),
    count_frac=st.floats(0.0, 1.0),
    block=st.integers(1, 9),
    temperature=st.floats(0.05, 3.0),
    signed=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_matches_naive_float64(m, d, start_frac, count_frac, block, temperature, signed, seed):
    a = int(start_frac * (m - 1))
    n = max(1, int(count_frac * (m - a)))
    z = _rows(m, d, seed)
    g = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    g = g if signed else g.abs()  # g >= 0 takes the folded log2(g) path
    lse = contrastive_lse_torch(z, temperature, anchor_start=a, num_anchors=n, block_size=block)
    (dz,) = torch.autograd.grad((lse * g).sum(), z)
    ref, ref_dz = _ref_grad(z, temperature, a, n, g)
    torch.testing.assert_close(lse, ref, **TOL64)
    torch.testing.assert_close(dz, ref_dz, **TOL64)


@pytest.mark.parametrize("a,n,block", [(0, 7, 3), (2, 4, 3), (0, 7, 100), (5, 2, 1)])
def test_gradcheck_float64(a, n, block):
    z = _rows(7, 3, seed=3)
    fn = lambda x: contrastive_lse_torch(x, 0.4, anchor_start=a, num_anchors=n, block_size=block)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (z,))


def test_hand_computed_value():
    # rows e1, e1, e2 with T = 1: row 0 sees exp(1) (row 1) and exp(0) (row 2)
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    lse = contrastive_lse_torch(z, 1.0, block_size=2)
    want = [math.log(math.e + 1), math.log(math.e + 1), math.log(2.0)]
    torch.testing.assert_close(lse, torch.tensor(want, dtype=torch.float64), **TOL64)


def test_float32_unnormalised_and_tiny_temperature():
    # the bound shift underflows for T = 0.01 on spread-out rows; the exact fallback must kick in
    z = _rows(64, 3, seed=5).detach()
    ref = contrastive_lse_naive(z, 0.01)
    # float32 relative error ~1e-7 of |lse| <= 100 -> 1e-4 absolute is a comfortable bound
    torch.testing.assert_close(
        contrastive_lse_torch(z.float(), 0.01), ref.float(), rtol=0, atol=1e-4
    )
    big = (z * 40.0).float()  # large unnormalised rows: logits up to 1600 / 0.1
    torch.testing.assert_close(
        contrastive_lse_torch(big, 0.1, block_size=16),
        contrastive_lse_naive(big.double(), 0.1).float(),
        rtol=1e-6,
        atol=1e-3,
    )


def test_single_row_is_minus_inf_with_zero_gradient():
    z = torch.ones(1, 4, requires_grad=True)
    lse = contrastive_lse_torch(z, 0.1)
    assert lse.shape == (1,) and torch.isneginf(lse).all()
    (dz,) = torch.autograd.grad(lse.sum(), z)  # d(-inf)/dz is taken as 0, never NaN
    assert torch.equal(dz, torch.zeros_like(z))


def test_empty_anchor_set():
    z = torch.randn(5, 3, requires_grad=True)
    out = contrastive_lse_torch(z, 0.1, anchor_start=5, num_anchors=0)
    assert out.shape == (0,)
    assert contrastive_lse_torch(torch.zeros(0, 3), 0.1).shape == (0,)


def test_zero_upstream_gradient_gives_zero():
    z = _rows(9, 4, seed=1)
    lse = contrastive_lse_torch(z, 0.2, block_size=4)
    (dz,) = torch.autograd.grad((lse * torch.zeros(9, dtype=torch.float64)).sum(), z)
    assert torch.equal(dz, torch.zeros_like(dz))


def test_saves_only_linear_memory():
    # every tensor saved for backward must be O(M * D), never (block or A) x M
    m, d = 512, 4
    z = torch.randn(m, d, requires_grad=True)
    saved: list[int] = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        contrastive_lse_torch(z, 0.1, block_size=64).sum().backward()
    assert saved and max(saved) <= m * d < 64 * m


def test_default_block_size_targets_64_mib():
    for m in (1000, 4096, 16384, 65536, 262144):
        b = default_block_size(m)
        assert 32 * 2**20 < b * m * 4 <= 64 * 2**20 or b in (16, m)


def test_bad_arguments():
    z = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"z must be \(M, D\); got shape \(4,\)"):
        contrastive_lse_torch(torch.randn(4), 0.1)
    with pytest.raises(ValueError, match=r"num_anchors must lie in \[0, 1\]; got 2"):
        contrastive_lse_torch(z, 0.1, anchor_start=3, num_anchors=2)
    with pytest.raises(ValueError, match="block_size"):
        contrastive_lse_torch(z, 0.1, block_size=0)


def test_backend_dispatch(monkeypatch):
    assert get_lse_fn("torch", "cpu") is contrastive_lse_torch
    assert get_lse_fn("naive", "cpu") is contrastive_lse_naive
    assert resolve_backend("auto", "cpu") == "torch"
    with pytest.raises(ValueError, match="backend must be one of 'auto', 'torch'"):
        resolve_backend("cuda", "cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setattr("agcl.kernels._TRITON_OK", True)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", "cpu")
    monkeypatch.setattr("agcl.kernels._TRITON_OK", False)
    with pytest.raises(ImportError, match=r"pip install agcl\[triton\]"):
        resolve_backend("triton", "cpu")


@pytest.mark.parametrize("temperature", [0.01, 0.07, 0.5])
@pytest.mark.parametrize("factored", [True, False])
def test_symmetric_backward_both_paths(monkeypatch, temperature, factored):
    # g >= 0 with every row an anchor may take the factored backward (when the exponent range
    # allows it, e.g. not at T = 0.01); force the general path with factored=False: both agree
    if not factored:
        monkeypatch.setattr(
            importlib.import_module("agcl.kernels.contrastive_lse_torch"),
            "_FACTOR_RANGE",
            -math.inf,
        )
    z = _rows(40, 5, seed=7)
    g = torch.rand(40, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    g[::7] = 0.0  # anchors without positives get g = 0
    lse = contrastive_lse_torch(z, temperature, block_size=16)
    (dz,) = torch.autograd.grad((lse * g).sum(), z)
    ref, ref_dz = _ref_grad(z, temperature, 0, 40, g)
    torch.testing.assert_close(lse, ref, **TOL64)
    torch.testing.assert_close(dz, ref_dz, **TOL64)


# ------------------------------------------------------------------------- CUDA only (not run here)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(
    ("m", "d", "a", "n", "block"),
    [(4099, 128, 0, None, None), (3001, 250, 517, 1200, 256), (2048, 64, 0, None, 100)],
)
def test_cuda_torch_backend_matches_float64(m, d, a, n, block):
    # The production path on CUDA when triton is absent or fails auto's self-check. All rows
    # as anchors (the symmetric and factored backward) and a sub-block (the gathered loss);
    # fp32 on the GPU against float64 on the CPU: 1e-4 for sums over a few thousand terms.
    gen = torch.Generator().manual_seed(m)
    z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1)
    count = m - a if n is None else n
    g = torch.rand(count, generator=gen) / count
    zc = z.clone().cuda().requires_grad_()
    lse = contrastive_lse_torch(zc, 0.1, anchor_start=a, num_anchors=n, block_size=block)
    (lse * g.cuda()).sum().backward()
    z64 = z.double().requires_grad_()
    ref = contrastive_lse_naive(z64, 0.1, anchor_start=a, num_anchors=n)
    (ref * g.double()).sum().backward()
    assert lse.device.type == "cuda" and zc.grad.device.type == "cuda"
    torch.testing.assert_close(lse.double().cpu(), ref.detach(), rtol=1e-4, atol=1e-4)
    scale = float(z64.grad.abs().max())
    torch.testing.assert_close(zc.grad.double().cpu(), z64.grad, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_cuda_loss_backends_agree(backend):
    # The whole loss on CUDA through the torch backend and through auto (Triton after its
    # self-check, or torch after a warned fallback) against the naive float64 oracle.
    from agcl.functional import modal_target_supcon_loss

    gen = torch.Generator().manual_seed(3)
    feats = torch.randn(300, 2, 64, generator=gen)
    opts = {
        "modality": torch.randint(0, 3, (300,), generator=gen),
        "target": torch.randint(0, 5, (300,), generator=gen),
        "partial_weight": 0.5,
    }
    f64 = feats.double().requires_grad_()
    want = modal_target_supcon_loss(f64, backend="naive", **opts)
    want.backward()
    fc = feats.clone().cuda().requires_grad_()
    got = modal_target_supcon_loss(
        fc, backend=backend, **{k: (v.cuda() if torch.is_tensor(v) else v) for k, v in opts.items()}
    )
    got.backward()
    torch.testing.assert_close(got.double().cpu(), want.detach(), rtol=5e-5, atol=5e-5)
    torch.testing.assert_close(
        fc.grad.double().cpu(), f64.grad, rtol=1e-4, atol=1e-4 * float(f64.grad.abs().max())
    )
