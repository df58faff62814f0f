"""Stage 1's training data: the coarse grid of a voxel size and the crops of every epoch.

* :func:`grid_shape` is the coarse grid of a volume resampled to a target voxel size in mm;
  :func:`to_grid` resamples a case to it (trilinear image, nearest labels) and keeps only the
  small arrays (:class:`GridCase`), so the training cases' full-resolution volumes are never held.
* :class:`CoarseCropDataset` is a ``torch.utils.data`` dataset of one epoch's crops: each is
  centred on a voxel of a randomly chosen organ class present in the case with probability
  ``foreground``, anywhere otherwise (nnU-Net's class-by-class foreground oversampling), and
  cut by the augmentation (default :class:`agcl.augment.RandomAffineCrop3D`: zoom, rotation in
  mm, intensity; never a flip, since left and right organs differ). Every crop's randomness
  comes from ``(seed, epoch, index)``, so a ``DataLoader`` gives the same batches for any
  number of workers, and a resumed run repeats them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from agcl._validation import check_in_range, check_int
from agcl.data.prepared import resample

__all__ = ["CoarseCropDataset", "GridCase", "grid_shape", "to_grid"]

#: at most this many voxel positions are kept per organ class and case for foreground crops
MAX_LOCATIONS = 10_000


def grid_shape(
    shape: Sequence[int], spacing: Sequence[float], spacing_mm: Sequence[float]
) -> tuple[int, int, int]:
    """The grid of a ``shape`` volume of voxel size ``spacing`` resampled to ``spacing_mm`` (mm).

    Each axis keeps its physical extent: ``max(1, round(n * s / t))`` voxels.

    Examples:
        >>> grid_shape((512, 512, 100), (0.8, 0.8, 2.5), (2.0, 2.0, 3.0))
        (205, 205, 83)
    """
    if len(shape) != 3 or len(spacing) != 3 or len(spacing_mm) != 3:
        raise ValueError(
            f"shape, spacing and spacing_mm must have 3 entries; got {tuple(shape)}, "
            f"{tuple(spacing)}, {tuple(spacing_mm)}"
        )
    for name, values in (("spacing", spacing), ("spacing_mm", spacing_mm)):
        if not all(math.isfinite(float(v)) and float(v) > 0 for v in values):
            raise ValueError(
                f"{name} must be three positive voxel sizes in mm; got {tuple(values)}"
            )
    return tuple(
        max(1, int(round(int(n) * float(s) / float(t))))  # type: ignore[return-value]
        for n, s, t in zip(shape, spacing, spacing_mm)
    )


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


def to_grid(
    image: np.ndarray,
    label: np.ndarray,
    lut: np.ndarray,
    grid: Sequence[int],
    *,
    rng: np.random.Generator,
) -> GridCase:
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
    return GridCase(
        image=img.to(torch.float16), label=classes, locations=locations, pad=float(img.min())
    )


class CoarseCropDataset(Dataset):
    """The training crops of one epoch of stage 1 (call :meth:`set_epoch` before each epoch).

    Args:
        cases: the training cases on the coarse grid.
        crop_shape: the crop size (voxels of the coarse grid).
        crops_per_case: crops drawn from each case per epoch.
        foreground: the probability that a crop is centred on a voxel of an organ class (drawn
            uniformly from the classes present in the case).
        augment: ``augment(image, label, crop_shape=, centre=, rng=, pad=) -> (image, label)``
            on the whole grid volume (e.g. :class:`agcl.augment.RandomAffineCrop3D`; ``None``:
            a plain crop).
        seed: the base seed.

    Item ``i`` of epoch ``e``: ``(image (1, *crop_shape) float32, label crop_shape int64)``, the
    ``i``-th entry of the epoch's order (each case ``crops_per_case`` times, shuffled), drawn by
    a generator seeded with ``(seed, e, i)``.

    Examples:
        >>> img = torch.zeros(6, 6, 4, dtype=torch.float16)
        >>> lab = torch.zeros(6, 6, 4, dtype=torch.uint8)
        >>> ds = CoarseCropDataset([GridCase(img, lab)], (4, 4, 4), crops_per_case=3,
        ...                        foreground=0.5)
        >>> len(ds), tuple(ds[0][0].shape)
        (3, (1, 4, 4, 4))
    """

    def __init__(
        self,
        cases: Sequence[GridCase],
        crop_shape: Sequence[int],
        *,
        crops_per_case: int = 1,
        foreground: float = 0.33,
        augment: Callable[..., Any] | None = None,
        seed: int = 0,
    ) -> None:
        if len(cases) == 0:
            raise ValueError("cases must hold at least one GridCase; got none")
        self.cases = list(cases)
        self.crop_shape = tuple(check_int("crop_shape", int(s), low=1) for s in crop_shape)
        self.crops_per_case = check_int("crops_per_case", crops_per_case, low=1)
        self.foreground = check_in_range("foreground", foreground, 0.0, 1.0)
        self.augment = augment
        self.seed = check_int("seed", seed, low=0)
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        """Shuffle the crops of ``epoch`` (its order and every crop derive from the seed and it)."""
        self.epoch = check_int("epoch", epoch, low=0)
        rng = np.random.default_rng([self.seed, 7919, self.epoch])
        self.order = rng.permutation(np.repeat(np.arange(len(self.cases)), self.crops_per_case))

    def __len__(self) -> int:
        return len(self.order)

    def pick_centre(
        self, case: GridCase, rng: np.random.Generator
    ) -> tuple[int, np.ndarray | None]:
        """``(class, centre voxel)`` of a crop: with probability ``foreground`` a random voxel of a
        class drawn uniformly from those present (class by class, so small organs are seen as
        often as large ones), else ``(0, None)`` (anywhere)."""
        classes = [k for k in sorted(case.locations) if len(case.locations[k])]
        if classes and rng.random() < self.foreground:
            cls = classes[int(rng.integers(len(classes)))]
            where = case.locations[cls]
            return cls, where[int(rng.integers(len(where)))]
        return 0, None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index = int(index) % len(self)
        case = self.cases[int(self.order[index])]
        rng = np.random.default_rng([self.seed, 7919, self.epoch, index])
        _, centre = self.pick_centre(case, rng)
        if self.augment is None:
            from agcl.augment.crop3d import RandomAffineCrop3D

            self.augment = RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.0)
        image, label = self.augment(
            case.image, case.label, crop_shape=self.crop_shape, centre=centre, rng=rng, pad=case.pad
        )
        return image.float()[None], label.long()
