"""The BTCV abdomen dataset: organ codes, case discovery, datalists and checked case loading.

BTCV (Landman et al., Multi-Atlas Labeling Beyond the Cranial Vault, MICCAI 2015 challenge;
the AGCL paper's main benchmark) is distributed as
``RawData/Training/img/img0001.nii.gz`` with ``RawData/Training/label/label0001.nii.gz``;
MONAI-style datalist JSON files list the same pairs under ``"training"``/``"validation"``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from agcl.data.nifti import Volume, load_volume

__all__ = [
    "BTCV_ORGANS",
    "BTCV_ORGAN_CODES",
    "BTCV_ORGAN_NAMES",
    "Case",
    "check_label_codes",
    "discover_btcv",
    "load_case",
    "load_datalist",
]

#: BTCV organ code -> name (0 is background).
BTCV_ORGANS: Mapping[int, str] = {
    1: "spleen",
    2: "right kidney",
    3: "left kidney",
    4: "gallbladder",
    5: "esophagus",
    6: "liver",
    7: "stomach",
    8: "aorta",
    9: "inferior vena cava",
    10: "portal and splenic veins",
    11: "pancreas",
    12: "right adrenal gland",
    13: "left adrenal gland",
}
#: Organ names in code order (``BTCV_ORGAN_NAMES[c - 1]`` is organ ``c``).
BTCV_ORGAN_NAMES: tuple[str, ...] = tuple(BTCV_ORGANS[c] for c in sorted(BTCV_ORGANS))
#: Organ name -> code.
BTCV_ORGAN_CODES: Mapping[str, int] = {name: code for code, name in BTCV_ORGANS.items()}

_NII = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$")


@dataclass(frozen=True)
class Case:
    """One scan with its (optional) label map.

    Attributes:
        case_id: an identifier unique within its dataset (``"0001"`` for ``img0001.nii.gz``).
        image_path: the image file.
        label_path: the label file, or ``None`` when the case is unlabelled.
        modality: the dataset's modality name, e.g. ``"contrast"`` or ``"non-contrast"``.
        code_map: ``{file_code: btcv_code}`` when the label file uses other codes than
            :data:`BTCV_ORGANS` (an nnU-Net dataset's, see :func:`agcl.data.discover_nnunet`);
            :func:`load_case` translates the label map with it, so every consumer sees BTCV
            codes. It must name every non-background code the file may hold (``0`` for a
            structure that is no BTCV organ); other codes are stray codes of
            :func:`check_label_codes`. ``None`` (default): the file holds BTCV codes already.

    Examples:
        >>> Case("0001", Path("a.nii.gz"), Path("b.nii.gz"), code_map={"4": 1}).code_map
        {4: 1}
    """

    case_id: str
    image_path: Path
    label_path: Path | None = None
    modality: str = "contrast"
    code_map: Mapping[int, int] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if self.code_map is None:
            return
        if not isinstance(self.code_map, Mapping):
            raise TypeError(
                f"code_map must be a mapping {{file_code: btcv_code}} or None; "
                f"got {type(self.code_map).__name__}"
            )
        clean: dict[int, int] = {}
        for key, value in self.code_map.items():
            k, v = _as_code(key), _as_code(value)
            if k is None or v is None or k == 0:
                raise ValueError(
                    f"code_map of case {self.case_id!r} must map non-negative integer label codes "
                    f"(not background 0) to BTCV codes; got entry {key!r}: {value!r}"
                )
            clean[k] = v
        object.__setattr__(self, "code_map", clean)  # a private copy: the case stays frozen


def _as_code(value: object) -> int | None:
    """``value`` as a non-negative integer label code (JSON keys are strings), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isascii() and text.isdigit() else None
    if isinstance(value, (int, np.integer)) and value >= 0:
        return int(value)
    return None


def _training_dir(root: Path) -> Path:
    for cand in (root / "RawData" / "Training", root / "Training", root):
        if (cand / "img").is_dir():
            return cand
    raise FileNotFoundError(
        f"no BTCV layout under {root}: expected {root}/RawData/Training/img/, "
        f"{root}/Training/img/ or {root}/img/ (img0001.nii.gz, ...)"
    )


def discover_btcv(
    root: str | os.PathLike[str], *, modality: str = "contrast", require_labels: bool = True
) -> list[Case]:
    """List the cases of a BTCV-layout folder, sorted by case id.

    ``root`` may be the dataset folder (holding ``RawData/``), ``RawData/`` itself or
    ``Training/`` (any folder holding ``img/``). Images are ``img<ID>.nii[.gz]``; their labels
    are ``label/label<ID>.nii[.gz]``.

    Args:
        root: the folder to search.
        modality: the modality name given to every case.
        require_labels: raise when a label file is missing; if ``False``, such cases get
            ``label_path=None``.

    Returns:
        A list of :class:`Case`.

    Raises:
        FileNotFoundError: no ``img/`` folder, no images in it, or a missing label file (the
            message names the expected path).
        ValueError: two images with one case id (``img0001.nii`` and ``img0001.nii.gz``); both
            paths are named. Hidden files (``._img0001.nii.gz``) are ignored.

    Examples:
        >>> import tempfile
        >>> from agcl.data.synthetic import write_btcv_like
        >>> root = tempfile.mkdtemp()
        >>> _ = write_btcv_like(root, 2, modalities=("contrast",), shape=(24, 24, 8))
        >>> [c.case_id for c in discover_btcv(f"{root}/contrast/RawData")]
        ['0001', '0002']
    """
    base = _training_dir(Path(root))
    # hidden files (macOS "._img0001.nii.gz" resource forks, editors' ".#" files) are not scans
    images = sorted(
        p for p in (base / "img").iterdir() if _NII.match(p.name) and not p.name.startswith(".")
    )
    if not images:
        raise FileNotFoundError(f"no img*.nii.gz files in {base / 'img'}")
    cases = []
    seen: dict[str, Path] = {}
    for img in images:
        stem = _NII.match(img.name).group("stem")  # type: ignore[union-attr]
        case_id = stem[3:] if stem.startswith("img") else stem
        if case_id in seen:
            raise ValueError(
                f"two images for case {case_id!r} in {base / 'img'}: {seen[case_id]} and {img}; "
                "remove or move one of them"
            )
        seen[case_id] = img
        ext = img.name[len(stem) :]
        label: Path | None = base / "label" / f"label{case_id}{ext}"
        if not label.is_file():  # type: ignore[union-attr]
            alt = base / "label" / f"label{case_id}{'.nii' if ext == '.nii.gz' else '.nii.gz'}"
            if alt.is_file():
                label = alt
            elif require_labels:
                raise FileNotFoundError(f"missing label file {label} for image {img}")
            else:
                label = None
        cases.append(Case(case_id, img, label, modality))
    return cases


def load_datalist(
    json_path: str | os.PathLike[str],
    split: str = "training",
    *,
    modality: str = "contrast",
    base_dir: str | os.PathLike[str] | None = None,
) -> list[Case]:
    """Read a MONAI-style datalist JSON (``{"training": [{"image": ..., "label": ...}], ...}``).

    Entries may be dictionaries (``"label"`` optional) or plain image paths. Relative paths are
    resolved against ``base_dir``, by default the JSON file's folder.

    Args:
        json_path: the datalist file.
        split: the key to read, e.g. ``"training"``, ``"validation"`` or ``"test"``.
        modality: the modality name given to every case.
        base_dir: the folder relative paths start from.

    Returns:
        A list of :class:`Case`, in file order; ``case_id`` is the image file name without
        ``.nii[.gz]``.

    Raises:
        FileNotFoundError: the JSON, an image or a listed label file does not exist.
        ValueError: the JSON is malformed, has no ``split`` key (the valid keys are listed), the
            split is not a list, or an entry's image/label is not a path string (the file and
            the entry are named).

    Examples:
        >>> import tempfile
        >>> from agcl.data.synthetic import write_btcv_like
        >>> root = tempfile.mkdtemp()
        >>> _ = write_btcv_like(root, 1, modalities=("non-contrast",), shape=(24, 24, 8))
        >>> case = load_datalist(f"{root}/non-contrast/dataset.json", modality="non-contrast")[0]
        >>> case.case_id, case.label_path.name, case.modality
        ('img0001', 'label0001.nii.gz', 'non-contrast')
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(f"no datalist JSON at {json_path}")
    try:
        content = json.loads(json_path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"could not parse datalist {json_path}: {exc}") from exc
    if not isinstance(content, dict) or split not in content:
        keys = sorted(content) if isinstance(content, dict) else []
        raise ValueError(f"split {split!r} not in datalist {json_path}; valid keys: {keys}")
    base = Path(base_dir) if base_dir is not None else json_path.parent
    entries = content[split]
    if not isinstance(entries, list):
        raise ValueError(
            f"split {split!r} of datalist {json_path} must be a list of entries "
            '({"image": ..., "label": ...} or image paths); '
            f"got {type(entries).__name__} {entries!r}"
        )
    cases = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"image": entry}
        if not isinstance(entry, dict) or "image" not in entry:
            raise ValueError(f"entry {i} of {split!r} in {json_path} has no 'image': {entry!r}")
        for key in ("image", "label"):
            value = entry.get(key)
            if not (isinstance(value, str) or (key == "label" and value is None)):
                raise ValueError(
                    f"entry {i} of {split!r} in {json_path}: {key!r} must be a path string; "
                    f"got {type(value).__name__} {value!r}"
                )
        image = _resolve(base, entry["image"])
        label = _resolve(base, entry["label"]) if entry.get("label") else None
        for what, p in (("image", image), ("label", label)):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{what} file {p} listed in {json_path} does not exist")
        m = _NII.match(image.name)
        cases.append(Case(m.group("stem") if m else image.stem, image, label, modality))
    return cases


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def check_label_codes(
    label: np.ndarray,
    *,
    organs: Mapping[int, str] | None = None,
    unknown_labels: Literal["error", "warn"] = "error",
    path: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Check that a label map holds only background (0) and declared organ codes.

    Args:
        label: integer label map.
        organs: the declared codes (default :data:`BTCV_ORGANS`).
        unknown_labels: ``"error"`` (default: a stray code usually means the wrong label
            convention, which would silently train on wrong targets) raises; ``"warn"`` warns
            and sets the stray voxels to background 0.
        path: the file, named in messages.

    Returns:
        ``label`` (a copy with stray codes zeroed under ``"warn"``).

    Raises:
        ValueError: stray codes under ``"error"``; the message names the path and the codes.

    Examples:
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     check_label_codes(np.array([0, 6, 42]), unknown_labels="warn").tolist()
        [0, 6, 0]
    """
    if unknown_labels not in ("error", "warn"):
        raise ValueError(f"unknown_labels must be one of 'error', 'warn'; got {unknown_labels!r}")
    allowed = np.array(sorted({0, *(organs if organs is not None else BTCV_ORGANS)}))
    present = np.unique(label)
    stray = np.setdiff1d(present, allowed)
    if stray.size == 0:
        return label
    where = f"label file {path}" if path is not None else "label map"
    msg = (
        f"{where} holds codes {stray.tolist()} outside the declared organ set "
        f"{allowed[1:].tolist()}"
    )
    if unknown_labels == "error":
        raise ValueError(msg + "; pass unknown_labels='warn' to map them to background")
    warnings.warn(msg + "; they are set to background 0", stacklevel=2)
    out = label.copy()
    out[np.isin(out, stray)] = 0
    return out


def load_case(
    case: Case,
    *,
    organs: Mapping[int, str] | None = None,
    unknown_labels: Literal["error", "warn"] = "error",
    atol: float = 1e-3,
) -> tuple[Volume, Volume | None]:
    """Load a case's image and label, checking that they share one grid and valid codes.

    A case with a :attr:`Case.code_map` has its label codes translated first (codes the map
    does not name are stray), then checked against ``organs``.

    Args:
        case: the case to load.
        organs: the declared organ codes (default :data:`BTCV_ORGANS`).
        unknown_labels: see :func:`check_label_codes`.
        atol: tolerance in mm on the affines' entries.

    Returns:
        ``(image, label)``; ``label`` is ``None`` for an unlabelled case.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_volume`; a label grid (shape or affine)
            that differs from the image's; stray label codes under ``unknown_labels="error"``.

    Examples:
        >>> import tempfile
        >>> from agcl.data.synthetic import write_btcv_like
        >>> cases = write_btcv_like(tempfile.mkdtemp(), 1, modalities=("contrast",),
        ...                         shape=(24, 24, 8))
        >>> image, label = load_case(cases["contrast"][0])
        >>> image.shape == label.shape, image.array.dtype, label.array.dtype
        (True, dtype('float32'), dtype('int16'))
    """
    image = load_volume(case.image_path, kind="image")
    if case.label_path is None:
        return image, None
    label = load_volume(case.label_path, kind="label")
    if label.shape != image.shape:
        raise ValueError(
            f"label grid of {case.label_path} differs from its image {case.image_path}: "
            f"label shape {label.shape} vs image shape {image.shape}"
        )
    if not np.allclose(label.affine, image.affine, atol=atol):
        raise ValueError(
            f"label grid of {case.label_path} differs from its image {case.image_path}: "
            f"affines differ by up to {np.abs(label.affine - image.affine).max():.4g} mm "
            f"(atol {atol})\nlabel affine:\n{label.affine}\nimage affine:\n{image.affine}"
        )
    if case.code_map is not None:
        label.array = _translate_codes(label.array, case.code_map, unknown_labels, case.label_path)
    label.array = check_label_codes(
        label.array, organs=organs, unknown_labels=unknown_labels, path=case.label_path
    )
    return image, label


def _translate_codes(
    array: np.ndarray,
    code_map: Mapping[int, int],
    unknown_labels: Literal["error", "warn"],
    path: Path,
) -> np.ndarray:
    """``array`` with every code ``k`` of ``code_map`` replaced by ``code_map[k]``.

    Codes that ``code_map`` does not name are stray (see :func:`check_label_codes`): an error,
    or background under ``unknown_labels="warn"``.
    """
    array = check_label_codes(
        array, organs=dict.fromkeys(code_map, ""), unknown_labels=unknown_labels, path=path
    )
    lut = np.zeros(max(code_map, default=0) + 1, dtype=np.int16)
    for file_code, btcv_code in code_map.items():
        lut[file_code] = btcv_code
    return lut[array]
