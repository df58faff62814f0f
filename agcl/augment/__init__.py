"""Augmentations for contrastive learning: two random views of image + attention patches.

Imports only torch.
"""

from __future__ import annotations

from agcl.augment.pair_aug import PairAug, affine_view

__all__ = ["PairAug", "affine_view"]
