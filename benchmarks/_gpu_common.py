"""Plumbing shared by the GPU benchmark scripts (gpu_loss.py, gpu_pipeline.py, gpu_tune.py).

The clock (CUDA events on a GPU, ``time.perf_counter`` on the CPU), the deadline a script
sizes itself to, the record of the machine and versions, and a JSON file rewritten after every
row so that a run stopped from outside still leaves what it measured. Not a public module:
the scripts import it as ``_gpu_common`` (their own folder is first on ``sys.path``).
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable


class Deadline:
    """Seconds since the script started, against an optional limit (``None``: no limit)."""

    def __init__(self, seconds: float | None) -> None:
        self.start = time.perf_counter()
        self.seconds = seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return math.inf if self.seconds is None else self.seconds - self.elapsed()

    def passed(self) -> bool:
        return self.left() <= 0


def timed(torch: Any, device: Any, fn: Callable[[], Any]) -> float:
    """Seconds of one call of ``fn``: CUDA events around it on a GPU (waiting for the end
    event), the wall clock on the CPU."""
    if getattr(device, "type", device) == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def best_time(torch: Any, device: Any, fn: Callable[[], Any], runs: int) -> float:
    """The fastest of ``runs`` calls (after whatever warm-up the caller did)."""
    return min(timed(torch, device, fn) for _ in range(max(1, runs)))


def machine(torch: Any) -> dict[str, Any]:
    """Python, platform, torch / CUDA / cuDNN / triton versions and the GPU, as one dict."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "triton_interpret": os.environ.get("TRITON_INTERPRET"),
    }
    try:
        info["triton"] = __import__("triton").__version__
    except ImportError:
        info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_capability=list(torch.cuda.get_device_capability(0)),
            gpu_memory_gib=props.total_memory / 2**30,
            cudnn=torch.backends.cudnn.version(),
        )
    return info


def write_json(path: str | os.PathLike[str] | None, data: Any) -> None:
    """Write ``data`` to ``path`` whole (a temporary file, then a rename); no-op for ``None``."""
    if path is None:
        return
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, out)


def cuda_peak_start(torch: Any, device: Any) -> int:
    """Reset the CUDA peak counter; returns the bytes allocated now (0 on the CPU)."""
    if getattr(device, "type", device) != "cuda":
        return 0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    return int(torch.cuda.memory_allocated())


def cuda_peak_mb(torch: Any, device: Any, base: int) -> float | None:
    """MiB allocated at the peak since :func:`cuda_peak_start`, above ``base`` (None on CPU)."""
    if getattr(device, "type", device) != "cuda":
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20
