"""Two gloo processes on CPU: with ``gather_distributed=True`` every rank enqueues the same
global batch, so the queues stay identical across ranks, and each call's loss equals the
single-process loss (with its own queue) of the concatenated global batch."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agcl import ModalTargetSupConLoss

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # ~18 s: two spawned processes
SIZES = (3, 5)  # unequal per-rank batches


def _worker(rank: int, world: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        kw = dict(partial_weight=0.5, block_size=2, queue_size=11)
        dist_fn = ModalTargetSupConLoss(0.2, gather_distributed=True, **kw)
        single = ModalTargetSupConLoss(0.2, **kw)
        gen = torch.Generator().manual_seed(0)
        lo, hi = sum(SIZES[:rank]), sum(SIZES[: rank + 1])
        for _ in range(4):  # the queue fills (11 rows < 3 global batches of 8) and wraps
            x = torch.randn(sum(SIZES), 6, generator=gen, dtype=torch.float64)
            mod, tgt = (
                torch.randint(0, 2, (8,), generator=gen),
                torch.randint(0, 3, (8,), generator=gen),
            )
            want = single(x, modality=mod, target=tgt)
            got = dist_fn(x[lo:hi], modality=mod[lo:hi], target=tgt[lo:hi])
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
            for buf in (
                dist_fn.queue_features,
                dist_fn.queue_keys.double(),
                dist_fn.queue_state.double(),
            ):
                parts = [torch.empty_like(buf) for _ in range(world)]
                dist.all_gather(parts, buf.contiguous())
                assert torch.equal(parts[0], parts[1])  # identical on every rank
            for a, b in zip(dist_fn.queue(), single.queue()):
                assert torch.equal(a, b)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_keep_identical_queues():
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2, join=True)
