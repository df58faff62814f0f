"""Bad input that used to give silent wrong results or raw errors (issue 11), one test per row."""

from __future__ import annotations

import json
import os
import stat
import warnings

import numpy as np
import pytest
import torch

from agcl import PairAug
from agcl._io import atomic_save
from agcl.data import discover_btcv, load_datalist, preprocess_ct
from agcl.data.preprocessing import percentile_normalize
from agcl.functional import modal_target_supcon_loss, soft_dice_loss
from agcl.losses import SoftDiceLoss
from agcl.pipeline import fuse_labels, load_stage
from agcl.pipeline import predict_volume, segment_with_attention
from agcl.pipeline import load_coarse
from agcl.sampling import AttentionPatchSampler


# row 1: one NaN voxel used to zero the whole scan
def test_preprocess_ct_refuses_non_finite_voxels_with_their_count():
    vol = np.linspace(-500, 500, 1000, dtype=np.float32).reshape(10, 10, 10)
    vol[3, 4, 5] = np.nan
    vol[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"volume must be finite; got 2 non-finite"):
        preprocess_ct(vol)
    with pytest.raises(ValueError, match="volume"):
        percentile_normalize(torch.from_numpy(vol))
    finite = np.nan_to_num(vol, nan=0.0, posinf=0.0)
    assert np.isfinite(preprocess_ct(finite)).all() and preprocess_ct(finite).max() > 0


# row 2: float attention in label-map mode was truncated by .long()
def test_sampler_refuses_non_integer_label_map_attention():
    att = torch.zeros(12, 12, 2)
    att[3:7, 3:7, 0] = 0.5
    sampler = AttentionPatchSampler(4, 2, seed=0)
    with pytest.raises(ValueError, match="attention .*non-integer value 0.5"):
        sampler.sample(torch.randn(12, 12, 2), att)
    att[3:7, 3:7, 0] = 3.0  # whole codes stored as floats are fine
    batch = sampler.sample(torch.randn(12, 12, 2), att)
    assert batch.target.tolist() == [3, 3] and bool((batch.attention[:, 0, 2, 2] == 1).all())
    stack = torch.zeros(1, 12, 12, 2)
    stack[0, 3:7, 3:7, 0] = 0.5  # a (K, ...) stack may be soft: non-zero is inside
    assert len(sampler.sample(torch.randn(12, 12, 2), stack)) == 2


# row 4: targets outside [0, 1] gave a negative loss
@pytest.mark.parametrize("value", [255.0, -1.0, float("nan")])
def test_dice_refuses_one_hot_targets_outside_unit_interval(value):
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[:, 1] = value
    with pytest.raises(ValueError, match=r"target .* must lie in \[0, 1\]"):
        soft_dice_loss(logits, target)
    with pytest.raises(ValueError, match="target"):
        SoftDiceLoss()(logits, target)


# row 9: NaN/inf logits and smooth_dr = 0 gave NaN
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_dice_refuses_non_finite_logits(bad):
    logits = torch.randn(1, 2, 3, 3)
    logits[0, 0, 1, 1] = bad
    with pytest.raises(ValueError, match="logits must be finite"):
        soft_dice_loss(logits, torch.zeros(1, 3, 3, dtype=torch.long))


def test_dice_refuses_zero_denominator_smoothing():
    empty = torch.zeros(1, 1, 2, 2)
    with pytest.raises(ValueError, match="smooth_dr"):
        soft_dice_loss(empty, empty, activation=None, smooth_nr=0.0, smooth_dr=0.0)
    with pytest.raises(ValueError, match="smooth_dr"):
        SoftDiceLoss(smooth_nr=0.0, smooth_dr=0.0)
    out = soft_dice_loss(empty, empty, activation=None, smooth_nr=0.0, smooth_dr=1e-5)
    assert torch.isfinite(out)


# row 5: rotation in normalised coordinates stretched a disk in a non-square patch
@pytest.mark.parametrize("hw", [(16, 64), (64, 16)])
def test_pair_aug_rotates_in_pixels_for_any_aspect_ratio(hw):
    h, w = hw
    yy, xx = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
    x = torch.zeros(8, 2, h, w)
    x[:, 1] = ((yy**2 + xx**2) <= 6.5**2).float()  # a 13-px disk at the centre
    def aug():
        return PairAug(scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=90.0, generator=torch.Generator().manual_seed(0))

    theta = aug().sample_theta(8, (h, w))  # the same draw as the view below
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0] * h / w, theta[:, 0, 0]))
    assert angles.abs().max() > 45  # the draw does rotate a lot
    out = aug().view(x)[:, 1]
    for mask in out:
        rows = torch.nonzero(mask.any(1)).squeeze(1)
        cols = torch.nonzero(mask.any(0)).squeeze(1)
        height, width = int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)
        assert abs(height - 13) <= 1 and abs(width - 13) <= 1, (height, width)


# row 7: floats and strings were truncated silently
@pytest.mark.parametrize("patch_size", [(1.5, 2.7), "12", 2.0, (4, "4"), True])
def test_sampler_patch_size_refuses_non_integers(patch_size):
    with pytest.raises(TypeError, match="patch_size"):
        AttentionPatchSampler(patch_size, 1)


def test_sampler_patch_size_accepts_numpy_integers():
    assert AttentionPatchSampler((np.int64(3), 5), 1).patch_size == (3, 5)


# row 8: huge unnormalised features returned NaN
def test_unnormalised_huge_features_raise_instead_of_nan():
    feats = torch.randn(4, 2, 8) * 1e20
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="normalize=False"):
        modal_target_supcon_loss(feats, labels, normalize=False)
    assert torch.isfinite(modal_target_supcon_loss(feats, labels))  # normalised: fine
    assert torch.isfinite(modal_target_supcon_loss(feats * 1e-19, labels, normalize=False))


# row 10: duplicates and macOS resource forks
def _btcv(tmp_path, names):
    (tmp_path / "img").mkdir()
    (tmp_path / "label").mkdir()
    for n in names:
        (tmp_path / "img" / n).write_bytes(b"")
    (tmp_path / "label" / "label0001.nii.gz").write_bytes(b"")
    return tmp_path


def test_discover_btcv_refuses_duplicate_case_ids_naming_both(tmp_path):
    root = _btcv(tmp_path, ["img0001.nii", "img0001.nii.gz"])
    with pytest.raises(ValueError, match=r"img0001\.nii.* and .*img0001\.nii"):
        discover_btcv(root)


def test_discover_btcv_ignores_hidden_files(tmp_path):
    root = _btcv(tmp_path, ["img0001.nii.gz", "._img0001.nii.gz", ".img0002.nii.gz"])
    cases = discover_btcv(root)
    assert [c.case_id for c in cases] == ["0001"]


# row 11: malformed datalists raised bare TypeErrors
@pytest.mark.parametrize("split, match", [
    ("img0001.nii.gz", "must be a list"),
    (None, "must be a list"),
    ([{"image": 5}], r"entry 0 .*'image' must be a path string"),
    ([{"image": "a.nii.gz", "label": ["x"]}], r"entry 0 .*'label' must be a path string"),
])
def test_load_datalist_names_file_and_entry(tmp_path, split, match):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"training": split}))
    with pytest.raises(ValueError, match=match) as info:
        load_datalist(path)
    assert str(path) in str(info.value)


# row 12: checkpoints of the wrong shape raised AttributeError/KeyError
def test_checkpoint_list_payload_names_the_path(tmp_path):
    path = tmp_path / "coarse.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match=f"{path}.*dict.*list"):
        load_coarse(path)
    with pytest.raises(ValueError, match="list"):
        load_stage(path, stage="coarse")


def test_checkpoint_missing_keys_are_listed(tmp_path):
    path = tmp_path / "coarse.pt"
    torch.save({"stage": "coarse", "model": {}}, path)
    with pytest.raises(ValueError, match=r"misses the keys \['extra'\]"):
        load_coarse(path)
    with pytest.raises(ValueError, match=r"misses the keys .*'epoch'"):
        load_stage(path, stage="coarse")
    torch.save({"stage": "coarse", "model": {}, "extra": {"config": {}}}, path)
    with pytest.raises(ValueError, match=r"\['extra'\] misses the keys \['organ_ids'\]"):
        load_coarse(path)


# row 13: checkpoints were written 0600
@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_save_uses_the_umask_mode(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = atomic_save({"x": torch.ones(2)}, tmp_path / "a.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert torch.load(path, weights_only=True)["x"].sum() == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]  # no temporary file left


# row 14: predict options and int16 organ ids
@pytest.mark.parametrize("kwargs, err, match", [
    ({"threshold": -1.0}, ValueError, "threshold"),
    ({"threshold": float("nan")}, ValueError, "threshold"),
    ({"threshold": "0.5"}, TypeError, "threshold"),
    ({"stride": 0}, ValueError, "stride"),
    ({"stride": 2.5}, TypeError, "stride"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"coarse_weight": 1.5}, ValueError, "coarse_weight"),
    ({"coarse_weight": "0.5"}, TypeError, "coarse_weight"),
])
def test_predict_volume_checks_options_before_reading_files(tmp_path, kwargs, err, match):
    with pytest.raises(err, match=match):
        predict_volume(np.zeros((4, 4, 4)), spacing=(1, 1, 1), coarse_checkpoint=None,
                       segment_checkpoint=tmp_path / "missing.pt", **kwargs)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"stride": 0}, ValueError, "stride"),
    ({"stride": 9}, ValueError, "stride"),
    ({"threshold": float("nan")}, ValueError, "threshold"),
    ({"threshold": 1.0}, ValueError, "threshold"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"patch_size": 8.0}, TypeError, "patch_size"),
])
def test_segment_with_attention_checks_options(kwargs, err, match):
    opts = {"patch_size": 8, "stride": 4, **kwargs}
    with pytest.raises(err, match=match):
        segment_with_attention(torch.nn.Identity(), np.zeros((4, 4, 4)), np.zeros((1, 4, 4, 4), bool), [1], **opts)


def test_fuse_labels_refuses_ids_beyond_int16():
    probs = np.full((2, 3), 0.9)
    with pytest.raises(ValueError, match="organ_ids must be at most 32767"):
        fuse_labels(probs, organ_ids=[1, 40000])
    assert fuse_labels(probs, organ_ids=[1, 32767]).tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match="threshold"):
        fuse_labels(probs, threshold="0.5")


# row 15: meta tensors, empty PairAug batches, generator=123
def test_meta_device_labels_are_refused_clearly():
    feats = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="labels is on the meta device"):
        modal_target_supcon_loss(feats, torch.zeros(4, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="features is on the meta device"):
        modal_target_supcon_loss(feats.to("meta"), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target is on the meta device"):
        soft_dice_loss(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long, device="meta"))


def test_pair_aug_empty_batch_in_empty_batch_out():
    x = torch.rand(0, 2, 8, 8)
    v1, v2 = PairAug(intensity_jitter=0.1)(x)
    assert v1.shape == v2.shape == (0, 2, 8, 8) and v1.dtype == x.dtype


@pytest.mark.parametrize("make", [lambda g: PairAug(generator=g), lambda g: AttentionPatchSampler(4, 1, generator=g)])
def test_generator_must_be_a_torch_generator(make):
    with pytest.raises(TypeError, match="generator must be None or a torch.Generator"):
        make(123)


def test_sampler_sample_generator_checked():
    lab = torch.zeros(8, 8, 1, dtype=torch.long)
    lab[2:5, 2:5] = 1
    with warnings.catch_warnings(), pytest.raises(TypeError, match="generator"):
        AttentionPatchSampler(4, 1).sample(torch.randn(8, 8, 1), lab, generator=7)


# one validation path: integer options go through agcl._validation.check_int (TypeError for
# non-integers, ValueError for out-of-range values)
@pytest.mark.parametrize("call, err, match", [
    (lambda: AttentionPatchSampler(4, 2.0), TypeError, "patches_per_slice must be an int"),
    (lambda: AttentionPatchSampler(4, 0), ValueError, "patches_per_slice"),
    (lambda: AttentionPatchSampler(4, 1, margin="1"), TypeError, "margin must be an int"),
    (lambda: AttentionPatchSampler(4, 1, max_patches=1.5), TypeError, "max_patches must be an int"),
    (lambda: AttentionPatchSampler(4, 1, axis=1.0), TypeError, "axis must be an int"),
    (lambda: AttentionPatchSampler(4, 1, axis=3), ValueError, r"axis must lie in \[-3, 2\]"),
    (lambda: AttentionPatchSampler(4, 1, centre_mode="box"), ValueError, "centre_mode must be one of"),
    (lambda: list(__import__("agcl.sampling").sampling.minibatches(
        __import__("agcl.sampling").sampling.PatchBatch.empty(4), 2.0)), TypeError, "batch_size must be an int"),
    (lambda: __import__("agcl.models").models.adapt_input_conv(torch.ones(2, 3, 3, 3), 0), ValueError, "in_chans"),
    (lambda: __import__("agcl.metrics").metrics.hausdorff_distance(
        np.ones((3, 3), bool), np.ones((3, 3), bool), percentile="95"), TypeError, "percentile"),
    (lambda: __import__("agcl.metrics").metrics.hausdorff_distance(
        np.ones((3, 3), bool), np.ones((3, 3), bool), percentile=0), ValueError, "percentile"),
])
def test_option_checks_share_one_path(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_warn_user_moved_but_still_importable_and_attributed_to_the_caller():
    from agcl._warnings import warn_user
    from agcl.functional._contrastive_rows import warn_user as old

    assert old is warn_user
    with pytest.warns(UserWarning, match="ignored with a single channel") as rec:
        soft_dice_loss(torch.randn(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), activation="sigmoid", include_background=False)
    assert rec[0].filename == __file__


def test_backend_defined_once():
    import agcl.functional.modal_target as fm
    import agcl.kernels as k

    assert fm.Backend is k.Backend


def test_dice_refuses_empty_batch_or_channels():  # the mean over no terms was NaN
    for shape in [(0, 2, 3, 3), (1, 0, 3, 3)]:
        with pytest.raises(ValueError, match="logits must hold at least one sample and one channel"):
            soft_dice_loss(torch.zeros(shape), torch.zeros(shape), activation=None)


@pytest.mark.parametrize("normalize", [True, False])
def test_tiny_temperature_refused_not_nan(normalize):
    from agcl.functional import modal_target_supcon_loss

    feats = torch.tensor([[[-1.0046], [0.6352]]])
    with pytest.raises(ValueError, match="temperature"):
        modal_target_supcon_loss(feats, temperature=2e-146, normalize=normalize)
