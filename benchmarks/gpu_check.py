"""The first run on a GPU in one command: the cuda-marked tests, then kernel-vs-torch and
kernel-vs-float64 comparisons, timings and peak memory, as JSON and a markdown table.

    python benchmarks/gpu_check.py --json gpu_check.json          # on a CUDA machine
    python benchmarks/gpu_check.py --interpret --json check.json  # tiny sizes, CPU interpreter

For every (M, D, dtype) it runs the Triton kernel's forward + backward and the torch backend's
(on the same rounded inputs, in fp32), compares ``lse`` and ``dz`` (``max_abs_diff``,
``max_rel_grad_diff``) and ``lse`` of up to 512 anchors against float64 (``max_abs_diff_f64``),
and times both against the physical yardstick: 3 x one M x D x M ``torch.mm`` (done in row
chunks so that no M x M matrix is held; the flops are those of one full product). On CUDA it
records ``torch.cuda.max_memory_allocated`` above the inputs. The ``loss`` rows compare the whole
loss (``partial_weight`` > 0, some rows without positives) between ``backend="triton"`` and
``"torch"``; pytorch-metric-learning's SupConLoss is timed where it fits and is importable.
Speeds are ratios against baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import warnings
from typing import Any, Callable

GPU_SIZES = {"M": (4097, 65536, 262144), "D": (128, 256, 2048)}
INTERPRET_SIZES = {"M": (37, 70), "D": (16, 40)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the JSON report here")
    p.add_argument("--interpret", action="store_true",
                   help="tiny sizes on the CPU under TRITON_INTERPRET=1 (checks this script)")
    p.add_argument("--no-tests", action="store_true", help="skip the cuda-marked pytest run")
    p.add_argument("--m", type=int, nargs="+", help="override the row counts M")
    p.add_argument("--d", type=int, nargs="+", help="override the widths D")
    p.add_argument("--runs", type=int, default=None,
                   help="timed repetitions, best kept (default 3 for M <= 4097, else 1)")
    return p.parse_args(argv)


def _sync(torch: Any, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _best(torch: Any, device: str, fn: Callable[[], Any], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        _sync(torch, device)
        start = time.perf_counter()
        fn()
        _sync(torch, device)
        best = min(best, time.perf_counter() - start)
    return best


def _yardstick(torch: Any, z: Any, device: str, runs: int) -> float:
    """Time of one M x D x M matmul in z's dtype, in row chunks of at most 2**28 outputs."""
    m = z.shape[0]
    chunk = max(1, min(m, 2**28 // max(1, m)))
    out = torch.empty(chunk, m, dtype=z.dtype, device=z.device)

    def run() -> None:
        for i in range(0, m, chunk):
            torch.mm(z[i:i + chunk], z.T, out=out[: min(chunk, m - i)])

    run()  # warm-up
    return _best(torch, device, run, runs)


def _fwd_bwd(fn: Callable, z: Any, g: Any) -> tuple[Any, Any]:
    zk = z.detach().clone().requires_grad_()
    lse = fn(zk, 0.1)
    (lse.float() * g).sum().backward()
    return lse.detach(), zk.grad


def kernel_row(torch: Any, kernels: Any, mtt: Any, m: int, d: int, dtype: Any, device: str,
               runs: int) -> dict:
    gen = torch.Generator().manual_seed(m + d)
    z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1).to(device, dtype)
    g = (torch.rand(m, generator=gen) / m).to(device)
    row: dict[str, Any] = {"M": m, "D": d, "dtype": str(dtype).replace("torch.", "")}
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    lse, dz = _fwd_bwd(mtt.contrastive_lse_triton, z, g)
    if device == "cuda":
        torch.cuda.synchronize()
        row["kernel_peak_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    lse_t, dz_t = _fwd_bwd(kernels.contrastive_lse_torch, z.float(), g)
    row["max_abs_diff"] = float((lse.float() - lse_t).abs().max())
    row["max_rel_grad_diff"] = float((dz.float() - dz_t).abs().max() / dz_t.abs().max().clamp_min(1e-30))
    idx = torch.randperm(m, generator=gen)[: min(m, 512)].to(device)
    z64 = z.double()
    s = z64[idx] @ z64.T / 0.1
    s[torch.arange(idx.numel(), device=device), idx] = float("-inf")
    row["max_abs_diff_f64"] = float((lse[idx].double() - torch.logsumexp(s, dim=1)).abs().max())
    del s, z64
    row["kernel_s"] = _best(torch, device, lambda: _fwd_bwd(mtt.contrastive_lse_triton, z, g), runs)
    zf = z.float()
    row["torch_backend_s"] = _best(torch, device, lambda: _fwd_bwd(kernels.contrastive_lse_torch, zf, g), runs)
    row["mm3_s"] = 3 * _yardstick(torch, z, device, runs)
    row["kernel_x_mm3"] = row["kernel_s"] / row["mm3_s"]
    row["kernel_x_torch_backend"] = row["kernel_s"] / row["torch_backend_s"]
    return row


def loss_row(torch: Any, m: int, d: int, device: str, runs: int) -> dict:
    """backend='triton' vs 'torch' on the whole loss: partial_weight, rows without positives."""
    from agcl.functional import modal_target_supcon_loss

    gen = torch.Generator().manual_seed(m)
    b = max(2, m // 2)
    feats = torch.randn(b, 2, d, generator=gen).to(device)
    modality = torch.randint(0, 3, (b,), generator=gen).to(device)
    target = torch.randint(0, 8, (b,), generator=gen)
    target[:3] = 100 + torch.arange(3)  # three classes of one sample: rows with one positive
    labels_one = torch.arange(b)  # SSCL-like keys: the loss also sees labels without repeats
    out: dict[str, Any] = {"M": 2 * b, "D": d}
    grads = {}
    for backend in ("triton", "torch"):
        f = feats.clone().requires_grad_()
        loss = modal_target_supcon_loss(f, modality=modality, target=target.to(device),
                                        partial_weight=0.5, backend=backend)
        loss.backward()
        grads[backend] = (loss.detach(), f.grad)
    out["loss_abs_diff"] = float((grads["triton"][0] - grads["torch"][0]).abs())
    out["grad_max_abs_diff"] = float((grads["triton"][1] - grads["torch"][1]).abs().max())
    # rows without any positive: one view, every label distinct (loss 0, finite gradient)
    f = feats[:, :1].clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no anchor has a positive": expected here
        loss = modal_target_supcon_loss(f, labels=labels_one.to(device), backend="triton")
    loss.backward()
    out["no_positive_loss"] = float(loss.detach())
    out["no_positive_grad_finite"] = bool(torch.isfinite(f.grad).all())
    for backend in ("triton", "torch"):
        def step(backend=backend):
            x = feats.clone().requires_grad_()
            modal_target_supcon_loss(x, modality=modality, target=target.to(device),
                                     partial_weight=0.5, backend=backend).backward()
        out[f"{backend}_loss_s"] = _best(torch, device, step, runs)
    return out


def pml_row(torch: Any, m: int, d: int, device: str, runs: int) -> dict | None:
    try:
        from pytorch_metric_learning.losses import SupConLoss
    except ImportError:
        return None
    gen = torch.Generator().manual_seed(1)
    x = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1).to(device)
    y = torch.randint(0, 8, (m,), generator=gen).to(device)
    fn = SupConLoss(temperature=0.1)

    def step():
        xx = x.clone().requires_grad_()
        fn(xx, y).backward()

    step()
    return {"M": m, "D": d, "pml_supcon_s": _best(torch, device, step, runs)}


def run_tests(device: str) -> dict:
    if device != "cuda":
        return {"skipped": "no CUDA device (the cuda-marked tests would all skip)"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider",
           "tests/kernels", "tests/losses"]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return {"returncode": proc.returncode, "seconds": time.perf_counter() - start,
            "tail": (proc.stdout + proc.stderr)[-3000:]}


def markdown(report: dict) -> str:
    lines = ["| M | D | dtype | max abs diff lse (vs torch) | vs float64 | max rel diff dz | "
             "kernel fwd+bwd (s) | x (3 x mm) | x torch backend | peak (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["kernel_vs_torch"]:
        if "error" in r:
            lines.append(f"| {r['M']} | {r['D']} | {r['dtype']} | {r['error']} |||||||")
            continue
        peak = f"{r['kernel_peak_mb']:.0f}" if "kernel_peak_mb" in r else "-"
        lines.append(
            f"| {r['M']} | {r['D']} | {r['dtype']} | {r['max_abs_diff']:.2e} | "
            f"{r['max_abs_diff_f64']:.2e} | {r['max_rel_grad_diff']:.2e} | {r['kernel_s']:.4f} | "
            f"{r['kernel_x_mm3']:.2f} | {r['kernel_x_torch_backend']:.2f} | {peak} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.interpret:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton or the kernel module is imported
    import torch

    import agcl.kernels as kernels

    mtt = __import__("agcl.kernels.contrastive_lse_triton", fromlist=["x"])
    device = "cpu" if args.interpret else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --interpret to check the script on the CPU")
    sizes = INTERPRET_SIZES if args.interpret else GPU_SIZES
    ms, ds = args.m or sizes["M"], args.d or sizes["D"]
    dtypes = [torch.float32, torch.bfloat16, torch.float16]
    start = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "triton": __import__("triton").__version__, "device": device,
                    "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
                    "interpret": args.interpret},
        "tests": {"skipped": "--no-tests"} if args.no_tests else run_tests(device),
        "kernel_vs_torch": [], "loss": [], "pml": [],
    }
    for m in ms:
        for d in ds:
            for dtype in dtypes:
                if dtype == torch.bfloat16 and args.interpret:
                    continue  # the interpreter cannot run bf16 dots
                try:
                    runs = args.runs or (3 if m <= 4097 else 1)
                    row = kernel_row(torch, kernels, mtt, m, d, dtype, device, runs)
                except Exception as exc:  # record and go on: one short run must see everything
                    row = {"M": m, "D": d, "dtype": str(dtype).replace("torch.", ""),
                           "error": f"{type(exc).__name__}: {exc}"[:500]}
                report["kernel_vs_torch"].append(row)
                print(json.dumps(row), flush=True)
                if device == "cuda":
                    torch.cuda.empty_cache()
    for m in ms[:1]:
        for d in ds:
            report["loss"].append(loss_row(torch, m, d, device, args.runs or 3))
            pml = pml_row(torch, m, d, device, args.runs or 3)
            if pml is not None:
                report["pml"].append(pml)
    report["seconds"] = time.perf_counter() - start
    report["markdown"] = markdown(report)
    print(report["markdown"])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return report


if __name__ == "__main__":
    main()
