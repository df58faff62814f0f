"""Stages 2 and 3 on the streaming path: every method pinned, components passed in, workers,
resume."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agcl.functional import modal_target_supcon_loss
from agcl.pipeline import (
    PRETRAIN_STEPS,
    build_pair_aug,
    build_pretrain_model,
    load_segment_model,
    pretrain_encoder,
    train_segmenter,
)
from agcl.pipeline.toolkit import epoch_batches, patch_stream
from agcl.sampling import attention_from_labels
from tests.pipeline._tiny import tiny_config

ORGANS = [1, 6, 7]


def _volumes(n=4, shape=(32, 32, 5)):
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        lab = np.zeros(shape, np.uint8)
        lab[3:12, 3:12, :] = 1
        lab[16:28, 14:30, 1:4] = 6
        lab[4:10, 20:26, 2:5] = 7
        img = rng.random(shape, dtype=np.float32) * 0.2 + lab * 0.1
        out.append(
            {
                "image": img,
                "attention": attention_from_labels(lab, ORGANS, margin_mm=2.0, spacing=(1, 1, 1)),
                "label": lab,
                "modality": i % 2,
            }
        )
    return out


def _config(method="agcl", **changes):
    return tiny_config(
        **{
            "pretrain.method": method,
            "pretrain.epochs": 1,
            "pretrain.batch_size": 12,
            "pretrain.patches_per_slice": 2,
            "data.shuffle_buffer": 48,
            **changes,
        }
    )


def _flip(x):
    return x, torch.flip(x, dims=[-1])


def _first_loss(tmp_path):
    return json.loads((tmp_path / "epochs.jsonl").read_text().splitlines()[0])["loss"]


@pytest.mark.parametrize("method", ["agcl", "supcon", "sscl", "ce"])
def test_one_step_loss_equals_the_reference(tmp_path, method):
    """A wrong positive rule (e.g. supcon given the modality) or wrong ce classes fails here."""
    cfg = _config(method, **{"pretrain.steps_per_epoch": 1})
    vols = _volumes()
    torch.manual_seed(0)
    model = build_pretrain_model(cfg, num_modalities=2, num_organs=len(ORGANS))
    start = copy.deepcopy(model)
    pretrain_encoder(vols, cfg, ORGANS, tmp_path, num_modalities=2, model=model, augment=_flip)
    batch = next(
        iter(epoch_batches(patch_stream(vols, cfg, ORGANS, stage="pretrain"), cfg, 1, "cpu"))
    )
    assert len(set(batch.modality.tolist())) == 2 and len(set(batch.target.tolist())) >= 2
    start.train()
    v1, v2 = _flip(batch.inputs())
    out = start(torch.cat([v1, v2]))
    if method == "ce":
        cls = batch.modality * len(ORGANS) + torch.tensor(
            [ORGANS.index(t) for t in batch.target.tolist()]
        )
        want = F.cross_entropy(out, cls.repeat(2))
    else:
        feats = torch.stack(out.chunk(2), 1)
        keys = {
            "agcl": {"modality": batch.modality, "target": batch.target},
            "supcon": {"target": batch.target},
            "sscl": {},
        }[method]
        want = modal_target_supcon_loss(feats, temperature=cfg.pretrain.temperature, **keys)
    assert _first_loss(tmp_path) == pytest.approx(float(want.detach()), rel=1e-5, abs=1e-6)


def test_the_method_table_is_what_runs(tmp_path, monkeypatch):
    calls = []

    def step(model, v1, v2, **kw):
        calls.append(sorted(kw))
        return model(torch.cat([v1, v2])).pow(2).mean()

    monkeypatch.setitem(PRETRAIN_STEPS, "supcon", step)
    pretrain_encoder(
        _volumes(2),
        _config("supcon", **{"pretrain.steps_per_epoch": 2}),
        ORGANS,
        tmp_path,
        num_modalities=2,
    )
    assert calls == [["class_index", "loss_fn", "modality", "target"]] * 2


def test_components_passed_in_are_used(tmp_path):
    cfg = _config("agcl", **{"pretrain.steps_per_epoch": 2})
    seen = {"loss": 0, "aug": 0, "opt": 0}

    class Loss(torch.nn.Module):
        def forward(self, feats, modality=None, target=None):
            seen["loss"] += 1
            return feats.pow(2).mean()

    def aug(x):
        seen["aug"] += 1
        return x, x

    def make_opt(params):
        seen["opt"] += 1
        return torch.optim.SGD(params, lr=0.0)

    model = build_pretrain_model(cfg, num_modalities=2, num_organs=3)
    before = copy.deepcopy(model.state_dict())
    pretrain_encoder(
        _volumes(2),
        cfg,
        ORGANS,
        tmp_path,
        num_modalities=2,
        model=model,
        loss_fn=Loss(),
        augment=aug,
        optimizer=make_opt,
    )
    assert seen == {"loss": 2, "aug": 2, "opt": 1}
    weights = [k for k in before if "running" not in k and "num_batches" not in k]
    assert all(torch.equal(before[k], model.state_dict()[k]) for k in weights)  # lr 0: unchanged
    with pytest.raises(TypeError, match="optimizer"):
        pretrain_encoder(
            _volumes(2), cfg, ORGANS, tmp_path / "b", num_modalities=2, optimizer="sgd"
        )


def test_pair_aug_options_come_from_the_config():
    cfg = _config(
        **{
            "pretrain.aug_hflip": True,
            "pretrain.aug_ratio": (0.5, 2.0),
            "pretrain.aug_intensity_jitter": 0.1,
            "pretrain.aug_color_distortion": 0.3,
            "pretrain.image_channels": 3,
        }
    )
    aug = build_pair_aug(cfg)
    assert aug.hflip is True and tuple(aug.ratio) == (0.5, 2.0)
    assert (
        aug.intensity_jitter == 0.1
        and aug.color_distortion == 0.3
        and tuple(aug.mask_channels) == (3,)
    )


def _state(path):
    return torch.load(path, weights_only=True)["model"]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_workers_give_the_same_training_and_resume_is_bit_identical(tmp_path):
    vols = _volumes(5)
    cfg2 = _config("agcl", **{"pretrain.epochs": 2, "data.num_workers": 2, "data.shards": 3})
    full = pretrain_encoder(vols, cfg2, ORGANS, tmp_path / "full", num_modalities=2)
    # the same two epochs in the training process (num_workers=0)
    inproc = pretrain_encoder(
        vols, cfg2.override(**{"data.num_workers": 0}), ORGANS, tmp_path / "w0", num_modalities=2
    )
    a, b = _state(full), _state(inproc)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # one epoch, stop (as a killed run), resume for the second (with workers)

    class Stop(Exception):
        pass

    def stop(stage, epoch, record):
        if epoch == 1:
            raise Stop

    with pytest.raises(Stop):
        pretrain_encoder(vols, cfg2, ORGANS, tmp_path / "res", num_modalities=2, callback=stop)
    resumed = pretrain_encoder(vols, cfg2, ORGANS, tmp_path / "res", num_modalities=2, resume=True)
    c = _state(resumed)
    assert all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("decoder", ["aspp", "deeplabv3plus"])
def test_stage3_decoder_is_recorded_and_rebuilt(tmp_path, decoder):
    from agcl.models import ASPPDecoder, DeepLabV3PlusDecoder

    cfg = _config(
        "none",
        **{
            "segment.decoder": decoder,
            "segment.epochs": 1,
            "segment.steps_per_epoch": 2,
            "segment.batch_size": 8,
            "segment.patches_per_slice": 2,
        },
    )
    ckpt = train_segmenter(_volumes(2), cfg, ORGANS, tmp_path, pretrain_checkpoint=None)
    model, organs, config = load_segment_model(ckpt)
    want = DeepLabV3PlusDecoder if decoder == "deeplabv3plus" else ASPPDecoder
    assert type(model.decoder) is want and config.segment.decoder == decoder and organs == ORGANS
    x = torch.zeros(2, 2, 16, 16)
    assert model(x).shape == (2, 2, 16, 16)


def test_stage3_loss_and_decoder_width_follow_the_config():
    from agcl import DiceCELoss, SoftDiceLoss
    from agcl.pipeline import PipelineConfig, build_segment_loss, build_segment_model

    assert type(build_segment_loss(PipelineConfig.paper())) is SoftDiceLoss  # the paper's loss
    assert type(build_segment_loss(_config(**{"segment.loss": "dice"}))) is SoftDiceLoss
    assert PipelineConfig.quick().segment.loss == "dice_ce"
    dice_ce = build_segment_loss(_config(**{"segment.loss": "dice_ce"}))
    assert type(dice_ce) is DiceCELoss and not dice_ce.dice.include_background
    model = build_segment_model(
        _config(**{"segment.decoder": "deeplabv3plus", "segment.decoder_channels": 12})
    )
    assert model.decoder.classifier.in_channels == 12
    with pytest.raises(ValueError, match="segment.loss"):
        _config(**{"segment.loss": "focal"})


@pytest.mark.parametrize("method", ["agcl", "ce"])
def test_stages_2_and_3_train_in_bf16_under_their_amp_fields(tmp_path, method):
    def losses(folder, stage):
        rows = [json.loads(line) for line in (folder / "epochs.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if r["stage"] == stage]

    out = {}
    for amp in ("off", "bf16"):
        cfg = _config(
            method,
            **{
                "pretrain.steps_per_epoch": 2,
                "segment.epochs": 1,
                "segment.steps_per_epoch": 2,
                "pretrain.amp": amp,
                "segment.amp": amp,
            },
        )
        folder = tmp_path / amp
        ckpt = pretrain_encoder(_volumes(), cfg, ORGANS, folder, num_modalities=2, augment=_flip)
        train_segmenter(_volumes(), cfg, ORGANS, folder, pretrain_checkpoint=ckpt)
        out[amp] = (losses(folder, "pretrain"), losses(folder, "segment"))
    for stage in (0, 1):
        assert out["off"][stage] != out["bf16"][stage]  # the forward passes ran in bf16 ...
        assert np.allclose(
            out["off"][stage], out["bf16"][stage], rtol=0.05
        )  # ... and trained the same
        assert all(np.isfinite(out["bf16"][stage]))

    # the precision is not part of either stage's resume check: a float32 run stopped after its
    # first epoch continues in bf16
    class Stop(Exception):
        pass

    def stop(stage, epoch, record):
        if epoch == 1:
            raise Stop

    cfg = _config(
        method,
        **{
            "pretrain.steps_per_epoch": 2,
            "segment.epochs": 2,
            "segment.steps_per_epoch": 2,
            "pretrain.epochs": 2,
            "pretrain.amp": "off",
            "segment.amp": "off",
        },
    )
    bf16 = cfg.override(**{"pretrain.amp": "bf16", "segment.amp": "bf16"})
    folder = tmp_path / "mixed"
    with pytest.raises(Stop):
        pretrain_encoder(
            _volumes(), cfg, ORGANS, folder, num_modalities=2, augment=_flip, callback=stop
        )
    ckpt = pretrain_encoder(
        _volumes(), bf16, ORGANS, folder, num_modalities=2, augment=_flip, resume=True
    )
    with pytest.raises(Stop):
        train_segmenter(_volumes(), cfg, ORGANS, folder, pretrain_checkpoint=ckpt, callback=stop)
    train_segmenter(_volumes(), bf16, ORGANS, folder, pretrain_checkpoint=ckpt, resume=True)
    assert [len(v) for v in (losses(folder, "pretrain"), losses(folder, "segment"))] == [2, 2]


def test_stage3_trains_on_labels_and_skips_single_patch_batches(tmp_path):
    cfg = _config(
        "none",
        **{
            "segment.epochs": 1,
            "segment.batch_size": 8,
            "segment.patches_per_slice": 1,
            "segment.max_patches_per_volume": 9,
        },
    )
    seen = []

    class Loss(torch.nn.Module):
        def forward(self, logits, y):
            seen.append((logits.shape[0], y.dtype, int(y.max())))
            return logits.mean() * 0

    train_segmenter(_volumes(1), cfg, ORGANS, tmp_path, pretrain_checkpoint=None, loss_fn=Loss())
    # 9 patches in batches of 8: the lone ninth patch is skipped, never passed to BatchNorm
    assert seen == [(8, torch.int64, 1)]


@pytest.mark.parametrize("loss", ["dice", "dice_ce"])
def test_segment_step_leaves_ignored_pixels_out(loss):
    from agcl.pipeline import build_segment_loss, segment_step

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(2, 2, 6, 6))

        def forward(self, x):
            return self.w.expand(x.shape[0], -1, -1, -1)

    net, loss_fn = Net(), build_segment_loss(_config(**{"segment.loss": loss}))
    x = torch.zeros(2, 2, 6, 6)
    y = torch.zeros(2, 6, 6, dtype=torch.long)
    y[:, :3] = 1
    ignore = torch.zeros(2, 6, 6, dtype=torch.bool)
    ignore[:, :, 4:] = True
    loss = segment_step(net, x, y, loss_fn, ignore)
    loss.backward()
    assert net.w.grad[:, :, :, 4:].abs().sum() == 0 and net.w.grad[:, :, :, :4].abs().sum() > 0
    # changing the target under the ignored pixels does not change the loss
    y2 = y.clone()
    y2[:, :, 4:] = 1 - y2[:, :, 4:]
    assert float(segment_step(net, x, y2, loss_fn, ignore)) == pytest.approx(float(loss))
    assert float(segment_step(net, x, y2, loss_fn)) != pytest.approx(float(loss))


def test_factories_and_step_refuse_what_they_cannot_build():
    from agcl.pipeline import build_optimizer, build_pretrain_loss, pretrain_step

    cfg = _config()
    model = torch.nn.Linear(2, 2)
    assert isinstance(build_optimizer(cfg, model.parameters(), stage="pretrain"), torch.optim.SGD)
    assert isinstance(build_optimizer(cfg, model.parameters(), stage="segment"), torch.optim.Adam)
    assert isinstance(build_optimizer(cfg, model.parameters(), stage="coarse"), torch.optim.Adam)
    with pytest.raises(ValueError, match="stage must be one of"):
        build_optimizer(cfg, model.parameters(), stage="decoder")
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        build_optimizer(cfg, frozen.parameters(), stage="segment")
    with pytest.raises(ValueError, match="'none'"):
        build_pretrain_loss(_config("none"))
    with pytest.raises(ValueError, match="queue_size"):
        build_pretrain_loss(_config("sscl", **{"pretrain.queue_size": 8}))
    assert isinstance(build_pretrain_loss(_config("ce")), torch.nn.CrossEntropyLoss)
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="loss_fn is required"):
        pretrain_step(
            model, x, x, method="agcl", target=torch.zeros(3), modality=torch.zeros(3), loss_fn=None
        )
    with pytest.raises(ValueError, match="method must be one of"):
        pretrain_step(
            model,
            x,
            x,
            method="simclr",
            target=torch.zeros(3),
            modality=torch.zeros(3),
            loss_fn=None,
        )
    cls = torch.tensor([0, 1, 1])
    got = pretrain_step(
        model, x, x, method="ce", target=cls, modality=cls, loss_fn=None, class_index=cls
    )
    assert float(got) == pytest.approx(
        float(F.cross_entropy(model(torch.cat([x, x])), cls.repeat(2)))
    )


def test_shuffle_buffer_must_hold_a_batch():
    with pytest.raises(ValueError, match="data.shuffle_buffer must be >= pretrain.batch_size"):
        tiny_config(**{"pretrain.batch_size": 64, "data.shuffle_buffer": 32})


def test_a_user_augmentation_generator_is_reseeded_every_epoch(tmp_path):
    """So a resumed epoch repeats its views: the same epoch seed gives the same draws."""
    draws = []

    class Aug:
        def __init__(self, seed):
            self.generator = torch.Generator().manual_seed(
                seed
            )  # different states: only the reseed equalises them

        def __call__(self, x):
            draws.append(float(torch.rand((), generator=self.generator)))
            return x, x

    cfg = _config(**{"pretrain.steps_per_epoch": 1})
    pretrain_encoder(_volumes(2), cfg, ORGANS, tmp_path / "a", num_modalities=2, augment=Aug(1))
    pretrain_encoder(_volumes(2), cfg, ORGANS, tmp_path / "b", num_modalities=2, augment=Aug(2))
    assert len(draws) == 2 and draws[0] == draws[1]


@pytest.mark.parametrize(
    "field, value",
    [
        ("coarse.attention_threshold", 0.4),
        ("coarse.margin_mm", 3.0),
        ("coarse.attention_channel", "mask"),
    ],
)  # tiny (quick): "probability"
def test_stages_2_and_3_refuse_to_resume_with_another_attention(tmp_path, field, value):
    """The attention decides where both stages sample their patches and what their attention
    channel holds: a run resumed with another threshold, margin or channel would mix two
    trainings, so both stages name the field and stop."""
    cfg = _config(
        "agcl", **{"pretrain.steps_per_epoch": 1, "segment.epochs": 1, "segment.steps_per_epoch": 1}
    )
    ckpt = pretrain_encoder(_volumes(), cfg, ORGANS, tmp_path, num_modalities=2, augment=_flip)
    train_segmenter(_volumes(), cfg, ORGANS, tmp_path, pretrain_checkpoint=ckpt)
    other = cfg.override(**{field: value})
    key = field.split(".")[1]
    with pytest.raises(ValueError, match=f"different settings.*{key}"):
        pretrain_encoder(
            _volumes(), other, ORGANS, tmp_path, num_modalities=2, augment=_flip, resume=True
        )
    with pytest.raises(ValueError, match=f"different settings.*{key}"):
        train_segmenter(_volumes(), other, ORGANS, tmp_path, pretrain_checkpoint=ckpt, resume=True)
