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

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from agcl.data._nnunet_json import DatasetJson, dataset_root, read_dataset_json
from agcl.data.btcv import BTCV_ORGANS, Case, _as_code
from agcl.data.organ_names import btcv_code_of

__all__ = ["btcv_code_of", "discover_nnunet", "is_nnunet_dataset", "nnunet_label_map"]

_NII_FILE = re.compile(r"\.nii(\.gz)?$")


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
        root = dataset_root(path)
    except FileNotFoundError:
        return False
    return (root / "dataset.json").is_file() and any(
        (root / sub).is_dir() for sub in ("imagesTr", "imagesTs")
    )


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
    ds = read_dataset_json(dataset_root(path))
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
    root = dataset_root(path)
    ds = read_dataset_json(root)
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


def _warn_about_labels(ds: DatasetJson, code_map: Mapping[int, int], unmapped: list[str]) -> None:
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
