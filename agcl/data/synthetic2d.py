"""Synthetic 2-D scenes for the natural-image pipeline: coloured, textured objects on clutter.

Each scene has one to three objects of four classes -- a red smooth disc, a green striped box,
a blue checkered triangle and a yellow speckled ring -- on a cluttered background (a smooth
random colour field, dull distractor rectangles and bars, pixel noise). Colours are jittered
per object, so class is carried by colour, texture and shape together. As in PASCAL VOC, a
void band (label 255) runs along every object's outline.

Scenes are deterministic: scene ``i`` of seed ``s`` draws from ``numpy.random.default_rng([s, i])``.
:func:`write_voc_like` writes them in the VOC layout so that they are read back through
:class:`agcl.data.voc.VOCSegmentation` (writing needs Pillow, the ``agcl[voc]`` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from agcl._validation import check_int, check_int_sequence, is_int

__all__ = ["SYNTHETIC2D_CLASSES", "ensure_voc_like", "make_scene", "make_scenes", "write_voc_like"]

SYNTHETIC2D_CLASSES: tuple[str, ...] = ("background", "disc", "box", "triangle", "ring")
_BASE = np.array([[200, 40, 40], [40, 170, 60], [50, 70, 210], [220, 200, 40]], np.float32)


def _shape_mask(
    kind: int, size: tuple[int, int], cy: float, cx: float, r: float, angle: float
) -> np.ndarray:
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    dy, dx = yy - cy, xx - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if kind == 1:  # disc
        return dx**2 + dy**2 <= r**2
    if kind == 2:  # box (rotated square, a little elongated)
        return (np.abs(u) <= r * 0.95) & (np.abs(v) <= r * 0.7)
    if kind == 3:  # triangle: three half-planes
        out = np.ones(size, bool)
        for k in range(3):
            a = angle + 2 * np.pi * k / 3
            out &= (np.cos(a) * dx + np.sin(a) * dy) <= r * 0.55
        return out
    rad = np.sqrt(dx**2 + dy**2)  # ring
    return (rad <= r) & (rad >= r * 0.5)


def _texture(
    kind: int, size: tuple[int, int], rng: np.random.Generator, angle: float
) -> np.ndarray:
    yy, xx = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float32)
    if kind == 1:  # smooth shading
        return 1.0 + 0.15 * np.sin((xx + yy) / 9.0 + rng.uniform(0, 6.3))
    if kind == 2:  # stripes
        u = np.cos(angle) * yy - np.sin(angle) * xx
        return np.where(np.sin(u * 2 * np.pi / 5.0) > 0, 1.15, 0.6)
    if kind == 3:  # checkerboard
        return np.where(((xx // 3) + (yy // 3)) % 2 == 0, 1.15, 0.65)
    return 1.0 + rng.uniform(-0.35, 0.35, size)  # speckle


def make_scene(
    seed: int,
    index: int = 0,
    *,
    size: int | Sequence[int] = 96,
    max_objects: int = 3,
    void_width: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic scene and its class mask.

    Args:
        seed: the dataset seed.
        index: the scene's index (scene ``(seed, index)`` is always the same).
        size: ``H`` or ``(H, W)`` in pixels.
        max_objects: at most this many objects (at least one).
        void_width: width in pixels of the void band on each side of every outline (0: none).

    Shape:
        Output ``image`` uint8 ``(H, W, 3)``; ``mask`` uint8 ``(H, W)`` with 0 background,
        ``1..4`` the classes of :data:`SYNTHETIC2D_CLASSES` and 255 void.

    Examples:
        >>> im, m = make_scene(0, 3, size=48)
        >>> im.shape, m.shape, im.dtype.name, 255 in m, set(m.ravel()) <= {0, 1, 2, 3, 4, 255}
        ((48, 48, 3), (48, 48), 'uint8', True, True)
        >>> bool((make_scene(0, 3, size=48)[0] == im).all())
        True
    """
    sizes = check_int_sequence("size", [size, size] if is_int(size) else size, low=16)
    if len(sizes) != 2:
        raise ValueError(f"size must be an int or a pair (H, W); got {size!r}")
    h, w = sizes
    max_objects = check_int("max_objects", max_objects, low=1)
    void_width = check_int("void_width", void_width, low=0)
    rng = np.random.default_rng([check_int("seed", seed, low=0), check_int("index", index, low=0)])
    shape = (h, w)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # background: a smooth random colour field in muted tones
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        field = (
            rng.uniform(70, 150) + rng.uniform(-30, 30) * (xx / w) + rng.uniform(-30, 30) * (yy / h)
        )
        field += (
            rng.uniform(5, 20)
            * np.sin(xx / rng.uniform(4, 12) + rng.uniform(0, 6.3))
            * np.cos(yy / rng.uniform(4, 12) + rng.uniform(0, 6.3))
        )
        img[..., c] = field
    # clutter: dull rectangles and bars
    for _ in range(int(rng.integers(4, 9))):
        y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
        bh, bw = (
            (int(rng.integers(2, 6)), int(rng.integers(6, w // 3)))
            if rng.random() < 0.5
            else (int(rng.integers(4, h // 4)), int(rng.integers(4, w // 4)))
        )
        grey = rng.uniform(50, 170)
        img[y0 : y0 + bh, x0 : x0 + bw] = grey + rng.uniform(-25, 25, 3)
    label = np.zeros(shape, np.uint8)
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(1, 5))
        r = rng.uniform(0.12, 0.24) * min(h, w)
        cy, cx = rng.uniform(r * 0.6, h - r * 0.6), rng.uniform(r * 0.6, w - r * 0.6)
        angle = float(rng.uniform(0, np.pi))
        m = _shape_mask(kind, shape, cy, cx, r, angle)
        colour = np.clip(_BASE[kind - 1] + rng.uniform(-25, 25, 3), 0, 255)
        tex = _texture(kind, shape, rng, angle)
        img[m] = colour * tex[m, None]
        label[m] = kind
    if void_width > 0:
        void = np.zeros(shape, bool)
        for k in range(1, 5):
            m = label == k
            if m.any():
                void |= ndimage.binary_dilation(m, iterations=void_width) & ~ndimage.binary_erosion(
                    m, iterations=void_width, border_value=1
                )
        label[void] = 255
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def make_scenes(
    n: int, seed: int = 0, *, start: int = 0, **kwargs: object
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Scenes ``start .. start + n - 1`` of ``seed`` (see :func:`make_scene` for the options)."""
    n = check_int("n", n, low=1)
    return [make_scene(seed, start + i, **kwargs) for i in range(n)]  # type: ignore[arg-type]


def write_voc_like(
    root: str | os.PathLike[str],
    n_train: int = 40,
    n_val: int = 16,
    *,
    seed: int = 0,
    size: int | Sequence[int] = 96,
    **kwargs: object,
) -> Path:
    """Write scenes in the VOC layout under ``root/VOCdevkit/VOC2012``; returns ``root/VOCdevkit``.

    The train split holds scenes ``0 .. n_train - 1``, val the next ``n_val``; images are JPEG
    (quality 95), masks palette PNGs. The devkit is built in a temporary folder (removed on any
    error) and renamed into place, so an interrupted write leaves no half-written devkit; an
    earlier ``root/VOCdevkit`` is replaced only when agcl wrote it (its marker file), never a
    real one.

    Raises:
        agcl._owned.FolderNotOwnedError: ``root/VOCdevkit`` holds files agcl did not write.
    """
    from agcl._owned import write_owned_folder
    from agcl.data.voc import _pil, save_voc_mask

    image = _pil()
    n_train = check_int("n_train", n_train, low=1)
    n_val = check_int("n_val", n_val, low=1)
    root = Path(root)

    def write(tmp: Path) -> None:
        voc = tmp / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        splits = {"train": range(n_train), "val": range(n_train, n_train + n_val)}
        for split, indices in splits.items():
            ids = []
            for i in indices:
                name = f"synth_{i:05d}"
                img, mask = make_scene(seed, i, size=size, **kwargs)  # type: ignore[arg-type]
                image.fromarray(img).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
                save_voc_mask(voc / "SegmentationClass" / f"{name}.png", mask)
                ids.append(name)
            (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")

    return write_owned_folder(
        root / "VOCdevkit",
        "synthetic-voc",
        write,
        n_train=n_train,
        n_val=n_val,
        seed=seed,
        size=list(size) if not isinstance(size, int) else size,
    )


def ensure_voc_like(
    root: str | os.PathLike[str],
    n_train: int = 40,
    n_val: int = 16,
    *,
    seed: int = 0,
    size: int | Sequence[int] = 96,
    quiet: bool = False,
) -> Path:
    """The synthetic devkit under ``root``: reused when ``root/VOCdevkit`` is the one these
    arguments write (agcl's marker says so), written otherwise (:func:`write_voc_like`).

    Raises:
        agcl._owned.FolderNotOwnedError: ``root/VOCdevkit`` holds files agcl did not write (a
            real VOC devkit, say): it is never replaced.
    """
    import json

    from agcl._owned import MARKER, check_replaceable, is_owned

    devkit = Path(root) / "VOCdevkit"
    want = {
        "kind": "synthetic-voc",
        "n_train": n_train,
        "n_val": n_val,
        "seed": seed,
        "size": list(size) if not isinstance(size, int) else size,
    }
    if is_owned(devkit, "synthetic-voc") and json.loads((devkit / MARKER).read_text()) == want:
        return devkit
    check_replaceable(devkit, "synthetic-voc", what="the synthetic 2-D scenes")
    if not quiet:
        print(f"synthetic scenes: writing {n_train} + {n_val} to {devkit} ...", flush=True)
    return write_voc_like(root, n_train, n_val, seed=seed, size=size)
