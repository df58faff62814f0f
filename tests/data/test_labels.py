from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from agcl.pipeline import load_coarse_labels, remap_labels, run_pipeline
from tests.pipeline._tiny import tiny_cohort, tiny_config


def test_load_accepts_string_and_int_keys(tmp_path):
    p = tmp_path / "m.json"
    p.write_text(json.dumps({"1": 1, "52": 8, "64": 0}))
    assert load_coarse_labels(p) == {1: 1, 52: 8, 64: 0}


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("{}", "empty"),
        ('{"liver": 6}', "a key"),
        ('{"5": "six"}', "value of key '5'"),
        ('{"5": 6.5}', "value of key '5'"),
        ('{"5": true}', "value of key '5'"),
        ('{"-1": 3}', "a key"),
    ],
)
def test_load_errors_name_the_file(tmp_path, text, match):
    p = tmp_path / "bad.json"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        load_coarse_labels(p)
    assert "bad.json" in str(info.value)


def test_remap_translates_and_reports_unmapped_codes():
    lab = np.array([[0, 52, 5], [90, 52, 0]], np.int16)
    out, unmapped = remap_labels(lab, {52: 8, 5: 6, 200: 1})
    np.testing.assert_array_equal(out, [[0, 8, 6], [0, 8, 0]])
    assert unmapped == {90} and out.dtype == np.int16
    _, none = remap_labels(lab, {52: 8, 5: 6, 90: 0})  # an explicit 0 is a mapping, not an omission
    assert none == set()


def test_pipeline_translates_foreign_codes(tmp_path):
    train, test = tiny_cohort(tmp_path / "data")
    # another segmenter's maps: the ground truth with every code shifted by 100, plus a code 7
    # that maps to nothing (it becomes background with a warning)
    coarse = tmp_path / "coarse"
    for case, _ in train + test:
        img = nib.load(case.label_path)
        lab = np.asarray(img.dataobj).astype(np.int16)
        foreign = np.where(lab > 0, lab + 100, 0).astype(np.int16)
        foreign[0, 0, 0] = 7
        folder = coarse / case.modality
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(
            nib.Nifti1Image(foreign, img.affine, img.header), folder / f"{case.case_id}.nii.gz"
        )
    mapping = {100 + k: k for k in range(1, 14)}
    cfg = tiny_config(**{"pretrain.method": "none", "coarse.source": "gt", "segment.epochs": 1})
    with pytest.warns(UserWarning, match=r"codes \[7\]"):
        result = run_pipeline(
            train,
            test,
            cfg,
            tmp_path / "run",
            coarse_dir=coarse,
            coarse_labels=mapping,
            write_predictions=False,
            embed_patches_per_slice=0,
        )
    assert result["coarse_mean"]["dice"] == pytest.approx(1.0, abs=1e-6)  # translated back exactly
    with pytest.raises(ValueError, match="coarse_labels"):
        run_pipeline(train, test, cfg, tmp_path / "run2", coarse_labels=mapping)
