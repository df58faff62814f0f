"""Private: an nnU-Net raw dataset's folder and its ``dataset.json``, found and checked.

``dataset.json`` names the labels (``{"background": 0, "liver": 1, ...}`` in nnU-Net v2,
``{"0": "background", "1": "liver", ...}`` in v1), the input channels (``channel_names`` in v2,
``modality`` in v1; agcl reads single-channel CT) and the images' ``file_ending``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from agcl.data.btcv import _as_code

__all__ = ["FILE_ENDINGS", "DatasetJson", "dataset_root", "read_dataset_json"]

FILE_ENDINGS = (".nii.gz", ".nii")


@dataclass(frozen=True)
class DatasetJson:
    """What agcl reads of a ``dataset.json``."""

    path: Path
    labels: dict[str, int]  # name -> code, as declared
    channels: dict[str, str] | None
    file_ending: str
    num_training: int | None


def dataset_root(path: str | os.PathLike[str]) -> Path:
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


def read_dataset_json(root: Path) -> DatasetJson:
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
    if ending not in FILE_ENDINGS:
        raise ValueError(
            f"file_ending {ending!r} of {path}: agcl reads NIfTI only "
            f"({', '.join(FILE_ENDINGS)}); "
            "convert the images and labels to NIfTI"
        )
    num = content.get("numTraining")
    num = num if isinstance(num, int) and not isinstance(num, bool) else None
    return DatasetJson(path, labels, channels, ending, num)
