from __future__ import annotations

import pytest
import torch

from agcl._io import atomic_save, safe_load
from agcl.pipeline import PipelineConfig


def test_paper_defaults():
    cfg = PipelineConfig.paper()
    assert cfg.pretrain.temperature == 0.1
    assert cfg.pretrain.patch_size == 128
    assert cfg.pretrain.patches_per_slice == 30
    assert cfg.pretrain.lr == 5e-4 and cfg.pretrain.batch_size == 4 and cfg.pretrain.epochs == 5
    assert cfg.segment.lr == 1e-4 and cfg.segment.epochs == 10
    assert cfg.segment.aspp_channels == 512
    assert cfg.pretrain.encoder == "resnet50" and cfg.pretrain.projection_dim == 256
    assert cfg.clip_hu == (-175.0, 250.0) and cfg.percentiles == (1.0, 99.0)


def test_quick_is_smaller_and_round_trips_through_a_weights_only_checkpoint(tmp_path):
    quick, paper = PipelineConfig.quick(), PipelineConfig.paper()
    assert quick.pretrain.patch_size < paper.pretrain.patch_size
    assert quick.preset == "quick"
    atomic_save({"config": quick.to_dict(), "w": torch.zeros(1)}, tmp_path / "c.pt")
    assert PipelineConfig.from_dict(safe_load(tmp_path / "c.pt")["config"]) == quick


def test_override_and_errors():
    cfg = PipelineConfig.quick().override(seed=3, **{"segment.threshold": 0.4})
    assert cfg.seed == 3 and cfg.segment.threshold == 0.4
    with pytest.raises(ValueError, match="pretrain.nope"):
        cfg.override(**{"pretrain.nope": 1})
    with pytest.raises(ValueError, match="preset"):
        PipelineConfig.preset_named("huge")
    with pytest.raises(ValueError, match="fields"):
        PipelineConfig.from_dict({"bogus": 1})
