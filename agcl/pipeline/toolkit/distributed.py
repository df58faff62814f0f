"""Running stages 2 and 3 under ``torchrun`` (DistributedDataParallel).

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``
and ``MASTER_PORT``; :func:`init_from_env` starts the process group from them (gloo on CPU,
nccl on CUDA). Rank 0 writes checkpoints, logs and results; the others wait at barriers.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = [
    "all_mean",
    "all_true",
    "barrier",
    "init_distributed",
    "init_from_env",
    "is_distributed",
    "is_main",
    "rank",
    "world_size",
    "wrap_ddp",
]


def init_from_env(device: str | torch.device = "cpu") -> bool:
    """Initialise the default process group from torchrun's variables; ``False`` when
    WORLD_SIZE <= 1."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_mean(value: float, device: str | torch.device = "cpu") -> float:
    """The mean of a Python float over ranks (the value itself when not distributed)."""
    if not is_distributed():
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / dist.get_world_size()


def all_true(flag: bool, device: str | torch.device = "cpu") -> bool:
    """Whether ``flag`` holds on every rank (itself outside torchrun)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def init_distributed(device: str | torch.device = "cpu") -> tuple[int, int]:
    """Start torch.distributed from torchrun's environment (if any); returns ``(rank, world_size)``.

    A no-op returning ``(0, 1)`` outside torchrun. gloo on CPU, nccl on CUDA.

    Examples:
        >>> init_distributed("cpu")
        (0, 1)
    """
    init_from_env(device)
    return rank(), world_size()


def wrap_ddp(model: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``model`` in DistributedDataParallel under torchrun (itself otherwise)."""
    if not is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    if dev.type != "cuda":
        return DistributedDataParallel(model)
    # "cuda" alone is the device init_from_env selected for this rank (LOCAL_RANK)
    return DistributedDataParallel(
        model, device_ids=[dev.index if dev.index is not None else torch.cuda.current_device()]
    )
