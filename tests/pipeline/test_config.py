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


# --- every field validated when the config is built (issue 11, row 6) ---
import dataclasses  # noqa: E402

from agcl.pipeline import CoarseConfig, PretrainConfig, SegmentConfig  # noqa: E402


@pytest.mark.parametrize(
    "key, value, err",
    [
        ("pretrain.method", "foo", ValueError),
        ("pretrain.epochs", -1, ValueError),
        ("pretrain.epochs", 0, ValueError),
        ("pretrain.temperature", 0, ValueError),
        ("pretrain.temperature", float("inf"), ValueError),
        ("pretrain.temperature", "0.1", TypeError),
        ("pretrain.partial_weight", 1.5, ValueError),
        ("pretrain.output_stride", 12, ValueError),
        ("pretrain.patch_size", 64.0, TypeError),
        ("pretrain.batch_size", True, TypeError),
        ("pretrain.max_patches_per_volume", -1, ValueError),
        ("pretrain.aug_scale", (0.7, 0.3), ValueError),
        ("pretrain.aug_scale", (0.0, 0.5), ValueError),
        ("pretrain.encoder", 5, TypeError),
        ("pretrain.lr", float("nan"), ValueError),
        ("segment.threshold", 2, ValueError),
        ("segment.threshold", 1.0, ValueError),
        ("segment.stride", 0, ValueError),
        ("segment.stride", 65, ValueError),  # above quick's patch size 64
        ("coarse.epochs", "abc", TypeError),
        ("coarse.shape", (16, 16), ValueError),
        ("coarse.shape", (16, 16, 0), ValueError),
        ("coarse.source", "truth", ValueError),
        ("coarse.margin_mm", -1.0, ValueError),
        ("seed", 1.5, TypeError),
        ("clip_hu", (250, -175), ValueError),
        ("percentiles", (1, 101), ValueError),
        ("organs", (1, 1), ValueError),
        ("organs", (0, 6), ValueError),
        ("organs", "16", TypeError),
        ("coarse", 5, TypeError),
        ("coarse.attention_threshold", 0.0, ValueError),
        ("coarse.attention_threshold", 1.5, ValueError),
        ("coarse.spacing_mm", (2.0, 2.0), ValueError),
        ("coarse.spacing_mm", (2.0, 0.0, 3.0), ValueError),
        ("coarse.spacing_mm", "2mm", TypeError),
        ("coarse.crop_shape", (16, 16, 0), ValueError),
        ("coarse.crop_shape", (16.0, 16, 8), TypeError),
        ("coarse.foreground_fraction", 1.5, ValueError),
        ("coarse.foreground_fraction", -0.1, ValueError),
        ("coarse.crops_per_case", 0, ValueError),
        ("coarse.overlap", 1.0, ValueError),
        ("coarse.augment", 1, TypeError),
        ("coarse.lr_decay", "yes", TypeError),
        ("coarse.rotation_deg", -5.0, ValueError),
        ("coarse.rotation_deg", "15", TypeError),
        ("coarse.zoom", 1.0, ValueError),
        ("coarse.amp", "half", ValueError),
        ("pretrain.queue_size", -1, ValueError),
        ("pretrain.queue_size", 2.5, TypeError),
        ("pretrain.steps_per_epoch", 0, ValueError),
        ("segment.steps_per_epoch", "20", TypeError),
        ("segment.coarse_weight", 1.5, ValueError),
        ("segment.coarse_weight", -0.1, ValueError),
        ("segment.coarse_weight", "0.5", TypeError),
        ("segment.window", "cosine", ValueError),
    ],
)
def test_override_refuses_bad_values_naming_the_field(key, value, err):
    with pytest.raises(err, match=key.replace(".", r"\.").replace("organs", "organs")):
        PipelineConfig.quick().override(**{key: value})


def test_config_validated_on_construction_and_from_dict():
    with pytest.raises(ValueError, match="pretrain.method"):
        PretrainConfig(method="foo")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="segment.threshold"):
        dataclasses.replace(SegmentConfig(), threshold=-0.1)
    data = PipelineConfig.quick().to_dict()
    data["coarse"]["epochs"] = "abc"
    with pytest.raises(TypeError, match="coarse.epochs"):
        PipelineConfig.from_dict(data)
    with pytest.raises(TypeError, match="data must be a dict"):
        PipelineConfig.from_dict([1])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pretrain must be a PretrainConfig"):
        PipelineConfig(pretrain={"epochs": 1})  # type: ignore[arg-type]


def test_float_fields_accept_ints_and_lists_become_tuples():
    cfg = PipelineConfig.quick().override(
        **{"pretrain.lr": 1, "coarse.shape": [8, 8, 4], "organs": [1, 6]}
    )
    assert cfg.pretrain.lr == 1.0 and isinstance(cfg.pretrain.lr, float)
    assert cfg.coarse.shape == (8, 8, 4) and cfg.organs == (1, 6)


@pytest.mark.parametrize("cls", [CoarseConfig, PretrainConfig, SegmentConfig, PipelineConfig])
def test_every_field_has_a_rule(cls):
    assert {f.name for f in dataclasses.fields(cls)} == set(cls.RULES)


def test_inference_blending_fields_round_trip():
    cfg = PipelineConfig.quick().override(
        **{"segment.coarse_weight": 0.5, "segment.window": "gaussian"}
    )
    assert cfg.segment.coarse_weight == 0.5 and cfg.segment.window == "gaussian"
    assert PipelineConfig.from_dict(cfg.to_dict()) == cfg
    assert (
        PipelineConfig.quick().segment.coarse_weight == 0.5
    )  # stage 1's probabilities join the fusion
    old = PipelineConfig.quick().to_dict()
    del (
        old["segment"]["coarse_weight"],
        old["segment"]["window"],
    )  # a checkpoint written before the fields
    assert PipelineConfig.from_dict(old).segment.window == "uniform"


def test_coarse_voxel_size_fields():
    quick, paper = PipelineConfig.quick(), PipelineConfig.paper()
    # millimetres, not a fixed shape: every scan keeps its extent (2-3 mm in-plane, 3-5 mm axial)
    assert paper.coarse.spacing_mm == (2.0, 2.0, 3.0) and quick.coarse.spacing_mm == (5.5, 5.5, 5.0)
    assert paper.coarse.foreground_fraction == pytest.approx(0.33) and paper.coarse.augment is True
    cfg = quick.override(**{"coarse.spacing_mm": [3, 3, 4], "coarse.crop_shape": [32, 32, 16]})
    assert cfg.coarse.spacing_mm == (3.0, 3.0, 4.0) and isinstance(cfg.coarse.spacing_mm[0], float)
    assert cfg.coarse.crop_shape == (32, 32, 16)
    fixed = quick.override(**{"coarse.spacing_mm": None})
    assert fixed.coarse.spacing_mm is None
    assert PipelineConfig.from_dict(fixed.to_dict()) == fixed


def test_attention_channel_field():
    quick, paper = PipelineConfig.quick(), PipelineConfig.paper()
    assert paper.coarse.attention_channel == "mask"  # the paper's binary attention
    assert (
        quick.coarse.attention_channel == "probability"
    )  # measured better on the phantoms (results.md)
    # a checkpoint written before the field was trained on binary masks and still reads so
    old = quick.to_dict()
    del old["coarse"]["attention_channel"]
    assert PipelineConfig.from_dict(old).coarse.attention_channel == "mask"
    with pytest.raises(ValueError, match="coarse.attention_channel"):
        quick.override(**{"coarse.attention_channel": "soft"})
