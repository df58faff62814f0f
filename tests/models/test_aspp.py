"""ASPP, ASPPDecoder and DeepLabV3PlusDecoder: structure, rates, receptive field, shapes, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agcl.models import ASPP, ASPPDecoder, DeepLabV3PlusDecoder, scaled_dilations

CH = (8, 16, 32, 64)


def feats(b=2, sizes=((9, 12), (5, 6), (5, 6), (5, 6)), channels=CH, requires_grad=False):
    return [torch.randn(b, c, *s, requires_grad=requires_grad) for c, s in zip(channels, sizes)]


def test_branch_structure_matches_the_paper():
    aspp = ASPP(2048)  # paper: 512 channels, rates 6/12/18
    assert len(aspp.branches) == 5
    conv1x1 = aspp.branches[0][0]
    assert conv1x1.kernel_size == (1, 1) and conv1x1.out_channels == 512
    for branch, d in zip(aspp.branches[1:4], (6, 12, 18)):
        conv = branch[0]
        assert conv.kernel_size == (3, 3) and conv.dilation == (d, d) and conv.padding == (d, d)
        assert conv.in_channels == 2048 and conv.out_channels == 512
        assert isinstance(branch[1], nn.BatchNorm2d) and isinstance(branch[2], nn.ReLU)
    pool = aspp.branches[4]
    assert isinstance(pool[0], nn.AdaptiveAvgPool2d) and pool[0].output_size == 1
    assert pool[1].kernel_size == (1, 1) and pool[1].out_channels == 512
    assert aspp.project[0].in_channels == 5 * 512 and aspp.project[0].out_channels == 512


def test_decoder_last_conv_has_no_bn_or_activation():
    dec = ASPPDecoder((256, 512, 1024, 2048), 3)
    assert isinstance(dec.classifier, nn.Conv2d) and dec.classifier.kernel_size == (1, 1)
    assert dec.classifier.out_channels == 3 and dec.classifier.bias is not None
    # the last registered module is the classifier: nothing follows it
    assert list(dec.children())[-1] is dec.classifier


@pytest.mark.parametrize("os_, rates", [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))])
def test_rates_scale_with_output_stride(os_, rates):
    assert scaled_dilations((6, 12, 18), os_) == rates
    assert ASPPDecoder(CH, 2, output_stride=os_, aspp_channels=8).aspp.dilations == rates
    assert (
        DeepLabV3PlusDecoder(
            CH, 2, output_stride=os_, aspp_channels=8, decoder_channels=8
        ).aspp.dilations
        == rates
    )


@pytest.mark.parametrize("d", [1, 2, 3])
def test_dilated_branch_sees_exactly_its_taps(d):
    aspp = ASPP(1, 1, dilations=(1, 2, 3)).eval()
    branch = aspp.branches[d]
    with torch.no_grad():
        branch[0].weight.fill_(1.0)
    x = torch.zeros(1, 1, 11, 11)
    x[0, 0, 5, 5] = 1.0
    out = branch(x)[0, 0]
    hit = (out.abs() > 1e-3).nonzero().tolist()
    expected = sorted([5 + i * d, 5 + j * d] for i in (-1, 0, 1) for j in (-1, 0, 1))
    assert sorted(hit) == expected


def test_image_pooling_branch_is_spatially_constant():
    aspp = ASPP(4, 3, dilations=(1,)).eval()
    out = aspp.branches[-1](torch.randn(2, 4, 6, 7))
    assert out.shape == (2, 3, 6, 7)
    torch.testing.assert_close(out, out[..., :1, :1].expand_as(out))


@pytest.mark.parametrize("size", [(32, 32), (33, 47), (1, 5)])
@pytest.mark.parametrize("cls", [ASPPDecoder, DeepLabV3PlusDecoder])
def test_logits_at_input_size(cls, size):
    kw = {"decoder_channels": 8} if cls is DeepLabV3PlusDecoder else {}
    dec = cls(CH, 3, aspp_channels=8, **kw)
    assert dec(feats(), size).shape == (2, 3, *size)


def test_v3plus_uses_the_low_level_map_and_aspp_does_not():
    f = feats(requires_grad=True)
    ASPPDecoder(CH, 2, aspp_channels=8)(f, (20, 20)).sum().backward()
    assert f[0].grad is None and f[-1].grad is not None
    f = feats(requires_grad=True)
    DeepLabV3PlusDecoder(CH, 2, aspp_channels=8, decoder_channels=8)(f, (20, 20)).sum().backward()
    assert f[0].grad is not None and f[0].grad.abs().sum() > 0 and f[-1].grad is not None


def test_feature_mismatch_suggests_encoder_channels():
    dec = ASPPDecoder(CH, 2, aspp_channels=8)
    with pytest.raises(ValueError, match=r"encoder_channels.*got channels \(8, 16, 32, 32\)"):
        dec(feats(channels=(8, 16, 32, 32)), (20, 20))
    with pytest.raises(TypeError, match="features"):
        dec(torch.randn(2, 64, 5, 5), (20, 20))
    with pytest.raises(ValueError, match="input_size"):
        dec(feats(), (20,))


def test_batch_of_one_in_training_raises_a_clear_error():
    aspp = ASPP(4, 4, dilations=(1,))
    with pytest.raises(ValueError, match="batch size 1"):
        aspp(torch.randn(1, 4, 5, 5))
    assert aspp.eval()(torch.randn(1, 4, 5, 5)).shape == (1, 4, 5, 5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ASPP(0), "in_channels"),
        (lambda: ASPP(4, dilations=()), "dilations"),
        (lambda: ASPP(4, dilations=(0,)), "dilations"),
        (lambda: ASPPDecoder(CH, 0), "num_classes"),
        (lambda: ASPPDecoder(CH, 2, output_stride=4), "output_stride"),
        (lambda: DeepLabV3PlusDecoder(CH, 2, low_level_index=3), "low_level_index"),
    ],
)
def test_bad_options(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_wrong_input_channels_to_aspp():
    with pytest.raises(ValueError, match=r"in_channels=4.*got shape \(2, 3, 5, 5\)"):
        ASPP(4, 4)(torch.randn(2, 3, 5, 5))
