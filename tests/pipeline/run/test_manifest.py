"""run.json's records: what a stage read (cases by content) and why a record no longer matches
(issue 25, "Stale results on resume")."""

from __future__ import annotations

import hashlib
import os
import re
import time

import pytest

from agcl.data import Case
from agcl.pipeline import PipelineConfig
from agcl.pipeline.run import Manifest, case_record, describe_input_changes, file_record
from agcl.pipeline.toolkit.fingerprint import stage_fingerprint


def _case(tmp_path, case_id, content, modality="contrast", folder="a"):
    image = tmp_path / folder / f"img{case_id}.nii.gz"
    label = tmp_path / folder / f"label{case_id}.nii.gz"
    image.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(content)
    label.write_bytes(b"label" + content)
    return Case(case_id, image, label, modality)


def test_file_record_holds_the_absolute_path_size_and_digest(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "scan.nii.gz").write_bytes(b"abc" * 1000)
    record = file_record("scan.nii.gz")
    assert record == {
        "path": str(tmp_path / "scan.nii.gz"),
        "size": 3000,
        "sha256": hashlib.sha256(b"abc" * 1000).hexdigest(),
    }
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "gone.nii.gz"))):
        file_record(tmp_path / "gone.nii.gz")


def test_the_digest_follows_the_content_when_size_and_time_are_kept(tmp_path):
    # a scan replaced by another of the same size with its time stamp kept (cp -p, rsync -a)
    path = tmp_path / "img0001.nii.gz"
    path.write_bytes(b"first patient")
    st = path.stat()
    first = file_record(path)["sha256"]
    time.sleep(0.05)  # a user's copy comes later than the read (file times tick in milliseconds)
    path.write_bytes(b"other patient")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    assert file_record(path)["sha256"] == hashlib.sha256(b"other patient").hexdigest() != first


def test_case_record(tmp_path):
    case = _case(tmp_path, "0001", b"x")
    record = case_record(case)
    assert record["case_id"] == "0001" and record["modality"] == "contrast"
    assert record["image"] == file_record(case.image_path)
    assert record["label"] == file_record(case.label_path)
    assert case_record(Case("0002", case.image_path, None, "contrast"))["label"] is None


def test_input_changes_name_the_case_and_the_file(tmp_path):
    old = [case_record(_case(tmp_path, i, i.encode())) for i in ("0001", "0002")]
    # the same cases in another folder (moved, or a copy): content decides, nothing changed
    moved = [case_record(_case(tmp_path, i, i.encode(), folder="b")) for i in ("0001", "0002")]
    assert describe_input_changes({"cases": old}, {"cases": moved}) == []
    # other scans under the same case ids
    other = [
        case_record(_case(tmp_path, i, b"other" + i.encode(), folder="c")) for i in ("0001", "0002")
    ]
    changes = describe_input_changes({"cases": old}, {"cases": other})
    where = [(o["image"]["path"], o["label"]["path"]) for o in other]
    assert changes == [
        f"cases: contrast/0001 image differs ({where[0][0]}); contrast/0001 label "
        f"differs ({where[0][1]}); contrast/0002 image differs ({where[1][0]}); "
        f"contrast/0002 label differs ({where[1][1]})"
    ]
    # cases added and removed, by modality and id
    third = case_record(_case(tmp_path, "0003", b"3"))
    nce = case_record(_case(tmp_path, "0001", b"n", modality="non-contrast", folder="n"))
    assert describe_input_changes({"cases": old}, {"cases": [old[0], third, nce]}) == [
        "cases: added contrast/0003, non-contrast/0001",
        "cases: removed contrast/0002",
    ]
    # other inputs: a digest, nested records
    assert describe_input_changes(
        {"pretrain": "aa", "attention": {"contrast_0001": "x"}},
        {"pretrain": "bb", "attention": {"contrast_0001": "y"}},
    ) == ["attention.contrast_0001 differs", "pretrain differs"]
    assert describe_input_changes({"attention": "ground truth"}, {}) == ["attention differs"]


def test_long_change_lists_are_cut_with_an_ellipsis(tmp_path):
    many = [case_record(_case(tmp_path, f"{i:04d}", b"x%d" % i)) for i in range(6)]
    (line,) = describe_input_changes({"cases": []}, {"cases": many}, limit=2)
    assert line == "cases: added contrast/0000, contrast/0001 ..."


def test_mismatch_names_settings_and_inputs(tmp_path):
    base = PipelineConfig.quick().override(**{"coarse.epochs": 2})
    cases = [case_record(_case(tmp_path, "0001", b"x"))]
    manifest = Manifest()
    assert manifest.mismatch("coarse", {}, {}) is None  # no record: nothing to compare
    manifest.start("coarse", stage_fingerprint("coarse", base, organ_ids=[1, 6]), {"cases": cases})
    same = stage_fingerprint("coarse", base, organ_ids=[1, 6])
    assert manifest.mismatch("coarse", same, {"cases": cases}) is None
    more = stage_fingerprint("coarse", base.override(**{"coarse.epochs": 4}), organ_ids=[1, 6])
    assert manifest.mismatch("coarse", more, {"cases": cases}) == "coarse.epochs: 2 -> 4"
    other = [case_record(_case(tmp_path, "0001", b"y", folder="o"))]
    organs = stage_fingerprint("coarse", base, organ_ids=[1, 6, 7])
    assert manifest.mismatch("coarse", organs, {"cases": other}) == (
        "organ_ids: [1, 6] -> [1, 6, 7]; cases: contrast/0001 image differs "
        f"({other[0]['image']['path']}); contrast/0001 label differs ({other[0]['label']['path']})"
    )


def test_records_start_finish_drop_and_files():
    manifest = Manifest()
    manifest.start("coarse", {"fields": {"seed": 0}}, {"cases": []})
    assert manifest.stage("coarse")["complete"] is False
    manifest.finish("coarse", {"checkpoints/coarse.pt": {"sha256": "x"}})
    record = manifest.stage("coarse")
    assert record["complete"] is True
    assert record["outputs"] == {"checkpoints/coarse.pt": {"sha256": "x"}}
    record["complete"] = False  # a copy: the manifest is changed only through its methods
    assert manifest.stage("coarse")["complete"] is True
    # continued: the outputs are kept, the stage is no longer complete
    manifest.start("coarse", {"fields": {"seed": 0}}, {"cases": []})
    assert manifest.stage("coarse")["outputs"] and not manifest.stage("coarse")["complete"]
    manifest.set_map("contrast_0001", {"inputs": {}, "files": {}})
    assert manifest.map_record("contrast_0001") == {"inputs": {}, "files": {}}
    manifest.drop(["coarse", "pretrain"])
    manifest.drop_maps()
    assert manifest.stage("coarse") is None and manifest.map_record("contrast_0001") is None
    manifest.own(["a", "b", "a"])
    manifest.own_run("ablation/ce")
    manifest.own_run("ablation/ce")
    assert manifest.data["files"] == ["a", "b"] and manifest.data["runs"] == ["ablation/ce"]
    assert Manifest().run_id != manifest.run_id
