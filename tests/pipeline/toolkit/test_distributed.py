"""Stages 2 and 3 under torch.distributed (2 gloo processes on CPU).

What is compared exactly: BatchNorm makes a per-rank batch differ from the global batch (and
SyncBatchNorm needs a GPU), so the equivalence tests put the BatchNorm layers in eval mode
(running statistics): the stage-2 step (encoder + projection, the modal-target loss with
``gather_distributed=True``) and the stage-3 step (frozen encoder, ASPP decoder with eval-mode
BatchNorm, soft Dice loss). Each rank takes its half of one global batch; after DDP's gradient
averaging and one SGD step the parameters equal a single process's step on the whole batch.
A second test runs the real pipeline (stage 1 on rank 0, stages 2-3 on both ranks with
DistributedSampler) and checks that it trains and that rank 0 writes checkpoints and results.
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from agcl import ModalTargetSupConLoss, SoftDiceLoss
from agcl.pipeline import build_pretrain_model, build_segment_model, pretrain_step, segment_step
from tests.pipeline._tiny import tiny_config

pytestmark = pytest.mark.distributed

B, H = 8, 16  # global batch, patch size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data():
    g = torch.Generator().manual_seed(0)
    v1 = torch.rand(B, 2, H, H, generator=g)
    v2 = torch.rand(B, 2, H, H, generator=g)
    target = torch.tensor([1, 6, 1, 6, 7, 7, 1, 6])
    modality = torch.tensor([0, 0, 1, 1, 0, 1, 0, 1])
    y = (torch.rand(B, H, H, generator=g) > 0.6).long()
    return v1, v2, target, modality, y


def _models():
    cfg = tiny_config()
    torch.manual_seed(1)
    pre = build_pretrain_model(cfg, num_modalities=2, num_organs=3).eval()  # BN: running stats
    torch.manual_seed(2)
    seg = build_segment_model(cfg).eval()
    return pre, seg


def _step(model, loss_of, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = loss_of(model)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


def _single_process():
    v1, v2, target, modality, y = _data()
    pre, seg = _models()
    loss_fn = ModalTargetSupConLoss(0.1)
    l2 = _step(
        pre,
        lambda m: pretrain_step(
            m, v1, v2, method="agcl", target=target, modality=modality, loss_fn=loss_fn
        ),
    )
    l3 = _step(
        seg,
        lambda m: segment_step(
            m,
            torch.cat([v1[:, :1], v2[:, 1:]], 1),
            y,
            SoftDiceLoss(activation="softmax", include_background=False),
        ),
    )
    return pre.state_dict(), seg.state_dict(), l2, l3


def _equivalence_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from torch.nn.parallel import DistributedDataParallel as DDP

        v1, v2, target, modality, y = _data()
        part = slice(rank * B // world, (rank + 1) * B // world)
        pre, seg = _models()
        loss_fn = ModalTargetSupConLoss(0.1, gather_distributed=True)
        l2 = _step(
            DDP(pre),
            lambda m: pretrain_step(
                m,
                v1[part],
                v2[part],
                method="agcl",
                target=target[part],
                modality=modality[part],
                loss_fn=loss_fn,
            ),
        )
        x = torch.cat([v1[:, :1], v2[:, 1:]], 1)
        l3 = _step(
            DDP(seg),
            lambda m: segment_step(
                m, x[part], y[part], SoftDiceLoss(activation="softmax", include_background=False)
            ),
        )
        dist.all_reduce(l3)
        if rank == 0:  # tensors through a file: a queue would share them with a process that exits
            torch.save((pre.state_dict(), seg.state_dict(), l2, l3 / world), out)
    finally:
        dist.destroy_process_group()


def test_two_processes_take_the_same_step_as_one(tmp_path):
    out = tmp_path / "rank0.pt"
    mp.spawn(_equivalence_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    pre_d, seg_d, l2_d, l3_d = torch.load(out, weights_only=True)
    pre_s, seg_s, l2_s, l3_s = _single_process()
    # float32 sums in another order: agreement to ~1e-6 relative; 1e-5 leaves room and is
    # far below the change one step makes (lr 0.1)
    torch.testing.assert_close(l2_d, l2_s, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(l3_d, l3_s, rtol=1e-5, atol=1e-6)
    for key in pre_s:
        torch.testing.assert_close(pre_d[key], pre_s[key], rtol=1e-5, atol=1e-6, msg=key)
    for key in seg_s:
        torch.testing.assert_close(seg_d[key], seg_s[key], rtol=1e-5, atol=1e-6, msg=key)
    # the step changed something, so the comparison is not vacuous
    fresh_pre, fresh_seg = _models()
    assert not torch.equal(
        fresh_pre.state_dict()["projection.fc2.weight"], pre_s["projection.fc2.weight"]
    )
    assert not torch.equal(
        fresh_seg.state_dict()["decoder.classifier.weight"], seg_s["decoder.classifier.weight"]
    )


def _pipeline_worker(rank: int, world: int, port: int, root: str, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from pathlib import Path

        from agcl.pipeline import run_pipeline
        from tests.pipeline._tiny import tiny_cohort

        train, test = tiny_cohort(Path(root) / f"data{rank}")
        epochs: list = []
        cfg = tiny_config(**{"coarse.source": "gt", "pretrain.epochs": 1, "segment.epochs": 1})
        result = run_pipeline(
            train,
            test,
            cfg,
            Path(root) / "run",
            callback=lambda s, e, r: epochs.append((s, r["loss"])),
        )
        queue.put((rank, epochs, sorted(result)))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_pipeline_trains_under_two_processes(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(_pipeline_worker, args=(2, _free_port(), str(tmp_path), queue), nprocs=2, join=True)
    got = dict((r, (e, keys)) for r, e, keys in (queue.get(timeout=60) for _ in range(2)))
    epochs0, keys0 = got[0]
    epochs1, keys1 = got[1]
    # both ranks ran stages 2 and 3 and logged the same rank-averaged losses; only rank 0 ran
    # stage 1
    assert [s for s, _ in epochs0] == ["coarse", "coarse", "pretrain", "segment"]
    assert [s for s, _ in epochs1] == ["pretrain", "segment"]
    assert [loss for s, loss in epochs0 if s != "coarse"] == [loss for _, loss in epochs1]
    assert "mean" in keys0 and keys1 == []  # rank 0 evaluates, the others return {}
    assert (tmp_path / "run" / "checkpoints" / "segment.pt").is_file()
