"""Private: the painter of the synthetic CT phantoms (:mod:`agcl.data.phantom`).

Shapes (ellipsoids and tubes, in mm) are evaluated on a smoothly warped grid, only inside their
bounding boxes, and painted into the image (HU) and label map in the order they are given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from agcl._validation import check_int_sequence, check_real_sequence

__all__ = ["WARP_MM", "Painter", "check_grid"]

WARP_MM = 5.0  # amplitude of the grid's smooth random deformation, mm per component


def check_grid(shape: Any, spacing: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``shape`` (three ints >= 1; 2.5 is refused, not truncated) and ``spacing`` (three
    numbers > 0, mm) checked."""
    shp = tuple(check_int_sequence("shape", shape, low=1))
    if len(shp) != 3:
        raise ValueError(f"shape must be three positive integers; got {shp}")
    return shp, check_real_sequence("spacing (mm)", spacing, length=3, positive=True)


class Painter:
    """Evaluates shapes on the warped grid inside their bounding boxes and paints them."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        rng: np.random.Generator,
        fill: float,
    ):
        self.rng = rng
        self.axes = [
            ((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)
        ]
        x, y, z = np.meshgrid(*self.axes, indexing="ij", sparse=True)
        self.warped = [c + self._smooth(self.axes, WARP_MM, 100.0, 260.0) for c in (x, y, z)]
        self.field = self._smooth(self.axes, 1.0, 40.0, 120.0)  # intensity bias in [-1, 1]-ish
        self.hu = np.full(shape, fill, np.float32)
        self.lab = np.zeros(shape, np.int16)

    def _smooth(
        self, axes: Sequence[np.ndarray], amp: float, lo: float, hi: float, k: int = 3
    ) -> np.ndarray:
        """A sum of ``k`` random plane waves on the grid spanned by the 1-D ``axes`` (mm).

        ``sin(a x + b y + c z + phi)`` is the imaginary part of a product of three 1-D
        complex exponentials, so no transcendental function runs on the 3-D grid.
        """
        out = np.zeros([len(a) for a in axes], np.float32)
        for _ in range(k):
            d = self.rng.normal(size=3)
            w = 2 * np.pi / self.rng.uniform(lo, hi) * d / np.linalg.norm(d)
            phase = self.rng.uniform(0, 2 * np.pi)
            e = [
                np.exp(
                    1j * (float(w[i]) * axes[i].astype(np.float64) + (phase if i == 0 else 0.0))
                ).astype(np.complex64)
                for i in range(3)
            ]
            yz = e[1][:, None] * e[2][None, :]
            out += (e[0][:, None, None] * yz[None]).imag
        out *= np.float32(amp / np.sqrt(k))
        return out

    def _block(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, ...] | None:
        sl = []
        for ax, a, b in zip(self.axes, lo - 2 * WARP_MM, hi + 2 * WARP_MM):
            i0, i1 = np.searchsorted(ax, a), np.searchsorted(ax, b, side="right")
            if i1 <= i0:
                return None
            sl.append(slice(int(i0), int(i1)))
        return tuple(sl)

    def mask(
        self, kind: str, params: dict, bump: float = 0.07
    ) -> tuple[tuple[slice, ...], np.ndarray] | None:
        if kind == "ellipsoid":
            c, s = np.asarray(params["center"], float), np.asarray(params["semi"], float)
            ext = np.full(3, s.max() * (1 + bump) * 1.05)
            lo, hi = c - ext, c + ext
        else:
            pts, r = np.asarray(params["points"], float), float(params["radius"])
            lo, hi = pts.min(0) - r * 1.2, pts.max(0) + r * 1.2
        block = self._block(lo, hi)
        if block is None:
            return None
        p = [w[block] for w in self.warped]
        if kind == "ellipsoid":
            t = np.deg2rad(float(params.get("angle", 0.0)))
            ct, st = float(np.cos(t)), float(np.sin(t))
            cf, sf = [float(v) for v in c], [float(v) for v in s]
            dx, dy = p[0] - cf[0], p[1] - cf[1]
            u, v = ct * dx + st * dy, ct * dy - st * dx
            level = np.sqrt((u / sf[0]) ** 2 + (v / sf[1]) ** 2 + ((p[2] - cf[2]) / sf[2]) ** 2)
        else:
            level = np.full(p[0].shape, np.inf, np.float32)
            for a, b in zip(pts[:-1], pts[1:]):
                ab = [float(v) for v in b - a]
                a = [float(v) for v in a]
                n2 = max(ab[0] ** 2 + ab[1] ** 2 + ab[2] ** 2, 1e-9)
                t = ((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1] + (p[2] - a[2]) * ab[2]) / n2
                t = np.clip(t, 0.0, 1.0)
                d2 = sum((p[i] - a[i] - t * ab[i]) ** 2 for i in range(3))
                level = np.minimum(level, np.sqrt(d2) / r)
        sub_axes = [ax[b] for ax, b in zip(self.axes, block)]
        wobble = self._smooth(sub_axes, bump, 30.0, 90.0, k=2) if bump > 0 else 0.0
        return block, level <= 1.0 + wobble

    def paint(
        self,
        kind: str,
        params: dict,
        hu: float,
        code: int | None = None,
        texture: float = 5.0,
        bump: float = 0.07,
    ) -> None:
        got = self.mask(kind, params, bump)
        if got is None:
            return
        block, m = got
        self.hu[block][m] = hu + np.float32(texture) * self.field[block][m]
        if code is not None:
            self.lab[block][m] = code
