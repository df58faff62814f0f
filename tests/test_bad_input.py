"""Bad input gets a clear error naming the argument, never a silent wrong number.

One section per module guarded, in package order. Each test pins a report row of issue 11 or
issue 26 (noted in its comment) and fails on the code before the fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
import zipfile

import numpy as np
import pytest
import torch

from agcl import ModalTargetSupConLoss, PairAug, PatchStream
from agcl._io import DIGEST_KEY, atomic_save, safe_load
from agcl._validation import check_int, check_int_sequence, check_positive
from agcl.data import discover_btcv, load_datalist, preprocess_ct
from agcl.data.preprocessing import percentile_normalize
from agcl.data.synthetic import make_phantom
from agcl.functional import modal_target_supcon_loss, soft_dice_loss
from agcl.losses import SoftDiceLoss
from agcl.metrics import (
    evaluate_labels,
    format_table,
    hausdorff_distance,
    iou_from_confusion,
    mean_iou,
    summarize_cases,
)
from agcl.pipeline import (
    fuse_labels,
    load_coarse,
    load_stage,
    predict_volume,
    segment_with_attention,
)
from agcl.sampling import AttentionPatchSampler
from tests.pipeline._tiny import TINY_DATA_ARGS, TINY_RUN_ARGS

# ---------------------------------------------------------------------------------------------
# agcl._validation: the shared checks
# ---------------------------------------------------------------------------------------------


# one validation path: integer options go through agcl._validation.check_int (TypeError for
# non-integers, ValueError for out-of-range values)
@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: AttentionPatchSampler(4, 2.0), TypeError, "patches_per_slice must be an int"),
        (lambda: AttentionPatchSampler(4, 0), ValueError, "patches_per_slice"),
        (lambda: AttentionPatchSampler(4, 1, margin="1"), TypeError, "margin must be an int"),
        (
            lambda: AttentionPatchSampler(4, 1, max_patches=1.5),
            TypeError,
            "max_patches must be an int",
        ),
        (lambda: AttentionPatchSampler(4, 1, axis=1.0), TypeError, "axis must be an int"),
        (lambda: AttentionPatchSampler(4, 1, axis=3), ValueError, r"axis must lie in \[-3, 2\]"),
        (
            lambda: AttentionPatchSampler(4, 1, centre_mode="box"),
            ValueError,
            "centre_mode must be one of",
        ),
        (
            lambda: list(
                __import__("agcl.sampling").sampling.minibatches(
                    __import__("agcl.sampling").sampling.PatchBatch.empty(4), 2.0
                )
            ),
            TypeError,
            "batch_size must be an int",
        ),
        (
            lambda: __import__("agcl.models").models.adapt_input_conv(torch.ones(2, 3, 3, 3), 0),
            ValueError,
            "in_chans",
        ),
        (
            lambda: hausdorff_distance(
                np.ones((3, 3), bool), np.ones((3, 3), bool), percentile="95"
            ),
            TypeError,
            "percentile",
        ),
        (
            lambda: hausdorff_distance(np.ones((3, 3), bool), np.ones((3, 3), bool), percentile=0),
            ValueError,
            "percentile",
        ),
    ],
)
def test_option_checks_share_one_path(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_numpy_scalars_pass_like_python_numbers_and_come_back_as_python_ones():
    # issue 26, row 24 (the kind): np.float32(2.0) / np.int64(3) were refused
    assert check_int("n", np.int64(3)) == 3 and type(check_int("n", np.int64(3))) is int
    assert check_positive("t", np.float32(0.5)) == 0.5
    assert check_int_sequence("targets", np.array([1, 6])) == [1, 6]
    for bad in (2.0, np.float32(2.0), True, np.bool_(True), "2"):
        with pytest.raises(TypeError, match="n must be an int"):
            check_int("n", bad)
    with pytest.raises(TypeError, match=r"targets\[1\] = 2.7"):
        check_int_sequence("targets", [1, 2.7])


def test_warn_user_moved_but_still_importable_and_attributed_to_the_caller():
    from agcl._warnings import warn_user
    from agcl.functional._contrastive_rows import warn_user as old

    assert old is warn_user
    with pytest.warns(UserWarning, match="ignored with a single channel") as rec:
        soft_dice_loss(
            torch.randn(1, 1, 2, 2),
            torch.zeros(1, 1, 2, 2),
            activation="sigmoid",
            include_background=False,
        )
    assert rec[0].filename == __file__


# ---------------------------------------------------------------------------------------------
# agcl._io: checkpoints
# ---------------------------------------------------------------------------------------------


# issue 11, row 13: checkpoints were written 0600
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


def _flip_a_byte_of_tensor(path, record="data/0", offset=5):
    """Flip one bit inside the bytes of a tensor record of a torch zip file, in place."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(record))
    name_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28 : info.header_offset + 30], "little")
    raw[info.header_offset + 30 + name_len + extra_len + offset] ^= 0x01
    path.write_bytes(bytes(raw))


# issue 26, row 9: a flipped byte inside a tensor record loaded silently
def test_checkpoint_with_a_flipped_tensor_byte_is_refused_naming_the_path(tmp_path):
    path = atomic_save(
        {"model": torch.nn.Linear(4, 3).state_dict(), "epoch": 2}, tmp_path / "ckpt.pt"
    )
    _flip_a_byte_of_tensor(path)
    assert torch.load(path, weights_only=True)["epoch"] == 2  # torch itself does not notice
    with pytest.raises(ValueError, match=f"checkpoint {path} is damaged: the digest"):
        safe_load(path)


# issue 26, row 9: a diverged run's weights loaded silently
def test_checkpoint_with_nan_weights_is_refused_naming_the_path_and_tensor(tmp_path):
    state = torch.nn.Linear(4, 3).state_dict()
    state["bias"][1] = float("nan")
    path = atomic_save({"model": state}, tmp_path / "ckpt.pt")
    with pytest.raises(ValueError, match=rf"{path} holds non-finite .*\['model'\]\['bias'\]"):
        safe_load(path)
    torch.save({"model": state}, tmp_path / "plain.pt")  # without a digest: checked all the same
    with pytest.raises(ValueError, match="non-finite"):
        safe_load(tmp_path / "plain.pt")
    assert safe_load(path, allow_non_finite=True)["model"]["bias"].isnan().sum() == 1


def test_digest_is_invisible_to_callers_and_old_files_still_load(tmp_path):
    model = torch.nn.Linear(4, 3)
    state = model.state_dict()
    atomic_save(state, tmp_path / "sd.pt")
    assert DIGEST_KEY not in state  # the caller's dict is not changed
    loaded = safe_load(tmp_path / "sd.pt")
    assert list(loaded) == ["weight", "bias"]
    model.load_state_dict(loaded)  # strict: no extra key
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt")  # an older file: no digest
    assert safe_load(tmp_path / "old.pt")["w"].sum() == 2
    with pytest.raises(ValueError, match=DIGEST_KEY):
        atomic_save({DIGEST_KEY: 1}, tmp_path / "x.pt")


# ---------------------------------------------------------------------------------------------
# agcl.functional / agcl.losses: the modal-target loss
# ---------------------------------------------------------------------------------------------


def _feats():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 2, 4, dtype=torch.float64, generator=g), torch.tensor([0, 0, 1, 1, 2, 2])


# issue 26, row 1: a gradient penalty through the default backend gave a wrong second derivative
@pytest.mark.parametrize(
    "make",
    [
        lambda: lambda x, y, **kw: modal_target_supcon_loss(x, y, **kw),
        lambda: lambda x, y, **kw: ModalTargetSupConLoss(**kw)(x, y),
    ],
    ids=["functional", "module"],
)
def test_double_backward_needs_the_naive_backend(make):
    feats, labels = _feats()
    loss_fn = make()
    x = feats.clone().requires_grad_()
    with pytest.raises(RuntimeError, match=r"double backward .*backend='naive'"):
        torch.autograd.grad(loss_fn(x, labels), x, create_graph=True)
    # the naive backend's second derivative is exact (float64 finite differences agree)
    assert torch.autograd.gradgradcheck(lambda z: loss_fn(z, labels, backend="naive"), (x,))


# issue 26, row 26: torch.func over the loss ended in torch-internal messages
def test_torch_func_grad_names_the_naive_backend_which_works():
    feats, labels = _feats()
    with pytest.raises(RuntimeError, match=r"torch.func .*backend='torch'.*backend='naive'"):
        torch.func.grad(lambda x: modal_target_supcon_loss(x, labels))(feats)
    got = torch.func.grad(lambda x: modal_target_supcon_loss(x, labels, backend="naive"))(feats)
    x = feats.clone().requires_grad_()
    modal_target_supcon_loss(x, labels).backward()  # the default backend's ordinary gradient
    torch.testing.assert_close(got, x.grad)  # float64 both: rounding only
    with pytest.raises(RuntimeError, match=r"cannot run under torch.func.vmap on any backend"):
        torch.func.vmap(lambda x: modal_target_supcon_loss(x, labels, backend="naive"))(feats[None])


def test_numpy_scalar_options_give_the_python_number_result():  # np.float32 was refused
    feats, labels = _feats()
    want = modal_target_supcon_loss(feats, labels, temperature=0.5, partial_weight=0.0)
    got = modal_target_supcon_loss(
        feats,
        labels,
        temperature=np.float32(0.5),
        partial_weight=np.float32(0.0),
        block_size=np.int64(4),
    )
    assert torch.equal(got, want)  # 0.5 is exact in float32: the same number


# issue 11, row 8: huge unnormalised features returned NaN
def test_unnormalised_huge_features_raise_instead_of_nan():
    feats = torch.randn(4, 2, 8) * 1e20
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="normalize=False"):
        modal_target_supcon_loss(feats, labels, normalize=False)
    assert torch.isfinite(modal_target_supcon_loss(feats, labels))  # normalised: fine
    assert torch.isfinite(modal_target_supcon_loss(feats * 1e-19, labels, normalize=False))


@pytest.mark.parametrize("normalize", [True, False])
def test_tiny_temperature_refused_not_nan(normalize):
    feats = torch.tensor([[[-1.0046], [0.6352]]])
    with pytest.raises(ValueError, match="temperature"):
        modal_target_supcon_loss(feats, temperature=2e-146, normalize=normalize)


# issue 11, row 15: meta tensors
def test_meta_device_labels_are_refused_clearly():
    feats = torch.randn(4, 2, 8)
    with pytest.raises(ValueError, match="labels is on the meta device"):
        modal_target_supcon_loss(feats, torch.zeros(4, dtype=torch.long, device="meta"))
    with pytest.raises(ValueError, match="features is on the meta device"):
        modal_target_supcon_loss(feats.to("meta"), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="target is on the meta device"):
        soft_dice_loss(
            torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long, device="meta")
        )


def test_backend_defined_once():
    import agcl.functional.modal_target as fm
    import agcl.kernels as k

    assert fm.Backend is k.Backend


# ---------------------------------------------------------------------------------------------
# agcl.functional / agcl.losses: the Dice loss
# ---------------------------------------------------------------------------------------------


# issue 11, row 4: targets outside [0, 1] gave a negative loss
@pytest.mark.parametrize("value", [255.0, -1.0, float("nan")])
def test_dice_refuses_one_hot_targets_outside_unit_interval(value):
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 3, 4, 4)
    target[:, 1] = value
    with pytest.raises(ValueError, match=r"target .* must lie in \[0, 1\]"):
        soft_dice_loss(logits, target)
    with pytest.raises(ValueError, match="target"):
        SoftDiceLoss()(logits, target)


# issue 26, row 2: a single-channel float mask of 0/255 was accepted (loss 0.008)
@pytest.mark.parametrize("shape", [(2, 4, 4), (2, 1, 4, 4)])
@pytest.mark.parametrize("value", [255.0, -1.0, float("nan")])
def test_sigmoid_dice_refuses_single_channel_masks_outside_unit_interval(shape, value):
    logits = torch.randn(2, 1, 4, 4)
    target = torch.zeros(shape)
    target[0, ..., 1] = value
    with pytest.raises(ValueError, match=r"target .* must lie in \[0, 1\]; got values in"):
        SoftDiceLoss(activation="sigmoid")(logits, target)
    ok = target.nan_to_num(0.0).clamp(0, 1)
    assert torch.isfinite(SoftDiceLoss(activation="sigmoid")(logits, ok))


# issue 11, row 9: NaN/inf logits and smooth_dr = 0 gave NaN
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


def test_dice_refuses_empty_batch_or_channels():  # the mean over no terms was NaN
    for shape in [(0, 2, 3, 3), (1, 0, 3, 3)]:
        with pytest.raises(ValueError, match="at least one sample and one channel"):
            soft_dice_loss(torch.zeros(shape), torch.zeros(shape), activation=None)


# ---------------------------------------------------------------------------------------------
# agcl.augment: PairAug
# ---------------------------------------------------------------------------------------------


def _disk(b, h, w, radius=6.5):
    yy, xx = torch.meshgrid(
        torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij"
    )
    x = torch.zeros(b, 2, h, w)
    x[:, 1] = ((yy**2 + xx**2) <= radius**2).float()  # a 13-px disk at the centre
    return x


def _extent(mask):
    rows = torch.nonzero(mask.any(1)).squeeze(1)
    cols = torch.nonzero(mask.any(0)).squeeze(1)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


# issue 11, row 5: rotation in normalised coordinates stretched a disk in a non-square patch
@pytest.mark.parametrize("hw", [(16, 64), (64, 16)])
def test_pair_aug_rotates_in_pixels_for_any_aspect_ratio(hw):
    h, w = hw
    x = _disk(8, h, w)

    def aug():
        return PairAug(
            scale=(1.0, 1.0),
            ratio=(1.0, 1.0),
            degrees=90.0,
            generator=torch.Generator().manual_seed(0),
        )

    theta = aug().sample_theta(8, (h, w))  # the same draw as the view below
    angles = torch.rad2deg(torch.atan2(theta[:, 1, 0] * h / w, theta[:, 0, 0]))
    assert angles.abs().max() > 45  # the draw does rotate a lot
    for mask in aug().view(x)[:, 1]:
        height, width = _extent(mask)
        assert abs(height - 13) <= 1 and abs(width - 13) <= 1, (height, width)


# issue 26, row 3: at 16 x 64 and 30 degrees the disk grew to 26 px: that is the crop's zoom
# (area 0.3-0.7 of the patch, resized back), the same along both axes; the rotation keeps it round
@pytest.mark.parametrize("hflip", [False, True])
def test_pair_aug_non_square_disk_grows_by_the_crop_zoom_only(hflip):
    h, w = 40, 160  # room for a zoomed disk (up to 13 / sqrt(0.3) = 24 px) away from the border
    x = _disk(64, h, w)

    def aug():
        return PairAug(
            ratio=(1.0, 1.0), degrees=30.0, hflip=hflip, generator=torch.Generator().manual_seed(0)
        )

    theta = aug().sample_theta(64, (h, w))
    zoom = 1 / torch.linalg.det(theta[:, :, :2]).abs().sqrt()  # 1 / sqrt(crop area)
    checked = 0
    for mask, z in zip(aug().view(x)[:, 1], zoom.tolist()):
        if mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any():
            continue  # cut by the border
        height, width = _extent(mask)
        # nearest sampling may gain or lose one source pixel at the rim (z output pixels) plus
        # one output pixel; a rotation in normalised coordinates would make it 4x wider than tall
        assert abs(height - 13 * z) <= z + 1 and abs(width - 13 * z) <= z + 1, (height, width, z)
        checked += 1
    assert checked >= 32


# issue 26, row 3 (the path callers use): sample_theta's size was not checked
@pytest.mark.parametrize(
    "size, err",
    [((16.5, 64), TypeError), ((0, 64), ValueError), ((16,), TypeError), ("16x64", TypeError)],
)
def test_sample_theta_checks_the_patch_size(size, err):
    with pytest.raises(err, match="size"):
        PairAug().sample_theta(2, size)
    with pytest.raises(TypeError, match="n must be an int"):
        PairAug().sample_theta(2.0)


def test_pair_aug_ranges_refuse_strings():
    with pytest.raises(TypeError, match="scale must be a pair of numbers"):
        PairAug(scale=("0.3", "0.7"))
    assert PairAug(scale=(np.float32(0.5), 0.7)).scale == (0.5, 0.7)


# issue 11, row 15: empty PairAug batches, generator=123
def test_pair_aug_empty_batch_in_empty_batch_out():
    x = torch.rand(0, 2, 8, 8)
    v1, v2 = PairAug(intensity_jitter=0.1)(x)
    assert v1.shape == v2.shape == (0, 2, 8, 8) and v1.dtype == x.dtype


@pytest.mark.parametrize(
    "make", [lambda g: PairAug(generator=g), lambda g: AttentionPatchSampler(4, 1, generator=g)]
)
def test_generator_must_be_a_torch_generator(make):
    with pytest.raises(TypeError, match="generator must be None or a torch.Generator"):
        make(123)


# ---------------------------------------------------------------------------------------------
# agcl.sampling: AttentionPatchSampler
# ---------------------------------------------------------------------------------------------


def _organ_volume():
    lab = torch.zeros(12, 12, 2, dtype=torch.long)
    lab[3:7, 3:7, :] = 2
    return torch.randn(12, 12, 2), lab


# issue 11, row 2: float attention in label-map mode was truncated by .long()
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


# issue 26, row 4: targets=[2.7] sampled organ 2, modality=1.9 was stored as 1
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"targets": [2.7]}, r"targets\[0\] = 2.7"),
        ({"targets": np.array([2.0])}, "targets must be a 1-D sequence of ints"),
        ({"modality": 1.9}, "modality must be an int"),
        ({"volume_index": 0.5}, "volume_index must be an int"),
    ],
)
def test_sampler_sample_refuses_non_integer_codes(kwargs, match):
    image, lab = _organ_volume()
    sampler = AttentionPatchSampler(4, 2, seed=0)
    with pytest.raises(TypeError, match=match):
        sampler.sample(image, lab, **kwargs)
    ok = {k: (2 if k == "targets" else 1) for k in kwargs}
    ok["targets"] = [np.int64(2)] if "targets" in kwargs else None
    batch = sampler.sample(image, lab, **ok)
    assert batch.target.unique().tolist() == [2]


def test_sampler_refuses_non_integer_sparse_codes_and_cut_values():
    image, lab = _organ_volume()
    sampler = AttentionPatchSampler(4, 2, seed=0)
    box = (slice(3, 7), slice(3, 7), slice(0, 2))
    with pytest.raises(TypeError, match="sparse attention's keys must be integer organ codes"):
        sampler.plan({2.7: (box, np.ones((4, 4, 2), bool))}, (12, 12, 2))
    centres, target = sampler.plan(lab, (12, 12, 2))
    with pytest.raises(TypeError, match="target must hold integers"):
        sampler.cut(image, lab, centres, target.float() + 0.5)
    with pytest.raises(TypeError, match="shape must hold integers"):
        sampler.plan(lab, (12, 12, 2.5))
    with pytest.raises(ValueError, match="seed must lie in"):
        AttentionPatchSampler(4, 2, seed=2**64)


# issue 11, row 7: floats and strings were truncated silently
@pytest.mark.parametrize("patch_size", [(1.5, 2.7), "12", 2.0, (4, "4"), True])
def test_sampler_patch_size_refuses_non_integers(patch_size):
    with pytest.raises(TypeError, match="patch_size"):
        AttentionPatchSampler(patch_size, 1)


def test_sampler_patch_size_accepts_numpy_integers():
    assert AttentionPatchSampler((np.int64(3), 5), 1).patch_size == (3, 5)


def test_windows_and_batches_take_numpy_ints_and_refuse_truncating_values():
    from agcl.sampling import PatchBatch, extract_windows

    x = torch.arange(16).view(4, 4)
    with pytest.raises(ValueError, match="pad_value must be a whole number .*got 0.5"):
        extract_windows(x, torch.tensor([[0, 0]]), 3, pad_value=0.5)  # was padded with 0
    assert extract_windows(x, torch.tensor([[0, 0]]), 3, pad_value=np.int16(-1))[0, 0, 0] == -1
    batch = PatchBatch.cat([PatchBatch.empty(4, channels=2)] * 2)
    assert len(batch[np.int64(0) : np.int64(1)]) == 0
    image, lab = _organ_volume()
    batch = AttentionPatchSampler(4, 2, seed=0).sample(image, lab)
    assert len(batch[np.int64(1)]) == 1 and batch[np.int64(1)].image.shape == (1, 1, 4, 4)
    with pytest.raises(TypeError, match="channels must be an int"):
        PatchBatch.empty(4, channels=2.5)


def test_sampler_sample_generator_checked():
    lab = torch.zeros(8, 8, 1, dtype=torch.long)
    lab[2:5, 2:5] = 1
    with warnings.catch_warnings(), pytest.raises(TypeError, match="generator"):
        AttentionPatchSampler(4, 1).sample(torch.randn(8, 8, 1), lab, generator=7)


# ---------------------------------------------------------------------------------------------
# agcl.sampling: PatchStream
# ---------------------------------------------------------------------------------------------


def _stream_volume(channels=1, modality=0):
    lab = np.zeros((16, 16, 3), np.int16)
    lab[4:9, 4:9, :] = 1
    shape = (16, 16, 3) if channels == 1 else (channels, 16, 16, 3)
    image = np.random.default_rng(channels).random(shape, dtype=np.float32)
    return {"image": image, "attention": lab, "label": lab, "modality": modality}


class _Lazy:
    """A sequence that builds each volume when indexed (as a loader of files would)."""

    def __init__(self, channels):
        self.channels = channels

    def __len__(self):
        return len(self.channels)

    def __getitem__(self, index):
        return _stream_volume(self.channels[index])


class _FixedOrder(PatchStream):
    """Volumes in index order: shard s of 2 gets volumes s, s + 2, ... (one per worker)."""

    def rank_volumes(self):
        return list(range(len(self.volumes)))


def _patch_stream(volumes, **kw):
    return PatchStream(
        volumes,
        AttentionPatchSampler(patch_size=8, patches_per_slice=2),
        batch_size=4,
        buffer_size=8,
        **kw,
    )


# issue 26, row 5: a 1-channel volume was broadcast into 2 channels, or a raw torch error
def test_patch_stream_refuses_mixed_channel_counts_up_front():
    vols = [_stream_volume(1), _stream_volume(2), _stream_volume(1)]
    with pytest.raises(
        ValueError,
        match=r"1 channel\(s\) in volumes\[0, 2\]; 2 channel\(s\) "
        r"in volumes\[1\]",
    ):
        _patch_stream(vols)


@pytest.mark.parametrize("seed", range(4))  # whichever volume the shuffle reads first
def test_patch_stream_refuses_mixed_channel_counts_of_lazy_volumes_when_read(seed):
    stream = _patch_stream(_Lazy([1, 2, 1, 1]), seed=seed, shards=1)
    with pytest.raises(
        ValueError,
        match=r"same number of image channels .*; got 1 channel\(s\) "
        r"in volumes\[\d\]; 2 channel\(s\) in volumes\[1\]",
    ):
        list(stream)


def test_patch_stream_compares_channels_across_workers():
    # worker 0 reads the 1-channel volumes, worker 1 the 2-channel ones: only the merge sees both
    stream = _FixedOrder(
        _Lazy([1, 2, 1, 2]),
        AttentionPatchSampler(patch_size=8),
        batch_size=4,
        buffer_size=8,
        shards=2,
    )
    with pytest.raises(
        ValueError,
        match=r"1 channel\(s\) in volumes\[[02]\]; 2 channel\(s\) "
        r"in volumes\[[13]\]",
    ):
        list(stream.loader(num_workers=2))


# issue 26, row 6: seed=2**32 gave the same patches as seed 0
def test_patch_stream_seeds_are_distinct_or_refused():
    vols = [_stream_volume(1)] * 3

    def patches(seed):
        return [b.centre.tolist() for b in _patch_stream(vols, seed=seed)]

    assert patches(2**32) != patches(0) and patches(2**32 + 5) != patches(5)
    assert patches(2**32) == patches(2**32)
    with pytest.raises(ValueError, match="seed must be an int >= 0"):
        _patch_stream(vols, seed=-1)
    with pytest.raises(TypeError, match="seed must be an int"):
        _patch_stream(vols, seed=1.5)


# issue 26, row 23: a dict of volumes gave KeyError: 3, "modality": "ct" a bare int() error
def test_patch_stream_names_dict_volumes_and_bad_modalities():
    vol = _stream_volume(1)
    with pytest.raises(TypeError, match=r"volumes must be a sequence .*got a dict .*values\(\)"):
        _patch_stream({"a": vol, "b": vol})
    for modality, err in (("ct", TypeError), (1.9, TypeError), (-1, ValueError)):
        vols = [vol, {**vol, "modality": modality}]
        with pytest.raises(err, match=r"volumes\[1\]\['modality'\] must be an int"):
            list(_patch_stream(vols))
    with pytest.raises(TypeError, match=r"targets\[0\] = 1.5"):
        _patch_stream([vol], targets=[1.5])


# ---------------------------------------------------------------------------------------------
# agcl.metrics
# ---------------------------------------------------------------------------------------------


def _two_squares():
    a = np.zeros((8, 8), bool)
    a[1:3, 1:3] = True
    b = np.zeros((8, 8), bool)
    b[1:3, 2:4] = True
    return a, b


# issue 26, row 24: numpy scalars were refused for spacing and percentile
def test_surface_metrics_take_numpy_scalars():
    a, b = _two_squares()
    want = hausdorff_distance(a, b, spacing=2.0, percentile=95)
    for spacing in (
        np.float32(2.0),
        np.int64(2),
        (np.float32(2.0), np.float64(2.0)),
        np.array([2.0, 2.0]),
        torch.tensor([2.0, 2.0]),
    ):
        assert hausdorff_distance(a, b, spacing=spacing, percentile=np.float32(95)) == want
    for bad in ("2", (2.0, "2"), True):
        with pytest.raises(TypeError, match="spacing"):
            hausdorff_distance(a, b, spacing=bad)


# issue 26, row 7: two organs with one name: one row silently dropped
def test_evaluate_labels_refuses_duplicate_names_and_non_integer_ids():
    gt = np.zeros((8, 8), np.int64)
    gt[1:3, 1:3], gt[5:7, 5:7] = 1, 2
    with pytest.raises(ValueError, match=r"own name; got 'x' for ids \[1, 2\]"):
        evaluate_labels(gt, gt, organs={1: "x", 2: "x"})
    with pytest.raises(ValueError, match="must not repeat a label id"):
        evaluate_labels(gt, gt, organs=[1, 1])
    with pytest.raises(TypeError, match="organs must map integer label ids.*1.5"):
        evaluate_labels(gt, gt, organs={1.5: "x"})
    with pytest.raises(TypeError, match=r"organs\[0\] = 2.7"):
        evaluate_labels(gt, gt, organs=[2.7])
    with pytest.raises(ValueError, match="percentile"):
        evaluate_labels(gt, gt, percentile=150)
    table = evaluate_labels(gt, gt, organs={np.int64(1): "x", 2: "y"})
    assert set(table["per_organ"]) == {"x", "y"}


# issue 26, row 8: negative or NaN counts gave None/NaN
@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), 2.5])
def test_iou_from_confusion_refuses_bad_counts(bad):
    cm = np.array([[3.0, 1.0], [1.0, 1.0]])
    cm[0, 1] = bad
    with pytest.raises(ValueError, match="cm must hold pixel counts"):
        iou_from_confusion(cm)
    with pytest.raises(ValueError, match=r"ious\[1\]"):
        mean_iou([0.5, float("nan")])


# issue 26, row 25: malformed tables gave a bare KeyError
@pytest.mark.parametrize(
    "tables, match",
    [
        ([{"x": 1}], r"tables\[0\] misses the key\(s\) \['per_organ'\]"),
        (
            [{"per_organ": {"liver": {"dice": 1.0}}}],
            r"tables\[0\]\['per_organ'\]\['liver'\] misses the key\(s\) "
            r"\['hd95', 'assd', 'missed'\]",
        ),
        (["abc"], r"tables\[0\] must be a table"),
    ],
)
def test_summarize_cases_names_the_missing_key(tables, match):
    with pytest.raises(ValueError, match=match):
        summarize_cases(tables)


def test_format_table_names_the_missing_key():
    row = {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0}
    with pytest.raises(ValueError, match=r"table misses the key\(s\) \['mean'\]"):
        format_table({"per_organ": {"liver": row}})
    with pytest.raises(ValueError, match=r"table\['mean'\] misses the key\(s\) \['missed'\]"):
        format_table({"per_organ": {"liver": row}, "mean": {k: row[k] for k in list(row)[:3]}})


# ---------------------------------------------------------------------------------------------
# agcl.models
# ---------------------------------------------------------------------------------------------


def test_model_sizes_refuse_floats_and_store_numpy_ints_as_ints():
    from agcl.models import ASPPDecoder, ProjectionHead

    with pytest.raises(TypeError, match=r"encoder_channels\[1\] = 16.5"):
        ASPPDecoder((8, 16.5), 2, aspp_channels=4)
    with pytest.raises(TypeError, match=r"dilations\[0\] = 1.5"):
        ASPPDecoder((8, 16), 2, aspp_channels=4, dilations=(1.5,))
    head = ProjectionHead(np.int64(8), np.int64(4), np.int64(2))
    assert type(head.in_features) is int and head(torch.randn(3, 8)).shape == (3, 2)


# ---------------------------------------------------------------------------------------------
# agcl.data
# ---------------------------------------------------------------------------------------------


# issue 11, row 1: one NaN voxel used to zero the whole scan
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


def test_preprocess_ct_window_refuses_strings():
    with pytest.raises(TypeError, match="window must be a pair of numbers"):
        preprocess_ct(np.zeros((4, 4, 4), np.float32), window=("-100", "200"))


def test_phantom_shape_and_spacing_are_not_truncated():
    with pytest.raises(TypeError, match=r"shape must hold integers; got shape\[2\] = 8.5"):
        make_phantom(0, shape=(24, 24, 8.5), spacing=(14.7, 14.7, 25.0))
    with pytest.raises(TypeError, match=r"spacing \(mm\) must hold numbers"):
        make_phantom(0, shape=(24, 24, 8), spacing=(14.7, 14.7, "25"))
    with pytest.raises(ValueError, match=r"spacing \(mm\) must hold finite numbers > 0"):
        make_phantom(0, shape=(24, 24, 8), spacing=(14.7, 14.7, float("nan")))


# issue 11, row 10: duplicates and macOS resource forks
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


# issue 11, row 11: malformed datalists raised bare TypeErrors
@pytest.mark.parametrize(
    "split, match",
    [
        ("img0001.nii.gz", "must be a list"),
        (None, "must be a list"),
        ([{"image": 5}], r"entry 0 .*'image' must be a path string"),
        ([{"image": "a.nii.gz", "label": ["x"]}], r"entry 0 .*'label' must be a path string"),
    ],
)
def test_load_datalist_names_file_and_entry(tmp_path, split, match):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"training": split}))
    with pytest.raises(ValueError, match=match) as info:
        load_datalist(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# agcl.pipeline (stage checkpoints, prediction, fusion)
# ---------------------------------------------------------------------------------------------


# issue 11, row 12: checkpoints of the wrong shape raised AttributeError/KeyError
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


# issue 11, row 14: predict options and int16 organ ids
@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"threshold": -1.0}, ValueError, "threshold"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": "0.5"}, TypeError, "threshold"),
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": 2.5}, TypeError, "stride"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"coarse_weight": 1.5}, ValueError, "coarse_weight"),
        ({"coarse_weight": "0.5"}, TypeError, "coarse_weight"),
    ],
)
def test_predict_volume_checks_options_before_reading_files(tmp_path, kwargs, err, match):
    with pytest.raises(err, match=match):
        predict_volume(
            np.zeros((4, 4, 4)),
            spacing=(1, 1, 1),
            coarse_checkpoint=None,
            segment_checkpoint=tmp_path / "missing.pt",
            **kwargs,
        )


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"stride": 0}, ValueError, "stride"),
        ({"stride": 9}, ValueError, "stride"),
        ({"threshold": float("nan")}, ValueError, "threshold"),
        ({"threshold": 1.0}, ValueError, "threshold"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"patch_size": 8.0}, TypeError, "patch_size"),
    ],
)
def test_segment_with_attention_checks_options(kwargs, err, match):
    opts = {"patch_size": 8, "stride": 4, **kwargs}
    with pytest.raises(err, match=match):
        segment_with_attention(
            torch.nn.Identity(), np.zeros((4, 4, 4)), np.zeros((1, 4, 4, 4), bool), [1], **opts
        )


def test_fuse_labels_refuses_ids_beyond_int16():
    probs = np.full((2, 3), 0.9)
    with pytest.raises(ValueError, match="organ_ids must be at most 32767"):
        fuse_labels(probs, organ_ids=[1, 40000])
    assert fuse_labels(probs, organ_ids=[1, 32767]).tolist() == [1, 1, 1]
    with pytest.raises(TypeError, match="threshold"):
        fuse_labels(probs, threshold="0.5")


# ---------------------------------------------------------------------------------------------
# agcl.pipeline.config, the run's files, and the `agcl train` command (issue 26, rows 10-22, 27-29)
# ---------------------------------------------------------------------------------------------


# row 14: a whole section is merged into the current one (the preset and earlier fields kept)
def test_a_section_value_merges_into_the_section():
    from agcl.pipeline import PipelineConfig

    base = PipelineConfig.quick().override(**{"coarse.lr": 0.5})
    cfg = base.override(coarse={"epochs": 1})
    assert (
        cfg.coarse.epochs == 1 and cfg.coarse.lr == 0.5 and cfg.coarse.spacing_mm == (5.5, 5.5, 5.0)
    )
    with pytest.raises(TypeError, match="section 'coarse' takes a dict"):
        base.override(coarse=3)
    with pytest.raises(ValueError, match="unknown config field 'coarse.nope'"):
        base.override(coarse={"nope": 1})


# rows 15-16: unknown sections and fields named with the valid ones; no organ at all refused
@pytest.mark.parametrize(
    "key, match",
    [
        ("foo.bar", "unknown config section 'foo' in 'foo.bar'; valid sections: coarse"),
        ("coarse.shape.x", "keys are 'field' or 'section.field'"),
        ("coarse.nope", "unknown config field 'coarse.nope'; valid: amp, attention_channel"),
        ("nope", "unknown config field 'nope'; valid: clip_hu"),
    ],
)
def test_unknown_config_keys_are_named(key, match):
    from agcl.pipeline import PipelineConfig

    with pytest.raises(ValueError, match=re.escape(match)):
        PipelineConfig.quick().override(**{key: 1})


def test_no_organs_and_out_of_range_seeds_are_refused_when_the_config_is_made():
    from agcl.pipeline import PipelineConfig

    with pytest.raises(ValueError, match="organs must hold at least one value"):
        PipelineConfig.quick().override(organs=())
    with pytest.raises(ValueError, match="seed"):
        PipelineConfig.quick().override(seed=2**64)


# row 20: a damaged probability file is named (it is rebuilt on resume: tests/cli)
def test_damaged_probability_files_are_named(tmp_path):
    from agcl.sampling import load_probabilities, save_probabilities

    path = save_probabilities(tmp_path / "a.prob.pt", torch.rand(2, 3, 3, 3), [6], (6, 6, 6))
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_probabilities(path)


# row 21: a binary mapping file is named; row 12: a code that is no organ is refused
def test_label_mappings_name_the_file(tmp_path):
    from agcl.data import load_coarse_labels

    binary = tmp_path / "map.json"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ValueError, match=f"{re.escape(str(binary))} is not UTF-8"):
        load_coarse_labels(binary)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": 99}))
    with pytest.raises(ValueError, match=r"bad.json maps to codes that are no organ: 1 -> 99"):
        load_coarse_labels(bad)


# row 22: a state dict that does not fit names the checkpoint and the mismatch
def test_weights_that_do_not_fit_name_the_checkpoint(tmp_path):
    from agcl.pipeline.toolkit import load_weights

    with pytest.raises(ValueError, match=r"ckpt.pt do not fit .* 1 missing keys \(bias\)"):
        load_weights(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2)}, tmp_path / "ckpt.pt")
    with pytest.raises(
        ValueError, match=r"shape mismatches \(weight: \(3, 2\) in the file, \(2, 2\)"
    ):
        load_weights(
            torch.nn.Linear(2, 2), {"weight": torch.zeros(3, 2), "bias": torch.zeros(2)}, "x.pt"
        )


# row 28: a diverging stage says so, with the stage and its learning rate
def test_a_diverging_stage_names_itself_and_its_learning_rate(tmp_path):
    from agcl.pipeline import EpochLog
    from agcl.pipeline.toolkit import fit

    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1e30)

    def step(batch):
        loss = model(batch).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if not torch.isfinite(model(batch)).all():
            raise ValueError("logits must be finite")  # what a loss says when it meets the result
        return float(loss)

    with pytest.raises(
        RuntimeError, match=r"pretrain: training diverged at epoch 1, step \d+ .* rate 1e\+30"
    ):
        fit(
            stage="pretrain",
            epochs=1,
            ckpt_path=tmp_path / "c.pt",
            settings={},
            model=model,
            optimizer=opt,
            epoch_batches=lambda e: [torch.full((4, 2), 1e10)] * 3,
            step=step,
            resume=False,
            log=EpochLog(tmp_path / "e.jsonl"),
            collective=False,
        )


# row 29: the fallback region is the organ's 26-connected component (diagonal neighbours join)
def test_the_fallback_region_is_26_connected():
    from agcl.sampling import attention_from_probabilities

    p = np.zeros((2, 5, 5, 5), np.float32)
    p[0] = 1.0
    p[1, 1, 1, 1], p[1, 2, 2, 2] = (
        0.05,
        0.04,
    )  # only diagonal neighbours: one region with 26-connectivity
    p[1, 4, 4, 4] = 0.045  # a separate blob (not touching): stays out
    att = attention_from_probabilities(
        p, [6], (5, 5, 5), spacing=(1, 1, 1), margin_mm=0.0, threshold=0.1
    )
    box, mask = att[6]
    full = np.zeros((5, 5, 5), bool)
    full[box] = mask
    assert full[1, 1, 1] and full[2, 2, 2] and not full[4, 4, 4] and int(full.sum()) == 2


# rows 10-13, 17-19, 27: the command, in a subprocess on the tiny settings of the example tests
# stage 1 for one epoch, no figures
RUN = [*TINY_RUN_ARGS, "--coarse-epochs", "1", "--no-figures"]
TINY = [*TINY_DATA_ARGS, *RUN]


def _agcl(tmp_path, *args):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "agcl", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize(
    "args, match",
    [
        (["--device", "bogus"], "--device"),
        (["--device", "cuda:7"], "--device"),
        (["--seed", "18446744073709551616"], "--seed: expected a seed in [0, 4294967295]"),
        (["--set", "foo.bar=1"], "unknown config section 'foo'"),
        (["--set", "organs=[]"], "organs must hold at least one value"),
        (["--set", "coarse.epochs=1.5"], "coarse.epochs"),
    ],
)
def test_the_command_refuses_bad_values_before_reading_any_data(tmp_path, args, match):
    proc = _agcl(
        tmp_path,
        "train",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        *TINY,
        *args,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert match in proc.stderr
    assert (
        not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()
    )  # nothing read or written


def test_the_command_refuses_a_patch_larger_than_the_volumes(tmp_path):
    proc = _agcl(
        tmp_path,
        "train",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        *TINY,
        "--set",
        "pretrain.patch_size=100000",
        "--set",
        "segment.stride=64",
    )
    assert (
        proc.returncode != 0
        and "pretrain.patch_size=100000 is larger than the volumes" in proc.stderr
    )


def _coarse_dir(tmp_path, mutate):
    """The phantoms' ground truth as coarse maps (per-modality folders), changed by ``mutate``."""
    import nibabel as nib

    from agcl.data.synthetic import ensure_btcv_like

    folders = ensure_btcv_like(
        tmp_path / "cache", 2, shape=(48, 48, 12), spacing=(7.3, 7.3, 16.0), quiet=True
    )
    coarse = tmp_path / "coarse"
    for modality, folder in folders.items():
        (coarse / modality).mkdir(parents=True)
        for f in sorted((folder / "RawData" / "Training" / "label").glob("*.nii.gz")):
            img = nib.load(f)
            data, affine = mutate(np.asarray(img.dataobj), img.affine.copy())
            nib.save(
                nib.Nifti1Image(data, affine), coarse / modality / f"{f.name.replace('label', '')}"
            )
    return coarse


def test_coarse_maps_with_unknown_codes_warn_and_misplaced_ones_are_refused(tmp_path):
    def add_code(data, affine):
        data = data.copy()
        data[0, 0, 0] = 52  # a code no organ of the run has
        return data, affine

    coarse = _coarse_dir(tmp_path, add_code)
    proc = _agcl(
        tmp_path,
        "train",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        *TINY,
        "--coarse-dir",
        str(coarse),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # one warning, listing the codes (the other BTCV organs too: this run segments 1, 6 and 7)
    assert re.search(r"hold codes \[2, 3, 4, 5, 8, 9, 10, 11, 12, 13, 52\]", proc.stderr)
    assert proc.stderr.count("UserWarning: the coarse maps") == 1

    def shift(data, affine):
        affine[0, 3] += 80.0  # 80 mm off its scan
        return data, affine

    coarse = _coarse_dir(tmp_path / "b", shift)
    proc = _agcl(
        tmp_path,
        "train",
        "--cache-dir",
        str(tmp_path / "b" / "cache"),
        "--out",
        str(tmp_path / "run2"),
        *TINY,
        "--coarse-dir",
        str(coarse),
    )
    assert proc.returncode != 0 and "is not on its image's grid" in proc.stderr
    assert "map affine" in proc.stderr and "image affine" in proc.stderr


def test_all_background_labels_are_refused_before_training(tmp_path):
    import nibabel as nib

    from agcl.data.synthetic import ensure_btcv_like

    folders = ensure_btcv_like(
        tmp_path / "data",
        2,
        ("contrast",),
        shape=(48, 48, 12),
        spacing=(7.3, 7.3, 16.0),
        quiet=True,
    )
    for f in (folders["contrast"] / "RawData" / "Training" / "label").glob("*.nii.gz"):
        img = nib.load(f)
        nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), f)
    proc = _agcl(
        tmp_path,
        "train",
        "--data-dir",
        str(folders["contrast"]),
        "--out",
        str(tmp_path / "run"),
        *RUN,
    )
    assert proc.returncode != 0
    assert "no training case holds any of the organs" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints" / "pretrain.pt").exists()
