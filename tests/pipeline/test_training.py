from __future__ import annotations

import pytest
import torch

from agcl.pipeline import PipelineConfig
from agcl.pipeline._training import fit
from agcl.pipeline.checkpoint import EpochLog


def _run(tmp_path, steps_per_epoch):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[int] = []

    def step(batch: int) -> float:
        seen.append(batch)
        return float(batch)

    records = []
    fit(stage="pretrain", epochs=2, ckpt_path=tmp_path / "c.pt", settings={}, model=model, optimizer=opt,
        epoch_batches=lambda e: iter(range(5)), step=step, resume=False, log=EpochLog(tmp_path / "e.jsonl"),
        callback=lambda s, e, r: records.append(r), steps_per_epoch=steps_per_epoch)
    return seen, records


def test_steps_per_epoch_caps_each_epoch(tmp_path):
    seen, records = _run(tmp_path, 2)
    assert seen == [0, 1, 0, 1]
    assert [r["steps"] for r in records] == [2, 2]
    seen, records = _run(tmp_path, None)
    assert seen == list(range(5)) * 2 and [r["steps"] for r in records] == [5, 5]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_steps_per_epoch_rejects_bad_values(tmp_path, bad):
    with pytest.raises(ValueError, match="steps_per_epoch"):
        _run(tmp_path, bad)


def test_steps_per_epoch_is_a_config_field_settable_by_override():
    cfg = PipelineConfig.quick().override(**{"pretrain.steps_per_epoch": 3, "segment.steps_per_epoch": 1})
    assert cfg.pretrain.steps_per_epoch == 3 and cfg.segment.steps_per_epoch == 1
    assert PipelineConfig.paper().pretrain.steps_per_epoch is None
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
