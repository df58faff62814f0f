"""ProjectionHead: the paper's 2048 -> 2048 -> 256 MLP."""

from __future__ import annotations

import pytest
import torch

from agcl.models import ProjectionHead


def test_default_sizes_and_parameter_count():
    head = ProjectionHead()
    assert (head.fc1.in_features, head.fc1.out_features) == (2048, 2048)
    assert (head.fc2.in_features, head.fc2.out_features) == (2048, 256)
    assert sum(p.numel() for p in head.parameters()) == 2048 * 2048 + 2048 + 2048 * 256 + 256


def test_hand_computed_relu_between_and_no_normalisation():
    head = ProjectionHead(2, 2, 1)
    with torch.no_grad():
        head.fc1.weight.copy_(torch.eye(2))
        head.fc1.bias.zero_()
        head.fc2.weight.copy_(torch.tensor([[1.0, 10.0]]))
        head.fc2.bias.fill_(0.5)
    x = torch.tensor([[3.0, -2.0], [-1.0, 4.0]])
    # relu([3, -2]) = [3, 0] -> 3 + 0.5; relu([-1, 4]) = [0, 4] -> 40 + 0.5 (not unit length)
    assert head(x).flatten().tolist() == [3.5, 40.5]


def test_wrong_width_suggests_the_fix():
    with pytest.raises(ValueError, match=r"in_features=2048.*got shape \(2, 512\)"):
        ProjectionHead()(torch.randn(2, 512))
    with pytest.raises(ValueError, match="x must be"):
        ProjectionHead(4, 4, 2)(torch.randn(4))


@pytest.mark.parametrize("name", ["in_features", "hidden_features", "out_features"])
def test_bad_sizes(name):
    kwargs = {"in_features": 4, "hidden_features": 4, "out_features": 2, name: 0}
    with pytest.raises(ValueError, match=name):
        ProjectionHead(**kwargs)
