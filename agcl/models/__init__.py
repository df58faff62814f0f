"""Reference networks for AGCL: ResNet encoders, projection head, ASPP decoders, 3D U-Net.

See ``docs/models.md`` for the encoder/decoder contract.
"""

from __future__ import annotations

from agcl.models._adapt import adapt_input_conv
from agcl.models._registry import create_model, list_models, register_model
from agcl.models.aspp import ASPP, ASPPDecoder, DeepLabV3PlusDecoder, scaled_dilations
from agcl.models.heads import PretrainClassifier, ProjectionHead
from agcl.models.resnet import ResNet, resnet18, resnet34, resnet50, resnet101, resnet152
from agcl.models.segmentation import AGCLPretrainModel, SegmentationModel, build_segmentation_model
from agcl.models.unet3d import CoarseUNet3D, unet3d

__all__ = [
    "ASPP",
    "AGCLPretrainModel",
    "ASPPDecoder",
    "CoarseUNet3D",
    "DeepLabV3PlusDecoder",
    "PretrainClassifier",
    "ProjectionHead",
    "ResNet",
    "SegmentationModel",
    "adapt_input_conv",
    "build_segmentation_model",
    "create_model",
    "list_models",
    "register_model",
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "scaled_dilations",
    "unet3d",
]
