"""``agcl evaluate``: any segmenter's label maps scored with agcl's metrics."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from agcl.cli import main
from agcl.pipeline import results_entry


def _gt_args(test):
    """``--gt MODALITY=DIR`` per modality of the held-out cases (BTCV label folders)."""
    out = []
    for case, _ in test:
        item = f"{case.modality}={case.label_path.parent}"
        if item not in out:
            out += ["--gt", item]
    return out


def test_evaluate_reproduces_the_runs_per_organ_dice(tiny_run, tmp_path):
    run, _, test, result = tiny_run
    # the ground-truth folders also hold the training cases' labels: only predicted cases are scored
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(run / "predictions"),
                *_gt_args(test),
                "--out",
                str(tmp_path / "e"),
                "--organs",
                "spleen",
                "6",
            ]
        )
        == 0
    )  # names or BTCV codes
    got = json.loads((tmp_path / "e" / "results.json").read_text())
    want = results_entry(result, 0.0)
    assert set(got["per_organ"]) == {"spleen", "liver"}
    for organ in ("spleen", "liver"):
        a, b = got["per_organ"][organ]["dice"], want["per_organ"][organ]["dice"]
        assert (a is None and b is None) or a == pytest.approx(b, abs=1e-6)
    assert set(got["cases"]) == {f"{c.modality}_{c.case_id}" for c, _ in test}
    assert set(got["mean"]) == set(want["mean"])
    assert "| liver |" in (tmp_path / "e" / "results.md").read_text()


def test_every_organ_of_the_run(tiny_run, tmp_path):
    run, _, test, result = tiny_run
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(run / "predictions"),
                *_gt_args(test),
                "--out",
                str(tmp_path / "e"),
                "--organs",
                "spleen",
                "liver",
                "stomach",
            ]
        )
        == 0
    )
    got = json.loads((tmp_path / "e" / "results.json").read_text())
    want = results_entry(result, 0.0)
    for organ, row in want["per_organ"].items():
        a = got["per_organ"][organ]["dice"]
        assert (a is None and row["dice"] is None) or a == pytest.approx(row["dice"], abs=1e-6)
        assert got["per_organ"][organ]["missed"] == row["missed"]


def _write(path, array, affine=None):
    nib.save(
        nib.Nifti1Image(np.asarray(array, np.uint8), np.eye(4) if affine is None else affine),
        str(path),
    )
    return path


def test_labels_map_another_segmenters_codes(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[1:4, 1:4, :] = 6  # liver
    lab[5:7, 5:7, :] = 1  # spleen
    _write(gt / "label0001.nii.gz", lab)
    theirs = np.where(lab == 6, 5, np.where(lab == 1, 2, 0))  # their codes: 5 liver, 2 spleen
    theirs[0, 0, 0] = 90  # a structure BTCV has no organ for
    _write(pred / "0001.nii.gz", theirs)
    (tmp_path / "map.json").write_text(json.dumps({"5": 6, "2": 1}))
    with pytest.warns(UserWarning, match=r"\[90\]"):
        assert (
            main(
                [
                    "evaluate",
                    "--pred",
                    str(pred),
                    "--gt",
                    str(gt),
                    "--out",
                    str(tmp_path / "e"),
                    "--labels",
                    str(tmp_path / "map.json"),
                ]
            )
            == 0
        )
    got = json.loads((tmp_path / "e" / "results.json").read_text())
    assert got["per_organ"]["liver"]["dice"] == 1.0 and got["per_organ"]["spleen"]["dice"] == 1.0
    # without the mapping the codes mean other organs: scored as such, not silently dropped
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "f")]) == 0
    )
    got = json.loads((tmp_path / "f" / "results.json").read_text())
    assert got["per_organ"]["liver"]["dice"] == 0.0 and got["per_organ"]["liver"]["missed"] == 1


def test_bad_inputs_are_named(tmp_path, capsys):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    gt.mkdir(), pred.mkdir()
    lab = np.zeros((8, 8, 4), np.uint8)
    lab[1:4, 1:4, :] = 6
    _write(gt / "0001.nii.gz", lab)
    _write(pred / "0001.nii.gz", lab)
    _write(pred / "0002.nii.gz", lab)  # no ground truth
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")]) == 2
    )
    err = capsys.readouterr().err
    assert "0002.nii.gz" in err and "no ground truth" in err
    (pred / "0002.nii.gz").unlink()
    _write(pred / "0001.nii.gz", lab, affine=np.diag([2.0, 1, 1, 1]))  # another grid
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")]) == 2
    )
    assert "not on one grid" in capsys.readouterr().err
    _write(pred / "0001.nii.gz", lab)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--gt",
                str(gt),
                "--out",
                str(tmp_path / "e"),
                "--organs",
                "heart",
            ]
        )
        == 2
    )
    assert "'heart' is no BTCV organ" in capsys.readouterr().err
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(pred),
                "--gt",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "e"),
            ]
        )
        == 2
    )
    assert "is not a folder" in capsys.readouterr().err
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")]) == 0
    )
    assert (
        main(["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(tmp_path / "e")]) == 2
    )
    assert "--overwrite" in capsys.readouterr().err
