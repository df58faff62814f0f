"""Tests of the fused Triton logsumexp kernel (agcl/kernels/contrastive_lse_triton.py).

Without CUDA these run under Triton's interpreter (the repository's conftest.py sets
TRITON_INTERPRET=1 before anything imports the kernels), where ``tl.dot`` is exact fp32: they
prove the algorithm (tiling, masks, online logsumexp, the atomic-free backward), not GPU
rounding. The ``cuda``-marked tests at the end need a GPU and are skipped here.

Oracle: a float64 masked logsumexp differentiated by torch.autograd.

Tolerances (fp32 kernel vs float64 oracle): every value is a dot of D <= 64 fp32 products
followed by exp/log on fp32; the rounding error grows like sqrt(D) * eps32 * |s| with
eps32 = 1.2e-7 and |s| <= |z|^2 / T <= 20 here, i.e. ~2e-5 at worst, observed <= 1.2e-6.
So rtol = atol = 3e-5 on lse, and on dz an atol of 3e-5 times the largest |dz| (dz sums up to
M such terms, each bounded by |g| |z| / T).
"""

from __future__ import annotations

import importlib
import math
import os
import subprocess
import sys
import warnings

import pytest
import torch

pytest.importorskip("triton")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from agcl.functional import modal_target_supcon_loss  # noqa: E402
from agcl.kernels import contrastive_lse_torch  # noqa: E402

mtt = importlib.import_module("agcl.kernels.contrastive_lse_triton")

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"
runnable = pytest.mark.skipif(
    not (CUDA or mtt.INTERPRETED), reason="needs CUDA or TRITON_INTERPRET=1 set before import"
)
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
RTOL32 = ATOL32 = 3e-5


def reference_lse(z: torch.Tensor, temperature: float, a: int, n: int) -> torch.Tensor:
    """log sum_{j != a+i} exp(z_{a+i} . z_j / T) in float64, straight from the definition."""
    z64 = z.double()
    s = z64[a : a + n] @ z64.T / temperature
    s[torch.arange(n), torch.arange(a, a + n)] = float("-inf")
    return torch.logsumexp(s, dim=1)


def run_both(z, temperature, a, n, g, blocks="default"):
    """(lse, dz) of the kernel and of the float64 oracle for the upstream gradient g.

    ``blocks``: "default" goes through the public function; a (BLOCK_M, BLOCK_N) pair or None
    (the autotuner) straight through the autograd Function, without the argument checks.
    """
    zk = z.detach().clone().to(DEVICE).requires_grad_()
    if blocks == "default":
        lse = mtt.contrastive_lse_triton(zk, temperature, anchor_start=a, num_anchors=n)
    else:
        lse = mtt._ContrastiveLSE.apply(zk, float(temperature), a, n, blocks, zk.shape[0])
    (lse * g.to(DEVICE, lse.dtype)).sum().backward()
    z64 = z.detach().double().requires_grad_()
    ref = reference_lse(z64, temperature, a, n)
    (ref * g.double()).sum().backward()
    return lse.detach().cpu(), zk.grad.cpu(), ref.detach(), z64.grad


def assert_matches(z, temperature, a, n, *, blocks="default", seed=0, zero_some_g=True):
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, generator=gen)
    if zero_some_g and n > 1:
        g[::3] = 0.0  # rows with g_i = 0 must contribute nothing
    lse, dz, ref, dref = run_both(z, temperature, a, n, g, blocks)
    assert lse.dtype == torch.float32 and lse.shape == (n,)
    torch.testing.assert_close(lse.double(), ref, rtol=RTOL32, atol=ATOL32)
    scale = max(1.0, float(dref.abs().max())) if dref.numel() else 1.0
    torch.testing.assert_close(dz.double(), dref, rtol=RTOL32, atol=ATOL32 * scale)


def unit_rows(m: int, d: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1)


# -------------------------------------------------------------------------- hand-computed values
@runnable
def test_two_rows_hand_computed():
    # M = 2: each anchor's only other row is the other one, so lse_0 = lse_1 = z0.z1 / T and
    # d(g0 lse_0 + g1 lse_1)/dz0 = (g0 + g1) z1 / T.
    z = torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 3.0]], device=DEVICE, requires_grad=True)
    lse = mtt.contrastive_lse_triton(z, 0.5)
    expected = (0.5 - 2.0 + 0.0) / 0.5
    torch.testing.assert_close(lse.cpu(), torch.tensor([expected, expected]))
    (lse * torch.tensor([2.0, 3.0], device=DEVICE)).sum().backward()
    zc = z.detach().cpu()
    torch.testing.assert_close(z.grad.cpu(), torch.stack([5.0 * zc[1], 5.0 * zc[0]]) / 0.5)


@runnable
def test_orthonormal_rows_hand_computed():
    # Orthonormal rows: every off-diagonal logit is 0, so lse = log(M - 1) whatever T is.
    z = torch.eye(5, 7, device=DEVICE)
    lse = mtt.contrastive_lse_triton(z, 0.07)
    torch.testing.assert_close(lse.cpu(), torch.full((5,), math.log(4.0)))


# -------------------------------------------------------------------------- against the oracle
@runnable
@pytest.mark.parametrize(
    ("m", "d", "a", "n", "blocks"),
    [
        (37, 37, 0, 37, (16, 16)),  # odd M and D, several row and column blocks
        (64, 16, 0, 64, (16, 32)),  # exact multiples, BLOCK_N != BLOCK_M
        (50, 20, 7, 20, (16, 16)),  # distributed sub-block, not aligned to the blocks
        (70, 33, 48, 22, (32, 16)),  # anchors at the end, rows before them are non-anchors
        (45, 9, 0, 11, (16, 16)),  # anchors at the start
        (40, 6, 3, 14, (16, 16)),  # last anchor column (16) alone in its column block
        (33, 3, 16, 16, (16, 16)),  # anchors exactly one block, D < 16 (padded to BLOCK_D = 16)
        (17, 64, 0, 17, (32, 64)),  # one block bigger than M
        (3, 5, 0, 3, (16, 16)),
    ],
)
def test_matches_float64_oracle(m, d, a, n, blocks):
    assert_matches(unit_rows(m, d, seed=m + d), 0.1, a, n, blocks=blocks, seed=m)


@runnable
def test_default_launch_matches_oracle():
    assert_matches(unit_rows(41, 24), 0.2, 5, 30)


@runnable
def test_unnormalised_rows_and_large_logits():
    # normalize=False callers: rows of norm up to ~3, T = 0.5 -> logits up to ~18 in magnitude.
    z = unit_rows(29, 12, seed=3) * torch.linspace(0.2, 3.0, 29)[:, None]
    assert_matches(z, 0.5, 0, 29)
    assert_matches(z, 0.5, 4, 9)


@runnable
@settings(deadline=None, max_examples=12)
@given(
    m=st.integers(1, 40),
    d=st.integers(1, 40),
    frac=st.tuples(st.floats(0, 1), st.floats(0, 1)),
    temperature=st.floats(0.05, 2.0),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes(m, d, frac, temperature, seed):
    a = int(frac[0] * m)
    n = int(frac[1] * (m - a))
    z = unit_rows(m, d, seed)
    lse, dz, ref, dref = run_both(z, temperature, a, n, torch.randn(n), (16, 16))
    if m == 1:  # the single anchor has no other row: checked in test_single_row
        return
    torch.testing.assert_close(
        lse.double(), ref, rtol=RTOL32, atol=ATOL32 * max(1.0, 1 / temperature)
    )
    scale = max(1.0, float(dref.abs().max())) if dref.numel() else 1.0
    torch.testing.assert_close(dz.double(), dref, rtol=RTOL32, atol=ATOL32 * scale)


@runnable
def test_non_contiguous_input_uses_strides():
    base = unit_rows(24, 31).T.contiguous()  # (31, 24); its transpose is a strided (24, 31) view
    z = base.T
    assert not z.is_contiguous()
    g = torch.randn(24)
    lse, dz, ref, dref = run_both(z, 0.1, 0, 24, g, (16, 16))
    lse_c, dz_c, _, _ = run_both(z.contiguous(), 0.1, 0, 24, g, (16, 16))
    torch.testing.assert_close(lse, lse_c)
    torch.testing.assert_close(dz, dz_c)
    torch.testing.assert_close(lse.double(), ref, rtol=RTOL32, atol=ATOL32)


@runnable
def test_zero_upstream_gradient_gives_exact_zero():
    z = unit_rows(20, 8).to(DEVICE).requires_grad_()
    lse = mtt.contrastive_lse_triton(z, 0.1)
    lse.backward(torch.zeros_like(lse))
    assert torch.equal(z.grad, torch.zeros_like(z))


@runnable
def test_block_size_is_ignored():
    z = unit_rows(21, 10).to(DEVICE)
    torch.testing.assert_close(
        mtt.contrastive_lse_triton(z, 0.1, block_size=3),
        mtt.contrastive_lse_triton(z, 0.1),
        rtol=0,
        atol=0,
    )


# -------------------------------------------------------------------------- the CUDA launch path
CUDA_BLOCKS = sorted(
    {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in mtt._lse_bwd_tuned.configs}
    | {(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in mtt._lse_fwd_tuned.configs}
)


@runnable
@pytest.mark.parametrize("blocks", CUDA_BLOCKS)
def test_every_autotune_tile_shape_is_correct(blocks):
    # The interpreter cannot time configs, but it can run each candidate tile shape: M = 150
    # spans several 32/64-row blocks, and the anchors 20..119 start and end mid-block.
    assert_matches(unit_rows(150, 20, seed=7), 0.1, 20, 100, blocks=blocks)


@runnable
def test_autotuned_launch_path(monkeypatch):
    # The launch CUDA takes (grid from meta, autotune keys, config pruning), run under the
    # interpreter with triton's GPU benchmarker replaced by one timed call per config.
    import time

    def one_call(fn, quantiles=None):
        start = time.perf_counter()
        fn()
        return [time.perf_counter() - start] * 3

    for tuned in (mtt._lse_fwd_tuned, mtt._lse_bwd_tuned):
        monkeypatch.setattr(type(tuned), "do_bench", property(lambda self: one_call))
        monkeypatch.setattr(tuned, "cache", {})
    z = unit_rows(70, 20, seed=8)
    lse, dz, ref, dref = run_both(z, 0.1, 5, 60, torch.randn(60), blocks=None)
    assert len(mtt._lse_fwd_tuned.cache) == 1 and len(mtt._lse_bwd_tuned.cache) == 1
    torch.testing.assert_close(lse.double(), ref, rtol=RTOL32, atol=ATOL32)
    torch.testing.assert_close(
        dz.double(), dref, rtol=RTOL32, atol=ATOL32 * float(dref.abs().max())
    )


@pytest.mark.parametrize(
    ("d", "largest"), [(128, 128), (256, 128), (512, 64), (1024, 32), (4096, 32)]
)
def test_config_pruning_by_row_width(d, largest):
    from agcl.kernels._triton_tiles import prune_configs

    configs = mtt._lse_fwd_tuned.configs
    kept = prune_configs(configs, {}, BLOCK_D=max(16, 1 << (d - 1).bit_length()))
    assert kept and max(max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) for c in kept) == largest


# -------------------------------------------------------------------------- degenerate sizes
@runnable
def test_single_row_gives_minus_inf_and_zero_gradient():
    z = torch.randn(1, 6, device=DEVICE, requires_grad=True)
    lse = mtt.contrastive_lse_triton(z, 0.1)
    assert lse.shape == (1,) and lse.item() == float("-inf")
    lse.backward(torch.ones_like(lse))
    assert torch.equal(z.grad, torch.zeros_like(z))  # zero, not NaN


@runnable
@pytest.mark.parametrize(("m", "a", "n"), [(0, 0, None), (5, 2, 0), (5, 5, None)])
def test_no_anchor_gives_empty_output_and_zero_gradient(m, a, n):
    z = torch.randn(m, 4, device=DEVICE, requires_grad=True)
    lse = mtt.contrastive_lse_triton(z, 0.1, anchor_start=a, num_anchors=n)
    assert lse.shape == (0,) and lse.dtype == torch.float32
    lse.sum().backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


@runnable
def test_float16_input_accumulates_in_float32():
    # fp16 tiles, fp32 dots: lse is fp32 and close to the oracle on the rounded inputs; dz is
    # fp16, and the softmax weights meet z in fp16 (as in flash attention), so dz carries about
    # fp16 eps (9.8e-4) relative to its largest entry; 5e-3 leaves 5x room.
    z = unit_rows(37, 20).half()
    lse, dz, ref, dref = run_both(z, 0.1, 0, 37, torch.randn(37), (16, 16))
    assert lse.dtype == torch.float32 and dz.dtype == torch.float16
    torch.testing.assert_close(lse.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(dz.double(), dref, rtol=0, atol=5e-3 * float(dref.abs().max()))


# -------------------------------------------------------------------------- errors
@pytest.mark.skipif(not mtt.INTERPRETED, reason="only the interpreter refuses bfloat16")
def test_bfloat16_refused_under_interpreter():
    with pytest.raises(TypeError, match="z is bfloat16, which Triton's CPU interpreter cannot run"):
        mtt.contrastive_lse_triton(torch.zeros(3, 4, dtype=torch.bfloat16), 0.1)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"z": [[1.0]]}, TypeError, "z must be a torch.Tensor"),
        ({"z": torch.zeros(2, 3, 4)}, ValueError, r"z must be \(M, D\); got shape \(2, 3, 4\)"),
        ({"z": torch.zeros(3, 4, dtype=torch.long)}, TypeError, "z must be float32"),
        ({"z": torch.zeros(3, 4, dtype=torch.float64)}, TypeError, "z must be float32.*float64"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"anchor_start": 4}, ValueError, r"anchor_start must lie in \[0, 3\]; got 4"),
        ({"anchor_start": True}, TypeError, "anchor_start must be an int"),
        ({"anchor_start": 1, "num_anchors": 3}, ValueError, r"num_anchors must lie in \[0, 2\]"),
        ({"num_anchors": 1.5}, TypeError, "num_anchors must be an int; got float"),
        ({"block_size": 0}, ValueError, "block_size"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, exc, match):
    call = {"z": torch.zeros(3, 4), "temperature": 0.1, **kwargs}
    z, t = call.pop("z"), call.pop("temperature")
    with pytest.raises(exc, match=match):
        mtt.contrastive_lse_triton(z, t, **call)


def test_cpu_tensor_without_interpreter_raises_clear_error():
    code = (
        "import torch\n"
        "from agcl.kernels.contrastive_lse_triton import contrastive_lse_triton\n"
        "try:\n"
        "    contrastive_lse_triton(torch.zeros(3, 4), 0.1)\n"
        "except ValueError as e:\n"
        "    print('ValueError:', e)\n"
    )
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    if CUDA:
        pytest.skip("with CUDA present this checks nothing new")
    assert "ValueError: z is on the cpu device" in out.stdout, out.stderr
    assert "TRITON_INTERPRET=1" in out.stdout and "backend='torch'" in out.stdout


# -------------------------------------------------------------------------- through the loss
# backend="triton" computes in fp32; the oracles get float64 features (the torch and naive
# backends keep float64), so the gap is the kernel's fp32 rounding plus the loss's own fp32
# positive term: the same ~sqrt(D) eps32 |s| budget as above, hence 5e-5.
RTOL_LOSS = ATOL_LOSS = 5e-5


def loss_and_grad(features, backend, weights=None, **kwargs):
    f = features.detach().clone().to(DEVICE).requires_grad_()
    out = modal_target_supcon_loss(f, backend=backend, **kwargs)
    if weights is None:
        out.backward()
    else:
        (out * weights.to(out)).sum().backward()
    return out.detach().cpu().double(), f.grad.cpu().double()


def compare_backends(features, weights=None, **kwargs):
    got, dgot = loss_and_grad(features.float(), "triton", weights, **kwargs)
    for oracle in ("naive", "torch"):
        want, dwant = loss_and_grad(features.double(), oracle, weights, **kwargs)
        torch.testing.assert_close(got, want, rtol=RTOL_LOSS, atol=ATOL_LOSS)
        scale = max(1.0, float(dwant.abs().max()))
        torch.testing.assert_close(dgot, dwant, rtol=RTOL_LOSS, atol=ATOL_LOSS * scale)
    return got


def random_features(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@runnable
@pytest.mark.parametrize("partial_weight", [0.0, 0.4])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_loss_two_views_modality_target(partial_weight, reduction):
    # 19 samples x 2 views, D = 37: some (modality, target) pairs unique (one positive: the
    # other view), some shared by several samples; partial positives on and off.
    gen = torch.Generator().manual_seed(1)
    modality = torch.randint(0, 2, (19,), generator=gen)
    target = torch.randint(0, 5, (19,), generator=gen)
    compare_backends(
        random_features(19, 2, 37),
        modality=modality,
        target=target,
        partial_weight=partial_weight,
        reduction=reduction,
    )


@runnable
def test_loss_rows_with_one_or_no_positive_and_weighted_none_reduction():
    # 2-D features, one label per row: label 7 and 8 are singletons (no positive), labels 0..3
    # appear twice (one positive), label 4 five times. grad_output != 1 through random weights.
    labels = torch.tensor([7, 0, 4, 1, 4, 2, 8, 3, 4, 0, 1, 4, 2, 3, 4])
    weights = torch.rand(15, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # some anchors have positives: no "no positive" warning
        loss = compare_backends(
            random_features(15, 37, seed=3), weights, labels=labels, reduction="none"
        )
    assert loss[0] == 0 and loss[6] == 0  # anchors without positives report 0
    assert bool((loss[labels < 5] > 0).all())


@runnable
@pytest.mark.parametrize("views", [1, 3])
def test_loss_sscl_several_views_and_unnormalised(views):
    # No labels: positives are the other views of the same sample (none when V = 1, where the
    # loss warns and returns a graph-connected zero on every backend).
    features = random_features(11, views, 37, seed=views)
    if views == 1:
        with pytest.warns(UserWarning, match="positive"):
            got, dgot = loss_and_grad(features.float(), "triton")
        assert got.item() == 0.0 and torch.equal(dgot, torch.zeros_like(dgot))
        return
    compare_backends(features, temperature=0.3)
    compare_backends(features * 0.5, temperature=0.5, normalize=False)


@runnable
def test_loss_module_backend_triton():
    from agcl import ModalTargetSupConLoss

    features = random_features(9, 2, 21, seed=5).float().to(DEVICE).requires_grad_()
    target = torch.tensor([0, 1, 1, 2, 2, 2, 3, 0, 1])
    got = ModalTargetSupConLoss(temperature=0.1, backend="triton")(features, target=target)
    want = ModalTargetSupConLoss(temperature=0.1, backend="naive")(features.double(), target=target)
    torch.testing.assert_close(got.double().cpu(), want.cpu(), rtol=RTOL_LOSS, atol=ATOL_LOSS)


@runnable
@pytest.mark.parametrize(("m", "a", "n"), [(45, 0, 45), (45, 13, 17), (45, 30, 15)])
def test_kernel_matches_torch_backend(m, a, n):
    # The sub-block (anchor_start, num_anchors) is what the distributed loss passes.
    z = unit_rows(m, 37, seed=m + a).double()
    g = torch.randn(n, generator=torch.Generator().manual_seed(a))
    zt = z.clone().requires_grad_()
    want = contrastive_lse_torch(zt, 0.1, anchor_start=a, num_anchors=n, block_size=16)
    (want * g).sum().backward()
    lse, dz, _, _ = run_both(z.float(), 0.1, a, n, g)
    torch.testing.assert_close(lse.double(), want.detach(), rtol=RTOL32, atol=ATOL32)
    torch.testing.assert_close(
        dz.double(), zt.grad, rtol=RTOL32, atol=ATOL32 * float(zt.grad.abs().max())
    )


def _distributed_worker(rank: int, world: int, port: int) -> None:
    # Each rank: its share of the batch through backend="triton" with gather_distributed=True
    # (the kernel then sees the gathered rows with this rank's rows as the anchor sub-block);
    # the model's gradients averaged over ranks as DDP does. Oracle: backend="naive" on the
    # whole batch in one process, in float64. Tolerance: RTOL_LOSS, as for the loss tests above.
    import torch.distributed as dist

    from agcl import ModalTargetSupConLoss

    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        # 13 + 11 samples x 2 views: M = 48 gathered rows, so each rank has a 16-row block
        # without any of its anchors (those rows get only the G^T term).
        sizes, d_in = (13, 11), 9
        gen = torch.Generator().manual_seed(11)
        x = torch.randn(sum(sizes), 2, d_in, generator=gen, dtype=torch.float64)
        mod = torch.randint(0, 2, (24,), generator=gen)
        tgt = torch.randint(0, 3, (24,), generator=gen)
        torch.manual_seed(0)
        model = torch.nn.Linear(d_in, 37).double()
        opts = {"temperature": 0.2, "partial_weight": 0.5}
        full = ModalTargetSupConLoss(backend="naive", **opts)(model(x), modality=mod, target=tgt)
        want = torch.autograd.grad(full, list(model.parameters()))
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        model32 = model.float()
        loss_fn = ModalTargetSupConLoss(backend="triton", gather_distributed=True, **opts)
        local = loss_fn(model32(x[lo:hi].float()), modality=mod[lo:hi], target=tgt[lo:hi])
        grads = torch.autograd.grad(local, list(model32.parameters()))
        torch.testing.assert_close(local.double(), full.detach(), rtol=RTOL_LOSS, atol=ATOL_LOSS)
        for g, ref in zip(grads, want):
            dist.all_reduce(g)
            g /= world
            torch.testing.assert_close(
                g.double(), ref, rtol=RTOL_LOSS, atol=ATOL_LOSS * float(ref.abs().max())
            )
    finally:
        dist.destroy_process_group()


@runnable
@pytest.mark.slow  # ~14 s on 2 cores, nearly all of it two workers importing torch and triton
@pytest.mark.distributed
@pytest.mark.skipif(
    CUDA, reason="the CPU interpreter case; on CUDA the gloo workers would need GPUs"
)
def test_two_process_gather_with_triton_backend():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The spawned workers inherit TRITON_INTERPRET=1 from this process's environment.
    mp.spawn(_distributed_worker, args=(2, port), nprocs=2, join=True)


# ------------------------------------------------------------------------- CUDA only (not run here)
def chunked_reference(z: torch.Tensor, temperature: float, g: torch.Tensor, chunk: int = 2048):
    """Float64 lse and dz on the GPU in row chunks (O(chunk * M) memory), by autograd."""
    z64 = z.detach().double().requires_grad_()
    lses = []
    for start in range(0, z.shape[0], chunk):
        stop = min(start + chunk, z.shape[0])
        s = z64[start:stop] @ z64.T / temperature
        idx = torch.arange(stop - start, device=z.device)
        s = s.index_put(
            (idx, idx + start), torch.tensor(float("-inf"), device=z.device, dtype=s.dtype)
        )
        lse = torch.logsumexp(s, dim=1)
        (lse * g[start:stop].double()).sum().backward()
        lses.append(lse.detach())
    return torch.cat(lses), z64.grad


@pytest.mark.parametrize(("m", "d"), [(8191, 128), (4099, 250)])
@pytest.mark.cuda
@needs_cuda
def test_cuda_large_m_matches_float64(m, d):
    torch.manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(m, d, device="cuda"), dim=1).requires_grad_()
    g = torch.rand(m, device="cuda") / m
    lse = mtt.contrastive_lse_triton(z, 0.1)
    (lse * g).sum().backward()
    ref, dref = chunked_reference(z, 0.1, g)
    # IEEE fp32 dots (torch's default "highest" matmul precision); the sums run over M ~ 8k
    # terms, hence 1e-4 rather than the interpreter's 3e-5.
    torch.testing.assert_close(lse.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        z.grad.double(), dref, rtol=1e-4, atol=1e-4 * float(dref.abs().max())
    )
    # ... and the torch backend, the production path it replaces on CUDA (both fp32).
    zt = z.detach().clone().requires_grad_()
    want = contrastive_lse_torch(zt, 0.1)
    (want * g).sum().backward()
    torch.testing.assert_close(lse, want.detach(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(z.grad, zt.grad, rtol=1e-4, atol=1e-4 * float(zt.grad.abs().max()))


@pytest.mark.parametrize(("dtype", "grad_tol"), [(torch.bfloat16, 2e-2), (torch.float16, 5e-3)])
@pytest.mark.cuda
@needs_cuda
def test_cuda_half_precision_inputs(dtype, grad_tol):
    # Products of two bf16/fp16 numbers are exact in fp32 and accumulate in fp32, so lse is
    # fp32-accurate on the rounded inputs (1e-4 for sums over ~2k terms). dz meets the softmax
    # weights in the input dtype and is stored in it: ~eps (bf16 3.9e-3, fp16 9.8e-4) relative
    # to its largest entry, with 5x room.
    torch.manual_seed(1)
    z = torch.nn.functional.normalize(torch.randn(2053, 96, device="cuda"), dim=1).to(dtype)
    z.requires_grad_()
    g = torch.rand(2053, device="cuda") / 2053
    lse = mtt.contrastive_lse_triton(z, 0.1)
    (lse * g).sum().backward()
    assert lse.dtype == torch.float32 and z.grad.dtype == dtype
    ref, dref = chunked_reference(z, 0.1, g)
    torch.testing.assert_close(lse.double(), ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        z.grad.double(), dref, rtol=0, atol=grad_tol * float(dref.abs().max())
    )


@pytest.mark.cuda
@needs_cuda
def test_cuda_memory_grows_linearly_in_m():
    d = 128
    extra = {}
    for m in (8192, 32768):
        z = torch.nn.functional.normalize(torch.randn(m, d, device="cuda"), dim=1).requires_grad_()
        mtt.contrastive_lse_triton(z, 0.1).sum().backward()  # autotune this M bucket first
        z.grad = None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        mtt.contrastive_lse_triton(z, 0.1).sum().backward()
        torch.cuda.synchronize()
        extra[m] = torch.cuda.max_memory_allocated() - base
        del z
    # Linear: 4x the rows -> ~4x the bytes (dz plus O(M) vectors); quadratic would be 16x.
    # At M = 32768 an fp32 S would be 4 GiB; the kernel needs about one more copy of z.
    assert extra[32768] < 6 * extra[8192], extra
    assert extra[32768] < 4 * 32768 * d * 4, extra
