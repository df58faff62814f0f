from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from agcl._io import atomic_save, safe_load
from agcl.augment import RandomAffineCrop3D
from agcl.data import preprocess_ct
from agcl.data.prepared import PreparedCase, resample
from agcl.data.synthetic import make_phantom
from agcl.pipeline import CoarseConfig, PipelineConfig
from agcl.pipeline.coarse import (
    build_coarse_augment,
    coarse_grid,
    coarse_probabilities,
    labels_from_probabilities,
    load_coarse,
    predict_coarse,
    train_coarse,
)
from agcl.sampling import attention_from_probabilities, attention_recall, densify

SPACING = (7.3, 7.3, 12.5)
ORGANS = [1, 2, 6]  # spleen, right kidney, liver


def _case(seed: int) -> PreparedCase:
    hu, lab = make_phantom(seed, "contrast", shape=(48, 48, 16), spacing=SPACING)
    lab = np.where(np.isin(lab, ORGANS), lab, 0).astype(np.int16)
    return PreparedCase(
        case_id=f"{seed:04d}",
        modality=0,
        modality_name="contrast",
        image=preprocess_ct(hu),
        label=lab,
        spacing=SPACING,
        reference=None,
    )


class _OneAtATime(Sequence):
    """A lazy case list that fails when an earlier case it handed out is still alive."""

    def __init__(self, seeds):
        self.seeds, self.alive, self.loads = list(seeds), [], 0

    def __len__(self):
        return len(self.seeds)

    def __getitem__(self, i):
        gc.collect()
        held = [r for r in self.alive if r() is not None]
        assert not held, f"stage 1 kept {len(held)} earlier case(s) alive while loading case {i}"
        case = _case(self.seeds[i])
        self.alive.append(weakref.ref(case))
        self.loads += 1
        return case


def _config(**changes) -> PipelineConfig:
    base = {
        "coarse.spacing_mm": (14.6, 14.6, 12.5),
        "coarse.crop_shape": (16, 16, 8),
        "coarse.base_channels": 2,
        "coarse.depth": 1,
        "coarse.epochs": 3,
        "coarse.batch_size": 2,
        "coarse.crops_per_case": 2,
        "coarse.lr": 1e-2,
    }
    return PipelineConfig.quick().override(**{**base, **changes})


def test_coarse_grid_from_the_voxel_size_or_the_fixed_shape():
    assert coarse_grid((48, 48, 16), CoarseConfig(spacing_mm=(14.6, 14.6, 12.5)), SPACING) == (
        24,
        24,
        16,
    )
    assert coarse_grid((48, 48, 16), CoarseConfig(spacing_mm=None, shape=(8, 8, 4))) == (8, 8, 4)
    with pytest.raises(ValueError, match="spacing"):
        coarse_grid((48, 48, 16), CoarseConfig(spacing_mm=(2.0, 2.0, 3.0)))


def test_train_coarse_on_a_tiny_case_reads_each_case_once_and_predicts_the_coarse_grid(tmp_path):
    cases = _OneAtATime([1, 2])
    cfg = _config()
    ckpt = train_coarse(cases, cfg, ORGANS, tmp_path)
    assert cases.loads == 2  # one pass over the (lazy) cases, none kept
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "epochs.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert [
        json.loads(line)["steps"] for line in (tmp_path / "epochs.jsonl").read_text().splitlines()
    ] == [2] * 3
    # nnU-Net's poly decay: epoch 3 of 3 trains at lr * (1 - 2 / 3) ** 0.9
    lrs = [g["lr"] for g in safe_load(ckpt)["optimizer"]["param_groups"]]
    assert lrs == [pytest.approx(1e-2 * (1 - 2 / 3) ** 0.9)]
    model, ids, loaded = load_coarse(ckpt)
    assert ids == ORGANS and loaded.coarse.spacing_mm == (14.6, 14.6, 12.5)
    case = _case(1)
    prob = coarse_probabilities(model, case.image, loaded.coarse, spacing=case.spacing)
    assert prob.shape == (4, 24, 24, 16)  # larger than the 16 x 16 x 8 crop: sliding windows
    assert torch.allclose(prob.sum(0), torch.ones(24, 24, 16), atol=1e-5)
    labels = predict_coarse(model, case.image, ids, loaded.coarse, spacing=case.spacing)
    assert labels.shape == case.image.shape
    assert np.array_equal(labels, labels_from_probabilities(prob, ids, case.image.shape))
    with pytest.raises(ValueError, match="spacing"):
        coarse_probabilities(model, case.image, loaded.coarse)


class _Stop(Exception):
    pass


def _stop_after(epoch: int):
    def callback(stage, e, record):
        if e == epoch:
            raise _Stop(f"stopped after epoch {e}")

    return callback


def test_bf16_training_runs_under_autocast_and_resumes_across_precisions(tmp_path):
    def losses(folder):
        return [
            json.loads(line)["loss"] for line in (folder / "epochs.jsonl").read_text().splitlines()
        ]

    train_coarse(
        [_case(1)], _config(**{"coarse.epochs": 2, "coarse.amp": "off"}), ORGANS, tmp_path / "fp32"
    )
    train_coarse(
        [_case(1)], _config(**{"coarse.epochs": 2, "coarse.amp": "bf16"}), ORGANS, tmp_path / "bf16"
    )
    a, b = losses(tmp_path / "fp32"), losses(tmp_path / "bf16")
    assert a != b  # the bf16 forward rounds differently ...
    assert np.allclose(a, b, rtol=0.1)  # ... but trains the same model
    model, _, loaded = load_coarse(tmp_path / "bf16" / "checkpoints" / "coarse.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters()) and loaded.coarse.amp == "bf16"
    # the precision is not part of the resume check: a float32 run stopped after epoch 1
    # continues in bf16
    cfg = _config(**{"coarse.epochs": 3, "coarse.amp": "off"})
    with pytest.raises(_Stop):
        train_coarse([_case(1)], cfg, ORGANS, tmp_path / "mixed", callback=_stop_after(1))
    train_coarse(
        [_case(1)], cfg.override(**{"coarse.amp": "bf16"}), ORGANS, tmp_path / "mixed", resume=True
    )
    assert len(losses(tmp_path / "mixed")) == 3
    # ... but the number of epochs is: a finished stage with other epochs is refused, naming the
    # field
    with pytest.raises(ValueError, match="coarse.epochs"):
        train_coarse(
            [_case(1)],
            cfg.override(**{"coarse.epochs": 4}),
            ORGANS,
            tmp_path / "mixed",
            resume=True,
        )


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_loader_workers_give_the_same_training(tmp_path):
    cfg = _config(**{"coarse.epochs": 2, "coarse.amp": "off", "coarse.crops_per_case": 3})
    a = train_coarse([_case(1), _case(2)], cfg, ORGANS, tmp_path / "w0")
    b = train_coarse(
        [_case(1), _case(2)], cfg.override(**{"data.num_workers": 2}), ORGANS, tmp_path / "w2"
    )
    sa, sb = safe_load(a)["model"], safe_load(b)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    "field, value",
    [
        ("coarse.margin_mm", 4.0),
        ("coarse.attention_threshold", 0.4),
        ("coarse.attention_channel", "probability"),
    ],
)
def test_attention_settings_do_not_stop_stage_1_from_resuming(tmp_path, field, value):
    """How the attention is built from stage 1's output is not how stage 1 trains: a completed
    stage 1 is reused (not retrained, not refused) when only they change."""
    cfg = _config(**{"coarse.epochs": 1, "coarse.amp": "off"})
    ckpt = train_coarse([_case(1)], cfg, ORGANS, tmp_path)
    before = ckpt.stat().st_mtime_ns
    again = train_coarse([_case(1)], cfg.override(**{field: value}), ORGANS, tmp_path, resume=True)
    assert again == ckpt and ckpt.stat().st_mtime_ns == before
    assert len((tmp_path / "epochs.jsonl").read_text().splitlines()) == 1


def test_the_default_augmentation_follows_the_config():
    aug = build_coarse_augment(_config(**{"coarse.rotation_deg": 25.0, "coarse.zoom": 0.2}))
    assert isinstance(aug, RandomAffineCrop3D)
    assert (aug.zoom, aug.rotation_deg, aug.intensity, aug.spacing) == (
        0.2,
        25.0,
        0.1,
        (14.6, 14.6, 12.5),
    )
    plain = build_coarse_augment(_config(**{"coarse.augment": False}))
    assert (plain.zoom, plain.rotation_deg, plain.intensity) == (0.0, 0.0, 0.0)


def test_components_passed_in_are_used_and_fingerprinted(tmp_path):
    from agcl.models import create_model

    calls = {"augment": 0, "loss": 0, "opt": 0}
    real = RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.0)

    def augment(image, label, **kw):
        calls["augment"] += 1
        assert tuple(kw["crop_shape"]) == (16, 16, 8)
        return real(image, label, **kw)

    def loss_fn(logits, y):
        calls["loss"] += 1
        return torch.nn.functional.cross_entropy(logits, y)

    def optimizer(params):
        calls["opt"] += 1
        return torch.optim.SGD(params, lr=1e-3)

    net = create_model("unet3d", in_channels=1, num_classes=4, base_channels=2, depth=1)
    cfg = _config(**{"coarse.epochs": 1, "coarse.amp": "off"})
    ckpt = train_coarse(
        [_case(1)],
        cfg,
        ORGANS,
        tmp_path,
        model=net,
        loss_fn=loss_fn,
        optimizer=optimizer,
        augment=augment,
    )
    assert calls == {"augment": 2, "loss": 1, "opt": 1}  # 2 crops, one batch of 2
    saved = safe_load(ckpt)
    assert torch.equal(saved["model"]["head.weight"], net.state_dict()["head.weight"])
    assert saved["config"]["components"]["augment"].endswith("augment")
    assert saved["config"]["components"]["model"] == "agcl.models.unet3d.CoarseUNet3D"
    # resuming with the default components is refused: another model would continue these weights
    with pytest.raises(ValueError, match="components"):
        train_coarse([_case(1)], cfg, ORGANS, tmp_path, resume=True)


@pytest.mark.slow
def test_a_short_training_learns_the_liver(tmp_path):
    cfg = _config(**{"coarse.epochs": 25, "coarse.base_channels": 8, "coarse.crops_per_case": 2})
    train_coarse([_case(1), _case(2)], cfg, ORGANS, tmp_path)
    model, ids, loaded = load_coarse(tmp_path / "checkpoints" / "coarse.pt")
    case = _case(1)
    prob = coarse_probabilities(model, case.image, loaded.coarse, spacing=case.spacing)
    labels = labels_from_probabilities(prob, ids, case.image.shape)
    liver = case.label == 6
    dice = 2 * float((liver & (labels == 6)).sum()) / float(liver.sum() + (labels == 6).sum())
    assert dice > 0.6
    att = attention_from_probabilities(
        prob, ids, case.image.shape, spacing=case.spacing, margin_mm=10.0
    )
    assert attention_recall(att, case.label, ids)[6] > 0.9


def test_fixed_shape_mode_and_checkpoints_written_before_spacing_mm(tmp_path):
    cfg = _config(**{"coarse.spacing_mm": None, "coarse.shape": (12, 12, 8), "coarse.epochs": 1})
    ckpt = train_coarse([_case(1)], cfg, ORGANS, tmp_path)
    assert [g["lr"] for g in safe_load(ckpt)["optimizer"]["param_groups"]] == [
        1e-2
    ]  # constant there
    model, ids, loaded = load_coarse(ckpt)
    case = _case(1)
    assert coarse_probabilities(model, case.image, loaded.coarse, spacing=case.spacing).shape == (
        4,
        12,
        12,
        8,
    )
    assert coarse_probabilities(model, case.image, (12, 12, 8)).shape == (
        4,
        12,
        12,
        8,
    )  # the older call
    # a checkpoint from before coarse.spacing_mm existed was trained on the fixed shape
    old = safe_load(ckpt)
    del old["extra"]["config"]["coarse"]["spacing_mm"]
    atomic_save(old, tmp_path / "old.pt")
    assert load_coarse(tmp_path / "old.pt")[2].coarse.spacing_mm is None


def test_labels_and_attention_map_back_from_a_voxel_size_grid():
    # a coarse grid that is no integer fraction of the full one
    case = _case(3)
    cfg = CoarseConfig(spacing_mm=(17.0, 17.0, 30.0))
    grid = coarse_grid(case.image.shape, cfg, case.spacing)
    assert grid == (21, 21, 7)
    lut = np.zeros(7, np.int64)
    lut[ORGANS] = [1, 2, 3]
    classes = resample(torch.from_numpy(lut[case.label]), grid, mode="nearest")
    prob = torch.nn.functional.one_hot(classes, 4).permute(3, 0, 1, 2).float()
    back = resample(classes, case.image.shape, mode="nearest").numpy()
    assert np.array_equal(
        labels_from_probabilities(prob, ORGANS, case.image.shape), np.array([0, *ORGANS])[back]
    )
    att = densify(
        attention_from_probabilities(
            prob, ORGANS, case.image.shape, spacing=case.spacing, margin_mm=0.0
        ),
        ORGANS,
        case.image.shape,
    )
    for k in range(3):
        assert np.array_equal(att[k], back == k + 1)


# ------------------------------------------------------------------------- CUDA only (not run here)
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_auto_amp_trains_stage1_in_mixed_precision(tmp_path):
    from agcl.pipeline.toolkit.training import MixedPrecision

    bf16 = torch.cuda.is_bf16_supported()
    assert MixedPrecision("auto", "cuda").dtype == (torch.bfloat16 if bf16 else torch.float16)
    assert (MixedPrecision("auto", "cuda").scaler is None) == bf16  # a scaler for float16 only
    assert MixedPrecision("fp16", "cuda").scaler is not None
    train_coarse(
        [_case(1), _case(2)], _config(**{"coarse.epochs": 2}), ORGANS, tmp_path, device="cuda"
    )
    model, _, _ = load_coarse(tmp_path / "checkpoints" / "coarse.pt")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in model.parameters())
    losses = [
        json.loads(line)["loss"] for line in (tmp_path / "epochs.jsonl").read_text().splitlines()
    ]
    assert len(losses) == 2 and all(np.isfinite(losses))
