"""Blocked, memory-lean contrastive log-sum-exp in pure torch (the CPU/GPU production path).

For anchors ``i`` (rows ``a .. a+A-1`` of ``z``) it returns

    lse_i = log sum_{j != a+i} exp(z_{a+i} . z_j / T)

without ever holding the ``A x M`` similarity matrix: the anchors are processed in blocks of
``block_size`` rows, one ``(block, M)`` float temporary at a time, and backward recomputes each
block from ``z`` and the saved ``lse`` (flash-attention style). Only ``z`` and the ``(A,)``
statistics are saved for backward.

The maths, in base 2 (``exp2`` is cheaper than ``exp`` on CPU, and ``log2(e)`` folds into the
scaling for free), with ``c = log2(e) / T``:

* forward, per block ``I``: ``X_Ij = c z_i . z_j - m_i`` through one matmul of ``[c z_I, -m_I]``
  with ``[z, 1]`` (the shift rides along as an extra column). ``m_i = c |z_i| max_j |z_j|`` is an
  upper bound of the row (Cauchy-Schwarz), so ``exp2`` never overflows and no max pass is needed.
  The diagonal ``j = a+i`` is set to ``-inf``; ``lse2_i = m_i + log2 sum_j exp2(X_ij)``. A row whose
  sum falls below ``2**-60`` (possible only with a very small ``T`` and nearly antipodal rows)
  is recomputed with its exact maximum, so no precision is lost to denormals.
* backward, given ``g = dL/dlse``, with ``p_ij = exp(s_ij - lse_i)`` (0 on the diagonal) and
  ``G_ij = g_i p_ij``: ``dz = (1/T) (scatter_a(G z) + G^T z_anchors)``. When every row is an
  anchor (``A == M``) the similarity is symmetric, so ``(G^T)_Ij = g_j exp(s_ij - lse_j)`` comes
  from the same recomputed block and ``dz_I = (1/T) (G_I + (G^T)_I) z``: one matmul to
  recompute, one to apply, three in all with the forward; ``(G^T)_I``'s exponent is the
  recomputed one plus ``lse2_i - lse2_j`` (two cheap elementwise passes). When ``g >= 0``
  (every reduction of the loss), ``log2 g`` joins the shift column so ``exp2`` yields ``G``
  directly.

References:
    Dao et al., "FlashAttention", NeurIPS 2022 (recomputation in backward).
    Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic Segmentation"
    (the AGCL paper, Eq. 3).
"""

from __future__ import annotations

import math

import torch

from agcl.kernels._checks import (
    check_grad_rows,
    check_lse_args,
    refuse_double_backward,
    refuse_functorch,
)

__all__ = ["contrastive_lse_torch", "default_block_size"]

_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)
# Sums below this are recomputed with the exact row maximum (fp32 normals end at 2**-126).
_TINY_SUM = 2.0**-60
# A finite stand-in for log2(0): exp2(s + _NEG) == 0 for any |s| the bound shift allows.
_NEG = -1.0e4
_TEMP_BYTES = 64 * 2**20
# Largest exponent (base 2) the factored backward may form before exp2 (fp32 overflows at 128).
_FACTOR_RANGE = 64.0


def default_block_size(m: int, itemsize: int = 4) -> int:
    """Rows per block so that one ``(block, m)`` temporary takes at most 64 MiB (16 to ``m``).

    Fewer, larger blocks mean fewer (parallel) kernel launches; 64 MiB keeps the two backward
    temporaries at 128 MiB. Use ``block_size=`` to trade speed for memory.

    Examples:
        >>> default_block_size(16384), default_block_size(65536), default_block_size(10)
        (1024, 256, 10)
    """
    rows = max(1, _TEMP_BYTES // max(1, itemsize * m))
    block = 1 << (rows.bit_length() - 1)  # largest power of two <= rows
    return max(1, min(m, max(16, block)))


def _aug(x: torch.Tensor, col: torch.Tensor | float) -> torch.Tensor:
    """``[x, col]``: ``x`` with one extra column (a vector or a constant)."""
    out = torch.empty(x.shape[0], x.shape[1] + 1, dtype=x.dtype, device=x.device)
    out[:, :-1] = x
    out[:, -1] = col
    return out


def _blocks(n: int, block: int) -> range:
    return range(0, n, block)


@torch.no_grad()
def _forward(z: torch.Tensor, c: float, a: int, n_anchors: int, block: int) -> torch.Tensor:
    """Base-2 log-sum-exp (``lse / ln 2``) of every anchor row, without gradients."""
    m_rows = z.shape[0]
    norms = torch.linalg.vector_norm(z, dim=1)
    shift = norms * (c * float(norms.max()))  # (M,) upper bound of c z_i . z_j over j
    right = _aug(z, 1.0)  # [z, 1]
    left = _aug(z[a : a + n_anchors] * c, -shift[a : a + n_anchors])  # [c z_i, -m_i]
    sums = torch.empty(n_anchors, dtype=z.dtype, device=z.device)
    buf = torch.empty(min(block, n_anchors), m_rows, dtype=z.dtype, device=z.device)
    for i0 in _blocks(n_anchors, block):
        i1 = min(i0 + block, n_anchors)
        x = buf[: i1 - i0]
        torch.mm(left[i0:i1], right.T, out=x)
        x.diagonal(offset=a + i0).fill_(-math.inf)
        torch.exp2(x, out=x)
        torch.sum(x, dim=1, out=sums[i0:i1])
    lse2 = shift[a : a + n_anchors] + torch.log2(sums)
    small = ~(lse2 - shift[a : a + n_anchors] >= math.log2(_TINY_SUM))
    if bool(small.any()):  # exact maximum for the rare rows the bound shift underflowed
        idx = small.nonzero().squeeze(1)
        s = (z[a + idx] * c) @ z.T
        s[torch.arange(idx.numel(), device=z.device), a + idx] = -math.inf
        lse2[idx] = torch.logsumexp(s * _LN2, dim=1) * _LOG2E
    return lse2


@torch.no_grad()
def _backward(
    z: torch.Tensor,
    lse2: torch.Tensor,
    g: torch.Tensor,
    c: float,
    a: int,
    block: int,
    grad_rows: int | None = None,
) -> torch.Tensor:
    """``dz`` (without the ``1/T`` factor) for upstream gradient ``g`` of the anchors' lse.

    Rows from ``grad_rows`` on (a detached memory queue) get no gradient and cost no work."""
    m_rows, n_anchors = z.shape[0], g.shape[0]
    dz = torch.zeros_like(z)
    fold = bool((g >= 0).all())  # fold log2 g into the shift column
    if fold:
        row_shift = -lse2 + torch.log2(g).clamp_min(_NEG)
    else:
        row_shift = -lse2
    symmetric = a == 0 and n_anchors == m_rows
    right = _aug(z, 1.0)
    if fold and symmetric:
        top = float(row_shift.max())
        reach = c * float(torch.linalg.vector_norm(z, dim=1).max()) ** 2  # >= c s_ij
        if reach + top <= _FACTOR_RANGE:
            return _backward_factored(z, row_shift, top, c, right, block)
    left = _aug(z[a : a + n_anchors] * c, row_shift)  # [c z_i, -lse2_i (+ log2 g_i)]
    buf = torch.empty(min(block, n_anchors), m_rows, dtype=z.dtype, device=z.device)
    if symmetric:
        buf2 = torch.empty_like(buf)
    for i0 in _blocks(n_anchors, block):
        i1 = min(i0 + block, n_anchors)
        rows = slice(a + i0, a + i1)
        p = buf[: i1 - i0]
        # log2 of G_Ij (p_Ij when g has mixed signs): c s_ij - lse2_i (+ log2 g_i)
        torch.mm(left[i0:i1], right.T, out=p)
        p.diagonal(offset=a + i0).fill_(-math.inf)
        if symmetric:
            # log2 of (G^T)_Ij = c s_ij - lse2_j (+ log2 g_j), from the same block
            q = buf2[: i1 - i0]
            torch.sub(p, row_shift[i0:i1, None], out=q)
            q.add_(row_shift[None, :])
            torch.exp2(q, out=q)
        torch.exp2(p, out=p)
        if not fold:
            p.mul_(g[i0:i1, None])
        if symmetric:
            if not fold:
                q.mul_(g[None, :])
            p.add_(q)
            torch.mm(p, z, out=dz[rows])
        else:
            dz[rows] += p @ z
            if grad_rows is None or grad_rows >= m_rows:
                dz.addmm_(p.T, z[rows])
            else:  # constant rows (a memory queue) after grad_rows: their G^T term is skipped
                dz[:grad_rows].addmm_(p[:, :grad_rows].T, z[rows])
    return dz


def _backward_factored(
    z: torch.Tensor, row_shift: torch.Tensor, top: float, c: float, right: torch.Tensor, block: int
) -> torch.Tensor:
    """Symmetric backward with ``g >= 0`` in fewer passes: with ``u = row_shift``,
    ``G_ij + G_ji = exp2(c s_ij + K) (exp2(u_i - K) + exp2(u_j - K))``, ``K = max u``. Only used
    when ``c max|z|^2 + K`` is small enough that the first factor cannot overflow; terms lost to
    underflow are then below ``2**-100`` of the row totals."""
    m_rows = z.shape[0]
    dz = torch.empty_like(z)
    left = _aug(z * c, top)  # [c z_i, K]
    weight = torch.exp2(row_shift - top)  # (M,) in [0, 1]
    buf = torch.empty(min(block, m_rows), m_rows, dtype=z.dtype, device=z.device)
    buf2 = torch.empty_like(buf)
    for i0 in _blocks(m_rows, block):
        i1 = min(i0 + block, m_rows)
        p, q = buf[: i1 - i0], buf2[: i1 - i0]
        torch.mm(left[i0:i1], right.T, out=p)
        p.diagonal(offset=i0).fill_(-math.inf)
        torch.exp2(p, out=p)
        torch.add(weight[i0:i1, None], weight[None, :], out=q)
        p.mul_(q)
        torch.mm(p, z, out=dz[i0:i1])
    return dz


class _ContrastiveLSE(torch.autograd.Function):
    """Autograd wrapper: saves ``z`` and the ``(A,)`` base-2 lse only."""

    @staticmethod
    def forward(ctx, z, temperature, anchor_start, num_anchors, block_size, grad_rows):
        c = _LOG2E / temperature
        if z.shape[0] == 1:  # a lone row has no other row: empty sum
            lse2 = torch.full((num_anchors,), -math.inf, dtype=z.dtype, device=z.device)
        else:
            lse2 = _forward(z, c, anchor_start, num_anchors, block_size)
        ctx.save_for_backward(z, lse2)
        ctx.meta = (c, temperature, anchor_start, block_size, grad_rows)
        return lse2 * _LN2

    @staticmethod
    def backward(ctx, grad):
        refuse_double_backward("torch")
        z, lse2 = ctx.saved_tensors
        c, temperature, anchor_start, block_size, grad_rows = ctx.meta
        if z.shape[0] == 1 or not ctx.needs_input_grad[0]:
            return torch.zeros_like(z), None, None, None, None, None
        dz = _backward(z, lse2, grad.to(z.dtype), c, anchor_start, block_size, grad_rows)
        return dz.mul_(1.0 / temperature), None, None, None, None, None


def contrastive_lse_torch(
    z: torch.Tensor,
    temperature: float,
    *,
    anchor_start: int = 0,
    num_anchors: int | None = None,
    block_size: int | None = None,
    grad_rows: int | None = None,
) -> torch.Tensor:
    """Row log-sum-exp of the contrastive logits, excluding self-similarity, in row blocks.

    Args:
        z: the contrast set, one row per view (already normalised and gathered by the caller).
        temperature: ``T > 0``; the logits are ``z_i . z_j / T``.
        anchor_start: first anchor row ``a``.
        num_anchors: number of anchors ``A`` (rows ``a .. a+A-1``); ``None`` means every row.
        block_size: anchor rows per block; ``None`` picks :func:`default_block_size`.
        grad_rows: rows ``0 .. grad_rows-1`` receive gradients; later rows (a detached memory
            queue placed after the batch) are constants: backward gives them zero gradient and
            spends no work on them. ``None`` means every row. Must cover the anchors.

    Shape:
        - z: ``(M, D)`` float32 or float64 (float64 is kept, for tests).
        - output: ``(A,)``, same dtype as ``z``.

    Returns:
        ``lse_i = log sum_{j != a+i} exp(z_{a+i} . z_j / T)``; ``-inf`` when ``M == 1``.
        Differentiable w.r.t. ``z``; extra memory ``O(block_size * M)``.

    Raises:
        TypeError: ``z`` not a floating tensor, non-integer indices or block size.
        ValueError: ``z`` not 2-D, ``temperature`` not > 0, anchors outside the rows of ``z``,
            ``block_size < 1``.
        RuntimeError: double backward (``create_graph=True``) or a ``torch.func`` transform
            (the backward is not itself differentiable); the message names
            :func:`agcl.kernels.contrastive_lse_naive` / ``backend="naive"``.

    Examples:
        >>> z = torch.nn.functional.normalize(torch.randn(6, 3, dtype=torch.float64), dim=1)
        >>> s = z @ z.T / 0.5
        >>> ref = torch.logsumexp(s.masked_fill(torch.eye(6, dtype=torch.bool), -float("inf")), 1)
        >>> torch.allclose(contrastive_lse_torch(z, 0.5, block_size=4), ref)
        True
    """
    temperature, anchor_start, n_anchors = check_lse_args(
        z, temperature, anchor_start, num_anchors, block_size
    )
    m_rows = z.shape[0]
    grad_rows = check_grad_rows(grad_rows, anchor_start, n_anchors, m_rows)
    if m_rows == 0 or n_anchors == 0:
        return z.new_zeros(0) + 0.0 * z.sum()
    refuse_functorch("torch")
    block = block_size or default_block_size(m_rows, z.element_size())
    return _ContrastiveLSE.apply(
        z.contiguous(), float(temperature), anchor_start, n_anchors, block, grad_rows
    )
