"""PASCAL VOC 2012 segmentation in its own folder layout, and the VOC colour palette.

The layout read here is the one ``torchvision.datasets.VOCSegmentation`` reads::

    VOCdevkit/VOC2012/JPEGImages/<id>.jpg
    VOCdevkit/VOC2012/SegmentationClass/<id>.png     palette PNG; 255 = void (ignored)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val}.txt

Nothing is downloaded. Reading JPEG and PNG needs Pillow (the ``agcl[voc]`` extra); this module
imports it only when an image is read or written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agcl._validation import check_int

__all__ = [
    "VOC_CLASSES",
    "VOC_VOID",
    "VOCSegmentation",
    "find_voc_root",
    "load_voc_image",
    "load_voc_mask",
    "read_voc_split",
    "save_voc_mask",
    "voc_palette",
]

VOC_VOID = 255
VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as err:  # pragma: no cover - exercised only without Pillow
        raise ImportError(
            "reading or writing VOC images needs Pillow: pip install 'agcl[voc]'"
        ) from err
    return Image


def voc_palette() -> np.ndarray:
    """The VOC colour map: label ``i`` gets the colour whose bits interleave ``i``'s bits.

    Bit ``3 j + c`` of the label (``c`` = 0 red, 1 green, 2 blue) becomes bit ``7 - j`` of
    channel ``c``; label 255 (void) is ``(224, 224, 192)``.

    Shape:
        Output ``(256, 3)`` uint8.

    Examples:
        >>> p = voc_palette()
        >>> p[0].tolist(), p[1].tolist(), p[15].tolist(), p[255].tolist()
        ([0, 0, 0], [128, 0, 0], [192, 128, 128], [224, 224, 192])
    """
    out = np.zeros((256, 3), np.uint8)
    for label in range(256):
        value = label
        for j in range(8):
            for c in range(3):
                out[label, c] |= ((value >> c) & 1) << (7 - j)
            value >>= 3
    return out


def find_voc_root(path: str | os.PathLike[str], year: str = "2012") -> Path:
    """The ``VOC<year>`` folder of an extracted devkit (``path`` may be it, VOCdevkit or above).

    Raises:
        FileNotFoundError: none of the three places exists (all are named).
    """
    base = Path(path)
    tried = [base, base / f"VOC{year}", base / "VOCdevkit" / f"VOC{year}"]
    for cand in tried:
        if (cand / "JPEGImages").is_dir() and (cand / "ImageSets").is_dir():
            return cand
    raise FileNotFoundError(
        f"no VOC{year} folder (with JPEGImages/ and ImageSets/) at or under {base}; looked "
        f"in {', '.join(str(t) for t in tried)}. Pass the extracted VOCdevkit folder"
    )


def read_voc_split(root: str | os.PathLike[str], split: str) -> list[str]:
    """The image ids of ``ImageSets/Segmentation/<split>.txt`` (one per line, blanks skipped)."""
    if not isinstance(split, str) or not split:
        raise ValueError(
            f"split must be a non-empty string such as 'train' or 'val'; got {split!r}"
        )
    path = find_voc_root(root) / "ImageSets" / "Segmentation" / f"{split}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"missing split file {path}")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise ValueError(f"split file {path} lists no image ids")
    return ids


def load_voc_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image as RGB uint8 ``(H, W, 3)``; an unreadable file raises with its path."""
    image = _pil()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing image {path}")
    try:
        with image.open(path) as im:
            return np.asarray(im.convert("RGB"), np.uint8).copy()
    except OSError as err:
        raise ValueError(f"cannot read image {path}: {err}") from err


def load_voc_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """A class mask as uint8 ``(H, W)`` class ids (255 = void).

    Palette (``P``) and greyscale (``L``) PNGs hold the ids directly; an RGB PNG is mapped back
    through :func:`voc_palette` (a colour outside the palette raises).
    """
    image = _pil()
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing mask {path}")
    try:
        with image.open(path) as im:
            mode = im.mode
            arr = np.asarray(im if mode in ("P", "L") else im.convert("RGB")).copy()
    except OSError as err:
        raise ValueError(f"cannot read mask {path}: {err}") from err
    if mode in ("P", "L"):
        return arr.astype(np.uint8)
    pal = voc_palette().astype(np.int64)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    lut = {int(k): i for i, k in reversed(list(enumerate(keys)))}
    flat = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
    uniq, inv = np.unique(flat, return_inverse=True)
    bad = [int(u) for u in uniq if int(u) not in lut]
    if bad:
        raise ValueError(
            f"mask {path} (mode {mode}) has colours outside the VOC palette, e.g. "
            f"{tuple((bad[0] >> s) & 255 for s in (16, 8, 0))}; save it as a palette PNG"
        )
    return np.asarray([lut[int(u)] for u in uniq], np.uint8)[inv].reshape(flat.shape)


def save_voc_mask(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write a label map as a palette PNG with the VOC colours (atomically: temp file + rename).

    Shape:
        labels: ``(H, W)`` integers in ``[0, 255]``.
    """
    image = _pil()
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ValueError(f"labels must be a 2-D (H, W) label map; got shape {arr.shape}")
    if arr.dtype.kind not in "iub":
        raise TypeError(f"labels must hold integer class ids; got dtype {arr.dtype}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise ValueError(
            f"labels must lie in [0, 255]; got values in [{int(arr.min())}, {int(arr.max())}]"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(voc_palette().reshape(-1).tolist())
    from agcl._atomic import atomic_path

    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")
    return path


class VOCSegmentation(Sequence):
    """The images and class masks of one VOC segmentation split, read lazily.

    Args:
        root: the extracted ``VOCdevkit`` folder (or its ``VOC2012`` folder, or the folder above).
        split: the split file's name (``"train"``, ``"val"``, ``"trainval"``).
        year: the devkit year.

    ``dataset[i]`` is ``(image, mask)``: ``image`` RGB uint8 ``(H, W, 3)``, ``mask`` uint8
    ``(H, W)`` class ids with 255 = void. Every listed id's JPEG and PNG must exist (checked at
    construction; the error names every missing path, up to five).

    Raises:
        FileNotFoundError: the devkit, the split file or listed files are missing.
    """

    def __init__(
        self, root: str | os.PathLike[str], split: str = "train", *, year: str = "2012"
    ) -> None:
        self.root = find_voc_root(root, year)
        self.split = split
        self.ids = read_voc_split(self.root, split)
        self.image_paths = [self.root / "JPEGImages" / f"{i}.jpg" for i in self.ids]
        self.mask_paths = [self.root / "SegmentationClass" / f"{i}.png" for i in self.ids]
        missing = [
            str(p)
            for pair in zip(self.image_paths, self.mask_paths)
            for p in pair
            if not p.is_file()
        ]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise FileNotFoundError(
                f"split {split!r} of {self.root} lists files that are missing: "
                f"{', '.join(missing[:5])}{more}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[override]
        index = check_int("index", index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image = load_voc_image(self.image_paths[index])
        mask = load_voc_mask(self.mask_paths[index])
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"mask {self.mask_paths[index]} has shape {mask.shape}, its image "
                f"{self.image_paths[index]} {image.shape[:2]}"
            )
        return image, mask

    def __repr__(self) -> str:
        return f"VOCSegmentation(root={str(self.root)!r}, split={self.split!r}, images={len(self)})"
