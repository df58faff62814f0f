"""Where a prepared case's attention comes from: its ground truth, a coarse segmenter's stored
probabilities, or coarse label maps (the pipeline's own, or yours from another segmenter)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agcl._validation import check_choice
from agcl.sampling.attention_maps import ATTENTION_CHANNELS, Attention, attention_from_labels

__all__ = ["ATTENTION_SOURCES", "CaseAttention", "bound_by", "check_coarse_map"]

#: where :class:`CaseAttention` reads a case's attention from
ATTENTION_SOURCES = ("gt", "probabilities", "labels")


def check_coarse_map(path: Any, labels: Any, case: Any, *, atol: float = 1e-3) -> None:
    """Raise unless a coarse label map (a :class:`agcl.data.Volume` read from ``path``) lies on
    the grid of ``case``'s image (same shape, same affine within ``atol`` mm; both printed)."""
    shape = tuple(case.image.shape)
    if tuple(labels.shape) != shape:
        raise ValueError(
            f"coarse label map {path} of case {case.case_id} has shape {tuple(labels.shape)}; "
            f"its image has {shape}"
        )
    ref = getattr(case, "reference", None)
    theirs, ours = getattr(labels, "affine", None), getattr(ref, "affine", None)
    if theirs is not None and ours is not None and not np.allclose(theirs, ours, atol=atol):
        raise ValueError(
            f"coarse label map {path} of case {case.case_id} is not on its image's grid: the "
            "affines differ by up to "
            f"{np.abs(np.asarray(theirs) - np.asarray(ours)).max():.4g} mm (atol "
            f"{atol})\nmap affine:\n{theirs}\nimage affine:\n{ours}"
        )


def bound_by(attention: Attention, body: np.ndarray | None) -> Attention:
    """``attention`` with every organ's mask cut to ``body`` (organs left with nothing dropped);
    itself when ``body`` is ``None``.

    Examples:
        >>> body = np.zeros((4, 1, 1), bool); body[:2] = True
        >>> att = {6: ((slice(1, 4), slice(0, 1), slice(0, 1)), np.ones((3, 1, 1), bool))}
        >>> bound_by(att, body)[6][1].ravel().tolist()
        [True, False, False]
    """
    if body is None:
        return attention
    out: Attention = {}
    for code, (box, mask) in attention.items():
        inside = np.asarray(body, bool)[tuple(box)]
        cut = np.where(inside, mask, np.zeros((), dtype=np.asarray(mask).dtype))
        if cut.any():
            out[code] = (box, cut.astype(np.asarray(mask).dtype))
    return out


class CaseAttention:
    """Per-organ sparse attention of a prepared case, from one source.

    Args:
        organ_ids: the organ codes.
        margin_mm: each region is dilated by this many mm.
        source: ``"gt"`` (the case's ground truth), ``"probabilities"`` (``prob_dir/<stem>.prob.pt``
            from the coarse stage, thresholded at ``threshold``) or ``"labels"`` (coarse label
            maps: ``label_dir/<stem>.nii.gz``, or :func:`agcl.data.find_coarse_file` in
            ``coarse_dir`` with the codes translated by ``coarse_labels``).
        prob_dir, label_dir, coarse_dir, coarse_labels, threshold: as above.
        channel: what the masks hold, ``"mask"`` (bool) or ``"probability"`` (graded float16;
            :data:`agcl.sampling.ATTENTION_CHANNELS`).

    Calling it on a :class:`agcl.data.PreparedCase` gives ``{code: (box, mask)}``; where the
    case carries a body mask (``PreparedCase.body``), the coarse attention (probabilities or
    label maps) is cut to it (the ground truth needs no bound);
    :meth:`labels` gives the coarse label map itself (for the coarse Dice). It holds no voxels,
    so it pickles cheaply into DataLoader workers.

    Examples:
        >>> import numpy as np
        >>> from agcl.data import PreparedCase
        >>> lab = np.zeros((8, 8, 2), np.uint8); lab[2:4, 2:4, 0] = 6
        >>> image = np.zeros((8, 8, 2), np.float32)
        >>> case = PreparedCase("1", 0, "ct", image, lab, (1.0, 1.0, 1.0), None)
        >>> att = CaseAttention([6], 1.0)(case)
        >>> att[6][0]
        (slice(1, 5, None), slice(1, 5, None), slice(0, 2, None))
    """

    def __init__(
        self,
        organ_ids: Sequence[int],
        margin_mm: float,
        *,
        source: Literal["gt", "probabilities", "labels"] = "gt",
        prob_dir: str | os.PathLike[str] | None = None,
        label_dir: str | os.PathLike[str] | None = None,
        coarse_dir: str | os.PathLike[str] | None = None,
        coarse_labels: Mapping[int, int] | None = None,
        threshold: float = 0.1,
        channel: Literal["mask", "probability"] = "mask",
    ) -> None:
        check_choice("source", source, ATTENTION_SOURCES)
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
        self.coarse_labels = (
            None if coarse_labels is None else {int(k): int(v) for k, v in coarse_labels.items()}
        )

    def __call__(
        self, case: Any, *, probabilities: tuple[Any, Sequence[int]] | None = None
    ) -> Attention:
        """The case's attention; ``probabilities`` (from :meth:`probabilities`) saves re-reading
        them."""
        if self.source == "gt":
            if case.label is None:
                raise ValueError(f"case {case.case_id} has no label for ground-truth attention")
            return attention_from_labels(
                case.label,
                self.organ_ids,
                margin_mm=self.margin_mm,
                spacing=case.spacing,
                channel=self.channel,
            )
        if self.source == "probabilities":
            from agcl.sampling.coarse_attention import attention_from_probabilities

            prob, ids = self.probabilities(case) if probabilities is None else probabilities
            return attention_from_probabilities(
                prob,
                ids,
                case.image.shape,
                spacing=case.spacing,
                margin_mm=self.margin_mm,
                threshold=self.threshold,
                channel=self.channel,
                body=getattr(case, "body", None),
            )
        att = attention_from_labels(
            self.labels(case),
            self.organ_ids,
            margin_mm=self.margin_mm,
            spacing=case.spacing,
            channel=self.channel,
        )
        return bound_by(att, getattr(case, "body", None))

    def probability_path(self, case: Any) -> Path:
        """The file of the case's stored coarse probabilities."""
        from agcl.data.volumes import case_stem

        if self.prob_dir is None:
            raise ValueError(
                "this CaseAttention has no coarse probabilities (source='probabilities' needs "
                "prob_dir)"
            )
        return self.prob_dir / f"{case_stem(case)}.prob.pt"

    def probabilities(self, case: Any) -> tuple[Any, list[int]]:
        """``(prob (K + 1, x, y, z), organ_ids)``: the case's stored coarse probabilities.

        Raises:
            FileNotFoundError: no file for the case (its path named).
            ValueError: a damaged file (its path named).
        """
        from agcl.sampling.coarse_attention import load_probabilities

        path = self.probability_path(case)
        if not path.is_file():
            raise FileNotFoundError(f"no coarse probabilities for case {case.case_id} at {path}")
        prob, ids, _ = load_probabilities(path)
        return prob, ids

    def label_path(self, case: Any) -> Path:
        """The file of the case's coarse label map."""
        from agcl.data.volumes import case_stem, find_coarse_file

        if self.coarse_dir is not None:
            return find_coarse_file(self.coarse_dir, case.case_id, case.modality_name)
        if self.label_dir is not None:
            return self.label_dir / f"{case_stem(case)}.nii.gz"
        raise ValueError("this CaseAttention has no coarse label maps (label_dir or coarse_dir)")

    def labels(self, case: Any) -> np.ndarray:
        """The case's coarse label map (organ codes, the image's grid).

        Raises:
            ValueError: a map of another shape, or with an affine off its image's.
        """
        from agcl.data import load_volume

        path = self.label_path(case)
        vol = load_volume(path, kind="label")
        check_coarse_map(path, vol, case)
        arr = vol.array
        if self.coarse_labels is not None:
            from agcl.data.labels import remap_labels

            arr, _ = remap_labels(arr, self.coarse_labels)
        return arr
