"""Synthetic abdominal CT phantoms written to disk, in the BTCV or the nnU-Net layout.

The phantoms themselves (anatomy, intensities, noise) come from :func:`make_phantom`
(:mod:`agcl.data.phantom`, re-exported here); this module stores them as NIfTI files the way
scanners and public datasets do (``int16`` HU and ``uint8`` labels in LPS order) with the
dataset files each layout expects, and keeps a reusable cache of them
(:func:`ensure_btcv_like`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import nibabel as nib
import numpy as np

from agcl._validation import check_int
from agcl.data._painter import check_grid
from agcl.data.btcv import BTCV_ORGANS, Case
from agcl.data.phantom import (
    DEFAULT_SHAPE,
    DEFAULT_SPACING,
    MODALITIES,
    make_phantom,
    phantom_affine,
)

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
        >>> out = write_btcv_like(tempfile.mkdtemp(), 1, shape=(24, 24, 8),
        ...                       spacing=(14.7, 14.7, 25.0))
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
    shp, sp = check_grid(shape, spacing)
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
            "names must give distinct non-empty names to written organs "
            f"{sorted(written)}; got {names!r}"
        )
    lut = np.zeros(max(BTCV_ORGANS) + 1, np.uint8)
    for btcv, code in written.items():
        lut[btcv] = code
    shp, sp = check_grid(shape, spacing)
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
