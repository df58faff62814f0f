"""``agcl predict`` and ``predict_volume``: a finished run applied to new scans, bounded by the
body."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from agcl.cli import main
from agcl.data import body_mask, load_volume
from agcl.pipeline import TrainedRun, load_run, predict_volume
from tests.pipeline._tiny import tiny_config


def test_predict_reproduces_the_runs_prediction_with_the_scans_header(tiny_run, tmp_path, capsys):
    run, _, test, result = tiny_run
    case = test[0][0]
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(case.image_path),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 0
    )
    out = tmp_path / "p" / "img0002.nii.gz"  # named after the input's case id
    saved, ref = nib.load(out), nib.load(case.image_path)
    np.testing.assert_allclose(saved.affine, ref.affine)
    assert saved.shape == ref.shape
    # the same scan through the same run and body bound: exactly the run's own held-out prediction
    want = load_volume(result["predictions"][0], kind="label").array
    np.testing.assert_array_equal(load_volume(out, kind="label").array, want)
    report = json.loads((tmp_path / "p" / "img0002.json").read_text())
    assert report["case"] == "img0002" and set(report["organs"]) == {"spleen", "liver", "stomach"}
    for organ in report["organs"].values():
        assert organ["attention"] in ("threshold", "fallback", "none")
        assert organ["voxels"] >= 0 and organ["attention_voxels"] >= organ["voxels"] >= 0
    assert report["body_voxels"] > 0 and isinstance(report["warnings"], list)
    # again into the same folder: refused without --overwrite (nothing replaced), accepted with it
    before = out.stat().st_mtime_ns
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(case.image_path),
                "--out",
                str(tmp_path / "p"),
            ]
        )
        == 2
    )
    assert "--overwrite" in capsys.readouterr().err and out.stat().st_mtime_ns == before
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(case.image_path),
                "--out",
                str(tmp_path / "p"),
                "--overwrite",
            ]
        )
        == 0
    )


def test_a_folder_in_nnunet_layout_reads_channel_0000_only(tiny_run, tmp_path):
    run, _, test, _ = tiny_run
    folder = tmp_path / "imagesTs"
    folder.mkdir()
    for case, _ in test:
        shutil.copy(case.image_path, folder / f"{case.modality}_{case.case_id}_0000.nii.gz")
    shutil.copy(
        test[0][0].image_path, folder / "contrast_0002_0001.nii.gz"
    )  # another channel: not read
    assert (
        main(["predict", "--run", str(run), "--input", str(folder), "--out", str(tmp_path / "p")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "contrast_0002.json",
        "contrast_0002.nii.gz",
        "non-contrast_0002.json",
        "non-contrast_0002.nii.gz",
    ]


def test_unfinished_runs_and_bad_inputs_are_refused(tiny_run, tmp_path, capsys):
    run, _, test, _ = tiny_run
    case = str(test[0][0].image_path)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    manifest = json.loads((copy / "run.json").read_text())
    manifest["stages"]["segment"]["complete"] = False
    (copy / "run.json").write_text(json.dumps(manifest))
    assert main(["predict", "--run", str(copy), "--input", case, "--out", str(tmp_path / "a")]) == 2
    assert "unfinished: stage 3" in capsys.readouterr().err
    assert (
        main(["predict", "--run", str(tmp_path), "--input", case, "--out", str(tmp_path / "b")])
        == 2
    )
    assert "not an agcl run folder" in capsys.readouterr().err
    note = tmp_path / "notes.txt"
    note.write_text("not a scan")
    assert (
        main(["predict", "--run", str(run), "--input", str(note), "--out", str(tmp_path / "c")])
        == 2
    )
    assert "is not a NIfTI file" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                str(tmp_path / "nothing.nii.gz"),
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--run",
                str(run),
                "--input",
                case,
                "--out",
                str(tmp_path / "e"),
                "--device",
                "bogus",
            ]
        )
        == 2
    )
    assert "--device" in capsys.readouterr().err


class _Everywhere(nn.Module):
    """A stand-in stage 1: organ 1 is certain in every voxel (arms and table included)."""

    def forward(self, x):
        out = torch.zeros(x.shape[0], 2, *x.shape[2:])
        out[:, 1] = 8.0
        return out


class _Attended(nn.Module):
    """A stand-in stage 3: foreground wherever the attention channel is on."""

    def forward(self, x):
        fg = torch.where(x[:, 1:2] > 0, 8.0, -8.0)
        return torch.cat([torch.zeros_like(fg), fg], 1)


def _scan_with_arms_and_table():
    hu = np.full((48, 48, 12), -1000.0, np.float32)
    xx, yy = np.meshgrid(np.arange(48), np.arange(48), indexing="ij")
    hu[((xx - 24) / 14) ** 2 + ((yy - 22) / 11) ** 2 <= 1] = 40.0  # the trunk
    hu[((xx - 4) / 3) ** 2 + ((yy - 22) / 3) ** 2 <= 1] = 60.0  # a right arm, air in between
    hu[((xx - 44) / 3) ** 2 + ((yy - 22) / 3) ** 2 <= 1] = 60.0  # a left arm
    hu[:, 40:43] = 200.0  # the table, below the trunk
    return hu


def test_nothing_is_predicted_or_attended_outside_the_body():
    cfg = tiny_config(**{"organs": (1,), "coarse.margin_mm": 0.0, "segment.coarse_weight": 0.0})
    run = TrainedRun(
        _Attended(), [1], cfg, coarse_model=_Everywhere(), coarse_ids=[1], coarse_config=cfg.coarse
    )
    hu, spacing = _scan_with_arms_and_table(), (7.3, 7.3, 16.0)
    body = body_mask(hu, spacing=spacing)
    assert (
        body.sum() > 0 and not body[:8].any() and not body[:, 40:].any()
    )  # arms and table are not body
    pred = predict_volume(hu, spacing=spacing, run=run, return_intermediates=True)
    assert pred.labels.any() and not pred.labels[~body].any()
    box, mask = pred.attention[1]
    full = np.zeros(hu.shape, bool)
    full[box] = mask
    assert full.any() and not full[~body].any()
    assert np.array_equal(pred.body, body) and pred.sources == {1: "threshold"}
    # the bound is what keeps them out: without it the arms and the table are "organ 1"
    free = predict_volume(hu, spacing=spacing, run=run, body_mask=False)
    assert free[~body].any()


def test_the_fallback_and_absent_organs_are_reported():
    class Faint(nn.Module):  # organ 1 never reaches the threshold: its most probable region is used
        def forward(self, x):
            out = torch.zeros(x.shape[0], 2, *x.shape[2:])
            out[:, 0] = 6.0
            out[:, 1] = 3.0 * (x[:, 0] > 0.5)
            return out

    cfg = tiny_config(**{"organs": (1,)})
    run = TrainedRun(
        _Attended(), [1], cfg, coarse_model=Faint(), coarse_ids=[1], coarse_config=cfg.coarse
    )
    pred = predict_volume(
        _scan_with_arms_and_table(), spacing=(7.3, 7.3, 16.0), run=run, return_intermediates=True
    )
    assert pred.sources == {1: "fallback"}
    assert any("may be absent" in w for w in pred.warnings)
    report = pred.report({1: "spleen"}, (7.3, 7.3, 16.0))
    assert report["organs"]["spleen"]["attention"] == "fallback"
    assert report["organs"]["spleen"]["voxels"] == int((pred.labels == 1).sum())


def test_load_run_and_predict_volume_arguments(tiny_run, tmp_path):
    run, _, test, _ = tiny_run
    loaded = load_run(run)
    assert loaded.coarse_model is not None and loaded.organ_ids == [1, 6, 7]
    with pytest.raises(ValueError, match="either run"):
        predict_volume(np.zeros((4, 4, 4)), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="either run"):
        predict_volume(
            np.zeros((4, 4, 4)),
            spacing=(1, 1, 1),
            run=loaded,
            segment_checkpoint=run / "checkpoints" / "segment.pt",
        )
    with pytest.raises(FileNotFoundError, match="not an agcl run folder"):
        load_run(tmp_path)


def test_case_numbers_are_not_taken_for_channels(tiny_run, tmp_path):
    """``case_0001.nii.gz, case_0002.nii.gz`` are two cases (not channels 1 and 2 of ``case``):
    both are predicted, under their own names."""
    run, _, test, _ = tiny_run
    folder = tmp_path / "scans"
    folder.mkdir()
    for i, (case, _) in enumerate(test, start=1):
        shutil.copy(case.image_path, folder / f"case_{i:04d}.nii.gz")
    assert (
        main(["predict", "--run", str(run), "--input", str(folder), "--out", str(tmp_path / "p")])
        == 0
    )
    assert sorted(p.name for p in (tmp_path / "p").glob("*.nii.gz")) == [
        "case_0001.nii.gz",
        "case_0002.nii.gz",
    ]
