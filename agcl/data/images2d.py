"""Natural images as one-slice volumes, so the pipeline's samplers, streams and models run on them.

An RGB image ``(H, W, 3)`` becomes a one-slice volume: image ``(3, H, W, 1)`` float32 (ImageNet
mean and std), class labels ``(H, W, 1)`` (the slice axis last, as for axial CT slices), and the
void pixels (255) an ``ignore`` map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["IMAGE_MEAN", "IMAGE_STD", "VOID", "ImageVolumes", "image_tensor", "image_volume"]

VOID = 255
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> normalised float32 ``(3, H, W)`` (ImageNet mean and std)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be an RGB (H, W, 3) array; got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (x - mean) / std


def image_volume(
    image: np.ndarray,
    attention: Mapping[int, Any] | np.ndarray,
    label: np.ndarray | None = None,
    *,
    modality: int = 0,
) -> dict[str, Any]:
    """One image as the single-slice volume the pipeline's patch streams read.

    Returns ``{"image": (3, H, W, 1) float32, "attention": {code: (box, mask)} or (H, W, 1),
    "label": (H, W, 1) uint8 or None, "ignore": (H, W, 1) bool or None, "modality": int}``. In
    ``label`` the void pixels (255) become 0, so they are never a positive of any class; ``ignore``
    marks them so that losses and metrics can leave them out.
    """
    x = image_tensor(image).numpy()[..., None]
    out: dict[str, Any] = {
        "image": x,
        "attention": attention,
        "label": None,
        "ignore": None,
        "modality": int(modality),
    }
    if label is not None:
        lab = np.asarray(label)
        if lab.shape != x.shape[1:3]:
            raise ValueError(
                f"label must have the image's (H, W) = {x.shape[1:3]}; got shape {lab.shape}"
            )
        void = lab == VOID
        out["label"] = np.where(void, 0, lab).astype(np.uint8)[..., None]
        out["ignore"] = void[..., None]
    if isinstance(attention, np.ndarray) and attention.ndim == 2:
        out["attention"] = attention[..., None]
    return out


class ImageVolumes(Sequence):
    """The ``volumes`` sequence of stages 2-3 for a set of images, built lazily.

    Holds the images as given (uint8, 3 bytes a pixel) and makes the float32 single-slice
    volume of :func:`image_volume` only when ``volumes[i]`` is read (by
    :class:`agcl.sampling.PatchStream`, once per image per epoch), so a split of VOC costs its
    uint8 size in memory, not four times it.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays.
        attention: one ``{code: (box, mask)}`` per image.
        masks: optional class masks (uint8 ``(H, W)``, 255 = void), one per image.
        modality: the modality id of every image.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        attention: Sequence[Mapping[int, Any]],
        masks: Sequence[np.ndarray] | None = None,
        *,
        modality: int = 0,
    ) -> None:
        if len(attention) != len(images) or (masks is not None and len(masks) != len(images)):
            raise ValueError(
                f"images, attention and masks must have one entry per image; got {len(images)}, "
                f"{len(attention)} and {None if masks is None else len(masks)}"
            )
        self.images, self.attention, self.masks, self.modality = (
            images,
            attention,
            masks,
            int(modality),
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        mask = None if self.masks is None else self.masks[index]
        return image_volume(self.images[index], self.attention[index], mask, modality=self.modality)
