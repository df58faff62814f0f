"""3-D training crops with a random affine and intensity change, for the coarse segmenter (stage 1).

The crop is read straight out of the whole (small, coarse-grid) volume through the transform,
so a rotated or zoomed crop sees real voxels at its corners, not padding, wherever the volume
has them. Any object with the same call signature can replace :class:`RandomAffineCrop3D` as
stage 1's ``augment`` (see :func:`agcl.pipeline.train_coarse`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from agcl._validation import check_int

__all__ = ["RandomAffineCrop3D", "crop_matrix", "extract", "rotation_matrix"]


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


def crop_matrix(
    angles_deg: Sequence[float], factor: float = 1.0, spacing: Sequence[float] | None = None
) -> np.ndarray:
    """Crop voxel offsets -> volume voxel offsets: zoom by ``factor``, rotate by ``angles_deg``
    in mm.

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


def extract(
    array: torch.Tensor, start: Sequence[int], size: Sequence[int], pad: float
) -> torch.Tensor:
    """The ``size`` box of ``array`` starting at ``start`` (it may lie partly outside: padded
    with ``pad``).

    Examples:
        >>> extract(torch.arange(4.0), [2], [3], -1.0)
        tensor([ 2.,  3., -1.])
    """
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


def _affine_crop(
    image: torch.Tensor,
    label: torch.Tensor,
    pad: float,
    crop: tuple[int, ...],
    centre: np.ndarray,
    matrix: np.ndarray,
) -> tuple[torch.Tensor, torch.Tensor]:
    # crop voxel o -> volume voxel centre + matrix @ (o - (crop - 1) / 2); trilinear image,
    # nearest labels, the image padded with pad outside the volume and the labels with background
    axes = [torch.arange(n, dtype=torch.float64) - (n - 1) / 2 for n in crop]
    offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    coords = offsets @ torch.from_numpy(matrix).T + torch.from_numpy(
        np.asarray(centre, dtype=np.float64)
    )
    size = torch.tensor(image.shape, dtype=torch.float64)
    grid = (
        ((2 * coords + 1) / size - 1).flip(-1)[None].float()
    )  # align_corners=False; grid_sample wants (z, y, x)
    out = (
        F.grid_sample(
            (image.float() - pad)[None, None],
            grid,
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )[0, 0]
        + pad
    )
    lab = F.grid_sample(
        label.float()[None, None], grid, mode="nearest", padding_mode="zeros", align_corners=False
    )[0, 0]
    return out, lab.round().to(label.dtype)


class RandomAffineCrop3D:
    """A random 3-D training crop: zoom, rotation (in mm) and intensity scale/shift.

    Called as ``augment(image, label, crop_shape=..., centre=..., rng=..., pad=...)`` with the
    whole volume, it zooms by a factor in ``[1 - zoom, 1 + zoom]`` (the window read is
    ``crop_shape * factor``), rotates it by an angle drawn in ``[-rotation_deg, rotation_deg]``
    about each axis (in mm, with the volume's voxel size ``spacing``; isotropic when ``None``),
    resamples it to ``crop_shape`` (trilinear image, nearest labels; outside the volume the image
    is padded with ``pad`` and the labels with background) and maps the intensities
    ``v -> a * v + b`` with ``a`` in ``[1 - intensity, 1 + intensity]`` and ``b`` in
    ``[-intensity / 2, intensity / 2]`` (the preprocessed range is [0, 1]). Never a mirror: left
    and right organs differ. With ``zoom = rotation_deg = intensity = 0`` it is a plain crop.

    Args:
        zoom, rotation_deg, intensity: the ranges above (``>= 0``).
        spacing: the volume's voxel size in mm (for rotations that keep physical shapes).

    Shape:
        image, label: ``(X, Y, Z)`` tensors; outputs ``crop_shape`` (image float32, label int64).

    Examples:
        >>> aug = RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.0)
        >>> img = torch.arange(64.0).view(4, 4, 4); lab = torch.zeros(4, 4, 4, dtype=torch.uint8)
        >>> x, y = aug(img, lab, crop_shape=(2, 2, 2), centre=np.array([1, 1, 1]),
        ...            rng=np.random.default_rng(0))
        >>> x[0, 0, 0].item(), tuple(y.shape), y.dtype
        (0.0, (2, 2, 2), torch.int64)
    """

    def __init__(
        self,
        zoom: float = 0.1,
        rotation_deg: float = 15.0,
        intensity: float = 0.1,
        *,
        spacing: Sequence[float] | None = None,
    ) -> None:
        for name, value in (
            ("zoom", zoom),
            ("rotation_deg", rotation_deg),
            ("intensity", intensity),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name} must be a number >= 0; got {value!r}")
        if zoom >= 1:
            raise ValueError(f"zoom must lie in [0, 1) (the factor is 1 +/- zoom); got {zoom}")
        self.zoom, self.rotation_deg, self.intensity = (
            float(zoom),
            float(rotation_deg),
            float(intensity),
        )
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)

    def __repr__(self) -> str:
        return (
            f"RandomAffineCrop3D(zoom={self.zoom}, rotation_deg={self.rotation_deg}, "
            f"intensity={self.intensity}, spacing={self.spacing})"
        )

    def __call__(
        self,
        image: torch.Tensor,
        label: torch.Tensor,
        *,
        crop_shape: Sequence[int],
        centre: np.ndarray | None,
        rng: np.random.Generator,
        pad: float = 0.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One crop of ``crop_shape`` centred on ``centre`` (``None``: anywhere in the volume)."""
        crop = tuple(
            check_int("crop_shape", int(s) if isinstance(s, np.integer) else s, low=1)
            for s in crop_shape
        )
        if len(crop) != 3 or image.ndim != 3 or tuple(label.shape) != tuple(image.shape):
            raise ValueError(
                f"image and label must be one 3-D grid and crop_shape 3 sizes; got "
                f"{tuple(image.shape)}, {tuple(label.shape)} and {crop}"
            )
        factor = float(rng.uniform(1.0 - self.zoom, 1.0 + self.zoom)) if self.zoom > 0 else 1.0
        angles = (
            rng.uniform(-self.rotation_deg, self.rotation_deg, 3)
            if self.rotation_deg > 0
            else np.zeros(3)
        )
        size = tuple(max(1, int(round(s * factor))) for s in crop)
        start = [
            _start(None if centre is None else int(centre[d]), image.shape[d], size[d], rng)
            for d in range(3)
        ]
        if factor == 1.0 and not angles.any():
            out = extract(image, start, size, pad).float()
            lab = extract(label, start, size, 0)
        else:
            matrix = crop_matrix(angles, factor, self.spacing)
            middle = (
                np.asarray(start, dtype=np.float64) + (np.asarray(size, dtype=np.float64) - 1) / 2
            )
            out, lab = _affine_crop(image, label, pad, crop, middle, matrix)
        if self.intensity > 0:
            a = float(rng.uniform(1.0 - self.intensity, 1.0 + self.intensity))
            b = float(rng.uniform(-self.intensity / 2, self.intensity / 2))
            out = out * a + b
        return out, lab.long()
