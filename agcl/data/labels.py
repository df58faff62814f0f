"""Label-code mappings: another segmenter's codes translated to agcl's (``--coarse-labels``,
``--labels``).

A coarse label map written by another tool (TotalSegmentator, an nnU-Net model, ...) uses that
tool's label codes. A mapping ``{their_code: btcv_code}`` translates it to the codes of
:data:`agcl.data.BTCV_ORGANS` before it serves as attention. Codes the mapping does not name
become background (0): a whole-body segmenter labels many structures (bones, muscles, lungs)
that have no BTCV organ, and listing each as ``0`` would be tedious. So that a typo cannot
silently drop an organ, :func:`remap_labels` reports the unmapped codes it met, and the pipeline
warns once with the full list.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["load_coarse_labels", "remap_labels"]


def _code(value: object, *, what: str, source: str) -> int:
    if isinstance(value, bool):
        raise ValueError(
            f"{source}: {what} must be a non-negative integer label code; got {value!r}"
        )
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():
            raise ValueError(
                f"{source}: {what} must be a non-negative integer label code; got {value!r}"
            )
        return int(text)
    if isinstance(value, int) and value >= 0:
        return int(value)
    raise ValueError(f"{source}: {what} must be a non-negative integer label code; got {value!r}")


def load_coarse_labels(
    path: str | os.PathLike[str], organs: Mapping[int, str] | None = None
) -> dict[int, int]:
    """Read a ``{their_code: btcv_code}`` JSON object (keys may be strings, as JSON requires).

    Every value must be 0 (background) or a code of ``organs`` (default
    :data:`agcl.data.BTCV_ORGANS`): a typo would otherwise leave an organ without attention.

    Examples:
        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "map.json"
        >>> _ = p.write_text(json.dumps({"1": 1, "5": 6}))
        >>> load_coarse_labels(p)
        {1: 1, 5: 6}

    Raises:
        FileNotFoundError: no such file.
        ValueError: not UTF-8 text, not valid JSON, not an object, a key or value that is not
            a non-negative integer code, or a value that names no organ (the message names the
            file).
    """
    path = Path(path)
    source = f"label mapping {path}"
    if not path.is_file():
        raise FileNotFoundError(f"no {source}: the file does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(
            f"{source} is not UTF-8 text (a binary file?); it must hold a JSON object "
            "{their_code: btcv_code}"
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{source} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"{source} must hold a JSON object {{their_code: btcv_code}}; got {type(data).__name__}"
        )
    if not data:
        raise ValueError(f"{source} is empty; it must map at least one code")
    mapping = {
        _code(k, what="a key", source=source): _code(
            v, what=f"the value of key {k!r}", source=source
        )
        for k, v in data.items()
    }
    if organs is None:
        from agcl.data.btcv import BTCV_ORGANS

        organs = BTCV_ORGANS
    bad = {k: v for k, v in mapping.items() if v != 0 and v not in organs}
    if bad:
        raise ValueError(
            f"{source} maps to codes that are no organ: "
            + ", ".join(f"{k} -> {v}" for k, v in sorted(bad.items()))
            + f"; the organ codes are {sorted(organs)} (0 is background)"
        )
    return mapping


def remap_labels(labels: np.ndarray, mapping: Mapping[int, int]) -> tuple[np.ndarray, set[int]]:
    """``labels`` translated by ``mapping``; unmapped non-zero codes become 0 and are returned.

    Shape:
        labels: ``(X, Y, Z)`` integer codes; output the same shape, int16.

    Examples:
        >>> import numpy as np
        >>> out, unmapped = remap_labels(np.array([0, 5, 7, 90]), {5: 6, 7: 11})
        >>> out.tolist(), sorted(unmapped)
        ([0, 6, 11, 0], [90])
    """
    arr = np.asarray(labels)
    codes = np.unique(arr)
    if codes.size and int(codes.min()) < 0:
        raise ValueError(f"labels must hold non-negative codes; got {int(codes.min())}")
    lut = np.zeros(int(codes.max()) + 1 if codes.size else 1, dtype=np.int16)
    for their, ours in mapping.items():
        if their < len(lut):
            lut[their] = ours
    unmapped = {int(c) for c in codes if c != 0 and int(c) not in mapping}
    return lut[arr.astype(np.int64)], unmapped
