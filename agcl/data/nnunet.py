"""nnU-Net's raw dataset layout as input: recognition, case discovery, organ names to BTCV codes.

An nnU-Net raw dataset (Isensee et al., nnU-Net, Nature Methods 2021; ``documentation/
dataset_format.md`` of MIC-DKFZ/nnUNet) is a folder ``DatasetXXX_Name/`` (``TaskXXX_Name/`` in
nnU-Net v1) holding ``dataset.json``, ``imagesTr/<case>_0000.nii.gz`` (one file per input
channel, ``_0000`` the first), ``labelsTr/<case>.nii.gz`` and optionally ``imagesTs/`` (test
images, no labels). ``dataset.json`` names the labels: ``{"background": 0, "liver": 1, ...}`` in
v2, ``{"0": "background", "1": "liver", ...}`` in v1, and the channels (``channel_names`` in v2,
``modality`` in v1). agcl reads single-channel CT: channel ``_0000`` is the scan.

A dataset's label codes are its own, so its organs are matched to the BTCV codes by name
(:func:`btcv_code_of`, :func:`nnunet_label_map`) and every discovered :class:`Case` carries the
translation in :attr:`Case.code_map`: :func:`load_case` (and everything built on it) returns
BTCV codes, whatever the dataset's numbering.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from agcl.data.btcv import BTCV_ORGANS, Case, _as_code

__all__ = ["btcv_code_of", "discover_nnunet", "is_nnunet_dataset", "nnunet_label_map"]

_NII_FILE = re.compile(r"\.nii(\.gz)?$")
_FILE_ENDINGS = (".nii.gz", ".nii")

# word sets (after normalisation) -> BTCV code, for organs without a side
_UNSIDED: dict[frozenset[str], int] = {
    frozenset(words.split()): code
    for code, names in (
        (1, ("spleen",)),
        (4, ("gallbladder", "gall bladder")),
        (5, ("esophagus", "oesophagus")),
        (6, ("liver",)),
        (7, ("stomach",)),
        (8, ("aorta", "abdominal aorta", "arota")),  # "arota": AMOS 2022's spelling
        (9, ("inferior vena cava", "ivc", "postcava")),
        (
            10,
            ("portal splenic vein",),
        ),  # "portal vein and splenic vein", "portal and splenic veins"
        (11, ("pancreas",)),
    )
    for words in names
}
# word sets -> (right code, left code), for paired organs
_SIDED: dict[frozenset[str], tuple[int, int]] = {
    frozenset(words.split()): codes
    for codes, names in (
        ((2, 3), ("kidney",)),
        ((12, 13), ("adrenal gland", "adrenal", "suprarenal gland", "suprarenal")),
    )
    for words in names
}
_SIDES = {"right": "right", "r": "right", "rt": "right", "left": "left", "l": "left", "lt": "left"}
_FILLER = {"and", "the", "of"}
_PLURALS = {"veins": "vein", "glands": "gland"}


def btcv_code_of(name: str) -> int | None:
    """The BTCV organ code of a label name, or ``None`` when it names no BTCV organ.

    Matching ignores case, punctuation (``_``, ``-``, ``/``, brackets) and word order, so
    ``"adrenal_gland_left"``, ``"Left adrenal gland"`` and ``"adrenal gland (L)"`` are all organ
    13; sides may be written ``left``/``l``/``lt`` and ``right``/``r``/``rt``. Synonyms:
    ``gall bladder``, ``oesophagus``, ``abdominal aorta`` (and AMOS's ``arota``), ``ivc`` and
    ``postcava`` for the inferior vena cava, ``portal vein and splenic vein`` in any wording,
    ``adrenal`` and ``suprarenal gland``. A paired organ without a side (``"kidney"``) or a
    structure that is no BTCV organ (``"duodenum"``, ``"liver tumor"``) gives ``None``.

    Examples:
        >>> names = ("kidney_left", "Right Kidney", "portal_vein_and_splenic_vein")
        >>> [btcv_code_of(n) for n in names]
        [3, 2, 10]
        >>> btcv_code_of("postcava"), btcv_code_of("kidney"), btcv_code_of("duodenum")
        (9, None, None)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a label name string; got {type(name).__name__} {name!r}")
    words = [_PLURALS.get(w, w) for w in re.split(r"[^0-9a-z]+", name.lower()) if w]
    sides = {_SIDES[w] for w in words if w in _SIDES}
    key = frozenset(w for w in words if w not in _SIDES and w not in _FILLER)
    if len(sides) > 1:
        return None
    if not sides:
        return _UNSIDED.get(key)
    pair = _SIDED.get(key)
    if pair is None:
        return None
    return pair[0] if sides == {"right"} else pair[1]


@dataclass(frozen=True)
class _DatasetJson:
    path: Path
    labels: dict[str, int]  # name -> code, as declared
    channels: dict[str, str] | None
    file_ending: str
    num_training: int | None


def _dataset_root(path: str | os.PathLike[str]) -> Path:
    """The dataset folder of ``path``: the folder, its dataset.json, or a name in $nnUNet_raw."""
    p = Path(path)
    if p.is_file() and p.name == "dataset.json":
        return p.parent
    if p.is_dir():
        return p
    raw = os.environ.get("nnUNet_raw")
    if raw and not p.is_absolute() and (Path(raw) / p).is_dir():
        return Path(raw) / p
    tried = f" (nor under $nnUNet_raw={raw})" if raw and not p.is_absolute() else ""
    raise FileNotFoundError(f"no nnU-Net dataset folder at {p}{tried}")


def is_nnunet_dataset(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is an nnU-Net raw dataset: a folder with ``dataset.json`` and ``imagesTr/``
    or ``imagesTs/``.

    ``path`` may also be the ``dataset.json`` file, or a relative name (``Dataset001_X``) found
    under the ``nnUNet_raw`` environment variable's folder. The check reads no file: a malformed
    ``dataset.json`` is reported by :func:`discover_nnunet`. A BTCV folder
    (``RawData/Training/img/``) is not one, even with a MONAI datalist named ``dataset.json``.

    Examples:
        >>> import tempfile
        >>> from agcl.data.synthetic import write_btcv_like, write_nnunet_like
        >>> root = tempfile.mkdtemp()
        >>> is_nnunet_dataset(write_nnunet_like(root, 1, shape=(24, 24, 8)))
        True
        >>> _ = write_btcv_like(root, 1, modalities=("contrast",), shape=(24, 24, 8))
        >>> is_nnunet_dataset(f"{root}/contrast"), is_nnunet_dataset(f"{root}/nowhere")
        (False, False)
    """
    try:
        root = _dataset_root(path)
    except FileNotFoundError:
        return False
    return (root / "dataset.json").is_file() and any(
        (root / sub).is_dir() for sub in ("imagesTr", "imagesTs")
    )


def _parse_labels(raw: object, path: Path) -> dict[str, int]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(
            f"'labels' of {path} must be a non-empty object of label names and codes; got {raw!r}"
        )
    out: dict[str, int] = {}
    if all(isinstance(v, str) for v in raw.values()):  # v1: {"1": "spleen"}
        pairs = []
        for key, name in raw.items():
            code = _as_code(key)
            if code is None:
                raise ValueError(
                    f"'labels' of {path} looks like nnU-Net v1 ({{code: name}}) but key {key!r} "
                    "is not a non-negative integer code"
                )
            pairs.append((name, code))
    else:  # v2: {"spleen": 1}; a one-code region [1] is that code
        pairs = []
        for name, value in raw.items():
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, list):
                raise ValueError(
                    f"label {name!r} of {path} is a region {value} (nnU-Net region-based "
                    "training); agcl needs one code per label: declare the plain labels"
                )
            code = None if isinstance(value, str) else _as_code(value)
            if code is None:
                raise ValueError(
                    f"label {name!r} of {path} must have a non-negative integer code "
                    f"(nnU-Net v2: {{name: code}}; v1: {{code: name}}); got {value!r}"
                )
            pairs.append((name, code))
    codes: dict[int, str] = {}
    for name, code in pairs:
        if name in out:
            raise ValueError(
                f"'labels' of {path} names {name!r} twice (codes {out[name]} and {code})"
            )
        if code in codes:
            raise ValueError(
                f"'labels' of {path} gives code {code} to both {codes[code]!r} and {name!r}"
            )
        out[name], codes[code] = code, name
    return out


def _read_dataset_json(root: Path) -> _DatasetJson:
    path = root / "dataset.json"
    if not path.is_file():
        raise FileNotFoundError(f"no dataset.json in {root}: an nnU-Net raw dataset needs one")
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path} must hold a JSON object; got {type(content).__name__}")
    if "labels" not in content:
        raise ValueError(
            f"{path} has no 'labels' entry: nnU-Net's dataset.json names its labels, "
            '{"background": 0, "liver": 1, ...} (v2) or {"0": "background", "1": "liver"} (v1)'
        )
    labels = _parse_labels(content["labels"], path)
    channels = content.get("channel_names", content.get("modality"))
    if channels is not None:
        if not isinstance(channels, dict) or not channels:
            raise ValueError(
                f'\'channel_names\' of {path} must be an object {{"0": "CT"}}; got {channels!r}'
            )
        channels = {str(k): str(v) for k, v in channels.items()}
        if len(channels) > 1 or _as_code(next(iter(channels))) != 0:
            raise ValueError(
                f"{path} declares input channels {channels}; agcl reads single-channel CT "
                "(channel 0, files <case>_0000): make a dataset with that channel only"
            )
    ending = content.get("file_ending", ".nii.gz")
    if ending not in _FILE_ENDINGS:
        raise ValueError(
            f"file_ending {ending!r} of {path}: agcl reads NIfTI only "
            f"({', '.join(_FILE_ENDINGS)}); "
            "convert the images and labels to NIfTI"
        )
    num = content.get("numTraining")
    num = num if isinstance(num, int) and not isinstance(num, bool) else None
    return _DatasetJson(path, labels, channels, ending, num)


def _user_mapping(labels: Mapping[object, object] | str | os.PathLike[str]) -> dict[int, int]:
    if isinstance(labels, (str, os.PathLike)):
        from agcl.data.labels import load_coarse_labels  # the file format every mapping shares

        source = f"label mapping {labels}"
        labels = load_coarse_labels(labels)
    elif isinstance(labels, Mapping):
        source = "labels"
    else:
        raise TypeError(
            f"labels must be a mapping {{their_code: btcv_code}}, a JSON file path or None; "
            f"got {type(labels).__name__}"
        )
    out: dict[int, int] = {}
    for key, value in labels.items():
        code, btcv = _as_code(key), _as_code(value)
        if code is None or code == 0:
            raise ValueError(
                f"{source}: key {key!r} must be a positive integer label code (0 is background)"
            )
        if btcv is None or (btcv != 0 and btcv not in BTCV_ORGANS):
            raise ValueError(
                f"{source}: the value of key {key!r} must be a BTCV organ code "
                f"1-{max(BTCV_ORGANS)} or 0 "
                f"(background); got {value!r}"
            )
        out[code] = btcv
    return out


def nnunet_label_map(
    path: str | os.PathLike[str],
    *,
    labels: Mapping[object, object] | str | os.PathLike[str] | None = None,
) -> tuple[dict[int, int], list[str]]:
    """Match a dataset's label names (its ``dataset.json``) to BTCV organ codes.

    Each declared non-background code gets the BTCV code of its name (:func:`btcv_code_of`), or
    ``0`` (background) when the name is no BTCV organ. ``labels`` overrides by code.

    Args:
        path: the dataset folder (see :func:`is_nnunet_dataset`).
        labels: ``{their_code: btcv_code}`` (a mapping, or a JSON file in the format of
            :func:`agcl.data.load_coarse_labels`, keys as strings); its entries replace the
            name matching for those codes, ``0`` drops a structure deliberately.

    Returns:
        ``(code_map, unmapped)``: ``{their_code: btcv_code}`` for every declared
        non-background code (the :attr:`Case.code_map` of the dataset's cases), and the names
        that matched no organ and were not given in ``labels`` (their voxels become background).

    Raises:
        FileNotFoundError: no dataset folder or no ``dataset.json``.
        ValueError: a ``dataset.json`` that is not JSON, has no or malformed ``labels`` (a
            region-based label, a code given twice), a label named ``ignore`` (nnU-Net's
            ignore label: agcl has none; map its code in ``labels`` to accept background), two
            names matching one organ, or a ``labels`` entry for a code the dataset does not
            declare or to a code that is no BTCV organ.
        TypeError: ``labels`` of another type.

    Examples:
        >>> import json, tempfile, pathlib
        >>> root = pathlib.Path(tempfile.mkdtemp())
        >>> labels = {"background": 0, "liver": 1, "kidney_right": 2, "duodenum": 3, "tumour": 4}
        >>> _ = (root / "dataset.json").write_text(json.dumps({"labels": labels}))
        >>> nnunet_label_map(root)
        ({1: 6, 2: 2, 3: 0, 4: 0}, ['duodenum', 'tumour'])
        >>> nnunet_label_map(root, labels={4: 6})
        ({1: 6, 2: 2, 3: 0, 4: 6}, ['duodenum'])
    """
    ds = _read_dataset_json(_dataset_root(path))
    user = {} if labels is None else _user_mapping(labels)
    declared = {code: name for name, code in ds.labels.items() if code != 0}
    undeclared = sorted(set(user) - set(declared))
    if undeclared:
        raise ValueError(
            f"labels maps codes {undeclared} that {ds.path} does not declare; its codes are "
            f"{dict(sorted(declared.items()))}"
        )
    code_map: dict[int, int] = {}
    unmapped: list[str] = []
    matched: dict[int, list[str]] = {}
    for code, name in sorted(declared.items()):
        if code in user:
            code_map[code] = user[code]
            continue
        if name.strip().lower() == "ignore":
            raise ValueError(
                f"{ds.path} declares nnU-Net's ignore label (code {code}: unannotated voxels); "
                "agcl "
                f"has none and would train them as background: pass labels={{{code}: 0}} to accept "
                "that"
            )
        btcv = btcv_code_of(name)
        code_map[code] = 0 if btcv is None else btcv
        if btcv is None:
            unmapped.append(name)
        else:
            matched.setdefault(btcv, []).append(name)
    clashes = {BTCV_ORGANS[b]: names for b, names in matched.items() if len(names) > 1}
    if clashes:
        raise ValueError(
            f"several labels of {ds.path} match one BTCV organ: {clashes}; pass labels= "
            "{their_code: btcv_code} for them"
        )
    return code_map, unmapped


def _scan_images(folder: Path, ending: str) -> dict[str, Path]:
    """``{case_id: <case>_0000 file}`` of an nnU-Net images folder, refusing other channels."""
    if not folder.is_dir():
        raise FileNotFoundError(f"no {folder.name}/ folder at {folder}")
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(ending) + "$")
    channels: dict[str, dict[int, Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not _NII_FILE.search(p.name):
            continue  # hidden files, sidecar JSON, thumbnails
        m = pattern.match(p.name)
        if m is None:
            if not p.name.endswith(ending):
                raise ValueError(f"{p} does not end with the dataset's file_ending {ending!r}")
            raise ValueError(
                f"{p} is not named <case>_<XXXX>{ending} (nnU-Net's channel suffix, _0000 for the "
                "CT); a Medical Segmentation Decathlon folder needs nnUNetv2_convert_MSD_dataset "
                "first"
            )
        channels.setdefault(m.group("case"), {})[int(m.group("channel"))] = p
    if not channels:
        raise FileNotFoundError(f"no <case>_0000{ending} images in {folder}")
    for case, files in channels.items():
        if 0 not in files:
            raise FileNotFoundError(
                f"case {case!r} has no CT channel {folder / f'{case}_0000{ending}'} "
                f"(found {', '.join(p.name for p in files.values())})"
            )
    extra = [p.name for files in channels.values() for c, p in files.items() if c != 0]
    if extra:
        shown = ", ".join(extra[:3]) + (f" and {len(extra) - 3} more" if len(extra) > 3 else "")
        raise ValueError(
            f"{folder} holds input channels other than _0000 ({shown}); agcl reads single-channel "
            "CT: make a dataset with the _0000 files only"
        )
    return {case: files[0] for case, files in channels.items()}


def _scan_labels(
    folder: Path, ending: str, images: Mapping[str, Path], image_dir: Path
) -> dict[str, Path]:
    if not folder.is_dir():
        raise FileNotFoundError(f"no labelsTr/ folder at {folder}: the training cases need labels")
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or not _NII_FILE.search(p.name):
            continue
        if not p.name.endswith(ending):
            raise ValueError(f"{p} does not end with the dataset's file_ending {ending!r}")
        found[p.name[: -len(ending)]] = p
    for case, p in found.items():
        if case not in images:
            raise FileNotFoundError(
                f"label file {p} has no image {image_dir / f'{case}_0000{ending}'}"
            )
    for case, img in images.items():
        if case not in found:
            raise FileNotFoundError(
                f"missing label file {folder / f'{case}{ending}'} for image {img}"
            )
    return found


def discover_nnunet(
    path: str | os.PathLike[str],
    *,
    split: Literal["train", "test"] = "train",
    modality: str = "contrast",
    labels: Mapping[object, object] | str | os.PathLike[str] | None = None,
) -> list[Case]:
    """List the cases of an nnU-Net raw dataset, sorted by case id, with their code translation.

    ``split="train"`` pairs ``imagesTr/<case>_0000<ending>`` with ``labelsTr/<case><ending>``;
    every case carries :attr:`Case.code_map` from :func:`nnunet_label_map`, so
    :func:`load_case` returns BTCV codes. ``split="test"`` lists ``imagesTs/`` (no labels,
    ``label_path=None``). The ``<ending>`` is ``dataset.json``'s ``file_ending`` (``.nii.gz``
    when absent, as in v1). Folder contents decide, as in nnU-Net v2: v1's ``training``/``test``
    lists are not read. Hidden files and non-NIfTI files (sidecar JSON) are ignored.

    Args:
        path: the dataset folder ``DatasetXXX_Name`` (see :func:`is_nnunet_dataset`).
        split: ``"train"`` or ``"test"``.
        modality: the modality name given to every case.
        labels: ``{their_code: btcv_code}`` overrides of the name matching (a mapping or a JSON
            file), see :func:`nnunet_label_map`; used for ``split="train"``.

    Returns:
        A list of :class:`Case`; ``case_id`` is nnU-Net's case identifier.

    Raises:
        FileNotFoundError: no dataset folder, ``dataset.json``, ``imagesTr/``/``labelsTr/`` (or
            ``imagesTs/``), no images; a case without its ``_0000`` file, an image without its
            label or a label without its image (the paths are named).
        ValueError: as :func:`nnunet_label_map`; ``dataset.json`` declaring more than one
            channel or a non-NIfTI ``file_ending``; a folder holding ``_0001``... files (agcl
            reads single-channel CT), a NIfTI file not named ``<case>_<XXXX><ending>``; an
            unknown ``split``.

    Warns:
        UserWarning: label names that match no BTCV organ (listed with their codes: their
            voxels load as background), BTCV organs that no label matches, a channel not named
            ``CT`` (it is read as CT in HU all the same), or a ``numTraining`` that differs from
            the number of training cases found.

    Examples:
        >>> import tempfile
        >>> from agcl.data.synthetic import write_nnunet_like
        >>> root = write_nnunet_like(tempfile.mkdtemp(), 2, n_test=1, shape=(24, 24, 8))
        >>> cases = discover_nnunet(root)
        >>> [c.case_id for c in cases], cases[0].label_path.name, cases[0].code_map[6]
        (['phantoms_001', 'phantoms_002'], 'phantoms_001.nii.gz', 6)
        >>> [(c.case_id, c.label_path) for c in discover_nnunet(root, split="test")]
        [('phantoms_003', None)]
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be one of 'train', 'test'; got {split!r}")
    root = _dataset_root(path)
    ds = _read_dataset_json(root)
    if ds.channels is not None and next(iter(ds.channels.values())).strip().upper() != "CT":
        warnings.warn(
            f"{ds.path} names channel 0 {next(iter(ds.channels.values()))!r}; agcl reads it as "
            "CT in Hounsfield units",
            stacklevel=2,
        )
    if split == "test":
        images = _scan_images(root / "imagesTs", ds.file_ending)
        return [Case(case, images[case], None, modality) for case in sorted(images)]
    code_map, unmapped = nnunet_label_map(root, labels=labels)
    images = _scan_images(root / "imagesTr", ds.file_ending)
    found = _scan_labels(root / "labelsTr", ds.file_ending, images, root / "imagesTr")
    _warn_about_labels(ds, code_map, unmapped)
    if ds.num_training is not None and ds.num_training != len(images):
        warnings.warn(
            f"{ds.path} gives numTraining {ds.num_training} but {root / 'imagesTr'} holds "
            f"{len(images)} cases; all {len(images)} are used",
            stacklevel=2,
        )
    return [
        Case(case, images[case], found[case], modality, code_map=code_map)
        for case in sorted(images)
    ]


def _warn_about_labels(ds: _DatasetJson, code_map: Mapping[int, int], unmapped: list[str]) -> None:
    parts = []
    if unmapped:
        named = ", ".join(f"{n!r} ({ds.labels[n]})" for n in unmapped)
        parts.append(
            f"labels {named} match no BTCV organ; their voxels load as background 0 (pass "
            "labels={their_code: btcv_code} to map them)"
        )
    missing = [BTCV_ORGANS[c] for c in sorted(BTCV_ORGANS) if c not in set(code_map.values())]
    if missing:
        parts.append(
            f"no label matches the BTCV organs {missing}: they are background in every case"
        )
    if parts:
        warnings.warn(f"{ds.path}: " + "; ".join(parts), stacklevel=3)
