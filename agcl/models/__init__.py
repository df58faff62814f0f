"""Reference networks for AGCL: ResNet encoders, projection head, ASPP decoders, 3D U-Net.

See ``docs/models.md`` for the encoder/decoder contract.
"""

from __future__ import annotations

from agcl.models._adapt import adapt_input_conv
from agcl.models._registry import create_model, list_models, register_model
from agcl.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152

__all__ = [
    "ResNet",
    "adapt_input_conv",
    "create_model",
    "list_models",
    "register_model",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
]
