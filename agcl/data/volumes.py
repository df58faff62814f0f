"""Training volumes: prepared cases with their attention, on demand, for the patch samplers.

:class:`TrainingVolumes` is the sequence :class:`agcl.sampling.PatchStream` (and
:class:`agcl.sampling.AttentionPatchDataset`) reads: item ``i`` is case ``i`` prepared (loaded,
preprocessed) with its sparse per-organ attention (e.g. from
:class:`agcl.sampling.CaseAttention`), built when first needed and kept in a
:class:`agcl.data.VolumeCache` bounded in bytes. It pickles cheaply (no voxels), so DataLoader
workers load what they sample themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agcl.data.cache import VolumeCache
from agcl.data.prepared import PreparedCase

__all__ = ["TrainingVolumes", "case_stem", "find_coarse_file"]

_EXTS = (".nii.gz", ".nii")


def case_stem(case: Any) -> str:
    """``<modality>_<case_id>``: the file stem of a case's outputs (an :class:`agcl.data.Case`
    or a :class:`agcl.data.PreparedCase`)."""
    modality = getattr(case, "modality_name", None)
    if modality is None:
        modality = getattr(case, "modality")  # noqa: B009
    return f"{modality}_{case.case_id}"


def find_coarse_file(folder: str | os.PathLike[str], case_id: str, modality: str) -> Path:
    """The label map of a case in a ``--coarse-dir`` folder, matched by case id.

    Accepted names (first match wins): ``<modality>_<case_id>``, ``<modality>/<case_id>``,
    ``<case_id>``, ``label<case_id>`` and ``img<case_id>``, each ``.nii.gz`` or ``.nii``.

    Raises:
        FileNotFoundError: none of them exists (the message lists the paths tried).
    """
    folder = Path(folder)
    stems = [
        f"{modality}_{case_id}",
        f"{modality}/{case_id}",
        case_id,
        f"label{case_id}",
        f"img{case_id}",
    ]
    tried = [folder / f"{s}{e}" for s in stems for e in _EXTS]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no coarse label map for case {case_id!r} ({modality}) in {folder}; tried "
        + ", ".join(p.name if p.parent == folder else str(p.relative_to(folder)) for p in tried)
    )


class TrainingVolumes(Sequence[dict[str, Any]]):
    """Prepared cases with their attention, as :class:`agcl.sampling.PatchStream` reads them.

    Args:
        cases: prepared cases (e.g. :class:`agcl.data.PreparedCases`, which loads on access).
        attention: ``attention(case) -> {code: (box, mask)}`` (e.g. :class:`CaseAttention`).
        cache: keeps built items (image, label, attention) within its byte limit; ``None``
            builds an item on every access.

    Item ``i``: ``{"image": (X, Y, Z) float32, "attention": sparse, "label": (X, Y, Z) uint8
    or None, "modality": int, "case_id": str}``.
    """

    def __init__(
        self,
        cases: Sequence[PreparedCase],
        attention: Callable[[PreparedCase], Mapping[int, Any]],
        *,
        cache: VolumeCache | None = None,
    ) -> None:
        if cache is not None and not isinstance(cache, VolumeCache):
            raise TypeError(f"cache must be a VolumeCache or None; got {type(cache).__name__}")
        self.cases, self.attention, self.cache = cases, attention, cache

    def __len__(self) -> int:
        return len(self.cases)

    def _build(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        return {
            "image": case.image,
            "attention": self.attention(case),
            "label": case.label,
            "modality": int(case.modality),
            "case_id": case.case_id,
        }

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index = int(index) % len(self)
        if self.cache is None:
            return self._build(index)
        return self.cache.get(("training-volume", id(self), index), lambda: self._build(index))
