"""One declared fingerprint per stage: every config field is declared once (fingerprinted by the
stages it changes, or listed as not fingerprinted with the reason), and every field of a stage's
fingerprint changes the resume decision (issue 25; issue 26 row 31: "seed dropped from stage 2's
fingerprint" must be caught)."""

from __future__ import annotations

import re

import pytest
import torch

from agcl.pipeline import PipelineConfig
from agcl.pipeline.run import Manifest
from agcl.pipeline.toolkit.fingerprint import (
    ATTENTION_FIELDS,
    NOT_FINGERPRINTED,
    STAGE_FIELDS,
    components_record,
    flatten,
    stage_fingerprint,
)

_PREPROCESS = {"seed", "clip_hu", "percentiles", "domain"}
_ENCODER = {
    "pretrain.method",
    "pretrain.encoder",
    "pretrain.base_width",
    "pretrain.output_stride",
    "pretrain.patch_size",
    "pretrain.image_channels",
}
_STREAM = {"data.shards", "data.streams", "data.shuffle_buffer", "data.chunk_size"}

#: each stage's fields, written out: a field dropped from (or added to) a fingerprint fails here
PINNED: dict[str, set[str]] = {
    "coarse": {
        "seed",
        "clip_hu",
        "percentiles",
        "coarse.spacing_mm",
        "coarse.shape",
        "coarse.crop_shape",
        "coarse.foreground_fraction",
        "coarse.crops_per_case",
        "coarse.augment",
        "coarse.zoom",
        "coarse.rotation_deg",
        "coarse.lr_decay",
        "coarse.base_channels",
        "coarse.depth",
        "coarse.epochs",
        "coarse.lr",
        "coarse.batch_size",
    },
    "coarse_maps": {"clip_hu", "percentiles", "coarse.overlap"},
    "coarse2d": {
        "seed",
        "coarse2d.encoder",
        "coarse2d.base_width",
        "coarse2d.output_stride",
        "coarse2d.aspp_channels",
        "coarse2d.decoder_channels",
        "coarse2d.low_level_reduced",
        "coarse2d.epochs",
        "coarse2d.optimizer",
        "coarse2d.lr",
        "coarse2d.momentum",
        "coarse2d.weight_decay",
        "coarse2d.batch_size",
        "coarse2d.crop_size",
        "coarse2d.hflip",
    },
    "pretrain": _PREPROCESS
    | _ENCODER
    | _STREAM
    | {
        "pretrain.max_patches_per_volume",
        "pretrain.patches_per_slice",
        "pretrain.temperature",
        "pretrain.partial_weight",
        "pretrain.queue_size",
        "pretrain.epochs",
        "pretrain.lr",
        "pretrain.momentum",
        "pretrain.weight_decay",
        "pretrain.batch_size",
        "pretrain.projection_dim",
        "pretrain.aug_scale",
        "pretrain.aug_degrees",
        "pretrain.aug_ratio",
        "pretrain.aug_hflip",
        "pretrain.aug_intensity_jitter",
        "pretrain.aug_color_distortion",
        "pretrain.steps_per_epoch",
    },
    "segment": _PREPROCESS
    | _ENCODER
    | _STREAM
    | {
        "segment.patches_per_slice",
        "segment.max_patches_per_volume",
        "segment.aspp_channels",
        "segment.decoder",
        "segment.decoder_channels",
        "segment.loss",
        "segment.epochs",
        "segment.lr",
        "segment.batch_size",
        "segment.steps_per_epoch",
        "segment.label_fraction",
    },
}
PINNED_ATTENTION: dict[str, set[str]] = {
    "ct": {
        "coarse.source",
        "coarse.margin_mm",
        "coarse.attention_threshold",
        "coarse.attention_channel",
    },
    "image2d": {
        "coarse.source",
        "coarse2d.attention_threshold",
        "coarse2d.fraction",
        "coarse2d.margin_px",
        "coarse2d.presence_threshold",
    },
}
# the domain each stage runs in (stages 2-3 in both)
CASES = [
    ("coarse", "ct"),
    ("coarse_maps", "ct"),
    ("coarse2d", "image2d"),
    ("pretrain", "ct"),
    ("pretrain", "image2d"),
    ("segment", "ct"),
    ("segment", "image2d"),
]


def _fields() -> set[str]:
    return set(flatten(PipelineConfig().to_dict()))


def test_every_config_field_is_declared_exactly_once():
    fingerprinted = set().union(*STAGE_FIELDS.values(), *ATTENTION_FIELDS.values())
    ignored = set(NOT_FINGERPRINTED)
    fields = _fields()
    # every section is there (coarse2d and data included), so a new field of any section counts
    sections = {name.split(".")[0] for name in fields if "." in name}
    assert sections == {"coarse", "coarse2d", "pretrain", "segment", "data"}
    assert sorted(fields - fingerprinted - ignored) == []  # a field no one declared
    assert sorted((fingerprinted | ignored) - fields) == []  # a declared name that is no field
    assert sorted(fingerprinted & ignored) == []  # declared both ways
    for stage, names in {**STAGE_FIELDS, **ATTENTION_FIELDS}.items():
        assert len(set(names)) == len(names), stage
    assert all(isinstance(why, str) and len(why) > 10 for why in NOT_FINGERPRINTED.values())


def test_each_stages_fields_are_pinned():
    assert {stage: set(names) for stage, names in STAGE_FIELDS.items()} == PINNED
    assert {domain: set(names) for domain, names in ATTENTION_FIELDS.items()} == PINNED_ATTENTION


_WORDS = (
    "gt",
    "coarse",
    "mask",
    "probability",
    "sscl",
    "supcon",
    "aspp",
    "deeplabv3plus",
    "dice",
    "sgd",
    "adam",
    "resnet50",
    "resnet18",
    "gaussian",
    "uniform",
    "bf16",
    "off",
    "image2d",
    "ct",
    "other",
)


def _candidates(value):
    if isinstance(value, bool):
        return [not value]
    if value is None:
        return [[1, 2], 1]
    if isinstance(value, int):
        return [value + 1, value * 2, value - 1]
    if isinstance(value, float):
        return [value / 2 if value else 0.5, value + 0.1, value * 1.5]
    if isinstance(value, str):
        return list(_WORDS)
    if isinstance(value, list):
        return [[first, *value[1:]] for first in _candidates(value[0])]
    raise AssertionError(f"no other value for {value!r}")


def _changed(config: PipelineConfig, name: str) -> PipelineConfig:
    """``config`` with only ``name`` set to another valid value."""
    before = flatten(config.to_dict())
    for other in _candidates(before[name]):
        if other == before[name]:
            continue
        try:
            changed = config.override(**{name: other})
        except (ValueError, TypeError):
            continue
        if {k for k, v in flatten(changed.to_dict()).items() if v != before[k]} == {name}:
            return changed
    raise AssertionError(f"found no other valid value for {name} (now {before[name]!r})")


def _decision(stage: str, old: PipelineConfig, new: PipelineConfig) -> str | None:
    """What a resumed run decides for ``stage`` (the manifest's comparison that StageBook acts on):
    ``None`` to continue, else the reason to redo it."""
    manifest = Manifest()
    manifest.start(stage, stage_fingerprint(stage, old, organ_ids=[1, 6]), {"cases": []})
    return manifest.mismatch(stage, stage_fingerprint(stage, new, organ_ids=[1, 6]), {"cases": []})


@pytest.mark.parametrize(("stage", "domain"), CASES)
def test_every_field_of_a_stage_changes_its_resume_decision_and_no_other_does(stage, domain):
    base = PipelineConfig.quick(domain=domain)
    own = PINNED[stage] | (PINNED_ATTENTION[domain] if stage in ("pretrain", "segment") else set())
    for name in sorted(_fields()):
        reason = _decision(stage, base, _changed(base, name))
        if name in own:
            assert reason is not None, name
            assert re.search(rf"(^|, ){re.escape(name)}: ", reason), (name, reason)
        else:
            assert reason is None, (name, reason)


def test_the_seed_decides_stage_2():
    # issue 26 row 31 as it was planted: seed dropped from stage 2's fingerprint
    base = PipelineConfig.quick()
    assert _decision("pretrain", base, base.override(seed=1)) == "seed: 0 -> 1"


def test_context_enters_the_fingerprint():
    cfg = PipelineConfig.quick()
    fp = stage_fingerprint(
        "pretrain",
        cfg,
        organ_ids=[1, 6],
        num_modalities=2,
        world_size=2,
        components=components_record(model=None, loss_fn=torch.nn.MSELoss()),
    )
    assert fp["stage"] == "pretrain" and fp["organ_ids"] == [1, 6] and fp["num_modalities"] == 2
    assert fp["components"] == {"model": "default", "loss_fn": "torch.nn.modules.loss.MSELoss"}
    assert set(fp["fields"]) == PINNED["pretrain"] | PINNED_ATTENTION["ct"]
    other = stage_fingerprint(
        "pretrain",
        cfg,
        organ_ids=[1, 6],
        num_modalities=2,
        world_size=1,
        components=components_record(model=None, loss_fn=torch.nn.MSELoss()),
    )
    manifest = Manifest()
    manifest.start("pretrain", fp, {})
    assert manifest.mismatch("pretrain", other, {}) == "world_size: 2 -> 1"
    with pytest.raises(ValueError, match="stage must be one of 'coarse'"):
        stage_fingerprint("stage1", cfg)


def test_components_record_names_classes_and_functions():
    def my_loss(logits, labels):
        return logits.sum()

    record = components_record(
        model=torch.nn.Linear(2, 2), loss_fn=my_loss, optimizer=torch.optim.SGD, augment=None
    )
    where = f"{__name__}.test_components_record_names_classes_and_functions.<locals>"
    assert record == {
        "model": "torch.nn.modules.linear.Linear",
        "loss_fn": f"{where}.my_loss",
        "optimizer": "torch.optim.sgd.SGD",
        "augment": "default",
    }
