"""Compute kernels behind the losses: the contrastive log-sum-exp in torch and Triton.

Every backend implements the same function (see ``contrastive_lse_torch``):
``f(z, temperature, *, anchor_start=0, num_anchors=None, block_size=None) -> (A,)``.
Triton is imported only when the ``"triton"`` backend is selected.
"""

from __future__ import annotations

import importlib
import os
from typing import Callable, Literal

import torch

from agcl.kernels import _self_check
from agcl.kernels.contrastive_lse_naive import contrastive_lse_naive, modal_target_loss_naive
from agcl.kernels.contrastive_lse_torch import contrastive_lse_torch, default_block_size

__all__ = [
    "BACKENDS",
    "contrastive_lse_naive",
    "contrastive_lse_torch",
    "default_block_size",
    "get_lse_fn",
    "modal_target_loss_naive",
    "resolve_backend",
    "triton_available",
]

Backend = Literal["auto", "torch", "naive", "triton"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "naive", "triton")
LseFn = Callable[..., torch.Tensor]


def triton_available() -> bool:
    """Whether ``import triton`` works here (the import is attempted once and cached)."""
    global _TRITON_OK
    if _TRITON_OK is None:
        try:
            importlib.import_module("triton")
            _TRITON_OK = True
        except ImportError:
            _TRITON_OK = False
    return _TRITON_OK


_TRITON_OK: bool | None = None


def resolve_backend(
    backend: str, device: torch.device | str, *, dtype: torch.dtype = torch.float32
) -> str:
    """Turn ``"auto"`` into a concrete backend and check that ``backend`` can run on ``device``.

    ``"auto"`` is ``"triton"`` for CUDA tensors when triton imports and the kernel passes its
    self-check for ``(device, dtype)``, else ``"torch"``. The self-check runs once per
    (device, dtype) and process, the first time ``auto`` would pick Triton: it launches the
    forward and backward on a few hundred rows and compares them with the torch backend; on any
    failure (compile error, launch error, mismatch) it warns once with the reason and ``auto``
    answers ``"torch"`` there from then on. ``"triton"`` is never checked: its errors propagate.

    Args:
        backend: one of :data:`BACKENDS`.
        device: where the rows live.
        dtype: the dtype the kernel will be given (the loss passes float32).

    Raises:
        ValueError: unknown backend, or ``"triton"`` on a CPU tensor without
            ``TRITON_INTERPRET=1``.
        ImportError: ``"triton"`` requested but triton is not installed.

    Examples:
        >>> resolve_backend("auto", "cpu")
        'torch'
    """
    if backend not in BACKENDS:
        raise ValueError(
            f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}"
        )
    dev = torch.device(device)
    if backend == "auto":
        if (
            _self_check.considers(dev)
            and triton_available()
            and _self_check.triton_passes(dev, dtype)
        ):
            return "triton"
        return "torch"
    if backend == "triton":
        if not triton_available():
            raise ImportError(
                "backend='triton' needs the triton package: pip install agcl[triton] "
                "(or use backend='torch')"
            )
        if dev.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(
                f"backend='triton' needs CUDA tensors; got a tensor on {dev.type!r}. Use "
                "backend='torch' on CPU, or set TRITON_INTERPRET=1 before importing agcl to run "
                "the Triton kernels in Triton's (slow) CPU interpreter"
            )
    return backend


def get_lse_fn(
    backend: Backend | str, device: torch.device | str, *, dtype: torch.dtype = torch.float32
) -> LseFn:
    """The contrastive log-sum-exp function of ``backend`` (``"auto"`` resolved for ``device``
    and ``dtype`` as in :func:`resolve_backend`).

    Examples:
        >>> get_lse_fn("torch", "cpu") is contrastive_lse_torch
        True
    """
    name = resolve_backend(backend, device, dtype=dtype)
    if name == "torch":
        return contrastive_lse_torch
    if name == "naive":
        return contrastive_lse_naive
    module = importlib.import_module("agcl.kernels.contrastive_lse_triton")
    return module.contrastive_lse_triton
