"""The model registry, and forward/backward of every registered model on a small input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agcl.models import create_model, list_models, register_model
from agcl.models._registry import _REGISTRY

# small inputs for every registered model; a new registration without an entry here fails
SMALL = {
    "resnet18": ({"in_chans": 2, "base_width": 8}, (2, 2, 32, 32)),
    "resnet34": ({"in_chans": 1, "base_width": 8, "output_stride": 16}, (2, 1, 32, 32)),
    "resnet50": ({"in_chans": 2, "base_width": 8, "output_stride": 8}, (2, 2, 32, 32)),
    "resnet101": ({"in_chans": 4, "base_width": 8, "num_classes": 3}, (2, 4, 32, 32)),
    "resnet152": ({"in_chans": 2, "base_width": 4}, (2, 2, 32, 32)),
    "unet3d": ({"num_classes": 3, "base_channels": 2, "depth": 2}, (1, 1, 8, 12, 12)),
}


def test_required_names_are_registered():
    assert set(list_models()) == set(SMALL)
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_backward_every_model(name):
    kwargs, shape = SMALL[name]
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    out = model(torch.randn(*shape))
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"name must be one of .*'resnet50'.*got 'resnet51'"):
        create_model("resnet51")


def test_duplicates_raise_and_new_names_work():
    with pytest.raises(ValueError, match="already registered"):
        register_model("resnet50")(lambda **kw: nn.Identity())
    try:
        register_model("_test_identity")(lambda **kw: nn.Identity())
        assert isinstance(create_model("_test_identity"), nn.Identity)
    finally:
        _REGISTRY.pop("_test_identity", None)
    with pytest.raises(ValueError, match="name"):
        register_model("")
    with pytest.raises(TypeError, match="name"):
        register_model(3)  # type: ignore[arg-type]
