"""Forward + backward time and peak memory of the modal-target loss backends.

Every case runs in a fresh subprocess so its peak memory is its own: peak RSS from
``resource.getrusage`` on CPU (minus the peak of a baseline child that only imports torch and
builds the same inputs), ``torch.cuda.max_memory_allocated`` on CUDA. Backends: ``naive``
(full M x M reference), ``torch`` (blocked), pytorch-metric-learning's ``SupConLoss`` (what users
would otherwise pick; when installed) and ``triton`` (CUDA with triton only). The yardstick is
the time of one M x D x M matmul (in 64-row blocks, so it needs no M x M memory; a second
yardstick, ``plain_mm_s``, is one plain ``torch.mm`` of M x D x M while its output fits 4 GiB),
measured in the case's own process right after its peak memory was read (same load, same moment;
a separate child's matmul time is kept in the JSON as ``matmul_separate_s``); the ``isfinite``
input check is timed on its own. A case whose estimated memory exceeds ``--max-gb`` is skipped
and marked, not run.

    python benchmarks/bench_loss.py            # M in {4096, 16384, 65536}, D in {128, 256}
    python benchmarks/bench_loss.py --quick    # small M smoke run (seconds)

Prints a table of ratios and writes JSON (machine, versions, results) under
benchmarks/results/ (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Estimated bytes per case, in units of M^2 fp32 (measured at M = 4096 on CPU: naive ~5.6,
# pytorch-metric-learning ~9) plus the blocked backends' O(block x M + M x D) working set.
MEM_M2 = {"naive": 6.0, "pml": 9.0}


def _inputs(m: int, d: int, device: str, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    b = m // 2
    feats = torch.randn(b, 2, d, generator=gen).to(device)
    modality = torch.randint(0, 2, (b,), generator=gen).to(device)
    target = torch.randint(0, 12, (b,), generator=gen).to(device)
    return feats, modality, target


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def child(case: dict) -> dict:
    """Run one case in this (fresh) process and return its measurements."""
    import torch

    if "queue" in case:  # the memory-queue comparison (--queue)
        return queue_child(case)
    torch.set_num_threads(case["threads"])
    m, d, backend, device = case["m"], case["d"], case["backend"], case["device"]
    feats, modality, target = _inputs(m, d, device)
    out: dict = {"baseline_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if backend == "baseline":
        return out
    if backend == "matmul":  # the isfinite check's cost, on its own
        z = torch.cat(feats.unbind(1))
        bool(torch.isfinite(z).all())
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(5):
            bool(torch.isfinite(z).all())
        _sync(device)
        out["isfinite_s"] = (time.perf_counter() - t0) / 5
        out["time_s"] = _matmul_time(torch.cat(feats.unbind(1)), device, case["runs"])
        return out
    if backend == "pml":
        from pytorch_metric_learning.losses import SupConLoss

        pml = SupConLoss(temperature=0.1)
        key = (modality * 12 + target).repeat(2)  # its labels: the (modality, target) pair

        def step(x):
            return pml(torch.cat(x.unbind(1)), key)
    else:
        from agcl.functional import modal_target_supcon_loss

        def step(x):
            return modal_target_supcon_loss(
                x, modality=modality, target=target, temperature=0.1, backend=backend
            )

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_alloc = torch.cuda.memory_allocated()
    times = []
    for _ in range(case["runs"]):
        x = feats.detach().requires_grad_()
        _sync(device)
        t0 = time.perf_counter()
        step(x).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out["time_s"] = min(times)
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        out["peak_cuda_mb"] = (torch.cuda.max_memory_allocated() - base_alloc) / 2**20
    # the yardstick again in this process, after the peak was read: same load, same moment
    out["matmul_s"] = _matmul_time(feats.detach().reshape(-1, d), device, 3)
    out["plain_mm_s"] = _plain_mm_time(feats.detach().reshape(-1, d), device, 3)
    return out


# The single-matmul yardstick holds its M x M output: measured only up to this many bytes.
_PLAIN_MM_MAX_BYTES = 4 * 2**30


def _plain_mm_time(z, device: str, runs: int) -> float | None:
    """Best time of one plain ``torch.mm`` of M x D x M (the second yardstick: one large call,
    faster than the 64-row blocks on CPU); None when its M x M output would pass 4 GiB."""
    import torch

    m = z.shape[0]
    if m * m * z.element_size() > _PLAIN_MM_MAX_BYTES:
        return None
    out = torch.empty(m, m, dtype=z.dtype, device=device)
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(z, z.T, out=out)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _matmul_time(z, device: str, runs: int) -> float:
    """Best time of one M x D x M matmul, done in 64-row blocks (no M x M memory)."""
    import torch

    buf = torch.empty(64, z.shape[0], device=device)
    times = []
    for _ in range(runs):
        _sync(device)
        t0 = time.perf_counter()
        for i in range(0, z.shape[0], 64):
            torch.mm(z[i : i + 64], z.T, out=buf[: min(64, z.shape[0] - i)])
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def _run_child(case: dict) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(case)],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    import torch

    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "loadavg_start": os.getloadavg(),
    }
    for name in ("numpy", "triton", "pytorch_metric_learning"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            info[name] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    try:
        with open("/proc/meminfo") as fh:
            info["mem_total_gb"] = int(fh.readline().split()[1]) / 2**20
    except OSError:
        pass
    return info


def _available_backends(device: str) -> list[str]:
    backends = ["naive", "torch"]
    try:
        import pytorch_metric_learning  # noqa: F401

        backends.append("pml")
    except ImportError:
        pass
    if device == "cuda":
        try:
            import triton  # noqa: F401

            backends.append("triton")
        except ImportError:
            pass
    return backends


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description="modal-target loss backends: time and memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="small M smoke run")
    parser.add_argument("--ms", type=int, nargs="*", help="rows M (default 4096 16384 65536)")
    parser.add_argument("--ds", type=int, nargs="*", help="feature dims D (default 128 256)")
    parser.add_argument("--backends", nargs="*", help="subset of naive torch pml triton")
    parser.add_argument("--max-gb", type=float, default=6.0, help="skip cases estimated above this")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/results/...)")
    parser.add_argument(
        "--queue",
        action="store_true",
        help="only the memory-queue case: B=512 against K=65536 queued rows, D=128",
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return {}
    if args.queue:
        return queue_main(args)
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ms = args.ms or ([256] if args.quick else [4096, 16384, 65536])
    ds = args.ds or ([32] if args.quick else [128, 256])
    info, results = _machine(), []
    for d in ds:
        for m in ms:
            runs = 3 if m <= 4096 else (2 if m <= 16384 else 1)
            base = _run_child(
                dict(m=m, d=d, backend="baseline", device=device, runs=1, threads=args.threads)
            )
            ref = _run_child(
                dict(m=m, d=d, backend="matmul", device=device, runs=3, threads=args.threads)
            )
            for backend in _available_backends(device):
                if args.backends and backend not in args.backends:
                    continue
                est_gb = (MEM_M2.get(backend, 0.0) * m * m * 4 + 8 * m * d * 4) / 2**30
                row = dict(
                    m=m,
                    d=d,
                    backend=backend,
                    matmul_s=ref.get("time_s"),
                    matmul_separate_s=ref.get("time_s"),
                    isfinite_s=ref.get("isfinite_s"),
                    est_gb=est_gb,
                )
                if est_gb > args.max_gb:
                    row["skipped"] = f"estimated {est_gb:.1f} GB > --max-gb {args.max_gb}"
                else:
                    res = _run_child(
                        dict(
                            m=m,
                            d=d,
                            backend=backend,
                            device=device,
                            runs=runs,
                            threads=args.threads,
                        )
                    )
                    row.update(res)
                    if "peak_rss_mb" in res:
                        row["mem_mb"] = res.get(
                            "peak_cuda_mb", res["peak_rss_mb"] - base["baseline_rss_mb"]
                        )
                results.append(row)
                print(_fmt(row, results), flush=True)
    info["loadavg_end"] = os.getloadavg()
    report = {"machine": info, "results": results}
    out = (
        args.out
        or ROOT / "benchmarks" / "results" / f"bench_loss_{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    _targets(results)
    _markdown(results)
    print(f"wrote {out}")
    return report


def _naive(row: dict, results: list[dict]) -> dict | None:
    return next(
        (
            r
            for r in results
            if r["m"] == row["m"]
            and r["d"] == row["d"]
            and r["backend"] == "naive"
            and "time_s" in r
        ),
        None,
    )


def _fmt(row: dict, results: list[dict]) -> str:
    head = f"M={row['m']:6d} D={row['d']:4d} {row['backend']:7s}"
    if "skipped" in row or "error" in row:
        return f"{head} {row.get('skipped') or 'ERROR ' + row['error']}"
    naive = _naive(row, results)
    t_ratio = row["time_s"] / naive["time_s"] if naive else float("nan")
    m_ratio = row["mem_mb"] / naive["mem_mb"] if naive and naive["mem_mb"] > 0 else float("nan")
    check = row["isfinite_s"] / row["time_s"] if row.get("isfinite_s") else float("nan")
    plain = row["time_s"] / row["plain_mm_s"] if row.get("plain_mm_s") else float("nan")
    return (
        f"{head} time {row['time_s']:8.3f}s = {row['time_s'] / row['matmul_s']:5.2f}x matmul "
        f"{plain:5.2f}x one mm "
        f"({t_ratio:5.3f}x naive)  peak +{row['mem_mb']:8.1f} MB ({m_ratio:5.3f}x naive)  "
        f"isfinite {100 * check:.2f}% of fwd+bwd"
    )


def _markdown(results: list[dict]) -> None:
    """The table again, as Markdown (for docs/performance.md)."""
    print(
        "| M | D | backend | fwd+bwd (s) | x matmul | x naive time | peak above baseline (MB) "
        "| x naive memory | x one mm |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        head = f"| {r['m']} | {r['d']} | {r['backend']} |"
        if "time_s" not in r:
            print(f"{head} {r.get('skipped') or r.get('error')} | | | | |")
            continue
        naive = _naive(r, results)
        t = f"{r['time_s'] / naive['time_s']:.3f}" if naive else "-"
        mem = f"{r['mem_mb'] / naive['mem_mb']:.3f}" if naive and naive["mem_mb"] > 0 else "-"
        one = f"{r['time_s'] / r['plain_mm_s']:.2f}" if r.get("plain_mm_s") else "-"
        print(
            f"{head} {r['time_s']:.3f} | {r['time_s'] / r['matmul_s']:.2f} | {t} | "
            f"{r['mem_mb']:.0f} | {mem} | {one} |"
        )


def _targets(results: list[dict]) -> None:
    def get(m, backend):
        return next(
            (
                r
                for r in results
                if r["m"] == m and r["d"] == 128 and r["backend"] == backend and "time_s" in r
            ),
            None,
        )

    torch_16k, naive_16k, torch_64k = get(16384, "torch"), get(16384, "naive"), get(65536, "torch")
    lines = []
    if torch_16k and naive_16k:
        lines.append(
            f"M=16384 torch/naive time {torch_16k['time_s'] / naive_16k['time_s']:.3f} "
            "(target <= 0.5)"
        )
        lines.append(
            f"M=16384 torch/naive peak {torch_16k['mem_mb'] / naive_16k['mem_mb']:.3f} "
            "(target <= 0.1)"
        )
    if torch_16k:
        lines.append(
            f"M=16384 torch fwd+bwd {torch_16k['time_s'] / torch_16k['matmul_s']:.2f}x matmul "
            "(target <= 4)"
        )
    if torch_64k:
        lines.append(
            f"M=65536 torch peak RSS {torch_64k['peak_rss_mb'] / 1024:.2f} GB in all, "
            f"{torch_64k['mem_mb'] / 1024:.2f} GB above baseline (target < 2)"
        )
    for line in lines:
        print("target:", line)


# --- memory queue: agcl's ModalTargetSupConLoss(queue_size=K) against pytorch-metric-learning's
# CrossBatchMemory(SupConLoss, memory_size=K). Both queues are pre-filled in place (K random unit
# rows with (modality, target) keys); one case per fresh process; "extra peak" is the peak RSS
# (CUDA: max allocated) reached during the timed forward + backward steps minus the one before
# them (inputs and the filled queue already held). PML's contrast set is its K memory rows (the
# current batch enqueued among them), agcl's the B batch rows plus K queued rows: agcl does
# slightly more work.


def queue_child(case: dict) -> dict:
    """One queue case (``case["queue"]`` in ``agcl``, ``pml``) in this process."""
    import torch

    torch.set_num_threads(case["threads"])
    b, k, d, device = case["b"], case["k"], case["d"], case["device"]
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(b, d, generator=gen).to(device)
    mod = torch.randint(0, 2, (b,), generator=gen).to(device)
    tgt = torch.randint(0, 12, (b,), generator=gen).to(device)
    if case["queue"] == "agcl":
        from agcl import ModalTargetSupConLoss

        loss_fn = ModalTargetSupConLoss(0.1, queue_size=k, queue_dim=d).to(device)
        mem, keys = loss_fn.queue_features, loss_fn.queue_keys
        keys[:, 0].random_(0, 2, generator=gen)
        keys[:, 1].random_(0, 12, generator=gen)
        loss_fn.queue_state.copy_(torch.tensor([k, 0, 2]))

        def step(x):
            return loss_fn(x, modality=mod, target=tgt)
    else:
        from pytorch_metric_learning.losses import CrossBatchMemory, SupConLoss

        loss_fn = CrossBatchMemory(SupConLoss(temperature=0.1), d, memory_size=k).to(device)
        mem = loss_fn.embedding_memory
        loss_fn.label_memory.random_(0, 24, generator=gen)
        loss_fn.has_been_filled = True
        key = mod * 12 + tgt  # its labels: the (modality, target) pair

        def step(x):
            return loss_fn(x, key)

    mem.copy_(torch.randn(k, d, generator=gen))
    mem.div_(torch.linalg.vector_norm(mem, dim=1, keepdim=True))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before_cuda = torch.cuda.memory_allocated() if device == "cuda" else 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times = []
    for _ in range(case["runs"]):
        x = x0.clone().requires_grad_()
        _sync(device)
        t0 = time.perf_counter()
        step(x).backward()
        _sync(device)
        times.append(time.perf_counter() - t0)
    out = {
        "time_s": min(times),
        "times_s": times,
        "extra_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before,
    }
    if device == "cuda":
        out["extra_peak_mb"] = (torch.cuda.max_memory_allocated() - before_cuda) / 2**20
    return out


def queue_main(args: argparse.Namespace) -> dict:
    """Run the queue comparison, print a table with the ratios, write JSON."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    b, k, d = (64, 2048, 32) if args.quick else (512, 65536, 128)
    info, results = _machine(), []
    impls = ["agcl", "pml"]
    try:
        import pytorch_metric_learning  # noqa: F401
    except ImportError:
        impls = ["agcl"]
    for impl in impls:
        res = _run_child(
            dict(queue=impl, b=b, k=k, d=d, device=device, runs=3, threads=args.threads)
        )
        results.append(dict(queue=impl, b=b, k=k, d=d, **res))
    info["loadavg_end"] = os.getloadavg()
    rows = {r["queue"]: r for r in results}
    print(
        f"| queue (B={b}, K={k}, D={d}) | fwd+bwd (s) | x PML time | extra peak (MB) | "
        "x PML memory |"
    )
    print("|---|---|---|---|---|")
    for r in results:
        p = rows.get("pml", {})
        t_ratio = r["time_s"] / p["time_s"] if "time_s" in r and "time_s" in p else float("nan")
        m_ratio = (
            r["extra_peak_mb"] / p["extra_peak_mb"]
            if "extra_peak_mb" in r and p.get("extra_peak_mb")
            else float("nan")
        )
        name = (
            "agcl ModalTargetSupConLoss(queue_size=K)"
            if r["queue"] == "agcl"
            else "PML CrossBatchMemory(SupConLoss, memory_size=K)"
        )
        if "error" in r:
            print(f"| {name} | error: {r['error']} | | | |")
            continue
        print(
            f"| {name} | {r['time_s']:.3f} | {t_ratio:.3f} | {r['extra_peak_mb']:.1f} | "
            f"{m_ratio:.3f} |"
        )
    report = {"machine": info, "results": results}
    out = (
        args.out
        or ROOT
        / "benchmarks"
        / "results"
        / f"bench_loss_queue_{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return report


if __name__ == "__main__":
    main()
