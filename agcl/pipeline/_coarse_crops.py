"""Private helpers of stage 1: the coarse grid of a voxel size, training crops, sliding windows.

* :func:`grid_shape` is the coarse grid of a volume resampled to a target voxel size in mm;
  :func:`to_grid` resamples a case to it (trilinear image, nearest labels) and keeps only the
  small arrays (:class:`GridCase`), so the training cases' full-resolution volumes are never held.
* :func:`sample_crop` draws one 3-D training crop: centred on a voxel of a randomly chosen organ
  class present in the case with probability ``foreground``, anywhere otherwise (nnU-Net's
  class-by-class foreground oversampling), padded where the volume is smaller than the crop,
  with light augmentation (a small isotropic zoom and an intensity scale/shift; never a flip,
  since left and right organs differ).
* :func:`sliding_window` gives softmax probabilities of a whole coarse-grid volume from windows
  of the crop size overlapping by ``overlap``, blended with Gaussian weights.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from agcl.data.prepared import resample

__all__ = ["GridCase", "extract", "gaussian_weights", "grid_shape", "sample_crop", "sliding_window", "to_grid",
           "window_starts"]

#: at most this many voxel positions are kept per organ class and case for foreground crops
MAX_LOCATIONS = 10_000


def grid_shape(shape: Sequence[int], spacing: Sequence[float], spacing_mm: Sequence[float]) -> tuple[int, int, int]:
    """The grid of a ``shape`` volume of voxel size ``spacing`` resampled to ``spacing_mm`` (mm).

    Each axis keeps its physical extent: ``max(1, round(n * s / t))`` voxels.

    Examples:
        >>> grid_shape((512, 512, 100), (0.8, 0.8, 2.5), (2.0, 2.0, 3.0))
        (205, 205, 83)
    """
    if len(shape) != 3 or len(spacing) != 3 or len(spacing_mm) != 3:
        raise ValueError(f"shape, spacing and spacing_mm must have 3 entries; got {tuple(shape)}, "
                         f"{tuple(spacing)}, {tuple(spacing_mm)}")
    for name, values in (("spacing", spacing), ("spacing_mm", spacing_mm)):
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in values):
            raise ValueError(f"{name} must be three positive voxel sizes in mm; got {tuple(values)}")
    return tuple(max(1, int(round(int(n) * float(s) / float(t))))  # type: ignore[return-value]
                 for n, s, t in zip(shape, spacing, spacing_mm))


@dataclass
class GridCase:
    """One training case on the coarse grid: the image, class labels and organ voxel positions.

    Attributes:
        image: ``(x, y, z)`` float16 (halves the memory; crops are cast to float32).
        label: ``(x, y, z)`` uint8 class indices (0 background, ``i`` organ ``organ_ids[i - 1]``).
        locations: ``{class: (n, 3) int32}`` voxel positions of each class present (at most
            :data:`MAX_LOCATIONS`, a seeded random subset).
        pad: the value crops are padded with (the image's minimum, air after preprocessing).
    """

    image: torch.Tensor
    label: torch.Tensor
    locations: dict[int, np.ndarray] = field(default_factory=dict)
    pad: float = 0.0


def to_grid(image: np.ndarray, label: np.ndarray, lut: np.ndarray, grid: Sequence[int], *,
            rng: np.random.Generator) -> GridCase:
    """Resample one case (image trilinear, labels nearest after ``lut``: code -> class) to ``grid``.

    Shape:
        image, label: ``(X, Y, Z)``; the :class:`GridCase` arrays ``grid``.
    """
    if image.shape != label.shape:
        raise ValueError(f"image and label must share a grid; got {image.shape} and {label.shape}")
    small_lut = lut.astype(np.uint8 if lut.max(initial=0) < 256 else np.int16)
    lab = np.where((label >= 0) & (label < len(lut)), label, 0)
    classes = resample(torch.from_numpy(small_lut[lab]), grid, mode="nearest")
    img = resample(image, grid, mode="trilinear")
    lab_np = classes.numpy()
    locations: dict[int, np.ndarray] = {}
    for k in np.unique(lab_np):
        if k == 0:
            continue
        where = np.argwhere(lab_np == k).astype(np.int32)
        if len(where) > MAX_LOCATIONS:
            where = where[np.sort(rng.choice(len(where), MAX_LOCATIONS, replace=False))]
        locations[int(k)] = where
    return GridCase(image=img.to(torch.float16), label=classes, locations=locations, pad=float(img.min()))


def extract(array: torch.Tensor, start: Sequence[int], size: Sequence[int], pad: float) -> torch.Tensor:
    """The ``size`` box of ``array`` starting at ``start`` (may lie partly outside: padded with ``pad``)."""
    out = torch.full(tuple(int(s) for s in size), pad, dtype=array.dtype)
    src, dst = [], []
    for lo, n, full in zip(start, size, array.shape):
        a, b = max(int(lo), 0), min(int(lo) + int(n), int(full))
        if b <= a:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - int(lo), b - int(lo)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def _start(centre: int | None, n: int, size: int, rng: np.random.Generator) -> int:
    # crops stay inside the volume where it is large enough; a smaller volume lies inside the crop
    lo, hi = min(0, n - size), max(0, n - size)
    if centre is None:
        return int(rng.integers(lo, hi + 1))
    return int(np.clip(centre - size // 2, lo, hi))


def sample_crop(case: GridCase, crop_shape: Sequence[int], rng: np.random.Generator, *, foreground: float,
                augment: bool = True, zoom: float = 0.1, intensity: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One training crop ``(image float32, label int64, class)`` of ``crop_shape``.

    With probability ``foreground`` the crop is centred on a random voxel of a class drawn
    uniformly from the classes present in the case (returned as ``class``; 0 for a random crop).
    ``augment`` zooms by a factor in ``[1 - zoom, 1 + zoom]`` (the window read is
    ``crop_shape * factor``, resampled to ``crop_shape``: trilinear image, nearest labels) and
    maps the intensities ``v -> a * v + b`` with ``a`` in ``[1 - intensity, 1 + intensity]`` and
    ``b`` in ``[-intensity / 2, intensity / 2]`` (the preprocessed range is [0, 1]).

    Shape:
        outputs ``crop_shape`` each.
    """
    crop = tuple(int(s) for s in crop_shape)
    factor = float(rng.uniform(1.0 - zoom, 1.0 + zoom)) if augment and zoom > 0 else 1.0
    size = tuple(max(1, int(round(s * factor))) for s in crop)
    cls, centre = 0, None
    if case.locations and rng.random() < foreground:
        classes = sorted(case.locations)
        cls = classes[int(rng.integers(len(classes)))]
        where = case.locations[cls]
        centre = where[int(rng.integers(len(where)))]
    start = [_start(None if centre is None else int(centre[d]), case.image.shape[d], size[d], rng) for d in range(3)]
    image = extract(case.image, start, size, case.pad).float()
    label = extract(case.label, start, size, 0)
    if size != crop:
        image = resample(image, crop, mode="trilinear")
        label = resample(label, crop, mode="nearest")
    if augment and intensity > 0:
        a = float(rng.uniform(1.0 - intensity, 1.0 + intensity))
        b = float(rng.uniform(-intensity / 2, intensity / 2))
        image = image * a + b
    return image, label.long(), cls


def window_starts(n: int, size: int, overlap: float) -> list[int]:
    """Start positions of windows of ``size`` covering ``n`` voxels with ``overlap`` (last one flush).

    Examples:
        >>> window_starts(10, 4, 0.5), window_starts(3, 4, 0.5), window_starts(8, 4, 0.0)
        ([0, 2, 4, 6], [0], [0, 4])
    """
    if n <= size:
        return [0]
    step = max(1, int(size * (1.0 - overlap)))
    count = math.ceil((n - size) / step) + 1
    return sorted({min(i * step, n - size) for i in range(count)})


def gaussian_weights(size: Sequence[int], sigma_fraction: float = 0.125) -> torch.Tensor:
    """Blending weights of one window: a Gaussian (sigma ``size / 8``) peaking at 1 in the centre.

    Shape:
        output ``size`` float32, every entry positive.
    """
    axes = []
    for n in size:
        x = torch.arange(int(n), dtype=torch.float64) - (int(n) - 1) / 2
        sigma = max(int(n) * sigma_fraction, 1e-3)
        axes.append(torch.exp(-0.5 * (x / sigma) ** 2))
    w = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    w = w / w.max()
    return w.clamp_min(1e-6).float()


@torch.no_grad()
def sliding_window(model: torch.nn.Module, volume: torch.Tensor, crop_shape: Sequence[int], *, overlap: float,
                   pad: float, device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax probabilities of a coarse-grid volume from overlapping windows of ``crop_shape``.

    A volume smaller than the crop along an axis is padded with ``pad`` to the crop size there
    (as in training) and the padding is cropped off again; windows overlapping by ``overlap``
    are blended with :func:`gaussian_weights` (one window: the plain single-pass softmax).

    Shape:
        volume: ``(x, y, z)`` float; output ``(C, x, y, z)`` float32 on the CPU.
    """
    crop = tuple(int(s) for s in crop_shape)
    shape = tuple(int(s) for s in volume.shape)
    padded_shape = tuple(max(n, c) for n, c in zip(shape, crop))
    vol = extract(volume.float(), (0, 0, 0), padded_shape, pad) if padded_shape != shape else volume.float()
    starts = [window_starts(n, c, overlap) for n, c in zip(padded_shape, crop)]
    weights = gaussian_weights(crop)
    total: torch.Tensor | None = None
    norm = torch.zeros(padded_shape)
    for corner in itertools.product(*starts):
        box = tuple(slice(s, s + c) for s, c in zip(corner, crop))
        x = vol[box][None, None].to(device)
        prob = torch.softmax(model(x).float(), dim=1)[0].cpu()
        if total is None:
            total = torch.zeros((prob.shape[0], *padded_shape))
        total[(slice(None), *box)] += prob * weights
        norm[box] += weights
    assert total is not None
    out = total / norm
    return out[(slice(None), *(slice(0, n) for n in shape))].contiguous()
