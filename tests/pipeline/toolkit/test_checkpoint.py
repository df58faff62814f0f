from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.pipeline import EpochLog, capture_rng, load_stage, restore_rng, save_stage


def test_save_load_round_trip_weights_only(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    gen = torch.Generator().manual_seed(5)
    npgen = np.random.default_rng(7)
    path = save_stage(
        tmp_path / "s.pt",
        stage="pretrain",
        epoch=1,
        epochs=3,
        config={"lr": 0.1},
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        rng=capture_rng({"sampler": gen, "np": npgen}),
    )
    # the next draws after the checkpoint
    want_t, want_g, want_n = torch.rand(3), torch.rand(3, generator=gen), npgen.random(3)
    torch.manual_seed(123)
    ckpt = load_stage(path, stage="pretrain", config={"lr": 0.1})
    assert ckpt["epoch"] == 1 and ckpt["complete"] is False
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(ckpt["model"])
    torch.testing.assert_close(fresh.weight, model.weight, rtol=0, atol=0)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(ckpt["optimizer"])
    gen2, npgen2 = torch.Generator(), np.random.default_rng(0)
    restore_rng(ckpt["rng"], {"sampler": gen2, "np": npgen2})
    torch.testing.assert_close(torch.rand(3), want_t, rtol=0, atol=0)
    torch.testing.assert_close(torch.rand(3, generator=gen2), want_g, rtol=0, atol=0)
    np.testing.assert_array_equal(npgen2.random(3), want_n)


def test_load_missing_mismatch_and_wrong_stage(tmp_path):
    assert load_stage(tmp_path / "none.pt", stage="coarse") is None
    path = save_stage(
        tmp_path / "c.pt", stage="coarse", epoch=2, epochs=2, config={"lr": 1.0}, model={}
    )
    assert load_stage(path, stage="coarse")["complete"] is True
    with pytest.raises(ValueError, match="lr"):
        load_stage(path, stage="coarse", config={"lr": 2.0})
    with pytest.raises(ValueError, match="segment"):
        load_stage(path, stage="segment")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        load_stage(tmp_path / "bad.pt", stage="coarse")


def test_epoch_log_appends_json_lines(tmp_path):
    log = EpochLog(tmp_path / "run" / "epochs.jsonl")
    log.write(stage="coarse", epoch=1, loss=0.5)
    log.write(stage="coarse", epoch=2, loss=0.25)
    records = log.read()
    assert [(r["epoch"], r["loss"]) for r in records] == [(1, 0.5), (2, 0.25)]
    assert all("time" in r for r in records)
    silent = EpochLog(tmp_path / "other.jsonl", enabled=False)
    silent.write(epoch=1)
    assert silent.read() == []
