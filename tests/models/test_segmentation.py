"""SegmentationModel (freezing), AGCLPretrainModel, build_segmentation_model, save/load."""

from __future__ import annotations

import pytest
import torch

from agcl._io import atomic_save, safe_load
from agcl.models import (
    AGCLPretrainModel,
    ASPPDecoder,
    DeepLabV3PlusDecoder,
    ProjectionHead,
    SegmentationModel,
    build_segmentation_model,
    resnet18,
)


def small_model(decoder=ASPPDecoder, num_classes=2, output_stride=16):
    torch.manual_seed(0)
    enc = resnet18(in_chans=2, output_stride=output_stride, base_width=8)
    kw = {"decoder_channels": 8} if decoder is DeepLabV3PlusDecoder else {}
    dec = decoder(enc.out_channels, num_classes, output_stride=output_stride, aspp_channels=8, **kw)
    return SegmentationModel(enc, dec)


@pytest.mark.parametrize("decoder", [ASPPDecoder, DeepLabV3PlusDecoder])
@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_logits_shape(decoder, output_stride):
    model = small_model(decoder, 1, output_stride)
    assert model(torch.randn(2, 2, 36, 44)).shape == (2, 1, 36, 44)


def test_frozen_encoder_gets_no_gradient_and_keeps_bn_statistics():
    model = small_model().freeze_encoder()
    model.train()  # must not put the encoder's BN back into training mode
    assert not model.encoder.training and model.decoder.training
    assert all(not m.training for m in model.encoder.modules())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(3, 2, 32, 32) * 3 + 1).pow(2).mean().backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in model.encoder.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.decoder.parameters())
    for k, v in model.encoder.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats, counters and weights unchanged


def test_unfrozen_encoder_trains_and_unfreeze_restores():
    model = small_model().freeze_encoder().unfreeze_encoder().train()
    assert model.encoder.training
    model(torch.randn(2, 2, 32, 32)).sum().backward()
    assert model.encoder.conv1.weight.grad is not None
    assert int(model.encoder.bn1.num_batches_tracked) == 1


def test_mismatched_parts_raise():
    enc = resnet18(in_chans=2, base_width=8, output_stride=16)
    with pytest.raises(ValueError, match="encoder_channels"):
        SegmentationModel(enc, ASPPDecoder((1, 2, 3, 4), 2, aspp_channels=8))
    with pytest.raises(ValueError, match="output_stride"):
        SegmentationModel(enc, ASPPDecoder(enc.out_channels, 2, output_stride=8, aspp_channels=8))


def test_pretrain_model_projects_pooled_features():
    enc = resnet18(in_chans=2, base_width=8).eval()
    model = AGCLPretrainModel(enc, ProjectionHead(enc.num_features, 32, 16)).eval()
    x = torch.randn(3, 2, 32, 32)
    torch.testing.assert_close(model.features(x), enc.forward_pooled(x))
    torch.testing.assert_close(model(x), model.projection(enc.forward_pooled(x)))
    assert model(x).shape == (3, 16)
    with pytest.raises(ValueError, match="in_features"):
        AGCLPretrainModel(enc, ProjectionHead(2048, 32, 16))


def test_pretrained_encoder_moves_into_segmentation_model():
    enc = resnet18(in_chans=2, base_width=8)
    pre = AGCLPretrainModel(enc, ProjectionHead(enc.num_features, 32, 16))
    seg = build_segmentation_model("resnet18", 2, encoder_kwargs={"base_width": 8}, aspp_channels=8)
    seg.encoder.load_state_dict(pre.encoder.state_dict())
    for k, v in seg.encoder.state_dict().items():
        assert torch.equal(v, pre.encoder.state_dict()[k])


@pytest.mark.parametrize("decoder", ["aspp", "deeplabv3plus"])
def test_build_segmentation_model(decoder):
    m = build_segmentation_model(
        "resnet18",
        3,
        in_chans=1,
        output_stride=8,
        decoder=decoder,
        aspp_channels=8,
        encoder_kwargs={"base_width": 8},
    )
    assert m.decoder.aspp.dilations == (12, 24, 36)
    assert m(torch.randn(2, 1, 24, 24)).shape == (2, 3, 24, 24)
    with pytest.raises(ValueError, match="decoder"):
        build_segmentation_model("resnet18", decoder="fcn")  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path):
    model = small_model(DeepLabV3PlusDecoder).eval()
    x = torch.randn(2, 2, 32, 32)
    path = atomic_save(model.state_dict(), tmp_path / "seg.pt")
    fresh = small_model(DeepLabV3PlusDecoder)
    torch.manual_seed(1)
    for p in fresh.parameters():  # make sure loading is what makes them equal
        torch.nn.init.normal_(p)
    fresh.load_state_dict(safe_load(path))
    fresh.eval()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
