"""Combine datasets of different modalities into one cohort with integer modality ids."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from agcl.data.btcv import Case

__all__ = ["Cohort", "build_cohort"]


@dataclass(frozen=True)
class Cohort:
    """Cases from one or more datasets, each with an integer modality id.

    Attributes:
        cases: every case; ``case.modality`` holds its modality name.
        modality_ids: ``modality_ids[i]`` is the integer id of ``cases[i]``'s modality.
        modalities: the id -> name mapping: ``modalities[k]`` is the name of id ``k``.
    """

    cases: tuple[Case, ...]
    modality_ids: tuple[int, ...]
    modalities: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[tuple[Case, int]]:
        return iter(zip(self.cases, self.modality_ids))

    def modality_id(self, name: str) -> int:
        """The integer id of modality ``name``."""
        if name not in self.modalities:
            raise ValueError(f"name must be one of {list(self.modalities)}; got {name!r}")
        return self.modalities.index(name)


def build_cohort(
    datasets: Mapping[str, Sequence[Case]] | Sequence[tuple[str, Sequence[Case]]],
) -> Cohort:
    """Combine lists of cases, one per modality, into one :class:`Cohort`.

    Modality ids are given in order of first appearance (0, 1, ...); every case's
    ``modality`` is set to its dataset's name.

    Args:
        datasets: ``{"contrast": cases_a, "non-contrast": cases_b}`` or a sequence of
            ``(name, cases)`` pairs (the same name may appear twice; its cases are merged).

    Returns:
        A :class:`Cohort`.

    Raises:
        ValueError: no datasets, an empty name, a dataset with no cases, two cases of one
            modality with the same case id (both files named: their outputs would share a
            name), or one image file listed twice (e.g. the same folder given twice).
        TypeError: an item that is not a :class:`Case`.

    Examples:
        >>> from pathlib import Path
        >>> a = [Case("0001", Path("a1.nii.gz"))]
        >>> b = [Case("0001", Path("b1.nii.gz")), Case("0002", Path("b2.nii.gz"))]
        >>> c = build_cohort({"contrast": a, "non-contrast": b})
        >>> c.modality_ids, c.modalities, c.cases[1].modality
        ((0, 1, 1), ('contrast', 'non-contrast'), 'non-contrast')
    """
    pairs = list(datasets.items()) if isinstance(datasets, Mapping) else list(datasets)
    if not pairs:
        raise ValueError("datasets must hold at least one (modality name, cases) pair; got none")
    names: list[str] = []
    cases: list[Case] = []
    ids: list[int] = []
    seen_ids: dict[tuple[str, str], Case] = {}
    seen_files: dict[str, Case] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            raise TypeError(f"datasets items must be (modality name, cases) pairs; got {pair!r}")
        name, items = pair
        if not name:
            raise ValueError("datasets: modality names must be non-empty strings; got ''")
        if len(items) == 0:
            raise ValueError(f"datasets: modality {name!r} has no cases")
        if name not in names:
            names.append(name)
        for case in items:
            if not isinstance(case, Case):
                raise TypeError(
                    f"datasets[{name!r}] must hold Case objects; got {type(case).__name__}"
                )
            key = (name, str(case.case_id))
            if key in seen_ids:
                raise ValueError(
                    f"datasets: modality {name!r} holds case id {case.case_id!r} twice: "
                    f"{seen_ids[key].image_path} and {case.image_path}; case ids must be unique "
                    "within a modality (give the folders different modality names, or rename)"
                )
            image = str(Path(case.image_path).resolve())
            if image in seen_files:
                raise ValueError(
                    f"datasets: the image {case.image_path} is listed twice (as case "
                    f"{seen_files[image].case_id!r} of {seen_files[image].modality!r} and as case "
                    f"{case.case_id!r} of {name!r}); was a folder given twice?"
                )
            seen_ids[key] = seen_files[image] = replace(case, modality=name)
            cases.append(seen_ids[key])
            ids.append(names.index(name))
    return Cohort(tuple(cases), tuple(ids), tuple(names))
