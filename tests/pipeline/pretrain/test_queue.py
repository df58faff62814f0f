"""``pretrain.queue_size`` reaches stage 2's loss (the memory queue); off by default."""

from __future__ import annotations

import pytest

from agcl import ModalTargetSupConLoss
from agcl.pipeline import PipelineConfig
from agcl.pipeline.pretrain.train import pretrain_encoder


def test_queue_size_field_default_and_override():
    cfg = PipelineConfig.quick()
    assert cfg.pretrain.queue_size == 0
    assert cfg.override(**{"pretrain.queue_size": 64}).pretrain.queue_size == 64


def test_stage2_builds_the_loss_with_the_queue(monkeypatch, tmp_path):
    seen = {}

    class Stop(Exception):
        pass

    def fake_init(self, *args, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(ModalTargetSupConLoss, "__init__", fake_init)
    cfg = PipelineConfig.quick().override(**{"pretrain.queue_size": 32, "pretrain.method": "agcl"})
    with pytest.raises(Stop):
        pretrain_encoder([], cfg, [1], tmp_path, num_modalities=1)
    assert seen["queue_size"] == 32


def test_queue_needs_a_labelled_method(tmp_path):
    cfg = PipelineConfig.quick().override(**{"pretrain.queue_size": 8, "pretrain.method": "sscl"})
    with pytest.raises(ValueError, match="queue_size"):
        pretrain_encoder([], cfg, [1], tmp_path, num_modalities=1)


def test_set_flag_of_the_command_reaches_the_field():
    from agcl.cli.train import config_for, parse_args

    args = parse_args(["--set", "pretrain.queue_size=4096"])
    assert config_for(args, "agcl").pretrain.queue_size == 4096
