"""The patient's body in a CT volume: a mask that keeps the table, the arms and the air out.

A body mask bounds where organs can be: attention, its fallback regions and predictions that
land outside it are certainly wrong. :func:`body_mask` thresholds the scan in HU, keeps the
largest 3-D connected component, fills holes slice by slice so that lungs and bowel gas are
inside, and opens the result (in mm) to cut arms that touch the trunk through a narrow contact.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from agcl._validation import check_positive

__all__ = ["body_mask"]


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of a non-empty boolean volume."""
    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    sizes[0] = 0
    return lab == int(sizes.argmax())


def _fill_holes_slicewise(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` with every background region that does not touch its slice's border filled.

    One labelling of the background with in-plane connectivity only (no neighbour along
    ``axis``) finds each slice's background regions at once; those that reach the in-plane
    border of their slice are outside the body, every other one is a hole.
    """
    structure = np.zeros((3, 3, 3), bool)
    index = [slice(None)] * 3
    index[axis] = 1
    structure[tuple(index)] = ndimage.generate_binary_structure(2, 1)
    lab, n = ndimage.label(~mask, structure=structure)
    if n == 0:
        return mask
    outside = np.zeros(n + 1, bool)
    for ax in range(3):
        if ax == axis:
            continue
        for end in (0, -1):
            outside[np.take(lab, end, axis=ax)] = True
    return mask | ~outside[lab]  # label 0 (the mask itself) stays in


def _open_mm(
    mask: np.ndarray, radius: float, spacing: Sequence[float], axis: int
) -> np.ndarray | None:
    """The part of ``mask`` within reach of its largest core after an erosion by ``radius`` mm.

    Erosion and dilation are thresholded Euclidean distance maps (mm) on a grid coarsened to
    about ``radius / 3`` mm (block majority), so their cost does not grow with the resolution.
    The dilation adds one coarse voxel diagonal, so the coarse result covers the fine trunk;
    intersecting with ``mask`` restores the fine boundary. The coarse region's slice holes are
    filled, so the result of a slice-wise hole-free ``mask`` is hole-free too (a hole of
    ``A & B`` lies where ``A`` or ``B`` has one). ``None`` when the erosion leaves nothing
    (every part of the body is thinner than ``2 * radius``).
    """
    factors = [max(1, int(radius / 3.0 / s)) for s in spacing]
    pads = [(0, (-n) % f) for n, f in zip(mask.shape, factors)]
    padded = np.pad(mask, pads) if any(p for _, p in pads) else mask
    blocks = padded.reshape([d for n, f in zip(padded.shape, factors) for d in (n // f, f)]).sum(
        axis=(1, 3, 5), dtype=np.int32
    )
    coarse = 2 * blocks >= math.prod(factors)
    coarse_spacing = [s * f for s, f in zip(spacing, factors)]
    core = ndimage.distance_transform_edt(coarse, sampling=coarse_spacing) > radius
    if not core.any():
        return None
    core = _largest_component(core)
    reach = radius + math.sqrt(sum(s * s for s in coarse_spacing))
    grown = ndimage.distance_transform_edt(~core, sampling=coarse_spacing) <= reach
    grown = _fill_holes_slicewise(grown, axis)
    for ax, f in enumerate(factors):
        if f > 1:
            grown = np.repeat(grown, f, axis=ax)
    grown = grown[tuple(slice(0, n) for n in mask.shape)]
    return mask & grown


def body_mask(
    hu: np.ndarray,
    *,
    threshold: float = -500.0,
    spacing: Sequence[float] | None = None,
    opening_mm: float = 10.0,
    axis: int = -1,
) -> np.ndarray:
    """The patient's body in a CT volume: trunk only, table and separate arms dropped, holes filled.

    Steps: voxels above ``threshold`` HU; their largest 3-D (face-connected) component, which
    drops the table, arms and anything else separated from the trunk by air (or foam padding
    below ``threshold``); the holes of every slice along ``axis`` filled, so lungs, bowel gas
    and the airways are inside; with ``opening_mm > 0``, a morphological opening in mm of that
    filled body, which cuts what hangs on the trunk through a narrow contact (an arm touching
    the flank over less than ``2 * opening_mm`` in-plane, a table slab thinner than
    ``2 * opening_mm`` pressed against the back), then the largest component again, holes
    filled.

    What it does not do: it does not cut an arm pressed against the trunk over a contact wider
    than ``2 * opening_mm`` (such an arm stays in the mask; a larger ``opening_mm`` cuts wider
    contacts), nor an arm that touches the trunk at two places of one slice (the air they
    enclose is a hole, filled before the opening); it drops body parts thinner than about
    ``2 * opening_mm`` that protrude from the trunk (fingers, a thin skin fold; never an
    abdominal organ, which lies deeper than that); it does not fill a hole that touches the
    slice's border (a lung cut by a field of view smaller than the body). Near a cut contact,
    the arm's tissue within about ``opening_mm`` of the trunk remains.

    Args:
        hu: the CT volume in Hounsfield units, e.g. ``load_volume(path).array``.
        threshold: voxels strictly above it are tissue (air is -1000 HU, fat about -100).
        spacing: the voxel size in mm along the three axes (``Volume.spacing``); ``None``
            takes 1 mm voxels, which is right only for isotropic 1 mm scans.
        opening_mm: the opening radius in mm; ``0`` turns the opening off. The cost does not
            depend on it (distance maps on a grid coarsened to ``opening_mm / 3``).
        axis: the axial (slice) axis of ``hu``; ``-1`` for volumes from :func:`load_volume`
            (canonical RAS, ``[..., k]`` is an axial slice).

    Shape:
        ``hu``: ``(D0, D1, D2)``; output: ``(D0, D1, D2)`` ``bool``.

    Returns:
        The body mask: ``True`` inside the body.

    Raises:
        TypeError: ``hu`` is not a real numeric array (e.g. bool or complex); ``threshold`` or
            ``opening_mm`` is not a number.
        ValueError: ``hu`` is not 3-D, holds NaN or inf, or no voxel lies above ``threshold``
            (an empty scan, or one not in HU: the message gives the volume's maximum); a bad
            ``threshold``, ``spacing``, ``opening_mm`` or ``axis``.

    Warns:
        UserWarning: no voxel lies at or below ``threshold`` (no air at all: the mask is the
            whole volume; a volume normalised to [0, 1] instead of HU looks like this), or the
            opening would erase the whole body (every part thinner than ``2 * opening_mm``),
            in which case the mask is not opened.

    Examples:
        >>> hu = np.full((40, 40, 6), -1000.0, np.float32)
        >>> hu[5:35, 5:35] = 40.0        # the trunk
        >>> hu[15:25, 15:25] = -800.0    # a lung: a hole, filled
        >>> hu[37:39, 5:35] = 300.0      # the table, separated by air: dropped
        >>> mask = body_mask(hu, spacing=(5.0, 5.0, 5.0))
        >>> int(mask.sum()) == 30 * 30 * 6, bool(mask[20, 20, 3]), bool(mask[38, 20, 3])
        (True, True, False)
    """
    arr = np.asarray(hu)
    if arr.dtype == bool or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise TypeError(f"hu must be a real numeric array of HU values; got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise ValueError(f"hu must be a 3-D volume (D0, D1, D2); got shape {tuple(arr.shape)}")
    real = (int, float, np.integer, np.floating)
    if isinstance(threshold, bool) or not isinstance(threshold, real):
        raise TypeError(f"threshold must be a number of HU; got {type(threshold).__name__}")
    if not math.isfinite(float(threshold)):
        raise ValueError(f"threshold must be a finite number of HU; got {threshold!r}")
    opening_mm = check_positive("opening_mm", opening_mm, allow_zero=True)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -3 <= axis < 3:
        raise ValueError(f"axis must be an integer axis of a 3-D volume (-3 to 2); got {axis!r}")
    if spacing is None:
        sp = (1.0, 1.0, 1.0)
    else:
        try:
            sp = tuple(float(s) for s in spacing)
        except (TypeError, ValueError):
            sp = ()
        if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
            raise ValueError(f"spacing must be three positive voxel sizes in mm; got {spacing!r}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"hu holds {bad} NaN or inf voxels; replace them first, e.g. "
            "np.nan_to_num(hu, nan=-1024.0) (air)"
        )
    tissue = arr > threshold
    if not tissue.any():
        top = float(arr.max()) if arr.size else float("nan")
        raise ValueError(
            f"no voxel of hu lies above threshold {float(threshold)} HU (maximum {top:.6g}): the "
            "volume is empty or not in Hounsfield units; there is no body to mask"
        )
    if tissue.all():
        warnings.warn(
            f"every voxel of hu lies above threshold {float(threshold)} HU (minimum "
            f"{float(arr.min()):.6g}): there is no air, so the body mask is the whole volume; "
            "is the volume in Hounsfield units?",
            stacklevel=2,
        )
        return tissue
    axis = int(axis) % 3
    body = _fill_holes_slicewise(_largest_component(tissue), axis)
    if opening_mm > 0:
        # on the filled body, so that the wall between a lung and the skin is not "thin"
        opened = _open_mm(body, opening_mm, sp, axis)
        if opened is None:
            warnings.warn(
                f"an opening of {opening_mm} mm would erase the whole body (every part is "
                f"thinner than {2 * opening_mm} mm at spacing {sp}); the mask is not "
                "opened: pass a smaller opening_mm, or the right spacing",
                stacklevel=2,
            )
        else:
            # hole-free already (see _open_mm), and dropping components makes no hole
            body = _largest_component(opened)
    return body
