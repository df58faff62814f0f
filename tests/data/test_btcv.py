"""BTCV discovery, datalists, organ constants and checked case loading."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from agcl.data import (
    BTCV_ORGAN_CODES,
    BTCV_ORGAN_NAMES,
    BTCV_ORGANS,
    Case,
    check_label_codes,
    discover_btcv,
    load_case,
    load_datalist,
)


def _layout(root, ids=("0001", "0002"), labels=True, shape=(4, 4, 3), aff=None):
    aff = np.diag([-1.0, -1.0, 2.0, 1.0]) if aff is None else aff
    tr = root / "RawData" / "Training"
    (tr / "img").mkdir(parents=True)
    (tr / "label").mkdir()
    for i in ids:
        nib.save(
            nib.Nifti1Image(np.zeros(shape, np.int16), aff), str(tr / "img" / f"img{i}.nii.gz")
        )
        if labels:
            lab = np.zeros(shape, np.uint8)
            lab[0, 0, 0] = 6
            nib.save(nib.Nifti1Image(lab, aff), str(tr / "label" / f"label{i}.nii.gz"))
    return tr


def test_organ_constants():
    assert (
        len(BTCV_ORGANS) == 13
        and BTCV_ORGANS[1] == "spleen"
        and BTCV_ORGANS[13] == "left adrenal gland"
    )
    assert BTCV_ORGAN_NAMES[5] == "liver" and BTCV_ORGAN_CODES["inferior vena cava"] == 9


@pytest.mark.parametrize("sub", ["", "RawData", "RawData/Training"])
def test_discover_accepts_any_level(tmp_path, sub):
    tr = _layout(tmp_path)
    cases = discover_btcv(tmp_path / sub if sub else tmp_path, modality="non-contrast")
    assert [c.case_id for c in cases] == ["0001", "0002"]
    assert cases[0].image_path == tr / "img" / "img0001.nii.gz"
    assert cases[1].label_path == tr / "label" / "label0002.nii.gz"
    assert cases[0].modality == "non-contrast"


def test_missing_label_file_names_the_path(tmp_path):
    tr = _layout(tmp_path)
    (tr / "label" / "label0002.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="label0002.nii.gz"):
        discover_btcv(tmp_path)
    cases = discover_btcv(tmp_path, require_labels=False)
    assert cases[1].label_path is None and cases[0].label_path is not None


def test_no_layout_or_no_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BTCV layout"):
        discover_btcv(tmp_path)
    (tmp_path / "img").mkdir()
    with pytest.raises(FileNotFoundError, match="no img"):
        discover_btcv(tmp_path)


def test_datalist_resolves_relative_paths(tmp_path):
    tr = _layout(tmp_path)
    dl = {
        "training": [
            {
                "image": "RawData/Training/img/img0001.nii.gz",
                "label": "RawData/Training/label/label0001.nii.gz",
            }
        ],
        "validation": [str(tr / "img" / "img0002.nii.gz")],
    }
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    train = load_datalist(tmp_path / "dl.json")
    assert train == [
        Case("img0001", tr / "img" / "img0001.nii.gz", tr / "label" / "label0001.nii.gz")
    ]
    val = load_datalist(tmp_path / "dl.json", "validation", modality="non-contrast")
    assert val[0].label_path is None and val[0].modality == "non-contrast"
    with pytest.raises(ValueError, match=r"split 'test'.*\['training', 'validation'\]"):
        load_datalist(tmp_path / "dl.json", "test")


def test_datalist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="dl.json"):
        load_datalist(tmp_path / "dl.json")
    (tmp_path / "dl.json").write_text(json.dumps({"training": [{"image": "missing.nii.gz"}]}))
    with pytest.raises(FileNotFoundError, match="missing.nii.gz"):
        load_datalist(tmp_path / "dl.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_datalist(tmp_path / "bad.json")


def test_load_case_checks_grids(tmp_path):
    tr = _layout(tmp_path)
    image, label = load_case(discover_btcv(tmp_path)[0])
    assert label is not None and label.array.dtype == np.int16
    # LPS file, RAS arrays: the stored voxel [0, 0, 0] is canonical [3, 3, 0]
    assert label.array[3, 3, 0] == 6 and image.shape == label.shape
    lp = tr / "label" / "label0002.nii.gz"
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 2), np.uint8), np.diag([-1.0, -1.0, 2.0, 1.0])), str(lp)
    )
    with pytest.raises(ValueError, match=r"label0002.*shape \(4, 4, 2\).*\(4, 4, 3\)"):
        load_case(discover_btcv(tmp_path)[1])
    nib.save(
        nib.Nifti1Image(np.zeros((4, 4, 3), np.uint8), np.diag([-1.0, -1.0, 3.0, 1.0])), str(lp)
    )
    with pytest.raises(ValueError, match="label0002.*affines differ"):
        load_case(discover_btcv(tmp_path)[1])


def test_unlabelled_case_loads_image_only(tmp_path):
    tr = _layout(tmp_path, labels=False)
    image, label = load_case(Case("0001", tr / "img" / "img0001.nii.gz"))
    assert label is None and image.shape == (4, 4, 3)


def test_stray_label_codes_error_by_default_or_warn(tmp_path):
    lab = np.array([0, 1, 14, 13, 99])
    with pytest.raises(ValueError, match=r"lab.nii.gz holds codes \[14, 99\]"):
        check_label_codes(lab, path="lab.nii.gz")
    with pytest.warns(UserWarning, match=r"\[14, 99\]"):
        out = check_label_codes(lab, unknown_labels="warn")
    assert out.tolist() == [0, 1, 0, 13, 0] and lab.tolist() == [0, 1, 14, 13, 99]
    assert check_label_codes(np.array([0, 2]), organs={2: "x"}).tolist() == [0, 2]
    with pytest.raises(ValueError, match="unknown_labels"):
        check_label_codes(lab, unknown_labels="ignore")  # type: ignore[arg-type]
