"""ResNet encoders: torchvision layout (counts, keys, shapes), dilation, pretrained loading."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from agcl.models import ResNet, create_model, resnet18, resnet50, resnet101

# Known facts about torchvision's ResNets with in_chans=3, num_classes=1000.
PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
    "resnet152": 60_192_808,
}
# state-dict keys incl. BN buffers: stem 1 conv + 5 BN entries; per block 2 (basic) or 3
# (bottleneck) conv+BN pairs of 6 keys; each downsample 6; fc 2.  resnet50: 6+16*18+4*6+2 = 320.
KEYS = {"resnet18": 122, "resnet34": 218, "resnet50": 320, "resnet101": 626, "resnet152": 932}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_parameter_counts_match_torchvision(name):
    assert n_params(create_model(name, num_classes=1000)) == PARAMS[name]


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet152"])
def test_parameter_and_key_counts_other_depths(name):
    model = create_model(name, num_classes=1000)
    assert n_params(model) == PARAMS[name]
    assert len(model.state_dict()) == KEYS[name]


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_key_count_and_fc_absent_without_classes(name):
    with_fc = create_model(name, num_classes=1000).state_dict()
    without = create_model(name).state_dict()
    assert len(with_fc) == KEYS[name]
    assert set(with_fc) - set(without) == {"fc.weight", "fc.bias"}


def test_representative_keys_and_shapes_resnet50():
    sd = resnet50(num_classes=1000).state_dict()
    expected = {
        "conv1.weight": (64, 3, 7, 7),
        "bn1.weight": (64,),
        "bn1.running_mean": (64,),
        "bn1.num_batches_tracked": (),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.conv2.weight": (64, 64, 3, 3),
        "layer1.0.conv3.weight": (256, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.0.downsample.1.running_var": (256,),
        "layer2.0.downsample.0.weight": (512, 256, 1, 1),
        "layer3.5.bn2.bias": (256,),
        "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.2.bn3.num_batches_tracked": (),
        "fc.weight": (1000, 2048),
        "fc.bias": (1000,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    assert "layer1.1.downsample.0.weight" not in sd
    assert "layer3.6.conv1.weight" not in sd  # ResNet-50's third stage has 6 blocks


def test_representative_keys_resnet18():
    sd = resnet18(num_classes=1000).state_dict()
    assert tuple(sd["layer1.0.conv2.weight"].shape) == (64, 64, 3, 3)
    assert "layer1.0.downsample.0.weight" not in sd  # 64 -> 64, stride 1: identity shortcut
    assert tuple(sd["layer2.0.downsample.0.weight"].shape) == (128, 64, 1, 1)
    assert "layer1.0.conv3.weight" not in sd


def test_stride_sits_on_the_3x3_conv():
    m = resnet50()
    assert m.layer2[0].conv1.stride == (1, 1) and m.layer2[0].conv2.stride == (2, 2)
    assert m.layer2[0].downsample[0].stride == (2, 2)


# every output stride x in_chans for the basic-block network; the bottleneck one (same stem and
# stage logic, slower) for every output stride with the AGCL input (2 channels) and with 3
@pytest.mark.parametrize(
    "arch, output_stride, in_chans",
    [(resnet18, os_, c) for os_ in (8, 16, 32) for c in (1, 2, 3, 4)]
    + [(resnet50, os_, c) for os_ in (8, 16, 32) for c in (2, 3)],
)
def test_feature_shapes(arch, output_stride, in_chans):
    enc = arch(in_chans=in_chans, output_stride=output_stride, base_width=8).eval()
    x = torch.randn(2, in_chans, 32, 40)
    feats = enc.forward_features(x)
    expected_strides = {32: (4, 8, 16, 32), 16: (4, 8, 16, 16), 8: (4, 8, 8, 8)}[output_stride]
    assert enc.feature_strides == expected_strides
    assert enc.output_stride == output_stride
    mult = 4 if arch is resnet50 else 1
    assert enc.out_channels == tuple(8 * mult * k for k in (1, 2, 4, 8))
    assert (
        enc.low_level_channels == enc.out_channels[0] and enc.num_features == enc.out_channels[-1]
    )
    for f, c, s in zip(feats, enc.out_channels, expected_strides):
        assert tuple(f.shape) == (2, c, math.ceil(32 / s), math.ceil(40 / s))
    assert tuple(enc(x).shape) == (2, enc.num_features)


def test_odd_sizes_give_ceil_division():
    enc = resnet18(output_stride=8, base_width=8).eval()
    feats = enc.forward_features(torch.randn(1, 3, 33, 47))
    assert [tuple(f.shape[2:]) for f in feats] == [(9, 12), (5, 6), (5, 6), (5, 6)]


def test_dilation_replaces_stride():
    enc = resnet50(output_stride=8)
    # torchvision's convention: a dilated stage's first block keeps the previous dilation
    assert enc.layer3[0].conv2.stride == (1, 1) and enc.layer3[0].conv2.dilation == (1, 1)
    assert enc.layer3[1].conv2.dilation == (2, 2) and enc.layer3[1].conv2.padding == (2, 2)
    assert enc.layer4[0].conv2.dilation == (2, 2) and enc.layer4[2].conv2.dilation == (4, 4)
    enc16 = resnet50(output_stride=16)
    assert enc16.layer3[0].conv2.stride == (2, 2) and enc16.layer4[1].conv2.dilation == (2, 2)
    assert all(m.dilation == (1, 1) for m in resnet50().modules() if isinstance(m, torch.nn.Conv2d))


@pytest.mark.parametrize("output_stride, same", [(16, 3), (8, 2)])
def test_dilation_only_changes_the_stages_past_the_output_stride(output_stride, same):
    # same weights: the stages before the first dilated one compute exactly the same maps, and
    # the dilated maps have the resolution the plain network had at that output stride
    ref = resnet18(base_width=8).eval()
    dil = resnet18(base_width=8, output_stride=output_stride).eval()
    dil.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    a, b = ref.forward_features(x), dil.forward_features(x)
    for i in range(same):
        torch.testing.assert_close(b[i], a[i], rtol=0, atol=0)
    assert not torch.allclose(b[-1].mean((2, 3)), a[-1].mean((2, 3)))
    assert b[-1].shape[-1] == 64 // output_stride


def test_dilated_encoders_share_the_state_dict_layout():
    a, b = resnet18(output_stride=32).state_dict(), resnet18(output_stride=8).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_fc_path_and_classes():
    enc = resnet18(num_classes=5, base_width=8).eval()
    x = torch.randn(2, 3, 32, 32)
    pooled = enc.forward_pooled(x)
    assert tuple(pooled.shape) == (2, 64)
    torch.testing.assert_close(enc(x), enc.fc(pooled))


def _reference_weights(seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    src = resnet18(base_width=8, num_classes=10, **kw)
    for m in src.modules():  # non-trivial BN statistics so that the check is meaningful
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
    return src.state_dict()


@pytest.mark.parametrize("in_chans", [1, 2, 4, 6])
def test_pretrained_adaptation_preserves_output_on_repeated_input(in_chans, caplog):
    sd = _reference_weights()
    ref = resnet18(base_width=8, num_classes=10).double().eval()
    ref.load_state_dict(sd)
    with caplog.at_level(logging.INFO, logger="agcl.models"):
        enc = resnet18(in_chans=in_chans, base_width=8, num_classes=10, pretrained_state_dict=sd)
    assert "adapt" in caplog.text and f"to {in_chans}" in caplog.text
    enc = enc.double().eval()
    grey = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    # float64 throughout; the float32-stored adapted kernel adds ~1e-7 relative error
    torch.testing.assert_close(
        enc(grey.repeat(1, in_chans, 1, 1)), ref(grey.repeat(1, 3, 1, 1)), rtol=1e-5, atol=1e-5
    )


def test_pretrained_same_channels_loads_exactly_and_drops_fc(caplog):
    sd = _reference_weights()
    with caplog.at_level(logging.INFO, logger="agcl.models"):
        enc = resnet18(base_width=8, pretrained_state_dict=sd)
    assert "dropped the pretrained fc" in caplog.text
    own = enc.state_dict()
    for k, v in own.items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)


def test_pretrained_without_counters_or_fc_loads(caplog):
    # older published checkpoints lack the BN num_batches_tracked buffers; backbone-only dicts
    # lack fc
    sd = {
        k: v
        for k, v in _reference_weights().items()
        if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    }
    with caplog.at_level(logging.INFO, logger="agcl.models"):
        enc = resnet18(base_width=8, num_classes=4, pretrained_state_dict=sd)
    assert "keeps its fresh initialisation" in caplog.text
    torch.testing.assert_close(
        enc.layer2[1].bn2.running_var, sd["layer2.1.bn2.running_var"], rtol=0, atol=0
    )


def test_pretrained_mismatch_raises():
    sd = _reference_weights()
    with pytest.raises(
        ValueError, match=r"base_width.*shape mismatches .*bn1.bias: expected \(16,\), got \(8,\)"
    ):
        resnet18(base_width=16, pretrained_state_dict=sd)
    with pytest.raises(ValueError, match="missing"):
        resnet50(base_width=8, pretrained_state_dict=sd)
    with pytest.raises(TypeError, match="state_dict"):
        resnet18(base_width=8, pretrained_state_dict=[1, 2])  # type: ignore[arg-type]


def test_wrong_channel_count_names_both():
    enc = resnet18(in_chans=2, base_width=8)
    with pytest.raises(ValueError, match=r"in_chans=2.*got shape \(1, 3, 32, 32\) with 3 channels"):
        enc(torch.randn(1, 3, 32, 32))


def test_wrong_rank_and_type():
    enc = resnet18(base_width=8)
    with pytest.raises(ValueError, match="x must be"):
        enc(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        enc([[1.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"output_stride": 4}, "output_stride"),
        ({"in_chans": 0}, "in_chans"),
        ({"num_classes": -1}, "num_classes"),
        ({"base_width": 0}, "base_width"),
    ],
)
def test_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resnet18(**kwargs)


def test_keyword_only():
    with pytest.raises(TypeError, match="positional argument"):
        resnet18(2)  # type: ignore[misc]


def test_resnet101_is_a_resnet_with_23_blocks_in_stage3():
    m = resnet101(base_width=8)
    assert isinstance(m, ResNet) and len(m.layer3) == 23
