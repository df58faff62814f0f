"""Augmentations: two random views of image + attention patches for contrastive learning
(:class:`PairAug`), and the training crops of the coarse segmenters of stage 1
(:class:`RandomAffineCrop3D` for CT volumes, :class:`RandomCropFlip2D` for images).

Imports only torch and numpy.
"""

from __future__ import annotations

from agcl.augment.crop2d import RandomCropFlip2D
from agcl.augment.crop3d import RandomAffineCrop3D
from agcl.augment.pair_aug import PairAug, affine_view

__all__ = ["PairAug", "RandomAffineCrop3D", "RandomCropFlip2D", "affine_view"]
