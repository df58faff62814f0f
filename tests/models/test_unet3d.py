"""CoarseUNet3D: shapes for any size, padding/cropping, learning, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from agcl.models import CoarseUNet3D, unet3d


@pytest.mark.parametrize("size", [(8, 8, 16), (10, 13, 9), (5, 16, 17)])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_output_size_equals_input_size(size, depth):
    net = CoarseUNet3D(1, 4, base_channels=2, depth=depth)
    assert net(torch.randn(2, 1, *size)).shape == (2, 4, *size)


def test_padding_is_cropped_away():
    # the output on an odd-sized volume equals the matching corner of the output on that volume
    # zero-padded by hand to a multiple of 2**depth (what forward does internally)
    net = CoarseUNet3D(1, 2, base_channels=2, depth=2).eval()
    x = torch.randn(1, 1, 6, 7, 5)
    padded = F.pad(x, (0, 3, 0, 1, 0, 2))
    torch.testing.assert_close(net(x), net(padded)[..., :6, :7, :5], rtol=0, atol=0)


def test_structure_widths_and_instance_norm():
    net = unet3d(num_classes=5, base_channels=8, depth=3)
    assert [e[0].out_channels for e in net.encoders] == [8, 16, 32, 64]
    assert any(isinstance(m, torch.nn.InstanceNorm3d) for m in net.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    assert net.head.out_channels == 5


def test_learns_a_toy_volume():
    torch.manual_seed(0)
    net = CoarseUNet3D(1, 2, base_channels=4, depth=2)
    x = torch.zeros(1, 1, 8, 16, 16)
    x[..., 2:6, 4:12, 4:12] = 1.0
    y = (x[:, 0] > 0).long()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = F.cross_entropy(net(x + 0.1 * torch.randn_like(x)), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_errors_suggest_the_fix():
    net = CoarseUNet3D(1, 3, base_channels=2, depth=2)
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(1, 8, 8, 8))
    with pytest.raises(ValueError, match=r"in_channels=1.*unsqueeze"):
        net(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="depth=1"):
        net(torch.randn(1, 1, 4, 3, 4))
    with pytest.raises(ValueError, match="base_channels"):
        CoarseUNet3D(1, 3, base_channels=0)
