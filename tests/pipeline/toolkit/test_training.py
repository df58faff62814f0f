from __future__ import annotations

import pytest
import torch

from agcl.pipeline import PipelineConfig
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.training import MixedPrecision, amp_dtype, fit


def _run(tmp_path, steps_per_epoch):
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[int] = []

    def step(batch: int) -> float:
        seen.append(batch)
        return float(batch)

    records = []
    fit(
        stage="pretrain",
        epochs=2,
        ckpt_path=tmp_path / "c.pt",
        settings={},
        model=model,
        optimizer=opt,
        epoch_batches=lambda e: iter(range(5)),
        step=step,
        resume=False,
        log=EpochLog(tmp_path / "e.jsonl"),
        callback=lambda s, e, r: records.append(r),
        steps_per_epoch=steps_per_epoch,
    )
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
    cfg = PipelineConfig.quick().override(
        **{"pretrain.steps_per_epoch": 3, "segment.steps_per_epoch": 1}
    )
    assert cfg.pretrain.steps_per_epoch == 3 and cfg.segment.steps_per_epoch == 1
    assert PipelineConfig.paper().pretrain.steps_per_epoch is None
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg


def test_amp_dtype_resolves_each_setting(monkeypatch):
    assert amp_dtype("off", "cpu") is None and amp_dtype("off", "cuda") is None
    assert amp_dtype("bf16", "cpu") is torch.bfloat16
    assert amp_dtype("fp16", "cuda") is torch.float16 and amp_dtype("auto", "cuda") is torch.float16
    with pytest.raises(ValueError, match="fp16.*CUDA"):
        amp_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="coarse.amp must be one of"):
        amp_dtype("half", "cpu", "coarse.amp")
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert amp_dtype("auto", "cpu") is None  # emulated bf16 would be slower than float32
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert amp_dtype("auto", "cpu") is torch.bfloat16


def test_mixed_precision_forward_casts_back_and_fp16_goes_through_the_scaler():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x = torch.randn(8, 4)
    off = MixedPrecision("off", "cpu")
    assert off.forward(model) is model and off.scaler is None
    bf16 = MixedPrecision("bf16", "cpu")
    out = bf16.forward(model)(x)
    assert out.dtype == torch.float32 and not torch.equal(
        out, model(x)
    )  # computed in bf16, returned as fp32
    assert torch.allclose(out, model(x), atol=0.05)
    assert bf16.forward(lambda v: (v, 1))(x)[1] == 1  # non-tensor outputs pass through
    # CUDA's fp16 branch, exercised on the CPU (autocast and GradScaler both take "cpu")
    scaled = []

    class Spy(torch.amp.GradScaler):
        def scale(self, outputs):
            scaled.append(float(outputs.detach()))
            return super().scale(outputs)

    fp16 = MixedPrecision("bf16", "cpu")
    fp16.dtype, fp16.scaler = torch.float16, Spy("cpu", init_scale=2.0**10)
    before = model.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = fp16.forward(model)(x).square().mean()
    fp16.step(loss, opt)
    assert not torch.equal(model.weight, before) and torch.isfinite(model.weight).all()
    assert (
        len(scaled) == 1 and fp16.scaler.get_scale() == 2.0**10
    )  # scaled once; finite: the scale is kept
    with pytest.raises(ValueError, match="segment.amp"):
        MixedPrecision("fp16", "cpu", "segment.amp")
