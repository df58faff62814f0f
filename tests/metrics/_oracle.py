"""A brute-force float64 oracle for the surface metrics, shared by the metric tests."""

from __future__ import annotations

import itertools

import numpy as np


def brute_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of foreground voxels with a face neighbour outside the mask (or the array)."""
    coords = []
    for idx in itertools.product(*(range(s) for s in mask.shape)):
        if not mask[idx]:
            continue
        for axis in range(mask.ndim):
            for step in (-1, 1):
                nb = list(idx)
                nb[axis] += step
                if not (0 <= nb[axis] < mask.shape[axis]) or not mask[tuple(nb)]:
                    coords.append(idx)
                    break
            else:
                continue
            break
    return np.array(coords, dtype=np.float64).reshape(-1, mask.ndim)


def brute_directed(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    sa, sb = brute_surface(a) * spacing, brute_surface(b) * spacing
    diff = sa[:, None, :] - sb[None, :, :]
    return np.sqrt((diff**2).sum(-1)).min(axis=1)
