"""Two gloo processes on CPU: the gathered loss equals the single-process loss on the whole batch,
and DDP-style gradient averaging over ranks equals the single-process gradient."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agcl import ModalTargetSupConLoss

pytestmark = pytest.mark.distributed

# (name, per-rank sample counts, feature layout, label kind, reduction, partial_weight, backend)
CASES = [
    ("pairs-mean", (4, 4), "3d", "pair", "mean", 0.0, "torch"),
    ("pairs-partial-unequal", (5, 3), "3d", "pair", "mean", 0.5, "torch"),
    ("sscl-sum-unequal", (2, 6), "3d", "none", "sum", 0.0, "torch"),
    ("rows-none", (6, 4), "2d", "labels", "none", 0.0, "torch"),
    ("naive-unequal", (3, 5), "3d", "target", "mean", 0.0, "naive"),
]


def _batch(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, 6, generator=gen, dtype=torch.float64)
    mod, tgt = torch.randint(0, 2, (n,), generator=gen), torch.randint(0, 3, (n,), generator=gen)
    return x, mod, tgt


def _loss(model, x, mod, tgt, layout, kind, reduction, w, backend, gather):
    loss_fn = ModalTargetSupConLoss(
        0.2,
        partial_weight=w,
        reduction=reduction,
        backend=backend,
        gather_distributed=gather,
        block_size=3,
    )
    feats = model(x)
    labels = {
        "pair": dict(modality=mod, target=tgt),
        "target": dict(target=tgt),
        "labels": dict(labels=tgt),
        "none": {},
    }[kind]
    if layout == "2d":  # (M, D) rows, per-row labels
        feats = torch.cat(feats.unbind(1))
        labels = {k: v.repeat(2) for k, v in labels.items()}
    return loss_fn(feats, **labels)


def _worker(rank: int, world: int, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        for i, (name, sizes, layout, kind, reduction, w, backend) in enumerate(CASES):
            torch.manual_seed(0)
            model = torch.nn.Linear(6, 4).double()
            x, mod, tgt = _batch(sum(sizes), seed=i)
            # single process, whole batch
            full = _loss(model, x, mod, tgt, layout, kind, reduction, w, backend, gather=False)
            full_grads = torch.autograd.grad(full.sum(), list(model.parameters()))
            # this rank's share, gathered
            lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
            local = _loss(
                model,
                x[lo:hi],
                mod[lo:hi],
                tgt[lo:hi],
                layout,
                kind,
                reduction,
                w,
                backend,
                gather=True,
            )
            grads = torch.autograd.grad(local.sum(), list(model.parameters()))
            for g in grads:  # what DistributedDataParallel does: average over ranks
                dist.all_reduce(g)
                g /= world
            if reduction == "none":  # this rank's rows of the global view-major layout
                want = full[torch.cat([torch.arange(lo, hi), sum(sizes) + torch.arange(lo, hi)])]
            else:
                want = full
            # float64 throughout: 1e-10 is ulps times the batch size, far below any real error
            torch.testing.assert_close(
                local.detach(),
                want.detach(),
                rtol=1e-10,
                atol=1e-10,
                msg=lambda m, name=name: f"{name}: value {m}",
            )
            for g, ref in zip(grads, full_grads):
                torch.testing.assert_close(
                    g, ref, rtol=1e-10, atol=1e-10, msg=lambda m, name=name: f"{name}: grad {m}"
                )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_process_gather_equals_single_process():
    mp.spawn(_worker, args=(2, _free_port()), nprocs=2, join=True)


def test_gather_flag_without_process_group_is_single_process():
    x, mod, tgt = _batch(6, seed=0)
    a = ModalTargetSupConLoss(gather_distributed=True)(x, modality=mod, target=tgt)
    b = ModalTargetSupConLoss()(x, modality=mod, target=tgt)
    assert torch.equal(a, b)
