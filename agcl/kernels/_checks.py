"""The one argument check shared by the three contrastive log-sum-exp backends."""

from __future__ import annotations

import torch

from agcl._validation import check_int, check_ndim, check_positive, check_tensor


def check_lse_args(
    z: torch.Tensor,
    temperature: float,
    anchor_start: int,
    num_anchors: int | None,
    block_size: int | None,
) -> tuple[float, int, int]:
    """Validate the common contract ``f(z, temperature, *, anchor_start, num_anchors, block_size)``.

    Shape:
        - z: ``(M, D)``, floating point.

    Returns:
        ``(temperature, anchor_start, num_anchors)`` with ``num_anchors`` resolved (``None``:
        every row from ``anchor_start`` to the end).

    Raises:
        TypeError: ``z`` not a floating tensor; a non-real temperature; non-integer indices.
        ValueError: ``z`` not 2-D; ``temperature`` not a finite number > 0; anchors outside the
            rows of ``z``; ``block_size < 1``.
    """
    check_tensor("z", z)
    check_ndim("z", z, (2,), "(M, D)")
    if not z.is_floating_point():
        raise TypeError(f"z must be a floating-point tensor; got {z.dtype}")
    temperature = check_positive("temperature", temperature)
    m = z.shape[0]
    a = check_int("anchor_start", anchor_start, low=0, high=m)
    n = m - a if num_anchors is None else check_int("num_anchors", num_anchors, low=0, high=m - a)
    if block_size is not None:
        check_int("block_size", block_size, low=1)
    return temperature, a, n


def check_grad_rows(grad_rows: int | None, anchor_start: int, num_anchors: int, m: int) -> int:
    """``grad_rows`` (rows ``0 .. grad_rows-1`` get gradients) resolved: ``None`` is all ``m``
    rows; it must cover every anchor (``>= anchor_start + num_anchors``) and be ``<= m``."""
    if grad_rows is None:
        return m
    return check_int("grad_rows", grad_rows, low=anchor_start + num_anchors, high=m)


_PICKED_BY_AUTO = {"torch": "on the CPU", "triton": "on CUDA"}


def _backend_words(backend: str) -> str:
    return f"backend={backend!r} (what backend='auto' picks {_PICKED_BY_AUTO[backend]})"


_NAIVE = (
    "its contrastive log-sum-exp is a custom torch.autograd.Function with a hand-written "
    "backward that is not itself differentiable. Pass backend='naive' to the loss (or use "
    "agcl.kernels.contrastive_lse_naive): the full M x M reference in plain torch ops, O(M^2) "
    "memory, which supports"
)


def refuse_functorch(backend: str) -> None:
    """Raise ``RuntimeError`` naming ``backend="naive"`` under a ``torch.func`` transform.

    The hand-written backward of the torch and Triton backends cannot run under ``torch.func``
    (``grad``, ``vmap``, ``jacrev``, ...); without this check torch's own message names none of
    agcl's options.
    """
    if torch._C._are_functorch_transforms_active():
        raise RuntimeError(
            "torch.func transforms (grad, vmap, jacrev, ...) cannot run "
            f"{_backend_words(backend)}: {_NAIVE} torch.func.grad, jacrev and hessian (see "
            "docs/loss.md, 'Higher-order gradients and torch.func')"
        )


def refuse_double_backward(backend: str) -> None:
    """Raise ``RuntimeError`` when a hand-written backward runs with ``create_graph=True``.

    Autograd runs a backward with grad mode on exactly when the caller asked for a graph of the
    gradient (``create_graph=True``, e.g. a gradient penalty): the gradient this backward
    returns would be a constant there, and any second derivative through it silently wrong.
    """
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"double backward (create_graph=True, e.g. a gradient penalty) through "
            f"{_backend_words(backend)} would give a wrong second derivative: {_NAIVE} "
            "higher-order gradients"
        )
