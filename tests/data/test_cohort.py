"""build_cohort: modality ids and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from agcl.data import Case, build_cohort


def _cases(n, prefix):
    return [Case(f"{i:04d}", Path(f"{prefix}{i}.nii.gz")) for i in range(n)]


def test_ids_follow_first_appearance_and_names_are_set():
    c = build_cohort([("non-contrast", _cases(1, "n")), ("contrast", _cases(2, "c")), ("non-contrast", _cases(1, "m"))])
    assert c.modalities == ("non-contrast", "contrast")
    assert c.modality_ids == (0, 1, 1, 0)
    assert [case.modality for case in c.cases] == ["non-contrast", "contrast", "contrast", "non-contrast"]
    assert len(c) == 4 and c.modality_id("contrast") == 1
    assert [m for _, m in c] == [0, 1, 1, 0]


def test_errors():
    with pytest.raises(ValueError, match="datasets"):
        build_cohort({})
    with pytest.raises(ValueError, match="'x' has no cases"):
        build_cohort({"x": []})
    with pytest.raises(TypeError, match="Case"):
        build_cohort({"x": ["a.nii.gz"]})
    with pytest.raises(ValueError, match="name must be one of"):
        build_cohort({"x": _cases(1, "a")}).modality_id("y")
