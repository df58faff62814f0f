"""The argument check shared by the three log-sum-exp backends, and the torch backend's
refusal of double backward (issue 11)."""

from __future__ import annotations

import os

import pytest
import torch

from agcl.kernels import contrastive_lse_naive, contrastive_lse_torch

BACKENDS = [contrastive_lse_naive, contrastive_lse_torch]
if os.environ.get("TRITON_INTERPRET") == "1":
    try:
        from agcl.kernels.contrastive_lse_triton import contrastive_lse_triton
    except ImportError:  # triton not installed
        pass
    else:
        BACKENDS.append(contrastive_lse_triton)


@pytest.mark.parametrize("fn", BACKENDS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((torch.zeros(5, 3), -1.0), {}, ValueError, "temperature"),
        ((torch.zeros(5, 3), 0.0), {}, ValueError, "temperature"),
        ((torch.zeros(5, 3), float("nan")), {}, ValueError, "temperature"),
        ((torch.zeros(5, 3), "0.1"), {}, TypeError, "temperature"),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": -1}, ValueError, r"anchor_start must lie in \[0, 5\]; got -1"),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": 6}, ValueError, "anchor_start"),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": 1.0}, TypeError, "anchor_start must be an int"),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": 2, "num_anchors": 4}, ValueError, r"num_anchors must lie in \[0, 3\]"),
        ((torch.zeros(5, 3), 0.1), {"num_anchors": -1}, ValueError, "num_anchors"),
        ((torch.zeros(5, 3), 0.1), {"block_size": 0}, ValueError, "block_size"),
        ((torch.zeros(5, 3), 0.1), {"block_size": 2.0}, TypeError, "block_size"),
        ((torch.zeros(5, 3, 1), 0.1), {}, ValueError, r"z must be \(M, D\)"),
        (([[1.0]], 0.1), {}, TypeError, "z must be a torch.Tensor"),
    ],
)
def test_every_backend_refuses_bad_arguments_alike(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


@pytest.mark.parametrize("fn", [contrastive_lse_naive, contrastive_lse_torch], ids=lambda f: f.__name__)
def test_integer_z_refused(fn):
    with pytest.raises(TypeError, match="z must be a floating-point tensor; got torch.int64"):
        fn(torch.zeros(4, 3, dtype=torch.long), 0.1)


def test_torch_backend_refuses_double_backward():
    # The backward is hand-written (no autograd graph of its own): create_graph=True must fail
    # loudly instead of returning a wrong second derivative (issue 11, row 3).
    z = torch.nn.functional.normalize(torch.randn(6, 4, dtype=torch.float64), dim=1).requires_grad_()
    (grad,) = torch.autograd.grad(contrastive_lse_torch(z, 0.5).sum(), z, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad"):
        grad.sum().backward()
