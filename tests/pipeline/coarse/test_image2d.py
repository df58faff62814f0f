"""The 2-D pipeline parts: single-slice volumes, coarse segmenter, attention, whole-image
inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from agcl.data import ImageVolumes, image_tensor, image_volume
from agcl.pipeline import Coarse2DConfig, PipelineConfig
from agcl.pipeline.coarse import (
    attention_2d,
    build_coarse_model_2d,
    load_coarse_2d,
    predict_probabilities_2d,
    train_coarse_2d,
)
from agcl.pipeline.segment import segment_image_2d

TINY = dict(
    encoder="resnet18",
    base_width=4,
    output_stride=16,
    aspp_channels=8,
    decoder_channels=8,
    low_level_reduced=4,
    epochs=2,
    optimizer="adam",
    lr=1e-2,
    batch_size=2,
    crop_size=24,
    margin_px=0.0,
)


def _config(**coarse2d) -> PipelineConfig:
    return PipelineConfig.quick(domain="image2d").override(coarse2d={**TINY, **coarse2d}, seed=0)


def test_image_volume_is_a_single_slice_volume_with_void_never_positive():
    image = np.zeros((5, 7, 3), np.uint8)
    image[..., 0] = 255
    label = np.zeros((5, 7), np.uint8)
    label[1:3, 1:4] = 2
    label[0, :] = 255
    vol = image_volume(image, {}, label, modality=1)
    assert vol["image"].shape == (3, 5, 7, 1) and vol["image"].dtype == np.float32
    np.testing.assert_allclose(vol["image"][0, 0, 0, 0], (1 - 0.485) / 0.229, rtol=1e-5)
    assert vol["label"].shape == (5, 7, 1) and vol["label"].dtype == np.uint8
    assert set(np.unique(vol["label"])) == {0, 2}  # void is not a class any more ...
    assert vol["ignore"][0].all() and vol["ignore"].sum() == 7  # ... and is marked to ignore
    assert vol["modality"] == 1
    with pytest.raises(ValueError, match="label must have the image's"):
        image_volume(image, {}, label[:4])
    with pytest.raises(ValueError, match="RGB"):
        image_tensor(np.zeros((4, 4), np.uint8))


def test_attention_threshold_fallback_and_dilation():
    p = np.full((3, 9, 9), 0.05, np.float32)
    p[0] = 0.9
    p[1, 2:4, 2:5] = 0.7  # reaches the threshold: exactly these 6 pixels
    p[2, 6, 6], p[2, 6, 7] = 0.25, 0.2  # never does: the connected region of >= 0.5 * max
    att = attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0))
    assert int(att[1][1].sum()) == 6 and att[1][0][:2] == (slice(2, 4), slice(2, 5))
    assert int(att[2][1].sum()) == 2
    grown = attention_2d(p, [1, 2], Coarse2DConfig(margin_px=1))
    assert int(grown[1][1].sum()) == 6 + 10  # a 1-px Euclidean ring: 2 * 3 + 2 * 2
    with pytest.raises(ValueError, match="prob must be"):
        attention_2d(p[0], [1], Coarse2DConfig())


def test_absent_classes_get_no_attention():
    p = np.full((3, 9, 9), 0.04, np.float32)
    p[0] = 0.9
    p[1, 2:4, 2:5] = 0.7
    p[2] = 0.01
    p[2, 6, 6] = 0.06  # never above the presence threshold (0.1): absent
    att = attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0))
    assert sorted(att) == [1]
    # presence 0: the CT rule, every class with any probability gets its most probable region
    assert sorted(attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0, presence_threshold=0.0))) == [
        1,
        2,
    ]
    assert (
        int(
            attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0, presence_threshold=0.0))[2][1].sum()
        )
        == 1
    )


class _Fixed(nn.Module):
    """A stand-in stage-3 model: foreground logit = +-3 depending on the image's red channel."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fg = torch.where(x[:, :1] > 0, 3.0, -3.0)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def test_segment_image_runs_per_class_inside_attention_and_fuses():
    image = np.zeros((6, 6, 3), np.uint8)
    image[:, :3, 0] = 255  # left half "foreground" for every class
    box = (slice(0, 6), slice(0, 2), slice(0, 1))
    attention = {
        1: (box, np.ones((6, 2, 1), bool)),
        2: ((slice(0, 3), slice(0, 6), slice(0, 1)), np.ones((3, 6, 1), bool)),
    }
    labels, probs = segment_image_2d(_Fixed(), image, attention, [1, 2, 3])
    assert probs.shape == (3, 6, 6)
    assert (probs[2] == 0).all()  # class 3 has no attention
    assert (probs[0][:, 2:] == 0).all() and (probs[1][3:] == 0).all()  # 0 outside each attention
    expected = np.zeros((6, 6), np.uint8)
    expected[:, :2] = 1  # where both attend and are equally sure, the first listed wins
    expected[:3, 2] = 2  # class 2 alone attends there
    np.testing.assert_array_equal(labels, expected)


def _scenes(n=4, size=24):
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(n):
        im = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
        m = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size - 10, 2)
        m[y : y + 8, x : x + 8] = 1
        im[m == 1] = (230, 30, 30)
        m[y, x : x + 8] = 255
        images.append(im)
        masks.append(m)
    return images, masks


def test_train_coarse_learns_checkpoints_and_resumes(tmp_path):
    images, masks = _scenes()
    cfg = _config()
    ckpt = train_coarse_2d(images, masks, cfg, 2, tmp_path)
    model, cfg2, k = load_coarse_2d(ckpt)
    assert cfg2 == cfg.coarse2d and k == 2
    prob = predict_probabilities_2d(model, images[0])
    assert prob.shape == (2, 24, 24) and torch.allclose(prob.sum(0), torch.ones(24, 24), atol=1e-5)
    before = ckpt.stat().st_mtime_ns
    train_coarse_2d(images, masks, cfg, 2, tmp_path, resume=True)  # complete: skipped
    assert ckpt.stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="coarse2d.lr"):
        train_coarse_2d(images, masks, _config(lr=1e-3), 2, tmp_path, resume=True)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_train_coarse_gives_the_same_model_for_any_number_of_workers(tmp_path):
    images, masks = _scenes()
    a = train_coarse_2d(images, masks, _config(epochs=1), 2, tmp_path / "w0")
    b = train_coarse_2d(
        images, masks, _config(epochs=1).override(**{"data.num_workers": 2}), 2, tmp_path / "w2"
    )
    sa, sb = torch.load(a, weights_only=True)["model"], torch.load(b, weights_only=True)["model"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_coarse_rejects_bad_masks(tmp_path):
    images, masks = _scenes(2)
    masks[1] = masks[1].copy()
    masks[1][0, 0] = 7
    with pytest.raises(ValueError, match=r"masks\[1\] must hold class ids in \[0, 2\)"):
        train_coarse_2d(images, masks, _config(), 2, tmp_path)
    with pytest.raises(ValueError, match="equal length"):
        train_coarse_2d(images, masks[:1], _config(), 2, tmp_path)


def test_coarse_model_is_deeplabv3plus_and_config_is_checked():
    from agcl.models import DeepLabV3PlusDecoder

    model = build_coarse_model_2d(Coarse2DConfig(**TINY), 5)
    assert isinstance(model.decoder, DeepLabV3PlusDecoder)
    assert model(torch.randn(2, 3, 30, 26)).shape == (2, 5, 30, 26)
    with pytest.raises(ValueError, match="coarse2d.optimizer"):
        Coarse2DConfig(optimizer="rmsprop")
    with pytest.raises(TypeError, match="coarse2d.hflip"):
        Coarse2DConfig(hflip=1)
    with pytest.raises(ValueError, match="coarse2d.attention_threshold"):
        Coarse2DConfig(attention_threshold=0.0)


def test_image_volumes_is_a_lazy_sequence_the_stream_reads():
    from agcl import AttentionPatchSampler
    from agcl.sampling import PatchStream

    images, masks = _scenes(3, size=24)
    att = [{1: ((slice(0, 24), slice(0, 24), slice(0, 1)), (m == 1)[..., None])} for m in masks]
    vols = ImageVolumes(images, att, masks)
    assert (
        len(vols) == 3
        and vols[1]["image"].shape == (3, 24, 24, 1)
        and vols[1]["label"].shape == (24, 24, 1)
    )
    stream = PatchStream(
        vols,
        AttentionPatchSampler(patch_size=8, patches_per_slice=4),
        batch_size=6,
        with_label=True,
    )
    batches = list(stream)
    assert sum(len(b) for b in batches) == 12 and batches[0].image.shape[1:] == (3, 8, 8)
    assert bool((batches[0].target == 1).all())
    # here the attention is the class-1 mask itself, so the label (void -> 0) equals it in every
    # patch
    for b in batches:
        assert torch.equal(b.label, b.attention)
    with pytest.raises(ValueError, match="one entry per image"):
        ImageVolumes(images, att[:2])
