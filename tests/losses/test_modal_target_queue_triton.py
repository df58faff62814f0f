"""The memory queue on the Triton backend (Triton's CPU interpreter without CUDA; the
repository's conftest.py sets TRITON_INTERPRET=1): anchors are the first rows, the queue rows
after them get no backward program. Compared with the torch backend; fp32 kernel, so the
tolerances of tests/kernels/test_contrastive_lse_triton.py (3e-5, see its docstring)."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")
from agcl import ModalTargetSupConLoss  # noqa: E402
from agcl.kernels import contrastive_lse_torch  # noqa: E402

mtt = importlib.import_module("agcl.kernels.contrastive_lse_triton")
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() or mtt.INTERPRETED), reason="needs CUDA or TRITON_INTERPRET=1"
)


def test_kernel_grad_rows_matches_torch_and_zeroes_queue_rows():
    torch.manual_seed(0)
    z = F.normalize(torch.randn(70, 16), dim=1).to(DEVICE)  # 70: not a multiple of the tiles
    g = torch.rand(20, device=DEVICE)
    outs = []
    for fn in (mtt.contrastive_lse_triton, contrastive_lse_torch):
        zz = z.clone().requires_grad_(True)
        lse = fn(zz, 0.2, anchor_start=0, num_anchors=20, grad_rows=33)
        (lse * g).sum().backward()
        outs.append((lse.detach(), zz.grad))
    (lt, dt), (lr, dr) = outs
    torch.testing.assert_close(lt, lr, rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(dt, dr, rtol=3e-5, atol=3e-5 * float(dr.abs().max()))
    assert bool((dt[33:] == 0).all()) and bool((dt[20:33] != 0).any())
    with pytest.raises(ValueError, match="grad_rows"):
        mtt.contrastive_lse_triton(z, 0.2, num_anchors=20, grad_rows=10)


def test_loss_with_queue_triton_equals_torch():
    torch.manual_seed(1)
    fns = {
        b: ModalTargetSupConLoss(0.2, partial_weight=0.5, backend=b, queue_size=40)
        for b in ("triton", "torch")
    }
    for _ in range(3):  # empty, partly filled, full
        x = torch.randn(9, 2, 16, device=DEVICE)
        mod, tgt = torch.randint(0, 2, (9,)), torch.randint(0, 3, (9,))
        res = {}
        for name, fn in fns.items():
            xx = x.clone().requires_grad_(True)
            loss = fn(xx, modality=mod.to(DEVICE), target=tgt.to(DEVICE))
            loss.backward()
            res[name] = (loss.detach(), xx.grad)
        torch.testing.assert_close(res["triton"][0], res["torch"][0], rtol=3e-5, atol=3e-5)
        torch.testing.assert_close(res["triton"][1], res["torch"][1], rtol=3e-5, atol=3e-5)
    torch.testing.assert_close(fns["triton"].queue()[0], fns["torch"].queue()[0])
