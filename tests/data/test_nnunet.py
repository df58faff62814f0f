"""nnU-Net raw layout: recognition, discovery, organ-name matching and code translation."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from agcl.data import (
    BTCV_ORGANS,
    Case,
    btcv_code_of,
    discover_btcv,
    discover_nnunet,
    is_nnunet_dataset,
    load_case,
    nnunet_label_map,
)
from agcl.data.synthetic import write_btcv_like, write_nnunet_like

SHAPE = (24, 24, 8)
SPACING = (14.7, 14.7, 25.0)  # the phantom's ~350 x 350 x 200 mm field of view on a tiny grid


def _nnunet(root, n=2, **kw):
    kw.setdefault("shape", SHAPE)
    kw.setdefault("spacing", SPACING)
    return write_nnunet_like(root, n, **kw)


def _edit_json(ds: Path, **changes):
    content = json.loads((ds / "dataset.json").read_text())
    content.update(changes)
    (ds / "dataset.json").write_text(json.dumps(content))


def _quiet_discover(*args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return discover_nnunet(*args, **kw)


# --- name matching ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, code",
    [
        # BTCV's own names, nnU-Net's Task017 wording, TotalSegmentator's and AMOS's spellings
        *[(name, code) for code, name in BTCV_ORGANS.items()],
        ("portal vein and splenic vein", 10),
        ("portal_vein_and_splenic_vein", 10),
        ("Portal and splenic veins", 10),
        ("inferior_vena_cava", 9),
        ("IVC", 9),
        ("postcava", 9),
        ("kidney_right", 2),
        ("Kidney (L)", 3),
        ("RT kidney", 2),
        ("adrenal_gland_left", 13),
        ("Adrenal gland right", 12),
        ("left suprarenal gland", 13),
        ("right adrenal", 12),
        ("gall_bladder", 4),
        ("Gall Bladder", 4),
        ("oesophagus", 5),
        ("arota", 8),
        ("Abdominal-Aorta", 8),
        ("LIVER", 6),
    ],
)
def test_btcv_code_of_matches_names(name, code):
    assert btcv_code_of(name) == code


@pytest.mark.parametrize(
    "name",
    [
        "kidney",  # a paired organ without a side
        "left right kidney",
        "left liver",
        "duodenum",
        "bladder",
        "urinary bladder",
        "portal vein",
        "splenic vein",
        "liver tumor",
        "prostate/uterus",
        "background",
        "",
    ],
)
def test_btcv_code_of_refuses_other_structures(name):
    assert btcv_code_of(name) is None


def test_btcv_code_of_type():
    with pytest.raises(TypeError, match="name must be a label name string"):
        btcv_code_of(6)


def test_label_map_v2_names_and_override(tmp_path):
    labels = {"background": 0, "Liver": 1, "kidney_left": 2, "duodenum": 3, "gall bladder": 4}
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert nnunet_label_map(tmp_path) == ({1: 6, 2: 3, 3: 0, 4: 4}, ["duodenum"])
    # an override by code replaces the match, a string key as in JSON files
    assert nnunet_label_map(tmp_path, labels={"3": 7, 4: 0}) == ({1: 6, 2: 3, 3: 7, 4: 0}, [])
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"3": 7}))
    assert nnunet_label_map(tmp_path, labels=mapping) == ({1: 6, 2: 3, 3: 7, 4: 4}, [])
    assert nnunet_label_map(tmp_path, labels=str(mapping))[0][3] == 7


def test_label_map_v1_code_to_name(tmp_path):
    labels = {
        "00": "background",
        "01": "spleen",
        "02": "right kidney",
        "08": "arota",
        "13": "duodenum",
    }
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    assert nnunet_label_map(tmp_path) == ({1: 1, 2: 2, 8: 8, 13: 0}, ["duodenum"])


@pytest.mark.parametrize(
    "labels, match",
    [
        ({"background": 0, "liver": "1"}, "label 'liver' .* must have a non-negative integer code"),
        ({"background": 0, "liver": -1}, "non-negative integer code"),
        ({"background": 0, "liver": True}, "non-negative integer code"),
        ({"background": 0, "tumour": [1, 2]}, "region-based"),
        ({"0": "background", "x": "liver"}, "key 'x' is not a non-negative integer code"),
        ({"0": "background", "1": "liver", "2": "liver"}, "names 'liver' twice"),
        ({"background": 0, "liver": 1, "Liver": 1}, "gives code 1 to both 'liver' and 'Liver'"),
        ({}, "non-empty object"),
        (["liver"], "non-empty object"),
        (
            {"background": 0, "liver": 1, "hepar": 2, "Liver ": 3},
            "several labels .* match one BTCV organ",
        ),
        ({"background": 0, "liver": 1, "ignore": 2}, r"ignore label \(code 2"),
    ],
)
def test_label_map_bad_labels(tmp_path, labels, match):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": labels}))
    with pytest.raises(ValueError, match=match):
        nnunet_label_map(tmp_path)


def test_label_map_one_code_region_and_ignore_override(tmp_path):
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "liver": [1], "ignore": 2}})
    )
    assert nnunet_label_map(tmp_path, labels={2: 0}) == ({1: 6, 2: 0}, [])


@pytest.mark.parametrize(
    "labels, err, match",
    [
        ({9: 6}, ValueError, r"maps codes \[9\] that .* does not declare"),
        ({1: 14}, ValueError, "must be a BTCV organ code 1-13 or 0"),
        ({1: -1}, ValueError, "must be a BTCV organ code"),
        ({0: 6}, ValueError, "key 0 must be a positive integer label code"),
        ({"liver": 6}, ValueError, "key 'liver' must be a positive integer label code"),
        ([(1, 6)], TypeError, "labels must be a mapping"),
    ],
)
def test_label_map_bad_override(tmp_path, labels, err, match):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    with pytest.raises(err, match=match):
        nnunet_label_map(tmp_path, labels=labels)


def test_label_map_bad_override_file(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}}))
    with pytest.raises(
        FileNotFoundError, match="no label mapping .*nope.json: the file does not exist"
    ):
        nnunet_label_map(tmp_path, labels=tmp_path / "nope.json")
    (tmp_path / "map.json").write_text("{1: 6")
    with pytest.raises(ValueError, match="map.json is not valid JSON"):
        nnunet_label_map(tmp_path, labels=tmp_path / "map.json")
    (tmp_path / "map.json").write_text("[1, 6]")
    with pytest.raises(ValueError, match="map.json must hold a JSON object"):
        nnunet_label_map(tmp_path, labels=tmp_path / "map.json")


# --- dataset.json and recognition ------------------------------------------------------------


@pytest.mark.parametrize(
    "text, match",
    [
        ("{not json", "dataset.json is not valid JSON"),
        ("[1, 2]", "dataset.json must hold a JSON object"),
        ('{"channel_names": {"0": "CT"}}', "dataset.json has no 'labels' entry"),
    ],
)
def test_malformed_dataset_json_names_the_path(tmp_path, text, match):
    ds = _nnunet(tmp_path, 1)
    (ds / "dataset.json").write_text(text)
    assert is_nnunet_dataset(ds)  # recognised by the file's presence; discovery says what is wrong
    with pytest.raises(ValueError, match=match) as info:
        discover_nnunet(ds)
    assert str(ds / "dataset.json") in str(info.value)


def test_recognition(tmp_path, monkeypatch):
    ds = _nnunet(tmp_path, 1)
    assert (
        is_nnunet_dataset(ds)
        and is_nnunet_dataset(str(ds))
        and is_nnunet_dataset(ds / "dataset.json")
    )
    btcv = write_btcv_like(
        tmp_path / "btcv", 1, modalities=("contrast",), shape=SHAPE, spacing=SPACING
    )
    btcv_root = btcv["contrast"][0].image_path.parents[3]
    assert (btcv_root / "dataset.json").is_file() and not is_nnunet_dataset(btcv_root)
    assert not is_nnunet_dataset(tmp_path / "missing") and not is_nnunet_dataset(ds / "imagesTr")
    # a bare dataset name resolves under $nnUNet_raw, as nnU-Net's own commands do
    monkeypatch.chdir(tmp_path / "btcv")
    assert not is_nnunet_dataset(ds.name)
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    assert is_nnunet_dataset(ds.name)
    assert [c.case_id for c in _quiet_discover(ds.name)] == ["phantoms_001"]
    with pytest.raises(
        FileNotFoundError, match=r"no nnU-Net dataset folder at Dataset002_X \(nor under"
    ):
        discover_nnunet("Dataset002_X")


# --- discovery and loading -------------------------------------------------------------------


def test_round_trip_matches_btcv_layout(tmp_path):
    """Phantoms in nnU-Net layout load with the same arrays and BTCV codes as in BTCV layout,
    also when the dataset numbers its organs differently and names them its own way."""
    btcv = write_btcv_like(
        tmp_path / "btcv", 2, modalities=("non-contrast",), seed=5, shape=SHAPE, spacing=SPACING
    )["non-contrast"]
    reverse = {c: 14 - c for c in BTCV_ORGANS}  # spleen 13, ..., left adrenal 1
    names = {
        2: "kidney_right",
        3: "Kidney (L)",
        9: "inferior_vena_cava",
        10: "portal_vein_and_splenic_vein",
        12: "adrenal_gland_right",
        13: "adrenal gland left",
        4: "gall bladder",
    }
    for version in (1, 2):
        ds = _nnunet(
            tmp_path / f"v{version}",
            2,
            modality="non-contrast",
            seed=5,
            codes=reverse,
            names=names,
            version=version,
            dataset_id=17,
            name="Abdomen",
        )
        assert ds.name == ("Dataset017_Abdomen" if version == 2 else "Task017_Abdomen")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every organ matched: no warning at all
            cases = discover_nnunet(ds, modality="non-contrast")
        assert [c.case_id for c in cases] == ["abdomen_001", "abdomen_002"]
        assert cases[0].code_map == reverse and cases[0].modality == "non-contrast"
        raw = np.asarray(nib.load(cases[0].label_path).dataobj)
        ref_raw = np.asarray(nib.load(btcv[0].label_path).dataobj)
        assert np.array_equal(raw > 0, ref_raw > 0) and np.array_equal(
            raw[raw > 0], 14 - ref_raw[raw > 0]
        )
        for ours, theirs in zip(cases, btcv):
            image, label = load_case(ours)
            ref_image, ref_label = load_case(theirs)
            assert np.array_equal(image.array, ref_image.array)
            assert np.array_equal(image.affine, ref_image.affine)
            assert np.array_equal(label.array, ref_label.array)  # translated back to BTCV codes


def test_file_codes_differ_from_btcv(tmp_path):
    # the file really holds other codes, so the translation is what makes the round trip work
    ds = _nnunet(tmp_path, 1, codes={6: 1, 1: 2}, names={6: "liver", 1: "spleen"})
    case = _quiet_discover(ds)[0]
    raw = np.asarray(nib.load(case.label_path).dataobj)
    assert set(np.unique(raw)) == {0, 1, 2}
    _, label = load_case(case)
    assert np.array_equal(label.array == 6, np.asarray(raw[::-1, ::-1]) == 1)
    assert np.array_equal(label.array == 1, np.asarray(raw[::-1, ::-1]) == 2)
    # the same file read without the map: the liver would train as spleen
    _, plain = load_case(Case(case.case_id, case.image_path, case.label_path))
    assert np.array_equal(plain.array == 1, label.array == 6) and not (plain.array == 6).any()


def test_unmapped_names_warned_listed_and_background(tmp_path):
    codes = {c: c for c in BTCV_ORGANS}
    ds = _nnunet(tmp_path, 1, codes=codes, names={7: "duodenum", 11: "pancreatic tumour"})
    with pytest.warns(UserWarning) as record:
        cases = discover_nnunet(ds)
    msg = " ".join(str(w.message) for w in record)
    assert "'duodenum' (7)" in msg and "'pancreatic tumour' (11)" in msg and "background 0" in msg
    assert "['stomach', 'pancreas']" in msg  # the BTCV organs no label matches
    _, label = load_case(cases[0])
    assert not np.isin(label.array, [7, 11]).any() and (label.array == 6).any()
    # the user's mapping maps them, and the warning goes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mapped = discover_nnunet(ds, labels={7: 7, 11: 11})
    _, label = load_case(mapped[0])
    assert (label.array == 7).any() and (label.array == 11).any()


def test_organs_missing_from_dataset_warned(tmp_path):
    ds = _nnunet(tmp_path, 1, codes={6: 1, 1: 2})
    with pytest.warns(UserWarning, match=r"no label matches the BTCV organs \['right kidney'"):
        discover_nnunet(ds)


def test_stray_code_in_label_file(tmp_path):
    ds = _nnunet(tmp_path, 1, codes={6: 1, 1: 2})
    case = _quiet_discover(ds)[0]
    img = nib.load(case.label_path)
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 9  # not declared in dataset.json
    nib.save(nib.Nifti1Image(arr, img.affine), str(case.label_path))
    with pytest.raises(ValueError, match=r"phantoms_001.nii.gz holds codes \[9\]"):
        load_case(case)
    with pytest.warns(UserWarning, match=r"codes \[9\]"):
        _, label = load_case(case, unknown_labels="warn")
    assert set(np.unique(label.array)) == {0, 1, 6}


def test_code_map_to_a_code_outside_organs(tmp_path):
    ds = _nnunet(tmp_path, 1, codes={6: 1})
    case = _quiet_discover(ds)[0]
    with pytest.raises(
        ValueError, match=r"holds codes \[6\] outside the declared organ set \[1, 2\]"
    ):
        load_case(case, organs={1: "spleen", 2: "right kidney"})


def test_case_code_map_validation(tmp_path):
    c = Case("a", tmp_path / "a.nii.gz", code_map={"3": np.int64(6)})
    assert c.code_map == {3: 6} and Case("a", tmp_path / "a.nii.gz") == Case(
        "a", tmp_path / "a.nii.gz"
    )
    hash(c)  # a frozen case stays hashable with a map
    source = {3: 6}
    c = Case("a", tmp_path / "a.nii.gz", code_map=source)
    source[3] = 1
    assert c.code_map == {3: 6}  # a private copy
    with pytest.raises(TypeError, match="code_map must be a mapping"):
        Case("a", tmp_path / "a.nii.gz", code_map=[(3, 6)])
    for bad in ({0: 6}, {-1: 6}, {3: -6}, {"x": 6}, {3: 1.5}):
        with pytest.raises(ValueError, match="code_map of case 'a'"):
            Case("a", tmp_path / "a.nii.gz", code_map=bad)


def test_test_split(tmp_path):
    ds = _nnunet(tmp_path, 1, n_test=2)
    cases = discover_nnunet(ds, split="test", modality="non-contrast")
    assert [(c.case_id, c.label_path, c.modality) for c in cases] == [
        ("phantoms_002", None, "non-contrast"),
        ("phantoms_003", None, "non-contrast"),
    ]
    image, label = load_case(cases[0])
    assert label is None and image.shape == SHAPE
    with pytest.raises(FileNotFoundError, match="no imagesTs/ folder at"):
        discover_nnunet(_nnunet(tmp_path / "b", 1), split="test")
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'; got 'val'"):
        discover_nnunet(ds, split="val")


def test_btcv_and_nnunet_layouts_share_subjects(tmp_path):
    ds = _nnunet(tmp_path / "n", 1, n_test=1, seed=2)
    btcv = discover_btcv(
        write_btcv_like(
            tmp_path / "b", 2, modalities=("contrast",), seed=2, shape=SHAPE, spacing=SPACING
        )["contrast"][0].image_path.parents[2]
    )
    test_image, _ = load_case(discover_nnunet(ds, split="test")[0])
    assert np.array_equal(test_image.array, load_case(btcv[1])[0].array)  # subject 2


# --- bad layouts -----------------------------------------------------------------------------


def test_missing_label_and_orphan_label(tmp_path):
    ds = _nnunet(tmp_path, 2)
    (ds / "labelsTr" / "phantoms_002.nii.gz").rename(tmp_path / "moved.nii.gz")
    with pytest.raises(
        FileNotFoundError, match=r"missing label file .*labelsTr/phantoms_002.nii.gz for image"
    ):
        _quiet_discover(ds)
    (tmp_path / "moved.nii.gz").rename(ds / "labelsTr" / "phantoms_002.nii.gz")
    (ds / "imagesTr" / "phantoms_002_0000.nii.gz").unlink()
    with pytest.raises(
        FileNotFoundError,
        match=r"label file .*phantoms_002.nii.gz has no image "
        r".*imagesTr/phantoms_002_0000.nii.gz",
    ):
        _quiet_discover(ds)


def test_missing_ct_channel_and_extra_channels(tmp_path):
    ds = _nnunet(tmp_path, 2)
    first = ds / "imagesTr" / "phantoms_001_0000.nii.gz"
    first.rename(ds / "imagesTr" / "phantoms_001_0001.nii.gz")
    with pytest.raises(
        FileNotFoundError, match=r"case 'phantoms_001' has no CT channel .*phantoms_001_0000"
    ):
        _quiet_discover(ds)
    (ds / "imagesTr" / "phantoms_001_0001.nii.gz").rename(first)
    (ds / "imagesTr" / "phantoms_002_0001.nii.gz").write_bytes(first.read_bytes())
    with pytest.raises(
        ValueError,
        match=r"input channels other than _0000 \(phantoms_002_0001.nii.gz\); "
        "agcl reads single-channel CT",
    ):
        _quiet_discover(ds)


def test_declared_channels(tmp_path):
    ds = _nnunet(tmp_path, 1)
    _edit_json(ds, channel_names={"0": "CT", "1": "PET"})
    with pytest.raises(
        ValueError, match="declares input channels .*'1': 'PET'.* single-channel CT"
    ):
        _quiet_discover(ds)
    _edit_json(ds, channel_names={"0": "nonCT"})  # AbdomenAtlas names its CT channel so
    with pytest.warns(UserWarning, match="names channel 0 'nonCT'; agcl reads it as CT"):
        discover_nnunet(ds)
    _edit_json(ds, channel_names=["CT"])
    with pytest.raises(ValueError, match="'channel_names' of .* must be an object"):
        _quiet_discover(ds)


def test_file_ending_and_names(tmp_path):
    ds = _nnunet(tmp_path, 1)
    _edit_json(ds, file_ending=".png")
    with pytest.raises(
        ValueError, match=r"file_ending '.png' of .*dataset.json: agcl reads NIfTI only"
    ):
        _quiet_discover(ds)
    _edit_json(ds, file_ending=".nii")
    with pytest.raises(
        ValueError,
        match=r"phantoms_001_0000.nii.gz does not end with the dataset's file_ending '.nii'",
    ):
        _quiet_discover(ds)
    _edit_json(ds, file_ending=".nii.gz")
    (ds / "imagesTr" / "phantoms_001_0000.nii.gz").rename(ds / "imagesTr" / "la_003.nii.gz")
    with pytest.raises(
        ValueError, match=r"la_003.nii.gz is not named <case>_<XXXX>.nii.gz .*Decathlon"
    ):
        _quiet_discover(ds)


def test_ignored_files_and_empty_folders(tmp_path):
    ds = _nnunet(tmp_path, 1)
    (ds / "imagesTr" / "._phantoms_001_0000.nii.gz").write_bytes(b"resource fork")
    (ds / "imagesTr" / "phantoms_001.json").write_text(
        "{}"
    )  # a sidecar, as nnU-Net's TIFF reader wants
    (ds / "labelsTr" / ".DS_Store").write_bytes(b"")
    assert [c.case_id for c in _quiet_discover(ds)] == ["phantoms_001"]
    for p in (ds / "imagesTr").iterdir():
        p.unlink()
    with pytest.raises(FileNotFoundError, match=r"no <case>_0000.nii.gz images in .*imagesTr"):
        _quiet_discover(ds)
    (ds / "imagesTr").rmdir()
    with pytest.raises(FileNotFoundError, match="no imagesTr/ folder at"):
        _quiet_discover(ds)


def test_missing_folders_and_json(tmp_path):
    ds = _nnunet(tmp_path, 1)
    for p in (ds / "labelsTr").iterdir():
        p.unlink()
    (ds / "labelsTr").rmdir()
    with pytest.raises(
        FileNotFoundError, match="no labelsTr/ folder at .*: the training cases need labels"
    ):
        _quiet_discover(ds)
    (ds / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="no dataset.json in"):
        discover_nnunet(ds)
    with pytest.raises(FileNotFoundError, match="no nnU-Net dataset folder at"):
        discover_nnunet(tmp_path / "nowhere")


def test_num_training_mismatch_warns(tmp_path):
    ds = _nnunet(tmp_path, 2)
    _edit_json(ds, numTraining=3)
    with pytest.warns(UserWarning, match=r"numTraining 3 but .*imagesTr holds 2 cases"):
        assert len(discover_nnunet(ds)) == 2


# --- the writer ------------------------------------------------------------------------------


def test_writer_dataset_json(tmp_path):
    v2 = json.loads((_nnunet(tmp_path / "a", 2, n_test=1) / "dataset.json").read_text())
    assert (
        v2["channel_names"] == {"0": "CT"}
        and v2["file_ending"] == ".nii.gz"
        and v2["numTraining"] == 2
    )
    assert v2["labels"] == {"background": 0, **{name: code for code, name in BTCV_ORGANS.items()}}
    ds1 = _nnunet(tmp_path / "b", 2, n_test=1, version=1, codes={6: 2, 1: 1})
    v1 = json.loads((ds1 / "dataset.json").read_text())
    assert v1["modality"] == {"0": "CT"} and v1["labels"] == {
        "0": "background",
        "1": "spleen",
        "2": "liver",
    }
    assert v1["training"][1] == {
        "image": "./imagesTr/phantoms_002.nii.gz",
        "label": "./labelsTr/phantoms_002.nii.gz",
    }
    assert v1["test"] == ["./imagesTs/phantoms_003.nii.gz"] and v1["numTest"] == 1
    assert (
        not (ds1 / "labelsTs").exists()
        and (ds1 / "imagesTs" / "phantoms_003_0000.nii.gz").is_file()
    )


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"n_cases": 0}, "n_cases must be an integer >= 1"),
        ({"n_test": -1}, "n_test must be an integer >= 0"),
        ({"modality": "mri"}, "modality must be one of"),
        ({"version": 3}, "version must be 1 or 2"),
        ({"dataset_id": 1000}, "dataset_id must be an integer 0-999"),
        ({"name": "a/b"}, "name must be a plain folder name"),
        ({"codes": {14: 1}}, "codes must map BTCV organ codes"),
        ({"codes": {1: 1, 2: 1}}, "codes must map BTCV organ codes to distinct codes"),
        ({"codes": {1: 256}}, "codes must map BTCV organ codes to distinct codes 1-255"),
        ({"codes": {1: 1}, "names": {2: "kidney"}}, "names must give distinct non-empty names"),
        ({"names": {1: "liver"}}, "names must give distinct"),
        ({"names": {1: " "}}, "names must give distinct non-empty names"),
    ],
)
def test_writer_bad_arguments(tmp_path, kw, match):
    kw = {"n_cases": 1, **kw}
    with pytest.raises(ValueError, match=match):
        write_nnunet_like(tmp_path, kw.pop("n_cases"), shape=SHAPE, **kw)
