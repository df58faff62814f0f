"""Synthetic abdominal CT phantoms with all 13 BTCV organs, generated in memory.

The anatomy is defined in physical millimetres (RAS+: x to the patient's right, y anterior,
z superior; origin at the centre of the field of view), so any shape and spacing work. Each
subject draws its own body size, organ positions, sizes, rotations and a smooth random
deformation; intensities are per-organ HU means for a contrast-enhanced (portal-venous) or a
non-contrast scan, with per-subject jitter, a smooth bias field, partial-volume blur and
Gaussian noise. Organs are painted in an anatomical order so that neighbours (liver/right
kidney/IVC/gallbladder, stomach/spleen, pancreas/splenic vein, ...) touch. docs/data.md
describes what is modelled; :mod:`agcl.data.synthetic` writes the phantoms in the BTCV or
the nnU-Net layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import ndimage

from agcl.data._painter import Painter, check_grid

__all__ = ["DEFAULT_SHAPE", "DEFAULT_SPACING", "MODALITIES", "make_phantom", "phantom_affine"]

#: Default grid: about 352 x 352 x 200 mm, small enough for a CPU demo.
DEFAULT_SHAPE: tuple[int, int, int] = (128, 128, 40)
DEFAULT_SPACING: tuple[float, float, float] = (2.75, 2.75, 5.0)
MODALITIES: tuple[str, ...] = ("contrast", "non-contrast")

# tissue -> (non-contrast HU, contrast HU)
_HU: dict[str, tuple[float, float]] = {
    "air": (-1000, -1000),
    "fat": (-100, -95),
    "muscle": (50, 62),
    "bowel": (25, 70),
    "gas": (-750, -750),
    "bone": (450, 460),
    "canal": (25, 30),
    "liver": (56, 108),
    "spleen": (46, 118),
    "cortex": (32, 175),
    "medulla": (28, 105),
    "gallbladder": (12, 14),
    "esophagus": (40, 68),
    "stomach": (40, 92),
    "lumen": (10, 12),
    "aorta": (42, 190),
    "ivc": (40, 125),
    "portal": (42, 160),
    "pancreas": (42, 98),
    "adrenal": (30, 58),
}


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The RAS affine of a phantom grid centred on the world origin.

    Examples:
        >>> phantom_affine((3, 3, 3), (2.0, 2.0, 5.0))[:3, 3].tolist()
        [-2.0, -2.0, -5.0]
    """
    aff = np.diag([*(float(s) for s in spacing), 1.0])
    aff[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return aff


def make_phantom(
    seed: int = 0,
    modality: Literal["contrast", "non-contrast"] = "contrast",
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one abdominal CT phantom in memory.

    The subject's anatomy depends on ``seed`` only; ``modality`` sets the intensities.

    Args:
        seed: the subject's random seed (same seed, same output).
        modality: ``"contrast"`` (portal-venous: vessels and parenchyma enhance) or
            ``"non-contrast"``.
        shape: the grid ``(X, Y, Z)`` in voxels, canonical RAS axes.
        spacing: the voxel size in mm.

    Shape:
        Both outputs are ``shape``: the image (``float32``, HU) and the label map (``int16``,
        BTCV codes 0-13), in canonical RAS orientation (``[..., k]`` is an axial slice).

    Returns:
        ``(image, labels)``.

    Raises:
        ValueError: an unknown modality, or a non-positive shape or spacing.

    Examples:
        >>> img, lab = make_phantom(0, "contrast", shape=(48, 48, 16), spacing=(7.3, 7.3, 12.5))
        >>> img.shape, img.dtype, lab.dtype, int(lab.max()) <= 13
        ((48, 48, 16), dtype('float32'), dtype('int16'), True)
    """
    if modality not in MODALITIES:
        raise ValueError(
            f"modality must be one of {', '.join(map(repr, MODALITIES))}; got {modality!r}"
        )
    shp, sp = check_grid(shape, spacing)
    rng = np.random.default_rng(seed)
    col = 1 if modality == "contrast" else 0
    enh = rng.uniform(0.8, 1.2)  # bolus timing: how strongly this subject enhances

    def hu(tissue: str) -> float:
        base, con = _HU[tissue]
        val = base + (con - base) * enh if col else base
        return float(val + rng.normal(0, 7))

    pnt = Painter(shp, sp, rng, _HU["air"][0])
    j = lambda s: rng.normal(0, s)  # noqa: E731 - jitter in mm
    g = rng.uniform(0.88, 1.12)  # organ size factor
    bx, by = 160 * rng.uniform(0.85, 1.12), 118 * rng.uniform(0.85, 1.1)
    fat = rng.uniform(10, 30)
    body = {"center": (0, 0, 0), "semi": (bx, by, 1e4)}
    pnt.paint("ellipsoid", body, hu("fat"), bump=0.02)
    pnt.paint(
        "ellipsoid",
        {"center": (0, 0, 0), "semi": (bx - fat, by - fat, 1e4)},
        hu("muscle"),
        bump=0.02,
    )
    pnt.paint(
        "ellipsoid",
        {"center": (0, 5, 0), "semi": (bx - fat - 12, by - fat - 12, 1e4)},
        hu("fat"),
        bump=0.03,
    )
    for _ in range(int(rng.integers(10, 16))):  # unlabelled bowel loops, some with gas
        c = (rng.uniform(-90, 90), rng.uniform(-10, 70), rng.uniform(-100, 20))
        pnt.paint(
            "ellipsoid",
            {"center": c, "semi": rng.uniform(12, 24, 3), "angle": rng.uniform(0, 180)},
            hu("bowel") if rng.random() > 0.25 else hu("gas"),
            texture=10,
        )
    for sx in (-1, 1):  # paraspinal muscles
        pnt.paint(
            "ellipsoid",
            {"center": (sx * 32, -by + fat + 30, 0), "semi": (24, 22, 1e4)},
            hu("muscle"),
        )
    pnt.paint(
        "ellipsoid",
        {"center": (0, -by + fat + 50, 0), "semi": (19, 17, 1e4)},
        hu("bone"),
        texture=40,
    )
    pnt.paint(
        "ellipsoid", {"center": (0, -by + fat + 27, 0), "semi": (7, 7, 1e4)}, hu("canal"), bump=0.0
    )

    sy = -by + fat + 50  # vertebral body centre (y); organs are placed relative to it
    liver = hu("liver")
    pnt.paint(
        "ellipsoid",
        {
            "center": (60 + j(6), sy + 62 + j(6), 40 + j(8)),
            "semi": np.array((70, 82, 68)) * g,
            "angle": j(8),
        },
        liver,
        6,
    )
    pnt.paint(
        "ellipsoid",
        {
            "center": (-5 + j(6), sy + 95 + j(5), 55 + j(6)),
            "semi": np.array((52, 36, 26)) * g,
            "angle": 15 + j(8),
        },
        liver,
        6,
    )
    pnt.paint(
        "ellipsoid",
        {
            "center": (-82 + j(5), sy + 5 + j(5), 40 + j(8)),
            "semi": np.array((26, 45, 52)) * g,
            "angle": -35 + j(8),
        },
        hu("spleen"),
        1,
    )
    for code, sx, z0 in ((2, 1, -38), (3, -1, -28)):
        c, ang = (sx * (68 + j(4)), sy + 2 + j(4), z0 + j(6)), sx * (25 + j(6))
        sem = np.array((24, 30, 50)) * g
        pnt.paint("ellipsoid", {"center": c, "semi": sem, "angle": ang}, hu("cortex"), code)
        pnt.paint(
            "ellipsoid",
            {"center": c, "semi": sem * 0.6, "angle": ang},
            hu("medulla"),
            code,
            bump=0.1,
        )
    st = (-48 + j(6), sy + 85 + j(6), 30 + j(8))
    stomach = {"center": st, "semi": np.array((40, 36, 52)) * g, "angle": 30 + j(10)}
    pnt.paint("ellipsoid", stomach, hu("stomach"), 7)
    lumen = {"center": st, "semi": np.array((31, 27, 43)) * g, "angle": 30}
    pnt.paint("ellipsoid", lumen, hu("lumen"), 7)
    pnt.paint(
        "ellipsoid",
        {**lumen, "center": (st[0], st[1] + 18, st[2] + 12), "semi": np.array((26, 14, 30)) * g},
        hu("gas"),
        7,
        bump=0.0,
    )
    pnt.paint(
        "ellipsoid",
        {
            "center": (48 + j(5), sy + 110 + j(5), -8 + j(6)),
            "semi": np.array((15, 17, 32)) * g,
            "angle": 30 + j(10),
        },
        hu("gallbladder"),
        4,
    )
    head = np.array((25 + j(4), sy + 75 + j(4), -22 + j(5)))
    pan = [head, head + (-20, 12, 14), head + (-55, -2, 24), head + (-92 + j(5), -28, 34)]
    pnt.paint("tube", {"points": pan, "radius": 11 * g}, hu("pancreas"), 11, texture=8, bump=0.12)
    pnt.paint(
        "ellipsoid",
        {"center": head, "semi": np.array((17, 15, 20)) * g},
        hu("pancreas"),
        11,
        texture=8,
    )
    for code, sx in ((12, 1), (13, -1)):
        pnt.paint(
            "ellipsoid",
            {
                "center": (sx * (36 + j(3)), sy + 14 + j(3), 22 + j(5)),
                "semi": (6, 13, 18),
                "angle": sx * 40,
            },
            hu("adrenal"),
            code,
            bump=0.15,
        )
    ao = np.array((-14 + j(3), sy + 30 + j(3)))
    pnt.paint(
        "tube",
        {"points": [(-6, sy + 20, 140), (-16, sy + 40, 62), (-42, sy + 85, 52)], "radius": 8},
        hu("esophagus"),
        5,
        bump=0.1,
    )
    pnt.paint(
        "tube",
        {"points": [(*ao, 140), (*(ao + (2, -4)), 0), (*ao, -140)], "radius": 11 * g},
        hu("aorta"),
        8,
        bump=0.03,
    )
    ivc = np.array((24 + j(3), sy + 34 + j(3)))
    pnt.paint(
        "tube",
        {"points": [(*ivc, 140), (*(ivc + (-2, 4)), 0), (*ivc, -140)], "radius": 11 * g},
        hu("ivc"),
        9,
        bump=0.05,
    )
    conf = head + (-18, 8, 18)
    portal = hu("portal")
    pnt.paint(
        "tube",
        {"points": [conf, conf + (22, 12, 22), conf + (40, 20, 40)], "radius": 7 * g},
        portal,
        10,
        bump=0.05,
    )
    pnt.paint(
        "tube",
        {"points": [conf, head + (-55, -14, 26), head + (-95, -40, 40)], "radius": 5 * g},
        portal,
        10,
        bump=0.05,
    )

    blur = [0.6 * min(1.0, 2.5 / s) for s in sp[:2]] + [0.4]
    img = ndimage.gaussian_filter(pnt.hu, blur)
    img += rng.normal(0, rng.uniform(10, 18), img.shape).astype(np.float32)
    return img.astype(np.float32), pnt.lab
