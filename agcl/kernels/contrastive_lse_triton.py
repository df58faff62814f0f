"""Fused Triton kernels for the logsumexp term of the modal-target contrastive loss.

For rows ``z`` (M, D), a temperature T and anchors ``a .. a+A-1`` (rows of ``z`` themselves),

    s_ij  = z_{a+i} . z_j / T                            (never written to memory)
    lse_i = log sum_{j != a+i} exp(s_ij)                 (forward: the only thing stored, (A,) fp32)

and, given ``g = dL/dlse`` (A,), with p_ij = exp(s_ij - lse_i) (p_{i,a+i} = 0) and G_ij = g_i p_ij,

    dz = (1/T) (scatter of G z into rows a..a+A-1  +  G^T z[a:a+A]).

Forward: one program per block of BLOCK_M anchors walks over the column blocks of ``z`` with an
online (flash-attention style) logsumexp. Backward avoids atomics: the anchors are rows of ``z``,
so the full M x M matrix z z^T / T is symmetric and (G^T)_rj = g_j exp(s_rj - lse_j). With lse
and g padded to all M rows (non-anchors: g = 0, lse = +inf, so their terms are exactly 0), one
program per block I of output rows computes, for every column block J,

    A_IJ = g_I exp(S_IJ - lse_I) + g_J exp(S_IJ - lse_J)   (diagonal zeroed)
    dz_I += A_IJ z_J,

which is row I of (G + G^T) z: two matmuls per tile (S_IJ and A_IJ z_J), each output row written
by exactly one program. Memory: z, dz, and O(M) vectors; never an M x M or A x M tensor.
Tiles load in the input dtype (fp32/bf16/fp16), dots accumulate in fp32 (see ``dot_precision``);
tiles are autotuned on CUDA, fixed under the interpreter. Derivation: docs/kernel.md. This
module imports ``triton`` at its top; ``agcl.kernels`` imports it only for the triton backend.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import triton
import triton.language as tl

from agcl.kernels._checks import (
    check_grad_rows,
    check_lse_args,
    refuse_double_backward,
    refuse_functorch,
)
from agcl.kernels._triton_tiles import autotuned, dot_precision, fixed_tiles, launch_grid, on_device

__all__ = ["contrastive_lse_triton"]

# Read once, like triton.jit itself does when it decorates the kernels below: the interpreter
# is chosen at import time, so setting the variable later has no effect on this module.
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"
_FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# (BLOCK_M, BLOCK_N) used under the interpreter, where autotuning would run every config.
_INTERPRETER_BLOCKS = (16, 16)


@triton.jit
def _lse_fwd_kernel(
    z_ptr,
    lse_ptr,
    M,
    D,
    anchor_start,
    num_anchors,
    stride_zm,
    stride_zd,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # One program: anchors i in [pid*BLOCK_M, pid*BLOCK_M + BLOCK_M), i.e. rows a+i of z.
    pid = tl.program_id(0).to(tl.int64)
    offs_i = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    i_mask = offs_i < num_anchors
    rows = anchor_start + offs_i  # int64 row indices: offsets below never overflow int32
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    d_mask = offs_d < D  # BLOCK_D is D rounded up to a power of two; the padding loads zeros
    zi = tl.load(
        z_ptr + rows[:, None] * stride_zm + offs_d[None, :] * stride_zd,
        mask=i_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    # Online logsumexp: m = running max, l = sum exp(s - m) over the columns seen so far.
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    for start_n in range(0, M, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        c_mask = cols < M
        zj = tl.load(
            z_ptr + cols[:, None] * stride_zm + offs_d[None, :] * stride_zd,
            mask=c_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        s = tl.dot(zi, tl.trans(zj), input_precision=PRECISION) * scale  # fp32 accumulation
        valid = c_mask[None, :] & (cols[None, :] != rows[:, None])  # drop padding and j == a+i
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row with no valid column yet has m_new = -inf; shift by 0 there so that
        # exp(-inf - 0) = 0 instead of exp(-inf + inf) = NaN.
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp(m_i - m_safe) + tl.sum(tl.exp(s - m_safe[:, None]), axis=1)
        m_i = m_new
    # After any valid column l >= 1 (the running max contributes exp(0) = 1), so the clamp
    # changes nothing there; it only keeps log away from 0 for a row with no other row at all
    # (M == 1), whose lse is -inf by definition (the empty sum).
    lse = tl.where(l_i > 0, m_i + tl.log(tl.maximum(l_i, 1.0)), float("-inf"))
    tl.store(lse_ptr + offs_i, lse, mask=i_mask)


@triton.jit
def _lse_bwd_kernel(
    z_ptr,
    lse_ptr,
    g_ptr,
    dz_ptr,
    M,
    D,
    anchor_start,
    num_anchors,
    stride_zm,
    stride_zd,
    stride_dm,
    stride_dd,
    scale,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # One program: output rows r in [pid*BLOCK_M, pid*BLOCK_M + BLOCK_M) of dz (all M rows).
    # lse_ptr / g_ptr hold (M,) fp32 vectors: anchors' lse and g at rows a..a+A-1, and
    # lse = +inf, g = 0 elsewhere (and for anchors whose lse is not finite), so that
    # g * exp(s - lse) is exactly 0 for them, never 0 * inf.
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M).to(tl.int64)
    r_mask = rows < M
    offs_d = tl.arange(0, BLOCK_D).to(tl.int64)
    d_mask = offs_d < D
    zi = tl.load(
        z_ptr + rows[:, None] * stride_zm + offs_d[None, :] * stride_zd,
        mask=r_mask[:, None] & d_mask[None, :],
        other=0.0,
    )
    lse_i = tl.load(lse_ptr + rows, mask=r_mask, other=float("inf"))
    g_i = tl.load(g_ptr + rows, mask=r_mask, other=0.0)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # Column range: a block holding an anchor pairs with every column; a block of non-anchor
    # rows only receives the G^T term, i.e. only from anchor columns a .. a+A-1.
    a_end = anchor_start + num_anchors
    blk_lo = pid * BLOCK_M
    has_anchor = (blk_lo < a_end) & (blk_lo + BLOCK_M > anchor_start)
    lo = tl.where(has_anchor, 0, (anchor_start // BLOCK_N) * BLOCK_N)
    hi = tl.where(has_anchor, M, a_end)
    for start_n in range(lo, hi, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N).to(tl.int64)
        c_mask = cols < M
        zj = tl.load(
            z_ptr + cols[:, None] * stride_zm + offs_d[None, :] * stride_zd,
            mask=c_mask[:, None] & d_mask[None, :],
            other=0.0,
        )
        lse_j = tl.load(lse_ptr + cols, mask=c_mask, other=float("inf"))
        g_j = tl.load(g_ptr + cols, mask=c_mask, other=0.0)
        s = tl.dot(zi, tl.trans(zj), input_precision=PRECISION) * scale  # S_IJ = S_JI^T
        valid = c_mask[None, :] & (cols[None, :] != rows[:, None])  # p_{i,a+i} = 0
        s = tl.where(valid, s, float("-inf"))
        # G_IJ (row r is an anchor) + (G^T)_IJ (column j is an anchor), from the same tile.
        # Off the diagonal s_ij <= lse_i and s_ij = s_ji <= lse_j (up to rounding), so no
        # exp overflows; masked entries and padded rows/columns give exp(-inf) = 0.
        a_ij = g_i[:, None] * tl.exp(s - lse_i[:, None]) + g_j[None, :] * tl.exp(s - lse_j[None, :])
        # Like flash attention, the weights meet z_J in z's dtype (exact for fp32 input).
        acc += tl.dot(a_ij.to(zj.dtype), zj, input_precision=PRECISION)
    acc = acc * scale
    tl.store(
        dz_ptr + rows[:, None] * stride_dm + offs_d[None, :] * stride_dd,
        acc.to(dz_ptr.dtype.element_ty),
        mask=r_mask[:, None] & d_mask[None, :],
    )


_lse_fwd_tuned = autotuned(_lse_fwd_kernel, (3, 4))
_lse_bwd_tuned = autotuned(_lse_bwd_kernel, (2, 3))


def _launch_fwd(
    z: torch.Tensor,
    lse: torch.Tensor,
    temperature: float,
    a: int,
    n: int,
    blocks: tuple[int, int] | None,
) -> None:
    """lse[i] for anchors a .. a+n-1; ``blocks`` None: autotuned (CUDA), else fixed tiles."""
    tiles, block_m = fixed_tiles(blocks)
    kernel = _lse_fwd_tuned if blocks is None else _lse_fwd_kernel
    with on_device(z):
        kernel[launch_grid(n, block_m)](
            z_ptr=z,
            lse_ptr=lse,
            M=z.shape[0],
            D=z.shape[1],
            anchor_start=a,
            num_anchors=n,
            stride_zm=z.stride(0),
            stride_zd=z.stride(1),
            scale=1.0 / temperature,
            BLOCK_D=max(16, triton.next_power_of_2(z.shape[1])),
            PRECISION=dot_precision(z.dtype),
            **tiles,
        )


def _launch_bwd(
    z: torch.Tensor,
    lse_full: torch.Tensor,
    g_full: torch.Tensor,
    dz: torch.Tensor,
    temperature: float,
    a: int,
    n: int,
    blocks: tuple[int, int] | None,
    grad_rows: int,
) -> None:
    """dz of the first ``grad_rows`` rows (programs for those only) from the (M,)-padded lse and
    g; ``blocks`` as for :func:`_launch_fwd`."""
    tiles, block_m = fixed_tiles(blocks)
    kernel = _lse_bwd_tuned if blocks is None else _lse_bwd_kernel
    with on_device(z):
        kernel[launch_grid(grad_rows, block_m)](
            z_ptr=z,
            lse_ptr=lse_full,
            g_ptr=g_full,
            dz_ptr=dz,
            M=z.shape[0],
            D=z.shape[1],
            anchor_start=a,
            num_anchors=n,
            stride_zm=z.stride(0),
            stride_zd=z.stride(1),
            stride_dm=dz.stride(0),
            stride_dd=dz.stride(1),
            scale=1.0 / temperature,
            BLOCK_D=max(16, triton.next_power_of_2(z.shape[1])),
            PRECISION=dot_precision(z.dtype),
            **tiles,
        )


class _ContrastiveLSE(torch.autograd.Function):
    """Autograd wrapper: saves z and the (A,) lse only; backward recomputes S tile by tile."""

    @staticmethod
    def forward(
        ctx: Any, z: torch.Tensor, temperature: float, a: int, n: int, blocks: Any, grad_rows: int
    ) -> torch.Tensor:
        lse = torch.empty(n, device=z.device, dtype=torch.float32)
        if n > 0:
            _launch_fwd(z, lse, temperature, a, n, blocks)
        ctx.save_for_backward(z, lse)
        ctx.params = (temperature, a, n, blocks, grad_rows)
        return lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        refuse_double_backward("triton")
        z, lse = ctx.saved_tensors
        temperature, a, n, blocks, grad_rows = ctx.params
        m = z.shape[0]
        if n == 0 or m == 0:
            return torch.zeros_like(z), None, None, None, None, None
        dz = torch.empty_like(z, memory_format=torch.contiguous_format)  # every entry is written
        # Pad to all M rows (O(M)); a non-finite lse (an anchor with no other row) gets g = 0.
        finite = torch.isfinite(lse)
        lse_full = torch.full((m,), math.inf, device=z.device, dtype=torch.float32)
        g_full = torch.zeros(m, device=z.device, dtype=torch.float32)
        lse_full[a : a + n] = torch.where(finite, lse, torch.full_like(lse, math.inf))
        g_full[a : a + n] = torch.where(finite, grad.to(torch.float32), torch.zeros_like(lse))
        _launch_bwd(z, lse_full, g_full, dz, temperature, a, n, blocks, grad_rows)
        if grad_rows < m:  # rows from grad_rows on (a memory queue) are constants: no programs
            dz[grad_rows:].zero_()  # (but the last launched block's tail), zero gradient
        return dz, None, None, None, None, None


def contrastive_lse_triton(
    z: torch.Tensor,
    temperature: float,
    *,
    anchor_start: int = 0,
    num_anchors: int | None = None,
    block_size: int | None = None,
    grad_rows: int | None = None,
) -> torch.Tensor:
    """Row logsumexp of ``z z^T / T`` without the diagonal, fused in Triton (S never stored).

    ``lse_i = log sum_{j != a+i} exp(z_{a+i} . z_j / T)`` for the anchors ``a = anchor_start``
    .. ``a + A - 1``, differentiable with respect to ``z``. Same contract as
    ``agcl.kernels.contrastive_lse_torch.contrastive_lse_torch``; the loss calls it through
    ``agcl.kernels.get_lse_fn``. Forward and backward use O(M * D) memory (``z``, ``dz`` and
    O(M) vectors); double backward and ``torch.func`` transforms raise a ``RuntimeError``
    naming ``backend="naive"``.

    Args:
        z: rows to contrast, float32, bfloat16 or float16 (fp32 accumulation either way), on a
            CUDA device, or on the CPU when ``TRITON_INTERPRET=1`` was set before this module
            was imported. Already normalised / all-gathered by the caller as it needs.
        temperature: T > 0.
        anchor_start: first anchor row ``a``.
        num_anchors: number of anchors ``A``; ``None`` means every row from ``a`` to the end.
        block_size: accepted for signature parity with the torch backend and ignored: the
            tiles are autotuned on CUDA and fixed under the interpreter.
        grad_rows: rows ``0 .. grad_rows-1`` receive gradients; the backward launches no
            program for later rows (a detached memory queue) and gives them zero gradient.
            ``None`` means every row. Must cover the anchors.

    Shape:
        - z: ``(M, D)``
        - output: ``(A,)``, float32. An anchor with no other row (M == 1) gets ``-inf`` and a
          zero gradient.

    Returns:
        The anchors' logsumexp values.

    Raises:
        TypeError: ``z`` not a floating tensor of a supported dtype (bfloat16 is refused under
            the interpreter, which cannot run bf16 dots); non-integer indices.
        ValueError: ``z`` not 2-D, on the CPU without the interpreter, or anchors out of range;
            ``temperature`` not > 0.

    References:
        Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation" (AGCL), Eq. 3. Dao et al., "FlashAttention", NeurIPS 2022 (online
        softmax, recomputation in backward).

    Examples:
        >>> import torch
        >>> from agcl.kernels.contrastive_lse_triton import INTERPRETED, contrastive_lse_triton
        >>> z = torch.nn.functional.normalize(torch.randn(5, 8), dim=1)
        >>> if INTERPRETED or torch.cuda.is_available():
        ...     dev = "cuda" if torch.cuda.is_available() else "cpu"
        ...     lse = contrastive_lse_triton(z.to(dev), 0.5, anchor_start=1, num_anchors=3)
        ...     s = z[1:4] @ z.T / 0.5
        ...     s[torch.arange(3), torch.arange(1, 4)] = float("-inf")
        ...     ok = torch.allclose(lse.cpu(), torch.logsumexp(s, dim=1), atol=1e-5)
        ... else:
        ...     ok = True
        >>> ok
        True
    """
    if isinstance(z, torch.Tensor) and z.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"z must be float32, bfloat16 or float16; got {z.dtype}")
    temperature, a, n = check_lse_args(z, temperature, anchor_start, num_anchors, block_size)
    if z.device.type != "cuda" and not INTERPRETED:
        raise ValueError(
            f"z is on the {z.device.type} device, but the triton backend needs a CUDA tensor, or "
            "TRITON_INTERPRET=1 set before agcl.kernels.contrastive_lse_triton is imported (slow; "
            "for tests). Use backend='torch' on the CPU."
        )
    if z.dtype == torch.bfloat16 and INTERPRETED:
        # Triton's interpreter does not emulate bf16 dots: it would return garbage, not an error.
        raise TypeError(
            "z is bfloat16, which Triton's CPU interpreter cannot run; pass float32 or float16 "
            "(or run on CUDA)"
        )
    g = check_grad_rows(grad_rows, a, n, z.shape[0])
    refuse_functorch("triton")
    blocks = _INTERPRETER_BLOCKS if INTERPRETED else None  # None: autotuned (CUDA)
    return _ContrastiveLSE.apply(z, temperature, a, n, blocks, g)
