"""The first run on a GPU in one command: the cuda-marked tests, then kernel-vs-torch and
kernel-vs-float64 comparisons, timings and peak memory, as JSON and a markdown table.

    python benchmarks/gpu_check.py --json gpu_check.json          # on a CUDA machine
    python benchmarks/gpu_check.py --interpret --json check.json  # tiny sizes, CPU interpreter

For every (M, D, dtype) it runs the Triton kernel's forward + backward and the torch backend's
(on the same rounded inputs, in fp32), compares ``lse`` and ``dz`` (``max_abs_diff``,
``max_rel_grad_diff``) and ``lse`` of up to 512 anchors against float64 (``max_abs_diff_f64``),
and times both against the physical yardstick: 3 x one M x D x M ``torch.mm`` (done in row
chunks so that no M x M matrix is held; the flops are those of one full product). On CUDA it
records ``torch.cuda.max_memory_allocated`` above the inputs. The ``variants`` rows repeat the
comparison, per dtype, for an anchor block starting and ending mid-tile (``anchor_start``,
``num_anchors``: what the all-gathered loss passes) and for a memory queue (anchors first,
``grad_rows`` < M: the queued rows must get exactly zero gradient). Every row gets ``ok``: finite
and within the tolerances of the kernel's self-check (``agcl.kernels._self_check``). The
``loss`` rows compare the whole loss (``partial_weight`` > 0, some rows without positives, and a
``ModalTargetSupConLoss`` memory queue) between ``backend="triton"`` and ``"torch"``;
pytorch-metric-learning's SupConLoss is timed where it fits and is importable. Speeds are
ratios against baselines measured in the same run. ``--deadline-s`` stops starting new rows
when the time is spent (the rows left out are listed under ``skipped``).
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

# 4097 and 200: ragged M and D (a partial last tile; D padded to the next power of two)
GPU_SIZES = {"M": (4097, 65536, 262144), "D": (128, 200, 256, 2048)}
INTERPRET_SIZES = {"M": (37, 70), "D": (16, 40)}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the JSON report here")
    p.add_argument(
        "--interpret",
        action="store_true",
        help="tiny sizes on the CPU under TRITON_INTERPRET=1 (checks this script)",
    )
    p.add_argument("--no-tests", action="store_true", help="skip the cuda-marked pytest run")
    p.add_argument("--m", type=int, nargs="+", help="override the row counts M")
    p.add_argument("--d", type=int, nargs="+", help="override the widths D")
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="timed repetitions, best kept (default 3 for M <= 4097, else 1)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="start no new row after this many seconds (the rest are listed as skipped)",
    )
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
            torch.mm(z[i : i + chunk], z.T, out=out[: min(chunk, m - i)])

    run()  # warm-up
    return _best(torch, device, run, runs)


def _fwd_bwd(fn: Callable, z: Any, g: Any) -> tuple[Any, Any]:
    zk = z.detach().clone().requires_grad_()
    lse = fn(zk, 0.1)
    (lse.float() * g).sum().backward()
    return lse.detach(), zk.grad


def kernel_row(
    torch: Any, kernels: Any, mtt: Any, m: int, d: int, dtype: Any, device: str, runs: int
) -> dict:
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
    row["max_rel_grad_diff"] = float(
        (dz.float() - dz_t).abs().max() / dz_t.abs().max().clamp_min(1e-30)
    )
    idx = torch.randperm(m, generator=gen)[: min(m, 512)].to(device)
    z64 = z.double()
    s = z64[idx] @ z64.T / 0.1
    s[torch.arange(idx.numel(), device=device), idx] = float("-inf")
    row["max_abs_diff_f64"] = float((lse[idx].double() - torch.logsumexp(s, dim=1)).abs().max())
    del s, z64
    row["kernel_s"] = _best(torch, device, lambda: _fwd_bwd(mtt.contrastive_lse_triton, z, g), runs)
    zf = z.float()
    row["torch_backend_s"] = _best(
        torch, device, lambda: _fwd_bwd(kernels.contrastive_lse_torch, zf, g), runs
    )
    row["mm3_s"] = 3 * _yardstick(torch, z, device, runs)
    row["kernel_x_mm3"] = row["kernel_s"] / row["mm3_s"]
    row["kernel_x_torch_backend"] = row["kernel_s"] / row["torch_backend_s"]
    row["lse_abs_max"] = float(lse_t.abs().max())
    row["finite"] = bool(torch.isfinite(lse).all() and torch.isfinite(dz).all())
    row["ok"] = within_tolerance(torch, row, dtype)
    return row


def within_tolerance(torch: Any, row: dict, dtype: Any) -> bool:
    """Finite, and lse / dz within the kernel self-check's tolerances for ``dtype``:
    ``|lse - ref| <= tol (1 + max |ref|)`` (also against float64 where measured) and
    ``max |dz - ref| <= dz_tol max |ref|`` (``agcl.kernels._self_check._TOLERANCES``)."""
    from agcl.kernels._self_check import _TOLERANCES

    lse_tol, dz_tol = _TOLERANCES[dtype]
    bound = lse_tol * (1.0 + row["lse_abs_max"])
    diffs = [row["max_abs_diff"], row.get("max_abs_diff_f64", 0.0)]
    return bool(
        row["finite"] and all(d <= bound for d in diffs) and row["max_rel_grad_diff"] <= dz_tol
    )


def variant_rows(
    torch: Any, kernels: Any, mtt: Any, m: int, d: int, dtype: Any, device: str
) -> list[dict]:
    """The kernel against the torch backend (fp32, same rounded inputs) for an anchor block
    inside the rows (``anchor_start``) and for a memory queue (``grad_rows``)."""
    gen = torch.Generator().manual_seed(3 * m + d)
    z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1).to(device, dtype)
    name = str(dtype).replace("torch.", "")
    cases = (
        # starts and ends mid-tile, like one rank's rows in the all-gathered loss
        ("anchor_start", {"anchor_start": m // 8 + 3, "num_anchors": m // 2}),
        # a memory queue: the batch's rows are the anchors and the only rows with gradients
        ("grad_rows", {"anchor_start": 0, "num_anchors": m // 4 + 5, "grad_rows": m // 4 + 5}),
    )
    rows = []
    for what, kw in cases:
        n = kw["num_anchors"]
        g = (torch.rand(n, generator=gen) / n).to(device)
        out = []
        for fn, zz in ((mtt.contrastive_lse_triton, z), (kernels.contrastive_lse_torch, z.float())):
            zk = zz.detach().clone().requires_grad_()
            lse = fn(zk, 0.1, **kw)
            (lse.float() * g).sum().backward()
            out.append((lse.detach().float(), zk.grad.float()))
        (lse, dz), (lse_t, dz_t) = out
        row = {
            "M": m,
            "D": d,
            "dtype": name,
            "variant": what,
            **kw,
            "max_abs_diff": float((lse - lse_t).abs().max()),
            "max_rel_grad_diff": float((dz - dz_t).abs().max() / dz_t.abs().max().clamp_min(1e-30)),
            "lse_abs_max": float(lse_t.abs().max()),
            "finite": bool(torch.isfinite(lse).all() and torch.isfinite(dz).all()),
        }
        if "grad_rows" in kw:  # the queued rows: exactly zero, not merely small
            row["queue_grad_abs_max"] = float(dz[kw["grad_rows"] :].abs().max())
        row["ok"] = within_tolerance(torch, row, dtype) and row.get("queue_grad_abs_max", 0.0) == 0
        rows.append(row)
    return rows


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
        loss = modal_target_supcon_loss(
            f, modality=modality, target=target.to(device), partial_weight=0.5, backend=backend
        )
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
    # a memory queue (the kernel's grad_rows): two calls, the second against the first's rows
    from agcl import ModalTargetSupConLoss

    queued = {}
    for backend in ("triton", "torch"):
        crit = ModalTargetSupConLoss(0.1, queue_size=b, backend=backend).to(device)
        crit(feats, modality=modality, target=target.to(device))
        f = feats.flip(0).clone().requires_grad_()
        loss = crit(f, modality=modality.flip(0), target=target.flip(0).to(device))
        loss.backward()
        queued[backend] = (loss.detach(), f.grad)
    out["queue_loss_abs_diff"] = float((queued["triton"][0] - queued["torch"][0]).abs())
    out["queue_grad_max_abs_diff"] = float((queued["triton"][1] - queued["torch"][1]).abs().max())
    # fp32 on both sides: the loss to 1e-4 of its size, the gradients to 1e-4 of their largest
    # entry (the self-check's fp32 tolerances)
    out["ok"] = bool(
        out["loss_abs_diff"] <= 1e-4 * (1 + float(grads["torch"][0].abs()))
        and out["grad_max_abs_diff"] <= 1e-4 * float(grads["torch"][1].abs().max())
        and out["queue_loss_abs_diff"] <= 1e-4 * (1 + float(queued["torch"][0].abs()))
        and out["queue_grad_max_abs_diff"] <= 1e-4 * float(queued["torch"][1].abs().max())
        and out["no_positive_loss"] == 0.0
        and out["no_positive_grad_finite"]
    )
    for backend in ("triton", "torch"):

        def step(backend=backend):
            x = feats.clone().requires_grad_()
            modal_target_supcon_loss(
                x, modality=modality, target=target.to(device), partial_weight=0.5, backend=backend
            ).backward()

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
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-m",
        "cuda",
        "-p",
        "no:cacheprovider",
        "tests/kernels",
        "tests/losses",
    ]
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    return {
        "returncode": proc.returncode,
        "seconds": time.perf_counter() - start,
        "tail": (proc.stdout + proc.stderr)[-3000:],
    }


def markdown(report: dict) -> str:
    lines = [
        "| M | D | dtype | max abs diff lse (vs torch) | vs float64 | max rel diff dz | "
        "kernel fwd+bwd (s) | x (3 x mm) | x torch backend | peak (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["kernel_vs_torch"]:
        if "error" in r:
            lines.append(f"| {r['M']} | {r['D']} | {r['dtype']} | {r['error']} |||||||")
            continue
        peak = f"{r['kernel_peak_mb']:.0f}" if "kernel_peak_mb" in r else "-"
        lines.append(
            f"| {r['M']} | {r['D']} | {r['dtype']} | {r['max_abs_diff']:.2e} | "
            f"{r['max_abs_diff_f64']:.2e} | {r['max_rel_grad_diff']:.2e} | {r['kernel_s']:.4f} | "
            f"{r['kernel_x_mm3']:.2f} | {r['kernel_x_torch_backend']:.2f} | {peak} |"
        )
    if report.get("variants"):
        lines += [
            "",
            "| M | D | dtype | variant | max abs diff lse | max rel diff dz | ok |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["variants"]:
            if "error" in r:
                lines.append(f"| {r['M']} | {r['D']} | {r['dtype']} | {r['error']} ||||")
                continue
            lines.append(
                f"| {r['M']} | {r['D']} | {r['dtype']} | {r['variant']} | "
                f"{r['max_abs_diff']:.2e} | {r['max_rel_grad_diff']:.2e} | {r['ok']} |"
            )
    for r in report.get("skipped", []):
        lines.append(
            f"- skipped {json.dumps({k: v for k, v in r.items() if k != 'reason'})}: {r['reason']}"
        )
    return "\n".join(lines)


def _elapsed_ok(start: float, deadline: float | None) -> bool:
    return deadline is None or time.perf_counter() - start < deadline


def _error_row(keys: dict, exc: BaseException) -> dict:
    return {**keys, "error": f"{type(exc).__name__}: {exc}"[:500], "ok": False}


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
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "triton": __import__("triton").__version__,
            "device": device,
            "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
            "interpret": args.interpret,
        },
        "tests": {"skipped": "--no-tests"} if args.no_tests else run_tests(device),
        "kernel_vs_torch": [],
        "variants": [],
        "loss": [],
        "pml": [],
        "skipped": [],
    }

    def save() -> None:
        report["seconds"] = time.perf_counter() - start
        checked = [r for key in ("kernel_vs_torch", "variants", "loss") for r in report[key]]
        report["all_ok"] = bool(checked) and all(r.get("ok", False) for r in checked)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=2)

    def usable(dtype: Any, what: dict) -> bool:
        if dtype == torch.bfloat16 and args.interpret:
            report["skipped"].append(
                {**what, "reason": "Triton's interpreter cannot run bf16 dots"}
            )
            return False
        if not _elapsed_ok(start, args.deadline_s):
            report["skipped"].append({**what, "reason": f"--deadline-s {args.deadline_s} reached"})
            return False
        return True

    def kernel_rows(m: int) -> None:
        for d in ds:
            for dtype in dtypes:
                keys = {"M": m, "D": d, "dtype": str(dtype).replace("torch.", "")}
                if not usable(dtype, {"kernel_vs_torch": keys}):
                    continue
                try:
                    runs = args.runs or (3 if m <= 4097 else 1)
                    row = kernel_row(torch, kernels, mtt, m, d, dtype, device, runs)
                except Exception as exc:  # record and go on: one short run must see everything
                    row = _error_row(keys, exc)
                report["kernel_vs_torch"].append(row)
                print(json.dumps(row), flush=True)
                save()
                if device == "cuda":
                    torch.cuda.empty_cache()

    # The first M (ragged) at every width and dtype, then the anchor / queue variants and the
    # whole loss there; the larger M last, as the deadline allows.
    kernel_rows(ms[0])
    for dtype in dtypes:
        keys = {"M": ms[0], "D": ds[0], "dtype": str(dtype).replace("torch.", "")}
        if usable(dtype, {"variants": keys}):
            try:
                report["variants"] += variant_rows(torch, kernels, mtt, ms[0], ds[0], dtype, device)
            except Exception as exc:
                report["variants"].append(_error_row(keys, exc))
            save()
    for d in ds:
        keys = {"M": ms[0], "D": d}
        if not usable(torch.float32, {"loss": keys}):
            continue
        try:
            report["loss"].append(loss_row(torch, ms[0], d, device, args.runs or 3))
            pml = pml_row(torch, ms[0], d, device, args.runs or 3)
            if pml is not None:
                report["pml"].append(pml)
        except Exception as exc:
            report["loss"].append(_error_row(keys, exc))
        save()
    for m in ms[1:]:
        kernel_rows(m)
    save()
    report["markdown"] = markdown(report)
    print(report["markdown"])
    save()
    return report


if __name__ == "__main__":
    main()
