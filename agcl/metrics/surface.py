"""Surface-distance metrics in millimetres: Hausdorff distance (max or percentile) and ASSD.

Conventions (pinned here because published tools disagree; tested in tests/metrics):

* **Surface voxels** of a mask are its foreground voxels with at least one face-connected
  (6-neighbourhood in 3-D, 4 in 2-D) background neighbour; voxels outside the array count as
  background, so a mask touching the border has a surface there.
* **Directed distances** ``d(P -> G)``: for every surface voxel of P, the Euclidean distance in
  mm (``spacing``) to the nearest surface voxel of G, computed with
  ``scipy.ndimage.distance_transform_edt(..., sampling=spacing)`` inside the union's bounding box
  (exact: every surface voxel lies in the box).
* **Hausdorff distance at percentile q** is ``max(percentile(d(P->G), q), percentile(d(G->P), q))``
  (the larger of the two directed percentiles, MONAI's ``compute_hausdorff_distance``
  convention; numpy's linear interpolation between order statistics). ``q = 100`` is the
  classical Hausdorff distance; ``q = 95`` is HD95.
* **Average symmetric surface distance** pools both directions:
  ``(sum d(P->G) + sum d(G->P)) / (|S_P| + |S_G|)`` (MONAI ``symmetric=True``, medpy ``assd``).
* **Empty masks**: both empty gives 0.0; exactly one empty gives ``inf`` (never NaN, so a missed
  organ can never improve an average; :func:`agcl.metrics.evaluate_labels` counts them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from agcl._validation import check_in_range, check_positive
from agcl.metrics._masks import as_mask_pair, as_spacing, union_crop

__all__ = ["average_surface_distance", "hausdorff_distance", "surface_distances"]


def _surface(mask: np.ndarray) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface_distances(
    pred: Any, gt: Any, spacing: Sequence[float] | float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: ``(d(pred -> gt), d(gt -> pred))``.

    Args:
        pred: predicted binary mask (numpy or torch, bool or 0/1).
        gt: ground-truth binary mask of the same shape.
        spacing: voxel size per axis in mm (a scalar is repeated; ``None`` means 1).

    Shape:
        pred, gt: ``(*S)`` with ``len(S) == len(spacing)``. Outputs: ``(|S_pred|,)`` and
        ``(|S_gt|,)``, one entry per surface voxel (``inf`` entries when the other mask is empty,
        empty arrays for an empty mask).

    Returns:
        Two float64 arrays.

    Raises:
        TypeError, ValueError: bad masks or spacing (the message names the argument).

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((1, 5), bool); a[0, 0] = True
        >>> b = np.zeros((1, 5), bool); b[0, 3] = True
        >>> surface_distances(a, b, spacing=(1.0, 2.0))
        (array([6.]), array([6.]))
    """
    p, g = as_mask_pair(pred, gt)
    sp = as_spacing(spacing, p.ndim)
    p_any, g_any = bool(p.any()), bool(g.any())
    if not (p_any and g_any):
        sp_p = _surface(p) if p_any else p
        sp_g = _surface(g) if g_any else g
        return (np.full(int(sp_p.sum()), np.inf), np.full(int(sp_g.sum()), np.inf))
    box = union_crop(p, g, pad=1)
    sp_p, sp_g = _surface(p[box]), _surface(g[box])
    to_g = ndimage.distance_transform_edt(~sp_g, sampling=sp)
    to_p = ndimage.distance_transform_edt(~sp_p, sampling=sp)
    return np.asarray(to_g[sp_p], np.float64), np.asarray(to_p[sp_g], np.float64)


def _directed_percentile(d: np.ndarray, percentile: float) -> float:
    if d.size == 0:
        return 0.0
    if np.isinf(d).any():
        return float("inf")
    return float(np.percentile(d, percentile))


def hausdorff_distance(
    pred: Any, gt: Any, spacing: Sequence[float] | float | None = None, percentile: float = 100
) -> float:
    """Hausdorff distance (``percentile=100``) or its percentile variant (95: HD95), in mm.

    The larger of the two directed percentiles of the surface distances (see the module notes
    for the surface and percentile conventions).

    Args:
        pred: predicted binary mask (numpy or torch, bool or 0/1).
        gt: ground-truth binary mask of the same shape.
        spacing: voxel size per axis in mm (``None``: 1 per axis, i.e. distances in voxels).
        percentile: in (0, 100]; 100 gives the maximum.

    Shape:
        pred, gt: ``(*S)``, any number of axes, the same for both.

    Returns:
        A Python float: 0.0 when both masks are empty, ``inf`` when exactly one is.

    Raises:
        TypeError, ValueError: bad masks, spacing or percentile (the message names it).

    References:
        MONAI ``compute_hausdorff_distance`` (directed-percentile maximum); D. P. Huttenlocher
        et al., "Comparing images using the Hausdorff distance", TPAMI 1993.

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((6, 6), bool); a[1:3, 1:3] = True
        >>> b = np.zeros((6, 6), bool); b[1:3, 2:4] = True
        >>> hausdorff_distance(a, b, spacing=(1.0, 0.5))
        0.5
    """
    check_positive("percentile", percentile)
    percentile = check_in_range("percentile", percentile, 0.0, 100.0)
    d_pg, d_gp = surface_distances(pred, gt, spacing)
    if d_pg.size == 0 and d_gp.size == 0:
        return 0.0
    return max(_directed_percentile(d_pg, percentile), _directed_percentile(d_gp, percentile))


def average_surface_distance(
    pred: Any, gt: Any, spacing: Sequence[float] | float | None = None
) -> float:
    """Average symmetric surface distance (ASSD, "MSD" in the paper's tables), in mm.

    Both directions' distances pooled: ``(sum d(P->G) + sum d(G->P)) / (|S_P| + |S_G|)``.

    Args:
        pred: predicted binary mask (numpy or torch, bool or 0/1).
        gt: ground-truth binary mask of the same shape.
        spacing: voxel size per axis in mm (``None``: 1 per axis).

    Shape:
        pred, gt: ``(*S)``, any number of axes, the same for both.

    Returns:
        A Python float: 0.0 when both masks are empty, ``inf`` when exactly one is.

    Raises:
        TypeError, ValueError: bad masks or spacing (the message names the argument).

    References:
        MONAI ``compute_average_surface_distance(symmetric=True)``; medpy ``assd``.

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((1, 5), bool); a[0, 0] = True
        >>> b = np.zeros((1, 5), bool); b[0, 2:4] = True
        >>> average_surface_distance(a, b)  # (2) + (2 + 3), over 3 surface voxels
        2.3333333333333335
    """
    d_pg, d_gp = surface_distances(pred, gt, spacing)
    n = d_pg.size + d_gp.size
    if n == 0:
        return 0.0
    return float((d_pg.sum() + d_gp.sum()) / n)
