"""Stage 1's inference on CT: coarse probabilities, their label map and the attention they give.

:func:`coarse_probabilities` gives the U-Net's softmax probabilities on the whole coarse grid
(sliding windows of the crop size, :func:`agcl.pipeline.toolkit.sliding_window`, where the grid
exceeds it); the pipeline stores them (:func:`agcl.sampling.save_probabilities`) and builds each
organ's attention from them (:func:`agcl.sampling.attention_from_probabilities`: probability >=
``coarse.attention_threshold`` or the organ's most probable connected region, dilated by
``coarse.margin_mm``). :func:`labels_from_probabilities` is their arg-max label map on the full
grid, and :func:`coarse_attention` the attention of a label map (each organ's mask dilated by
``margin_mm``), used for your own coarse maps.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch

from agcl.data.prepared import resample
from agcl.pipeline.coarse.model import coarse_grid
from agcl.pipeline.config import CoarseConfig
from agcl.pipeline.toolkit.windows import sliding_window, window_starts
from agcl.sampling.attention_maps import attention_from_labels, densify

__all__ = [
    "coarse_attention",
    "coarse_probabilities",
    "labels_from_probabilities",
    "predict_coarse",
]


def _grid_probabilities(model, image, grid, spacing, device) -> torch.Tensor:
    if isinstance(grid, CoarseConfig):
        shape = coarse_grid(image.shape, grid, spacing)
        if grid.spacing_mm is not None:
            x = resample(image, shape, mode="trilinear")
            crop = tuple(int(c) for c in grid.crop_shape)
            steps = [max(1, int(c * (1.0 - grid.overlap))) for c in crop]
            starts = [
                window_starts(0, n - 1, c, s, short="start") for n, c, s in zip(shape, crop, steps)
            ]

            def predict(batch: torch.Tensor) -> torch.Tensor:
                return torch.softmax(model(batch.to(device)).float(), dim=1).cpu()

            return sliding_window(
                predict,
                x[None],
                crop,
                list(itertools.product(*starts)),
                weight="gaussian",
                pad_value=float(x.min()),
            )
    else:
        shape = tuple(int(s) for s in grid)
        if len(shape) != 3:
            raise ValueError(f"grid must be a CoarseConfig or a 3-D shape; got {grid!r}")
    x = resample(image, shape, mode="trilinear")[None, None].to(device)
    return torch.softmax(model(x).float(), dim=1)[0].cpu()


@torch.no_grad()
def coarse_probabilities(
    model: torch.nn.Module,
    image: np.ndarray,
    grid: CoarseConfig | Sequence[int],
    *,
    spacing: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Softmax class probabilities of one preprocessed image on the coarse grid (CPU, float32).

    Args:
        model: the stage-1 U-Net (:func:`agcl.pipeline.load_coarse`).
        image: the preprocessed image.
        grid: the stage-1 settings (``load_coarse(...)[2].coarse``): with ``spacing_mm`` set,
            the image is resampled to that voxel size (the grid :func:`agcl.pipeline.coarse_grid`)
            and predicted with sliding windows of ``crop_shape`` overlapping by ``overlap``
            (Gaussian-weighted; a grid smaller than a window is padded with its minimum); otherwise
            resized to ``shape`` and predicted in one pass. A plain 3-D shape: resized to it, one
            pass.
        spacing: the image's voxel size in mm (required with ``spacing_mm``).
        device: where the model runs.

    Shape:
        image: ``(X, Y, Z)`` float32; output ``(K + 1, x, y, z)`` (the coarse grid), channel 0
        the background. The coarse grid spans the whole volume, so
        :func:`agcl.sampling.attention_from_probabilities` maps it back by the grid-size ratio.
    """
    model.eval()
    return _grid_probabilities(model, image, grid, spacing, device)


@torch.no_grad()
def predict_coarse(
    model: torch.nn.Module,
    image: np.ndarray,
    organ_ids: Sequence[int],
    grid: CoarseConfig | Sequence[int],
    *,
    spacing: Sequence[float] | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """The coarse label map (organ codes, full resolution) of one preprocessed image.

    ``grid`` as in :func:`coarse_probabilities`.

    Shape:
        image: ``(X, Y, Z)`` float32 (preprocessed); output ``(X, Y, Z)`` int16.
    """
    model.eval()
    prob = _grid_probabilities(model, image, grid, spacing, device)
    return labels_from_probabilities(prob, organ_ids, image.shape)


def labels_from_probabilities(
    prob: torch.Tensor, organ_ids: Sequence[int], full_shape: Sequence[int]
) -> np.ndarray:
    """The arg-max label map (organ codes) of coarse probabilities, on the full grid (nearest).

    Shape:
        prob: ``(K + 1, x, y, z)``; output ``full_shape`` int16.

    Examples:
        >>> p = torch.zeros(2, 2, 1, 1); p[0, 0] = 1; p[1, 1] = 1
        >>> labels_from_probabilities(p, [6], (4, 1, 1)).ravel().tolist()
        [0, 0, 6, 6]
    """
    if len(organ_ids) + 1 != prob.shape[0]:
        raise ValueError(
            f"prob must have K + 1 = {len(organ_ids) + 1} channels (background and organ_ids); "
            f"got shape {tuple(prob.shape)}"
        )
    lut = torch.tensor([0, *[int(i) for i in organ_ids]], dtype=torch.int16)
    full = resample(prob.argmax(0).to(torch.int16), full_shape, mode="nearest").long()
    return lut[full].numpy()


def coarse_attention(
    coarse_labels: np.ndarray,
    organ_ids: Sequence[int],
    *,
    margin_mm: float,
    spacing: Sequence[float],
) -> np.ndarray:
    """Attention maps ``(K, X, Y, Z)`` bool: each organ's coarse mask dilated by ``margin_mm``.

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((5, 5, 1), np.int16); lab[2, 2, 0] = 3
        >>> att = coarse_attention(lab, [3], margin_mm=1.0, spacing=(1.0, 1.0, 1.0))
        >>> int(att.sum())  # the voxel and its 4 in-plane neighbours (1 mm away)
        5
    """
    labels = np.asarray(coarse_labels)
    sparse = attention_from_labels(labels, list(organ_ids), margin_mm=margin_mm, spacing=spacing)
    return densify(sparse, list(organ_ids), labels.shape)
