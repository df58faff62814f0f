"""The training volumes of stages 2 and 3: prepared cases with their attention, on demand.

:class:`TrainingVolumes` is the sequence :class:`agcl.sampling.PatchStream` reads: item ``i``
is case ``i`` prepared (loaded, preprocessed) with its sparse per-organ attention, built when
first needed and kept in a :class:`agcl.data.VolumeCache` bounded in bytes. :class:`CaseAttention`
says where the attention comes from: the ground truth, the coarse stage's probabilities, or
coarse label maps (the pipeline's own or yours, ``--coarse-dir``). Both pickle cheaply (no
voxels), so DataLoader workers load what they sample themselves.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agcl._validation import check_choice
from agcl.data.cache import VolumeCache
from agcl.data.prepared import PreparedCase
from agcl.sampling.attention_maps import ATTENTION_CHANNELS, Attention, attention_from_labels

__all__ = ["CaseAttention", "TrainingVolumes", "case_stem"]

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
    stems = [f"{modality}_{case_id}", f"{modality}/{case_id}", case_id, f"label{case_id}", f"img{case_id}"]
    tried = [folder / f"{s}{e}" for s in stems for e in _EXTS]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no coarse label map for case {case_id!r} ({modality}) in {folder}; tried "
                            + ", ".join(p.name if p.parent == folder else str(p.relative_to(folder)) for p in tried))


class CaseAttention:
    """Per-organ sparse attention of a prepared case, from one source.

    Args:
        organ_ids: the organ codes.
        margin_mm: each region is dilated by this many mm.
        source: ``"gt"`` (the case's ground truth), ``"probabilities"`` (``prob_dir/<stem>.prob.pt``
            from the coarse stage, thresholded at ``threshold``) or ``"labels"`` (coarse label
            maps: ``label_dir/<stem>.nii.gz``, or :func:`find_coarse_file` in ``coarse_dir``
            with the codes translated by ``coarse_labels``).
        prob_dir, label_dir, coarse_dir, coarse_labels, threshold: as above.
        channel: what the masks hold, ``"mask"`` (bool) or ``"probability"`` (graded float16;
            :data:`agcl.sampling.attention_maps.ATTENTION_CHANNELS`).

    Calling it on a :class:`agcl.data.PreparedCase` gives ``{code: (box, mask)}``;
    :meth:`labels` gives the coarse label map itself (for the coarse Dice).
    """

    def __init__(self, organ_ids: Sequence[int], margin_mm: float, *,
                 source: Literal["gt", "probabilities", "labels"] = "gt", prob_dir: str | os.PathLike[str] | None = None,
                 label_dir: str | os.PathLike[str] | None = None, coarse_dir: str | os.PathLike[str] | None = None,
                 coarse_labels: Mapping[int, int] | None = None, threshold: float = 0.1,
                 channel: Literal["mask", "probability"] = "mask") -> None:
        if source not in ("gt", "probabilities", "labels"):
            raise ValueError(f"source must be 'gt', 'probabilities' or 'labels'; got {source!r}")
        if source == "probabilities" and prob_dir is None:
            raise ValueError("source='probabilities' needs prob_dir")
        if source == "labels" and label_dir is None and coarse_dir is None:
            raise ValueError("source='labels' needs label_dir or coarse_dir")
        self.channel = check_choice("channel", channel, ATTENTION_CHANNELS)
        self.organ_ids = [int(o) for o in organ_ids]
        self.margin_mm, self.source, self.threshold = float(margin_mm), source, float(threshold)
        self.prob_dir = None if prob_dir is None else Path(prob_dir)
        self.label_dir = None if label_dir is None else Path(label_dir)
        self.coarse_dir = None if coarse_dir is None else Path(coarse_dir)
        self.coarse_labels = None if coarse_labels is None else {int(k): int(v) for k, v in coarse_labels.items()}

    def __call__(self, case: PreparedCase, *, probabilities: tuple[Any, Sequence[int]] | None = None) -> Attention:
        """The case's attention; ``probabilities`` (from :meth:`probabilities`) saves re-reading them."""
        if self.source == "gt":
            if case.label is None:
                raise ValueError(f"case {case.case_id} has no label for ground-truth attention")
            return attention_from_labels(case.label, self.organ_ids, margin_mm=self.margin_mm, spacing=case.spacing,
                                         channel=self.channel)
        if self.source == "probabilities":
            from agcl.pipeline._coarse_attention import attention_from_probabilities

            prob, ids = self.probabilities(case) if probabilities is None else probabilities
            return attention_from_probabilities(prob, ids, case.image.shape, spacing=case.spacing,
                                                margin_mm=self.margin_mm, threshold=self.threshold, channel=self.channel)
        return attention_from_labels(self.labels(case), self.organ_ids, margin_mm=self.margin_mm, spacing=case.spacing,
                                     channel=self.channel)

    def probabilities(self, case: PreparedCase) -> tuple[Any, list[int]]:
        """``(prob (K + 1, x, y, z), organ_ids)``: the case's stored coarse probabilities."""
        from agcl.pipeline._coarse_attention import load_probabilities

        if self.prob_dir is None:
            raise ValueError("this CaseAttention has no coarse probabilities (source='probabilities' needs prob_dir)")
        path = self.prob_dir / f"{case_stem(case)}.prob.pt"
        if not path.is_file():
            raise FileNotFoundError(f"no coarse probabilities for case {case.case_id} at {path}")
        prob, ids, _ = load_probabilities(path)
        return prob, ids

    def labels(self, case: PreparedCase) -> np.ndarray:
        """The case's coarse label map (organ codes, the image's grid)."""
        from agcl.data import load_volume

        if self.coarse_dir is not None:
            path = find_coarse_file(self.coarse_dir, case.case_id, case.modality_name)
        elif self.label_dir is not None:
            path = self.label_dir / f"{case_stem(case)}.nii.gz"
        else:
            raise ValueError("this CaseAttention has no coarse label maps (label_dir or coarse_dir)")
        arr = load_volume(path, kind="label").array
        if arr.shape != case.image.shape:
            raise ValueError(f"coarse label map {path} of case {case.case_id} has shape {arr.shape}; "
                             f"its image has {case.image.shape}")
        if self.coarse_labels is not None:
            from agcl.pipeline.coarse_labels import remap_labels

            arr, _ = remap_labels(arr, self.coarse_labels)
        return arr


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

    def __init__(self, cases: Sequence[PreparedCase], attention: Callable[[PreparedCase], Attention], *,
                 cache: VolumeCache | None = None) -> None:
        if cache is not None and not isinstance(cache, VolumeCache):
            raise TypeError(f"cache must be a VolumeCache or None; got {type(cache).__name__}")
        self.cases, self.attention, self.cache = cases, attention, cache

    def __len__(self) -> int:
        return len(self.cases)

    def _build(self, index: int) -> dict[str, Any]:
        case = self.cases[index]
        return {"image": case.image, "attention": self.attention(case), "label": case.label,
                "modality": int(case.modality), "case_id": case.case_id}

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index = int(index) % len(self)
        if self.cache is None:
            return self._build(index)
        return self.cache.get(("training-volume", id(self), index), lambda: self._build(index))
