"""build_cohort: modality ids and names."""

from __future__ import annotations

from pathlib import Path

import pytest

from agcl.data import Case, build_cohort


def _cases(n, prefix, start=0):
    return [Case(f"{i:04d}", Path(f"{prefix}{i}.nii.gz")) for i in range(start, start + n)]


def test_ids_follow_first_appearance_and_names_are_set():
    c = build_cohort(
        [
            ("non-contrast", _cases(1, "n")),
            ("contrast", _cases(2, "c")),
            ("non-contrast", _cases(1, "m", start=1)),
        ]
    )
    assert c.modalities == ("non-contrast", "contrast")
    assert c.modality_ids == (0, 1, 1, 0)
    assert [case.modality for case in c.cases] == [
        "non-contrast",
        "contrast",
        "contrast",
        "non-contrast",
    ]
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


def test_case_ids_are_unique_within_a_modality_and_no_file_is_listed_twice(tmp_path):
    # two folders of one modality with the same case ids: their outputs would share a name
    with pytest.raises(ValueError, match=r"'0000' twice: a0.nii.gz and b0.nii.gz"):
        build_cohort([("contrast", _cases(1, "a")), ("contrast", _cases(1, "b"))])
    # the same ids in two modalities are fine (outputs are named <modality>_<case>)
    assert len(build_cohort([("contrast", _cases(1, "a")), ("non-contrast", _cases(1, "b"))])) == 2
    # the same folder given twice (as two modalities) would put one scan in train and test
    same = _cases(2, str(tmp_path / "img"))
    with pytest.raises(ValueError, match="listed twice"):
        build_cohort([("contrast", same), ("non-contrast", same)])
