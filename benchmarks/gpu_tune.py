"""Try the Triton kernel's tile configurations one by one on the GPU (a report; nothing changes).

    python benchmarks/gpu_tune.py --json gpu_tune.json           # M = 65536, D in {128, 256}
    python benchmarks/gpu_tune.py --dry-run --json dry.json      # toy sizes under the interpreter

For every (M, D, dtype) and each kernel of ``agcl.kernels.contrastive_lse_triton`` (forward
``_lse_fwd_kernel``, backward ``_lse_bwd_kernel``), every candidate (BLOCK_M, BLOCK_N,
num_warps, num_stages) is launched with fixed tiles, checked against the torch backend (the
self-check's tolerances) and timed with CUDA events (best of ``--runs``; the first call, which
compiles, apart). The candidates are the autotuner's own list (``cuda_configs`` of
``agcl.kernels._triton_tiles``, pruned by ``prune_configs`` as the autotuner prunes it for the
row width) followed by larger Hopper-sized tiles (``EXTRA``: 128-256 rows or columns, 8 warps),
which may fail to compile or run out of shared memory: that is recorded per candidate. Then
the autotuned kernel itself runs once for the same key, and the report puts its pick next to the
fastest candidate. Use the table to decide which configurations the autotuner should offer; this
script changes no default.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from _gpu_common import Deadline, best_time, machine, timed, write_json

GPU = {"M": (65536,), "D": (128, 256), "dtypes": ("bfloat16", "float32"), "runs": 5}
DRY = {"M": (40,), "D": (16,), "dtypes": ("float32", "float16"), "runs": 1}
# Larger tiles than the autotuner's list: (BLOCK_M, BLOCK_N, num_warps).
EXTRA = ((128, 128, 4), (128, 256, 8), (256, 128, 8), (256, 64, 8), (64, 256, 8))
STAGES = {"fwd": (3, 4), "bwd": (2, 3)}  # those the autotuner tries per kernel
TEMPERATURE = 0.1


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the JSON report here (after every row)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="toy sizes on the CPU under TRITON_INTERPRET=1 (checks the script)",
    )
    p.add_argument("--ms", type=int, nargs="+", help="row counts M (default 65536)")
    p.add_argument("--ds", type=int, nargs="+", help="widths D (default 128 256)")
    p.add_argument("--dtypes", nargs="+", choices=("float32", "bfloat16", "float16"))
    p.add_argument("--runs", type=int, help="timed calls per candidate, best kept (default 5)")
    p.add_argument("--no-extra", action="store_true", help="only the autotuner's own list")
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="try no new candidate after this many seconds",
    )
    return p.parse_args(argv)


def candidates(mt: Any, kind: str, block_d: int, extra: bool) -> list[tuple[tuple, str]]:
    """``[((BLOCK_M, BLOCK_N, num_warps, num_stages), source), ...]`` for one kernel."""
    from agcl.kernels import _triton_tiles as tt

    configs = tt.prune_configs(tt.cuda_configs(STAGES[kind]), {}, BLOCK_D=block_d)
    own = [(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_warps, c.num_stages) for c in configs]
    out = [(c, "autotune list") for c in own]
    if extra:
        out += [
            ((bm, bn, w, st), "extra")
            for bm, bn, w in EXTRA
            for st in STAGES[kind]
            if (bm, bn, w, st) not in own
        ]
    return out


def _launcher(mt: Any, triton: Any, kind: str, z: Any, lse: Any, g: Any, out: Any) -> Any:
    """``launch(config)``: one launch of the raw kernel with fixed tiles, as the module's
    ``_launch_fwd`` / ``_launch_bwd`` launch it (every row an anchor)."""
    from agcl.kernels._triton_tiles import dot_precision

    m, d = z.shape
    common = {
        "M": m,
        "D": d,
        "anchor_start": 0,
        "num_anchors": m,
        "stride_zm": z.stride(0),
        "stride_zd": z.stride(1),
        "scale": 1.0 / TEMPERATURE,
        "BLOCK_D": max(16, triton.next_power_of_2(d)),
        "PRECISION": dot_precision(z.dtype),
    }

    def launch(cfg: tuple) -> None:
        bm, bn, warps, stages = cfg
        tiles = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}
        grid = (triton.cdiv(m, bm),)
        if kind == "fwd":
            mt._lse_fwd_kernel[grid](z_ptr=z, lse_ptr=out, **common, **tiles)
        else:
            mt._lse_bwd_kernel[grid](
                z_ptr=z,
                lse_ptr=lse,
                g_ptr=g,
                dz_ptr=out,
                stride_dm=out.stride(0),
                stride_dd=out.stride(1),
                **common,
                **tiles,
            )

    return launch


def _autotuned_pick(mt: Any, m: int, d: int, dtype: Any) -> dict[str, str | None]:
    """The autotuner's choice per kernel for (M, D) and z's dtype (its cache key is the key
    arguments, M and D, followed by the tensor arguments' dtypes, z's first)."""
    picks: dict[str, str | None] = {}
    for kind, name in (("fwd", "_lse_fwd_tuned"), ("bwd", "_lse_bwd_tuned")):
        cache = getattr(getattr(mt, name), "cache", None) or {}
        found = [
            cfg
            for key, cfg in cache.items()
            if len(key) > 2 and tuple(key[:2]) == (m, d) and str(key[2]) == str(dtype)
        ]
        picks[kind] = None if not found else str(found[-1])
    return picks


def _as_tuple(config_text: str | None) -> tuple | None:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) out of ``str(triton.Config)``."""
    if not config_text:
        return None
    fields = {}
    for part in config_text.split(","):  # "BLOCK_M: 64, BLOCK_N: 128, num_warps: 4, ..."
        k, sep, v = part.partition(":")
        if sep and v.strip().isdigit():
            fields[k.strip()] = int(v)
    keys = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")
    return tuple(fields[k] for k in keys) if all(k in fields for k in keys) else None


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton or the kernel module is imported
    import torch
    import triton

    import agcl.kernels.contrastive_lse_triton as mt
    from agcl.kernels import contrastive_lse_torch
    from agcl.kernels._self_check import _TOLERANCES

    deadline = Deadline(args.deadline_s)
    sizes = DRY if args.dry_run else GPU
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    runs = args.runs or sizes["runs"]
    report: dict[str, Any] = {
        "machine": machine(torch),
        "dry_run": args.dry_run,
        "rows": [],
        "summary": [],
        "skipped": [],
        "extra": [list(e) for e in EXTRA],
    }
    for m in args.ms or sizes["M"]:
        for d in args.ds or sizes["D"]:
            for name in args.dtypes or sizes["dtypes"]:
                dtype = getattr(torch, name)
                gen = torch.Generator().manual_seed(m + d)
                z = torch.nn.functional.normalize(torch.randn(m, d, generator=gen), dim=1)
                z = z.to(device, dtype)
                g = (torch.rand(m, generator=gen) / m).to(device)
                zr = z.float().requires_grad_()
                ref_lse = contrastive_lse_torch(zr, TEMPERATURE)
                (ref_lse * g).sum().backward()
                ref_lse = ref_lse.detach()
                lse_tol, dz_tol = _TOLERANCES[dtype]
                for kind in ("fwd", "bwd"):
                    keys = {"M": m, "D": d, "dtype": name, "kernel": kind}
                    if name == "bfloat16" and args.dry_run:
                        report["skipped"].append(
                            {**keys, "reason": "Triton's interpreter cannot run bf16 dots"}
                        )
                        continue
                    out = torch.empty(m, device=device) if kind == "fwd" else torch.empty_like(z)
                    launch = _launcher(mt, triton, kind, z, ref_lse, g, out)
                    want = ref_lse if kind == "fwd" else zr.grad
                    bound = (
                        lse_tol * (1 + float(want.abs().max()))
                        if kind == "fwd"
                        else dz_tol * float(want.abs().max())
                    )
                    block_d = max(16, triton.next_power_of_2(d))
                    cands = candidates(mt, kind, block_d, not args.no_extra)
                    if args.dry_run:  # two of the autotuner's and one extra: both paths run
                        cands = cands[:2] + [c for c in cands if c[1] == "extra"][:1]
                    for cfg, source in cands:
                        row = {
                            **keys,
                            "BLOCK_M": cfg[0],
                            "BLOCK_N": cfg[1],
                            "num_warps": cfg[2],
                            "num_stages": cfg[3],
                            "source": source,
                        }
                        if deadline.passed():
                            report["skipped"].append({**row, "reason": "--deadline-s reached"})
                            continue
                        try:

                            def call(c: tuple = cfg, f: Any = launch) -> None:
                                f(c)

                            row["first_call_s"] = timed(torch, device, call)
                            row["time_s"] = best_time(torch, device, call, runs)
                            err = float((out.float() - want).abs().max())
                            row["max_abs_diff"] = err
                            row["ok"] = bool(err <= bound)  # NaN fails too
                        except Exception as exc:  # too large a tile, out of shared memory, ...
                            row["error"] = f"{type(exc).__name__}: {exc}"[:400]
                        report["rows"].append(row)
                        write_json(args.json, report)
                    report["summary"].append(_summary(report["rows"], keys))
                if not args.dry_run and not deadline.passed():
                    zk = z.detach().clone().requires_grad_()
                    (mt.contrastive_lse_triton(zk, TEMPERATURE) * g).sum().backward()
                    picks = _autotuned_pick(mt, m, d, dtype)
                    for s in report["summary"][-2:]:
                        s["autotuned"] = picks.get(s["kernel"])
                        s.update(_pick_time(report["rows"], s, _as_tuple(s["autotuned"])))
                elif args.dry_run:
                    for s in report["summary"][-2:]:
                        s["autotuned"] = "interpreter: fixed tiles, no autotuning"
                print(_lines(report["summary"][-2:]), flush=True)
                write_json(args.json, report)
    report["seconds"] = deadline.elapsed()
    write_json(args.json, report)
    return report


def _summary(rows: list[dict], keys: dict) -> dict:
    mine = [r for r in rows if all(r[k] == v for k, v in keys.items())]
    good = [r for r in mine if r.get("ok")]
    out: dict[str, Any] = {
        **keys,
        "tried": len(mine),
        "ok": len(good),
        "failed": [f"{_cfg(r)}: {r.get('error', 'mismatch')}" for r in mine if not r.get("ok")],
    }
    if good:
        best = min(good, key=lambda r: r["time_s"])
        out.update(best=_cfg(best), best_s=best["time_s"], best_source=best["source"])
    return out


def _pick_time(rows: list[dict], s: dict, pick: tuple | None) -> dict:
    if pick is None or "best_s" not in s:
        return {}
    for r in rows:
        if all(r[k] == s[k] for k in ("M", "D", "dtype", "kernel")) and _key(r) == pick:
            if r.get("ok"):
                return {"autotuned_s": r["time_s"], "autotuned_x_best": r["time_s"] / s["best_s"]}
    return {}


def _key(r: dict) -> tuple:
    return (r["BLOCK_M"], r["BLOCK_N"], r["num_warps"], r["num_stages"])


def _cfg(r: dict) -> str:
    return f"{r['BLOCK_M']}x{r['BLOCK_N']} w{r['num_warps']} s{r['num_stages']}"


def _lines(summary: list[dict]) -> str:
    out = []
    for s in summary:
        best = f"best {s['best']} {1e3 * s['best_s']:.3f} ms" if "best" in s else "no config ok"
        x = f" (x best {s['autotuned_x_best']:.2f})" if "autotuned_x_best" in s else ""
        out.append(
            f"M={s['M']} D={s['D']} {s['dtype']} {s['kernel']}: {s['ok']}/{s['tried']} ok, "
            f"{best}; autotuned: {s.get('autotuned')}{x}"
        )
    return "\n".join(out)


if __name__ == "__main__":
    main()
