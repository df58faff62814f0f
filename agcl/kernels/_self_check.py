"""The one-time check that ``backend="auto"`` runs before it first trusts the Triton kernel.

The kernel is verified under Triton's CPU interpreter, which accepts programs the GPU compiler
may reject; so the first time ``auto`` would pick Triton for a (device, dtype) in a process, it
compiles and launches the forward and backward on a few hundred rows and compares ``lse`` and
``dz`` with the torch backend (in float64 on the same rounded inputs). On any failure it warns
once with the reason and answers ``False`` for that (device, dtype) from then on.
"""

from __future__ import annotations

import importlib
import os
import warnings

import torch

# Rows and width of the check: a few hundred rows span several tiles of every candidate shape.
_ROWS = 320
_DIM = 64
# (lse atol = rtol, dz atol relative to max |dz|), per input dtype: the tolerances of
# docs/kernel.md. lse is fp32-accurate on the rounded inputs (products of two inputs are exact in
# fp32 and accumulate in fp32); dz meets the softmax weights in the input dtype, so it carries
# about that dtype's eps relative to its largest entry (fp16 9.8e-4, bf16 3.9e-3), with 5x room.
_TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (1e-4, 5e-3),
    torch.bfloat16: (1e-4, 2e-2),
}
# Private test hook: when True, ``auto`` also considers Triton for CPU tensors if the
# interpreter is on (TRITON_INTERPRET=1), so the self-check and its fallback run on a CPU.
_CONSIDER_INTERPRETER = False
_RESULTS: dict[tuple[str, torch.dtype], bool] = {}


def _key(device: torch.device, dtype: torch.dtype) -> tuple[str, torch.dtype]:
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return str(device), dtype


def considers(device: torch.device) -> bool:
    """Whether ``auto`` may pick Triton on ``device`` at all (before the self-check)."""
    if device.type == "cuda":
        return True
    return _CONSIDER_INTERPRETER and os.environ.get("TRITON_INTERPRET") == "1"


def _run(device: torch.device, dtype: torch.dtype) -> None:
    """Raise (any exception, or ``AssertionError`` for a mismatch) unless the kernel agrees."""
    if dtype not in _TOLERANCES:
        raise TypeError(f"the Triton kernel does not take {dtype} inputs")
    triton_mod = importlib.import_module("agcl.kernels.contrastive_lse_triton")
    from agcl.kernels.contrastive_lse_torch import contrastive_lse_torch

    gen = torch.Generator().manual_seed(0)  # a private generator: the user's RNG is untouched
    z = torch.nn.functional.normalize(torch.randn(_ROWS, _DIM, generator=gen), dim=1).to(dtype)
    g = torch.rand(_ROWS, generator=gen)
    lse_tol, dz_tol = _TOLERANCES[dtype]
    # Every row an anchor (the single-process loss), then an anchor sub-block starting and
    # ending mid-tile (what the all-gathered loss passes).
    for a, n in ((0, _ROWS), (_ROWS // 8 + 3, _ROWS // 2)):
        zk = z.detach().clone().to(device).requires_grad_()
        lse = triton_mod.contrastive_lse_triton(zk, 0.1, anchor_start=a, num_anchors=n)
        (lse * g[a : a + n].to(device)).sum().backward()
        z64 = z.detach().double().requires_grad_()
        ref = contrastive_lse_torch(z64, 0.1, anchor_start=a, num_anchors=n)
        (ref * g[a : a + n].double()).sum().backward()
        assert zk.grad is not None and z64.grad is not None
        got_lse, got_dz = lse.detach().double().cpu(), zk.grad.double().cpu()
        for what, got, want, atol in (
            ("lse", got_lse, ref.detach(), lse_tol),
            ("dz", got_dz, z64.grad, dz_tol * float(z64.grad.abs().max())),
        ):
            err = float((got - want).abs().max())
            bound = atol + lse_tol * float(want.abs().max()) if what == "lse" else atol
            if not err <= bound:  # also catches NaN
                raise AssertionError(
                    f"{what} differs from the torch backend by {err:.3g} (allowed {bound:.3g}) "
                    f"for anchors {a}..{a + n - 1} of {_ROWS} rows"
                )


def triton_passes(device: torch.device, dtype: torch.dtype) -> bool:
    """Run the self-check once for ``(device, dtype)`` and remember the answer.

    On failure a ``RuntimeWarning`` names the reason, once per (device, dtype) and process.
    """
    key = _key(device, dtype)
    if key not in _RESULTS:
        try:
            with torch.enable_grad(), torch.autocast(device.type, enabled=False):
                _run(device, dtype)
        except Exception as exc:  # compile, launch or mismatch: anything means "do not use it"
            _RESULTS[key] = False
            warnings.warn(
                f"backend='auto': the Triton kernel failed its self-check on {key[0]} with "
                f"{dtype} ({type(exc).__name__}: {exc}); using the torch backend there from now "
                "on. Pass backend='triton' to see the error raised.",
                RuntimeWarning,
                stacklevel=4,
            )
        else:
            _RESULTS[key] = True
    return _RESULTS[key]
