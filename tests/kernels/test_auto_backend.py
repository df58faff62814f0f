"""backend="auto" trusts the Triton kernel only after its one-time self-check (issue 12).

Runs on the CPU under TRITON_INTERPRET=1 (set by conftest.py) through the private hook
``_self_check._CONSIDER_INTERPRETER``, which lets ``auto`` consider the interpreted kernel
there as it considers the compiled one on CUDA. The kernel is made to fail on purpose.
"""

from __future__ import annotations

import importlib
import os
import warnings

import pytest
import torch

pytest.importorskip("triton")
from agcl.functional import modal_target_supcon_loss  # noqa: E402
from agcl.kernels import _self_check, get_lse_fn, resolve_backend  # noqa: E402

mtt = importlib.import_module("agcl.kernels.contrastive_lse_triton")
interpreted = pytest.mark.skipif(
    not mtt.INTERPRETED, reason="needs TRITON_INTERPRET=1 before import"
)


@pytest.fixture
def fresh(monkeypatch):
    """A process-fresh self-check that considers the interpreter, on 40 rows (speed)."""
    monkeypatch.setattr(_self_check, "_RESULTS", {})
    monkeypatch.setattr(_self_check, "_CONSIDER_INTERPRETER", True)
    monkeypatch.setattr(_self_check, "_ROWS", 40)
    calls = []
    real = mtt.contrastive_lse_triton

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(mtt, "contrastive_lse_triton", counted)
    return calls


def patch_kernel(monkeypatch, fn):
    monkeypatch.setattr(mtt, "contrastive_lse_triton", fn)


def resolve_quietly(dtype=torch.float32):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        return resolve_backend("auto", "cpu", dtype=dtype)


def test_auto_on_cpu_is_torch_without_running_the_check(monkeypatch):
    monkeypatch.setattr(_self_check, "_RESULTS", {})
    assert resolve_quietly() == "torch"
    assert _self_check._RESULTS == {}


@interpreted
def test_passing_self_check_selects_triton_once(fresh):
    assert resolve_quietly() == "triton"
    assert len(fresh) == 2  # all rows, then an anchor sub-block
    assert resolve_quietly() == "triton" and len(fresh) == 2  # cached: not run again
    assert get_lse_fn("auto", "cpu") is mtt.contrastive_lse_triton


def _raising(*args, **kwargs):
    raise RuntimeError("PassManager::run failed (simulated compile error)")


def _wrong_lse(z, temperature, **kwargs):
    return fresh_kernel(z, temperature, **kwargs) + 1e-2


def _wrong_grad(z, temperature, *, anchor_start=0, num_anchors=None, **kwargs):
    lse = fresh_kernel(z, temperature, anchor_start=anchor_start, num_anchors=num_anchors)
    n = lse.shape[0]
    extra = z[anchor_start : anchor_start + n].sum(dim=1) * 0.5
    return lse + extra - extra.detach()  # the right values, a wrong gradient


fresh_kernel = mtt.contrastive_lse_triton


@interpreted
@pytest.mark.parametrize(
    ("kernel", "reason"),
    [
        (_raising, "RuntimeError: PassManager::run failed"),
        (_wrong_lse, "lse differs from the torch backend"),
        (_wrong_grad, "dz differs from the torch backend"),
    ],
    ids=["raises", "wrong-lse", "wrong-grad"],
)
def test_failing_self_check_warns_once_and_falls_back(fresh, monkeypatch, kernel, reason):
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return kernel(*args, **kwargs)

    patch_kernel(monkeypatch, counted)
    with pytest.warns(
        RuntimeWarning, match=f"failed its self-check on cpu with torch.float32 .*{reason}"
    ):
        assert resolve_backend("auto", "cpu") == "torch"
    ran = len(calls)
    assert ran >= 1
    assert resolve_quietly() == "torch" and len(calls) == ran  # no second check, no warning
    assert get_lse_fn("auto", "cpu") is not counted


@interpreted
def test_fallback_is_per_dtype(fresh):
    # The interpreter cannot run bf16 dots (the kernel refuses them): bf16 falls back, fp32 not.
    with pytest.warns(RuntimeWarning, match="torch.bfloat16 .*TypeError: z is bfloat16"):
        assert resolve_backend("auto", "cpu", dtype=torch.bfloat16) == "torch"
    assert resolve_quietly(torch.float32) == "triton"


@interpreted
def test_loss_auto_falls_back_and_triton_stays_strict(fresh, monkeypatch):
    patch_kernel(monkeypatch, _raising)
    feats = torch.randn(6, 2, 8)
    opts = {
        "modality": torch.tensor([0, 0, 0, 1, 1, 1]),
        "target": torch.tensor([0, 1, 2, 0, 1, 2]),
    }
    want = modal_target_supcon_loss(feats, backend="torch", **opts)
    with pytest.warns(RuntimeWarning, match="self-check"):
        got = modal_target_supcon_loss(feats, backend="auto", **opts)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="simulated compile error"):
        modal_target_supcon_loss(feats, backend="triton", **opts)


def test_hook_needs_the_interpreter(monkeypatch):
    monkeypatch.setattr(_self_check, "_CONSIDER_INTERPRETER", True)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not _self_check.considers(torch.device("cpu"))
    assert _self_check.considers(torch.device("cuda"))
    assert os.environ["TRITON_INTERPRET"] == "0"
