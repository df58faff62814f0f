"""The argument check shared by the three log-sum-exp backends, and the torch backend's
refusal of double backward and torch.func (issues 11 and 26)."""

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
        (
            (torch.zeros(5, 3), 0.1),
            {"anchor_start": -1},
            ValueError,
            r"anchor_start must lie in \[0, 5\]; got -1",
        ),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": 6}, ValueError, "anchor_start"),
        ((torch.zeros(5, 3), 0.1), {"anchor_start": 1.0}, TypeError, "anchor_start must be an int"),
        (
            (torch.zeros(5, 3), 0.1),
            {"anchor_start": 2, "num_anchors": 4},
            ValueError,
            r"num_anchors must lie in \[0, 3\]",
        ),
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


@pytest.mark.parametrize(
    "fn", [contrastive_lse_naive, contrastive_lse_torch], ids=lambda f: f.__name__
)
def test_integer_z_refused(fn):
    with pytest.raises(TypeError, match="z must be a floating-point tensor; got torch.int64"):
        fn(torch.zeros(4, 3, dtype=torch.long), 0.1)


HAND_WRITTEN = [
    (f, f.__name__.rsplit("_", 1)[1]) for f in BACKENDS if f is not contrastive_lse_naive
]


@pytest.mark.parametrize("fn, name", HAND_WRITTEN, ids=lambda v: getattr(v, "__name__", v))
def test_hand_written_backward_refuses_double_backward(fn, name):
    # The backward is hand-written (no autograd graph of its own): create_graph=True must fail
    # at once, naming the naive backend, instead of returning a gradient whose own derivative
    # would be silently wrong (issue 26, row 1).
    z = torch.nn.functional.normalize(torch.randn(6, 4), dim=1).requires_grad_()
    with pytest.raises(RuntimeError, match=f"double backward .*backend='{name}'.*backend='naive'"):
        torch.autograd.grad(fn(z, 0.5).sum(), z, create_graph=True)
    (grad,) = torch.autograd.grad(fn(z, 0.5).sum(), z)  # a first derivative still works
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("fn, name", HAND_WRITTEN, ids=lambda v: getattr(v, "__name__", v))
def test_hand_written_backward_refuses_torch_func(fn, name):
    z = torch.nn.functional.normalize(torch.randn(6, 4), dim=1)
    with pytest.raises(RuntimeError, match=f"torch.func .*backend='{name}'.*backend='naive'"):
        torch.func.grad(lambda x: fn(x, 0.5).sum())(z)


def test_naive_backend_has_the_exact_second_derivative():
    z = torch.nn.functional.normalize(torch.randn(5, 3, dtype=torch.float64), dim=1)
    z.requires_grad_()
    assert torch.autograd.gradgradcheck(lambda x: contrastive_lse_naive(x, 0.5), (z,))
