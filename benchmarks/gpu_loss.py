"""Speed and peak memory of the contrastive loss on CUDA against three torch.mm of M x D x M.

    python benchmarks/gpu_loss.py --json gpu_loss.json            # on a CUDA machine
    python benchmarks/gpu_loss.py --dry-run --json dry.json       # toy sizes, CPU, interpreter

For every (M, D, dtype) (default M in {16384, 65536, 262144}, D in {128, 256}, bfloat16 and
float32; the targets' sizes first: M = 65536 and then 16384 at D = 128, then the rest by M),
each backend runs forward + backward on the same L2-normalised rows:

* ``mm3``: the yardstick, three ``torch.mm`` of M x D x M in the row's dtype (in row chunks of
  at most 2**28 outputs, so no M x M matrix is held; the flops are those of three full
  products: the forward's S and the backward's recomputed S and A z);
* ``triton``: ``contrastive_lse_triton`` (autotuned; the first call, compile and autotuning
  included, is timed apart as ``first_call_s``);
* ``torch``: the blocked torch backend ``contrastive_lse_torch`` in the row's dtype;
* ``naive``: ``contrastive_lse_naive`` (the full M x M logits): the memory baseline;
* ``loss_triton`` (float32 rows): the whole ``modal_target_supcon_loss(backend="triton")`` on
  ``(M/2, 2, D)`` features, which is what pytorch-metric-learning's loss compares with;
* ``pml``: pytorch-metric-learning's ``SupConLoss`` where it is importable and fits.

Times are CUDA-event times (best of ``--runs``), memory is ``torch.cuda.max_memory_allocated``
above the inputs. A backend is skipped, and listed with the reason, when its estimated memory
passes 85 % of the free GPU memory (``--max-gb`` instead, where given) or when its time,
extrapolated as M**2 D from the same backend's largest measured row (its first call, compile
and autotuning included, plus the timed calls), would pass ``--deadline-s``.
``x_mm3`` is each time over the ``mm3`` time of the same row, measured in the same run.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any, Callable

from _gpu_common import (
    Deadline,
    best_time,
    cuda_peak_mb,
    cuda_peak_start,
    machine,
    timed,
    write_json,
)

GPU = {"M": (16384, 65536, 262144), "D": (128, 256), "dtypes": ("bfloat16", "float32")}
# The dry run: toy sizes, and a memory cap that the naive and pml backends pass at the larger M
# (so the "would not fit" path runs too).
DRY = {"M": (48, 96), "D": (16,), "dtypes": ("float32", "bfloat16"), "max_gb": 1.2e-4}
BACKENDS = ("mm3", "triton", "torch", "loss_triton", "pml", "naive")
TEMPERATURE = 0.1
# Bytes per M**2 (naive: the logits, their masked copy and the backward's softmax and gradient;
# pml: measured ~9 x M**2 fp32 on the CPU by benchmarks/bench_loss.py).
_M2_BYTES = {"naive": 5.0, "pml": 9.0 * 4}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the JSON report here (after every row)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="toy sizes on the CPU, the kernel under TRITON_INTERPRET=1",
    )
    p.add_argument("--ms", type=int, nargs="+", help="row counts M (default: 16384 65536 262144)")
    p.add_argument("--ds", type=int, nargs="+", help="widths D (default: 128 256)")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: all")
    p.add_argument(
        "--runs",
        type=int,
        default=None,
        help="timed calls per backend, best kept (default 5, 3 from M=65536, 1 above)",
    )
    p.add_argument(
        "--max-gb",
        type=float,
        default=None,
        help="skip a backend whose estimated memory passes this (default: 85%% of "
        "the free GPU memory)",
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="skip what would not finish within this many seconds of the start",
    )
    return p.parse_args(argv)


def _runs(m: int, override: int | None) -> int:
    if override is not None:
        return override
    return 5 if m < 65536 else (3 if m <= 65536 else 1)


def _est_bytes(backend: str, m: int, d: int, itemsize: int) -> float:
    rows = 4.0 * m * d * max(itemsize, 4)  # z, its gradient, fp32 copies
    if backend in _M2_BYTES:
        per = _M2_BYTES[backend] * (itemsize if backend == "naive" else 1)
        return rows + per * m * m
    if backend == "mm3":
        return rows + min(m, max(1, 2**28 // m)) * m * itemsize
    if backend == "torch":  # two (block, M) fp32 temporaries of at most 64 MiB each
        return rows + 2 * min(64 * 2**20, 4 * m * m)
    return rows


def _step(backend: str, torch: Any, z: Any, device: Any) -> Callable[[], Any]:
    """Forward + backward of ``backend`` on rows ``z`` (M, D), as a closure."""
    m = z.shape[0]
    gen = torch.Generator().manual_seed(m)
    g = (torch.rand(m, generator=gen) / m).to(device)
    if backend == "mm3":
        chunk = max(1, min(m, 2**28 // m))
        out = torch.empty(chunk, m, dtype=z.dtype, device=device)

        def mm3() -> None:
            for _ in range(3):
                for i in range(0, m, chunk):
                    torch.mm(z[i : i + chunk], z.T, out=out[: min(chunk, m - i)])

        return mm3
    if backend in ("triton", "torch", "naive"):
        if backend == "triton":
            from agcl.kernels.contrastive_lse_triton import contrastive_lse_triton as fn
        else:
            import agcl.kernels as kernels

            fn = getattr(kernels, f"contrastive_lse_{backend}")

        def lse_step() -> Any:
            zk = z.detach().requires_grad_()
            lse = fn(zk, TEMPERATURE)
            (lse.float() * g).sum().backward()
            return lse.detach(), zk.grad

        return lse_step
    labels = torch.randint(0, 16, (m,), generator=gen).to(device)
    if backend == "loss_triton":
        from agcl.functional import modal_target_supcon_loss

        feats = z.reshape(m // 2, 2, z.shape[1])
        modality, target = labels[: m // 2] % 2, labels[: m // 2] // 2

        def loss_step() -> Any:
            f = feats.detach().requires_grad_()
            loss = modal_target_supcon_loss(
                f, modality=modality, target=target, temperature=TEMPERATURE, backend="triton"
            )
            loss.backward()
            return loss.detach(), f.grad

        return loss_step
    if backend == "pml":
        from pytorch_metric_learning.losses import SupConLoss

        crit = SupConLoss(temperature=TEMPERATURE)

        def pml_step() -> Any:
            zk = z.detach().requires_grad_()
            loss = crit(zk, labels)
            loss.backward()
            return loss.detach(), zk.grad

        return pml_step
    raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def _finite(torch: Any, out: Any) -> bool | None:
    if out is None:
        return None
    return all(bool(torch.isfinite(t).all()) for t in out if t is not None)


def _estimate_s(
    history: list[dict], backend: str, m: int, d: int, dtype: str, runs: int
) -> float | None:
    """Seconds ``backend`` would take at (m, d, dtype), scaled as M**2 D from its largest
    measured row (same D and dtype preferred); None without any."""
    rows = [r for r in history if r["backend"] == backend and "time_s" in r]
    same = [r for r in rows if r["D"] == d and r["dtype"] == dtype]
    pool = same or rows
    if not pool:
        return None
    r = max(pool, key=lambda r: r["M"])
    scale = (m / r["M"]) ** 2 * (d / r["D"])
    return (r["first_call_s"] + runs * r["time_s"]) * scale


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton or the kernel module is imported
    import torch

    deadline = Deadline(args.deadline_s)
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    sizes = DRY if args.dry_run else GPU
    ms, ds = sorted(args.ms or sizes["M"]), args.ds or sizes["D"]
    dtypes = args.dtypes or sizes["dtypes"]
    backends = args.backends or BACKENDS
    max_gb = args.max_gb if args.max_gb is not None else sizes.get("max_gb")
    report: dict[str, Any] = {
        "machine": machine(torch),
        "dry_run": args.dry_run,
        "device": str(device),
        "sizes": {"M": list(ms), "D": list(ds), "dtypes": list(dtypes)},
        # where the suite reads its targets (the sizes; their toy stand-ins when dry)
        "reference": {"speed_M": ms[min(1, len(ms) - 1)], "speed_D": ds[0], "pml_M": ms[0]},
        "temperature": TEMPERATURE,
        "rows": [],
        "skipped": [],
        "autotuned": {},
    }
    try:
        import pytorch_metric_learning

        report["machine"]["pytorch_metric_learning"] = pytorch_metric_learning.__version__
        have_pml = True
    except ImportError:
        have_pml = False

    def save() -> None:
        report["seconds"] = deadline.elapsed()
        write_json(args.json, report)

    ref = report["reference"]
    for m, d in _order(ms, ds, ref):
        for name in dtypes:
            dtype = getattr(torch, name)
            gen = torch.Generator().manual_seed(m * 7 + d)
            z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1)
            z = z.to(device, dtype)
            mm3_s = None
            for backend in backends:
                keys = {"M": m, "D": d, "dtype": name, "backend": backend}
                reason = _skip_reason(
                    backend, keys, args, deadline, report, have_pml, max_gb, torch, device, dtype
                )
                if reason:
                    report["skipped"].append({**keys, "reason": reason})
                    print(f"skip {keys}: {reason}", flush=True)
                    continue
                row = _measure(backend, torch, z, device, _runs(m, args.runs), keys)
                if backend == "mm3" and "time_s" in row:
                    mm3_s = row["time_s"]
                if mm3_s and "time_s" in row:
                    row["x_mm3"] = row["time_s"] / mm3_s
                report["rows"].append(row)
                print(_line(row), flush=True)
                save()
            del z
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["autotuned"] = _autotuned()
    save()
    return report


def _order(ms: list[int], ds: list[int], ref: dict) -> list[tuple[int, int]]:
    """(M, D) in the order they run: the targets' sizes first (the speed target's, then the
    pytorch-metric-learning target's), then the rest by M, so that a short deadline still
    measures what the targets need."""

    def rank(md: tuple[int, int]) -> tuple[int, int, int]:
        first = {(ref["speed_M"], ref["speed_D"]): 0, (ref["pml_M"], ref["speed_D"]): 1}
        return (first.get(md, 2), md[0], md[1])

    return sorted(((m, d) for m in ms for d in ds), key=rank)


def _skip_reason(
    backend: str,
    keys: dict,
    args: argparse.Namespace,
    deadline: Deadline,
    report: dict,
    have_pml: bool,
    max_gb: float | None,
    torch: Any,
    device: Any,
    dtype: Any,
) -> str | None:
    m, d, name = keys["M"], keys["D"], keys["dtype"]
    if backend == "pml" and not have_pml:
        return "pytorch-metric-learning is not installed (put its wheel in .whl/)"
    if backend == "loss_triton" and name != "float32":
        return "the loss computes in float32 whatever its input: measured on float32 rows only"
    if backend in ("triton", "loss_triton") and args.dry_run and name == "bfloat16":
        return "Triton's interpreter cannot run bf16 dots"
    if m % 2 and backend == "loss_triton":
        return "needs an even M (two views per sample)"
    if deadline.passed():
        return f"--deadline-s {args.deadline_s} reached"
    itemsize = torch.empty(0, dtype=dtype).element_size()
    need = _est_bytes(backend, m, d, itemsize)
    if max_gb is not None:
        cap = max_gb * 2**30
        where = f"--max-gb {max_gb:g}"
    elif device.type == "cuda":
        cap = 0.85 * torch.cuda.mem_get_info()[0]
        where = "85% of the free GPU memory"
    else:
        cap = math.inf
        where = ""
    if need > cap:
        return f"would not fit: estimated {need / 2**30:.3g} GiB > {where} ({cap / 2**30:.3g} GiB)"
    est = _estimate_s(report["rows"], backend, m, d, name, _runs(m, args.runs))
    if est is not None and est > deadline.left():
        return (
            f"estimated {est:.0f} s (M**2 D from the largest measured row) > the "
            f"{deadline.left():.0f} s left before --deadline-s"
        )
    return None


def _measure(backend: str, torch: Any, z: Any, device: Any, runs: int, keys: dict) -> dict:
    row: dict[str, Any] = dict(keys)
    try:
        step = _step(backend, torch, z, device)
        base = cuda_peak_start(torch, device)
        out: list[Any] = []
        row["first_call_s"] = timed(torch, device, lambda: out.append(step()))
        row["time_s"] = best_time(torch, device, step, runs)
        row["runs"] = runs
        row["peak_mb"] = cuda_peak_mb(torch, device, base)
        row["finite"] = _finite(torch, out[0])
    except Exception as exc:  # one backend's failure (OOM, compile error) must not end the run
        row["error"] = f"{type(exc).__name__}: {exc}"[:800]
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def _line(row: dict) -> str:
    head = f"M={row['M']:>7} D={row['D']:>4} {row['dtype']:>8} {row['backend']:>11}"
    if "error" in row:
        return f"{head}  ERROR {row['error']}"
    peak = "-" if row["peak_mb"] is None else f"{row['peak_mb']:.0f} MiB"
    ratio = f"  x mm3 {row['x_mm3']:.2f}" if "x_mm3" in row else ""
    return (
        f"{head}  {row['time_s'] * 1e3:9.2f} ms (first {row['first_call_s']:.2f} s)  "
        f"peak {peak}{ratio}  finite={row['finite']}"
    )


def _autotuned() -> dict[str, dict[str, str]]:
    """The configurations the autotuner picked, per kernel and (M, D, dtypes) key."""
    mod = sys.modules.get("agcl.kernels.contrastive_lse_triton")
    out: dict[str, dict[str, str]] = {}
    for name in ("_lse_fwd_tuned", "_lse_bwd_tuned"):
        cache = getattr(getattr(mod, name, None), "cache", None) or {}
        out[name] = {str(k): str(v) for k, v in cache.items()}
    return out


if __name__ == "__main__":
    main()
