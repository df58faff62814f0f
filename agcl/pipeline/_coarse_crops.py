"""Private helpers of stage 1: the coarse grid of a voxel size, training crops, sliding windows.

* :func:`grid_shape` is the coarse grid of a volume resampled to a target voxel size in mm;
  :func:`to_grid` resamples a case to it (trilinear image, nearest labels) and keeps only the
  small arrays (:class:`GridCase`), so the training cases' full-resolution volumes are never held.
* :func:`sample_crop` draws one 3-D training crop: centred on a voxel of a randomly chosen organ
  class present in the case with probability ``foreground``, anywhere otherwise (nnU-Net's
  class-by-class foreground oversampling), padded where the volume is smaller than the crop,
  with augmentation (a small isotropic zoom, a rotation in mm (:func:`crop_matrix`) and an
  intensity scale/shift; never a flip, since left and right organs differ).
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
import torch.nn.functional as F

from agcl.data.prepared import resample

__all__ = ["GridCase", "crop_matrix", "extract", "gaussian_weights", "grid_shape", "rotation_matrix", "sample_crop",
           "sliding_window", "to_grid", "window_starts"]

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


def rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """The 3 x 3 rotation by ``angles_deg`` about axes 0, 1 and 2 (in that order, degrees).

    Examples:
        >>> np.round(rotation_matrix((0, 0, 90)) @ np.array([1.0, 0.0, 0.0]), 6).tolist()
        [0.0, 1.0, 0.0]
    """
    out = np.eye(3)
    for axis, deg in enumerate(angles_deg):
        c, s = math.cos(math.radians(float(deg))), math.sin(math.radians(float(deg)))
        i, j = [d for d in range(3) if d != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        out = r @ out
    return out


def crop_matrix(angles_deg: Sequence[float], factor: float = 1.0, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Crop voxel offsets -> volume voxel offsets: zoom by ``factor``, rotate by ``angles_deg`` in mm.

    ``diag(1 / spacing) @ R @ diag(spacing) * factor``: a voxel step is turned into mm, rotated
    and turned back, so anisotropic voxels (``spacing`` in mm; isotropic when ``None``) keep
    physical shapes.

    Examples:
        >>> np.round(crop_matrix((90, 0, 0), spacing=(1.0, 2.0, 4.0)) @ [0, 2, 0], 6).tolist()
        [0.0, 0.0, 1.0]
    """
    sp = np.ones(3) if spacing is None else np.asarray(spacing, dtype=np.float64)
    if sp.shape != (3,) or not (sp > 0).all():
        raise ValueError(f"spacing must be three positive voxel sizes in mm; got {spacing}")
    return rotation_matrix(angles_deg) * sp[None, :] / sp[:, None] * float(factor)


def _affine_crop(case: GridCase, crop: tuple[int, ...], centre: np.ndarray, matrix: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    # crop voxel o -> volume voxel centre + matrix @ (o - (crop - 1) / 2); trilinear image, nearest labels,
    # the image padded with case.pad outside the volume and the labels with background
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in crop]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    coords = offsets @ torch.from_numpy(matrix).T + torch.from_numpy(np.asarray(centre, dtype=np.float64))
    size = torch.tensor(case.image.shape, dtype=torch.float64)
    grid = ((2 * coords + 1) / size - 1).flip(-1)[None].float()  # align_corners=False; grid_sample wants (z, y, x)
    image = F.grid_sample((case.image.float() - case.pad)[None, None], grid, mode="bilinear", padding_mode="zeros",
                          align_corners=False)[0, 0] + case.pad
    label = F.grid_sample(case.label.float()[None, None], grid, mode="nearest", padding_mode="zeros",
                          align_corners=False)[0, 0]
    return image, label.round().to(case.label.dtype)


def sample_crop(case: GridCase, crop_shape: Sequence[int], rng: np.random.Generator, *, foreground: float,
                augment: bool = True, zoom: float = 0.1, intensity: float = 0.1, rotation_deg: float = 0.0,
                spacing: Sequence[float] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One training crop ``(image float32, label int64, class)`` of ``crop_shape``.

    With probability ``foreground`` the crop is centred on a random voxel of a class drawn
    uniformly from the classes present in the case (returned as ``class``; 0 for a random crop).
    ``augment`` zooms by a factor in ``[1 - zoom, 1 + zoom]`` (the window read is
    ``crop_shape * factor``), rotates it by an angle drawn in ``[-rotation_deg, rotation_deg]``
    about each axis (in mm, with the grid's voxel size ``spacing``; isotropic when ``None``),
    resamples it to ``crop_shape`` (trilinear image, nearest labels; outside the volume the image
    is padded with ``case.pad`` and the labels with background) and maps the intensities
    ``v -> a * v + b`` with ``a`` in ``[1 - intensity, 1 + intensity]`` and ``b`` in
    ``[-intensity / 2, intensity / 2]`` (the preprocessed range is [0, 1]). Never a mirror: left
    and right organs differ.

    Shape:
        outputs ``crop_shape`` each.
    """
    crop = tuple(int(s) for s in crop_shape)
    if rotation_deg < 0 or zoom < 0:
        raise ValueError(f"rotation_deg and zoom must be >= 0; got {rotation_deg} and {zoom}")
    factor = float(rng.uniform(1.0 - zoom, 1.0 + zoom)) if augment and zoom > 0 else 1.0
    angles = rng.uniform(-rotation_deg, rotation_deg, 3) if augment and rotation_deg > 0 else np.zeros(3)
    size = tuple(max(1, int(round(s * factor))) for s in crop)
    cls, centre = 0, None
    if case.locations and rng.random() < foreground:
        classes = sorted(case.locations)
        cls = classes[int(rng.integers(len(classes)))]
        where = case.locations[cls]
        centre = where[int(rng.integers(len(where)))]
    start = [_start(None if centre is None else int(centre[d]), case.image.shape[d], size[d], rng) for d in range(3)]
    if factor == 1.0 and not angles.any():
        image = extract(case.image, start, size, case.pad).float()
        label = extract(case.label, start, size, 0)
    else:
        matrix = crop_matrix(angles, factor, spacing)
        middle = np.asarray(start, dtype=np.float64) + (np.asarray(size, dtype=np.float64) - 1) / 2
        image, label = _affine_crop(case, crop, middle, matrix)
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
