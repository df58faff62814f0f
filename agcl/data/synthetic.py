"""Synthetic abdominal CT phantoms with all 13 BTCV organs, in the BTCV or the nnU-Net layout.

The anatomy is defined in physical millimetres (RAS+: x to the patient's right, y anterior,
z superior; origin at the centre of the field of view), so any shape and spacing work. Each
subject draws its own body size, organ positions, sizes, rotations and a smooth random
deformation; intensities are per-organ HU means for a contrast-enhanced (portal-venous) or a
non-contrast scan, with per-subject jitter, a smooth bias field, partial-volume blur and
Gaussian noise. Organs are painted in an anatomical order so that neighbours (liver/right
kidney/IVC/gallbladder, stomach/spleen, pancreas/splenic vein, ...) touch. docs/data.md
describes what is modelled.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from scipy import ndimage

from agcl._validation import check_int, check_int_sequence, check_real_sequence
from agcl.data.btcv import BTCV_ORGANS, Case

__all__ = [
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "MODALITIES",
    "ensure_btcv_like",
    "make_phantom",
    "phantom_affine",
    "write_btcv_like",
    "write_nnunet_like",
]

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
_DEF_AMP = 5.0  # mm, per displacement component


def _grid(shape: Any, spacing: Any) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """``shape`` (three ints >= 1; 2.5 is refused, not truncated) and ``spacing`` (three
    numbers > 0, mm) checked."""
    shp = tuple(check_int_sequence("shape", shape, low=1))
    if len(shp) != 3:
        raise ValueError(f"shape must be three positive integers; got {shp}")
    return shp, check_real_sequence("spacing (mm)", spacing, length=3, positive=True)


def phantom_affine(shape: Sequence[int], spacing: Sequence[float]) -> np.ndarray:
    """The RAS affine of a phantom grid centred on the world origin.

    Examples:
        >>> phantom_affine((3, 3, 3), (2.0, 2.0, 5.0))[:3, 3].tolist()
        [-2.0, -2.0, -5.0]
    """
    aff = np.diag([*(float(s) for s in spacing), 1.0])
    aff[:3, 3] = [-(n - 1) / 2 * s for n, s in zip(shape, spacing)]
    return aff


class _Painter:
    """Evaluates shapes on the warped grid inside their bounding boxes and paints them."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        rng: np.random.Generator,
    ):
        self.rng = rng
        self.axes = [
            ((np.arange(n) - (n - 1) / 2) * s).astype(np.float32) for n, s in zip(shape, spacing)
        ]
        x, y, z = np.meshgrid(*self.axes, indexing="ij", sparse=True)
        self.warped = [c + self._smooth(self.axes, _DEF_AMP, 100.0, 260.0) for c in (x, y, z)]
        self.field = self._smooth(self.axes, 1.0, 40.0, 120.0)  # intensity bias in [-1, 1]-ish
        self.hu = np.full(shape, _HU["air"][0], np.float32)
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
        for ax, a, b in zip(self.axes, lo - 2 * _DEF_AMP, hi + 2 * _DEF_AMP):
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
    shp, sp = _grid(shape, spacing)
    rng = np.random.default_rng(seed)
    col = 1 if modality == "contrast" else 0
    enh = rng.uniform(0.8, 1.2)  # bolus timing: how strongly this subject enhances

    def hu(tissue: str) -> float:
        base, con = _HU[tissue]
        val = base + (con - base) * enh if col else base
        return float(val + rng.normal(0, 7))

    pnt = _Painter(shp, sp, rng)
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


def _write_case(
    image_path: Path,
    label_path: Path | None,
    seed: int,
    modality: str,
    index: int,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    codes: np.ndarray | None = None,
) -> None:
    """Write phantom ``index`` of (``seed``, ``modality``) as int16 HU and uint8 labels, LPS-stored.

    ``codes`` is a lookup table from BTCV code to the code written (identity when ``None``);
    no label file is written when ``label_path`` is ``None``.
    """
    case_seed = int(
        np.random.SeedSequence([seed, MODALITIES.index(modality), index]).generate_state(1)[0]
    )
    img, lab = make_phantom(case_seed, modality, shape=shape, spacing=spacing)  # type: ignore[arg-type]
    if codes is not None:
        lab = codes[lab]
    flip = np.array(
        [[-1, 0, 0, shape[0] - 1], [0, -1, 0, shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1]], float
    )
    affine = phantom_affine(shape, spacing) @ flip  # LPS storage of the RAS grid
    img_i16 = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    for arr, path in ((img_i16, image_path), (lab.astype(np.uint8), label_path)):
        if path is None:
            continue
        nimg = nib.Nifti1Image(np.ascontiguousarray(arr[::-1, ::-1, :]), affine)
        nimg.header.set_xyzt_units("mm", "sec")
        nib.save(nimg, str(path))


def write_btcv_like(
    root: str | os.PathLike[str],
    n_cases: int,
    modalities: Sequence[str] = MODALITIES,
    seed: int = 0,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
) -> dict[str, list[Case]]:
    """Write synthetic cases in the BTCV layout, one folder per modality.

    For each modality ``m`` it writes ``root/m/RawData/Training/img/img0001.nii.gz`` ... and
    ``root/m/RawData/Training/label/label0001.nii.gz`` ..., plus a MONAI-style datalist
    ``root/m/dataset.json`` (every case under ``"training"``). Images are ``int16`` HU, labels
    ``uint8``, stored in LPS order (as many scanners write) so that loading goes through the
    same reorientation as real data. Each (seed, modality, case) is a different subject.

    Args:
        root: the output folder (created).
        n_cases: cases per modality.
        modalities: modality names, each ``"contrast"`` or ``"non-contrast"``.
        seed: the base seed; the output is a deterministic function of the arguments.
        shape, spacing: the grid, see :func:`make_phantom`.

    Returns:
        ``{modality: [Case, ...]}``; ``discover_btcv(root / modality, modality=modality)``
        finds the same cases, and :func:`agcl.data.build_cohort` takes the mapping as it is.

    Raises:
        ValueError: ``n_cases < 1``, no or repeated modalities, or an unknown modality.

    Examples:
        >>> import tempfile
        >>> out = write_btcv_like(tempfile.mkdtemp(), 1, shape=(24, 24, 8), spacing=(14.7, 14.7, 25.0))
        >>> sorted(out), out["contrast"][0].image_path.name
        (['contrast', 'non-contrast'], 'img0001.nii.gz')
    """
    if isinstance(n_cases, bool) or not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases must be a positive integer; got {n_cases!r}")
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    if not mods or len(set(mods)) != len(mods):
        raise ValueError(f"modalities must be distinct names from {MODALITIES}; got {mods}")
    for m in mods:
        if m not in MODALITIES:
            raise ValueError(
                f"modalities must be drawn from {', '.join(map(repr, MODALITIES))}; got {m!r}"
            )
    shp, sp = _grid(shape, spacing)
    seed = check_int("seed", seed, low=0)
    out: dict[str, list[Case]] = {}
    for mod in mods:
        base = Path(root) / mod
        train = base / "RawData" / "Training"
        (train / "img").mkdir(parents=True, exist_ok=True)
        (train / "label").mkdir(parents=True, exist_ok=True)
        cases, entries = [], []
        for i in range(1, int(n_cases) + 1):
            ip, lp = train / "img" / f"img{i:04d}.nii.gz", train / "label" / f"label{i:04d}.nii.gz"
            _write_case(ip, lp, int(seed), mod, i, shp, sp)
            cases.append(Case(f"{i:04d}", ip, lp, mod))
            entries.append({"image": str(ip.relative_to(base)), "label": str(lp.relative_to(base))})
        (base / "dataset.json").write_text(
            json.dumps({"modality": mod, "training": entries}, indent=1)
        )
        out[mod] = cases
    return out


def write_nnunet_like(
    root: str | os.PathLike[str],
    n_cases: int,
    *,
    n_test: int = 0,
    modality: str = "contrast",
    seed: int = 0,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    dataset_id: int = 1,
    name: str = "Phantoms",
    codes: Mapping[int, int] | None = None,
    names: Mapping[int, str] | None = None,
    version: Literal[1, 2] = 2,
) -> Path:
    """Write synthetic cases in nnU-Net's raw layout, with label names in ``dataset.json``.

    Writes ``root/Dataset001_Phantoms/`` (``Task001_Phantoms`` for ``version=1``) holding
    ``imagesTr/phantoms_001_0000.nii.gz`` ..., ``labelsTr/phantoms_001.nii.gz`` ...,
    ``imagesTs/`` when ``n_test > 0`` (no labels) and ``dataset.json``: v2 (``channel_names``,
    ``labels`` as ``{name: code}``, ``numTraining``, ``file_ending``) or v1 (``modality``,
    ``labels`` as ``{"code": name}``, ``training``/``test`` lists). Training case ``i`` is the
    same subject as case ``i`` of ``write_btcv_like(root, n_cases, (modality,), seed)`` (same
    arrays, same LPS storage); test cases are further subjects (``n_cases + 1``, ...).

    Args:
        root: the folder the dataset folder is written in (``nnUNet_raw``'s role).
        n_cases: training cases; ``n_test``: test cases (``imagesTs/``).
        modality: ``"contrast"`` or ``"non-contrast"``; ``seed``, ``shape``, ``spacing``: see
            :func:`write_btcv_like`.
        dataset_id, name: the folder name ``Dataset{dataset_id:03d}_{name}``; case ids are
            ``{name.lower()}_{i:03d}``.
        codes: ``{btcv_code: code written}`` to number the organs differently from BTCV;
            organs left out are written as background. Default: the BTCV codes.
        names: ``{btcv_code: name in dataset.json}`` for some written organs (the others get
            their :data:`agcl.data.BTCV_ORGANS` name), e.g. nnU-Net-style ``"kidney_right"`` or
            a name that matches no organ.
        version: the ``dataset.json`` flavour, ``2`` or ``1``.

    Returns:
        The dataset folder; :func:`agcl.data.discover_nnunet` reads it.

    Raises:
        ValueError: ``n_cases < 1``, ``n_test < 0``, an unknown modality or version, a
            ``dataset_id`` outside 0-999, a ``name`` that is no plain folder name, ``codes``
            that are not distinct codes 1-255 for BTCV organs, or ``names`` for organs not
            written, empty or repeated.

    Examples:
        >>> import tempfile
        >>> root = write_nnunet_like(tempfile.mkdtemp(), 1, shape=(24, 24, 8), codes={6: 1, 1: 2},
        ...                          names={6: "Liver", 1: "spleen"})
        >>> root.name, sorted(p.name for p in root.iterdir())
        ('Dataset001_Phantoms', ['dataset.json', 'imagesTr', 'labelsTr'])
        >>> json.loads((root / "dataset.json").read_text())["labels"]
        {'background': 0, 'Liver': 1, 'spleen': 2}
    """
    for arg, value, low in (("n_cases", n_cases, 1), ("n_test", n_test, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}; got {value!r}")
    if modality not in MODALITIES:
        raise ValueError(
            f"modality must be one of {', '.join(map(repr, MODALITIES))}; got {modality!r}"
        )
    if version not in (1, 2):
        raise ValueError(
            f"version must be 1 or 2 (nnU-Net's dataset.json flavour); got {version!r}"
        )
    if (
        isinstance(dataset_id, bool)
        or not isinstance(dataset_id, (int, np.integer))
        or not 0 <= dataset_id <= 999
    ):
        raise ValueError(f"dataset_id must be an integer 0-999; got {dataset_id!r}")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ValueError(f"name must be a plain folder name (letters, digits, _ . -); got {name!r}")
    written = {c: c for c in BTCV_ORGANS} if codes is None else dict(codes)
    values = list(written.values())
    if (
        not set(written) <= set(BTCV_ORGANS)
        or len(set(values)) != len(values)
        or not all(isinstance(v, (int, np.integer)) and 1 <= v <= 255 for v in values)
    ):
        raise ValueError(f"codes must map BTCV organ codes to distinct codes 1-255; got {codes!r}")
    given = {} if names is None else dict(names)
    label_names = {c: given.get(c, BTCV_ORGANS[c]) for c in written}
    listed = list(label_names.values())
    if (
        set(given) - set(written)
        or len(set(listed)) != len(listed)
        or not all(isinstance(n, str) and n.strip() for n in listed)
    ):
        raise ValueError(
            f"names must give distinct non-empty names to written organs {sorted(written)}; got {names!r}"
        )
    lut = np.zeros(max(BTCV_ORGANS) + 1, np.uint8)
    for btcv, code in written.items():
        lut[btcv] = code
    shp, sp = _grid(shape, spacing)
    seed = check_int("seed", seed, low=0)
    base = Path(root) / f"{'Dataset' if version == 2 else 'Task'}{int(dataset_id):03d}_{name}"
    folders = ["imagesTr", "labelsTr"] + (["imagesTs"] if n_test else [])
    for sub in folders:
        (base / sub).mkdir(parents=True, exist_ok=True)
    train, test = [], []
    for i in range(1, int(n_cases) + int(n_test) + 1):
        case = f"{name.lower()}_{i:03d}"
        if i <= n_cases:
            image, label = (
                base / "imagesTr" / f"{case}_0000.nii.gz",
                base / "labelsTr" / f"{case}.nii.gz",
            )
            train.append(case)
        else:
            image, label = base / "imagesTs" / f"{case}_0000.nii.gz", None
            test.append(case)
        _write_case(image, label, int(seed), modality, i, shp, sp, lut)
    ordered = sorted(written, key=lambda c: written[c])
    if version == 2:
        content: dict[str, object] = {
            "name": name,
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{label_names[c]: int(written[c]) for c in ordered}},
            "numTraining": int(n_cases),
            "file_ending": ".nii.gz",
        }
    else:
        content = {
            "name": name,
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {
                "0": "background",
                **{str(int(written[c])): label_names[c] for c in ordered},
            },
            "numTraining": int(n_cases),
            "numTest": int(n_test),
            "training": [
                {"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                for c in train
            ],
            "test": [f"./imagesTs/{c}.nii.gz" for c in test],
        }
    (base / "dataset.json").write_text(json.dumps(content, indent=1))
    return base


def ensure_btcv_like(
    root: str | os.PathLike[str],
    n_cases: int,
    modalities: Sequence[str] = MODALITIES,
    seed: int = 0,
    *,
    shape: Sequence[int] = DEFAULT_SHAPE,
    spacing: Sequence[float] = DEFAULT_SPACING,
    quiet: bool = False,
) -> dict[str, Path]:
    """The synthetic phantoms in ``root``: reused when ``root`` holds the ones these arguments
    write (agcl's marker says so), written otherwise (:func:`write_btcv_like`, into a temporary
    folder that is removed on any error, then renamed into place).

    Returns:
        ``{modality: root / modality}`` (BTCV-layout folders).

    Raises:
        agcl._owned.FolderNotOwnedError: ``root`` holds files agcl did not write: it is never
            replaced (nor anything in it deleted).
    """
    import json

    from agcl._owned import MARKER, check_replaceable, is_owned, write_owned_folder

    root = Path(root)
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    want = {
        "kind": "synthetic-ct",
        "n_cases": int(n_cases),
        "modalities": mods,
        "seed": int(seed),
        "shape": [int(n) for n in shape],
        "spacing": [float(v) for v in spacing],
    }
    if is_owned(root, "synthetic-ct") and json.loads((root / MARKER).read_text()) == want:
        if not quiet:
            print(f"synthetic data: reusing {root}")
        return {m: root / m for m in mods}
    check_replaceable(root, "synthetic-ct", what="the synthetic phantoms")
    if not quiet:
        print(
            f"synthetic data: writing {n_cases} cases x {len(mods)} modalities to {root} ...",
            flush=True,
        )
    write_owned_folder(
        root,
        "synthetic-ct",
        lambda tmp: write_btcv_like(tmp, n_cases, mods, seed, shape=shape, spacing=spacing),
        **{k: v for k, v in want.items() if k != "kind"},
    )
    return {m: root / m for m in mods}
