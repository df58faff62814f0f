"""``agcl train`` and ``agcl train-2d`` as a user runs them: nothing they made is lost, nothing is
silently mixed (issue 25, "What was measured": data loss and stale results on resume).

Every test runs the command in-process (``agcl.cli.train.main``) on the tiny settings of the
example tests; the finished run the resume tests start from is made once per module and copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from agcl.cli import train, train2d
from tests.pipeline._tiny import TINY_2D_ARGS, TINY_ARGS

TINY = TINY_ARGS
# stages 2-3 built on stage 1's maps (what --resume must keep consistent), no figures
_AT = TINY.index("--attention")
COARSE = [*TINY[:_AT], "--attention", "coarse", *TINY[_AT + 2 :], "--no-figures"]
TINY_2D = TINY_2D_ARGS
THESIS = "four years of work"
SHAPE, SPACING = (48, 48, 12), (7.3, 7.3, 16.0)


def _run(capsys, command, *argv):
    """``(exit status, stdout, stderr)`` of the command run in this process."""
    capsys.readouterr()
    status = command.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def _train(capsys, data_dir, out, *extra):
    """``agcl train`` on one data folder with the tiny settings and coarse attention."""
    return _run(capsys, train, "--data-dir", str(data_dir), "--out", str(out), *COARSE, *extra)


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _phantoms(root: Path, seed: int) -> Path:
    """A one-modality BTCV folder with cases 0001 (trains) and 0002 (held out)."""
    from agcl.data.synthetic import write_btcv_like

    write_btcv_like(root, 2, ("contrast",), seed=seed, shape=SHAPE, spacing=SPACING)
    return root / "contrast"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two scan sets under the same case ids (other patients: another seed)."""
    root = tmp_path_factory.mktemp("data")
    return {"a": _phantoms(root / "a", seed=3), "b": _phantoms(root / "b", seed=4)}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data):
    """A finished run on the scans of ``data["a"]`` (stage 1 trained 2 epochs)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert train.main(["--data-dir", str(data["a"]), "--out", str(out), *COARSE]) == 0
    return out


@pytest.fixture
def run_copy(tmp_path, finished):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _cases(folder: Path):
    from agcl.data import discover_btcv

    return discover_btcv(folder, modality="contrast")


def _check_maps_come_from_the_checkpoint(out: Path, cases) -> None:
    """Every stored coarse map is what the run's coarse.pt gives on the case's scan now."""
    from agcl.data import PreparedCases, case_stem, load_volume
    from agcl.pipeline.coarse import coarse_probabilities, labels_from_probabilities, load_coarse
    from agcl.sampling import load_probabilities

    model, ids, cfg = load_coarse(out / "checkpoints" / "coarse.pt")
    prepared = PreparedCases(
        cases, [0] * len(cases), clip_hu=cfg.clip_hu, percentiles=cfg.percentiles
    )
    for i, case in enumerate(cases):
        p = prepared[i]
        want = coarse_probabilities(model, p.image, cfg.coarse, spacing=p.spacing).to(torch.float16)
        got, got_ids, shape = load_probabilities(out / "coarse" / f"{case_stem(case)}.prob.pt")
        assert got_ids == ids and tuple(shape) == p.image.shape
        torch.testing.assert_close(got, want.float(), rtol=0, atol=0, msg=case_stem(case))
        labels = load_volume(out / "coarse" / f"{case_stem(case)}.nii.gz", kind="label").array
        want_labels = labels_from_probabilities(want.float(), ids, p.image.shape)
        np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize("command", [train, train2d])
def test_both_commands_take_resume_or_overwrite_not_both(command, capsys):
    assert command.parse_args(["--overwrite"]).overwrite
    assert command.parse_args(["--resume"]).resume
    with pytest.raises(SystemExit) as stop:
        command.parse_args(["--resume", "--overwrite"])
    assert stop.value.code == 2 and "--resume" in capsys.readouterr().err


# --- nothing of the user's is deleted ---
def test_a_cache_dir_holding_the_users_files_is_refused(tmp_path, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "thesis.txt").write_text(THESIS)
    status, _, err = _run(
        capsys, train, "--cache-dir", str(cache), "--out", str(tmp_path / "run"), *TINY
    )
    assert status == 2 and str(cache) in err and "did not create" in err
    assert sorted(p.name for p in cache.iterdir()) == ["thesis.txt"]
    assert (cache / "thesis.txt").read_text() == THESIS
    assert not (tmp_path / "run").exists()


def test_a_2d_cache_holding_a_devkit_agcl_did_not_write_is_refused(tmp_path, capsys):
    pytest.importorskip("PIL")
    devkit = tmp_path / "cache" / "VOCdevkit"
    (devkit / "VOC2012" / "JPEGImages").mkdir(parents=True)
    (devkit / "VOC2012" / "JPEGImages" / "2007_000027.jpg").write_bytes(b"a real photo")
    before = _digests(tmp_path / "cache")
    status, _, err = _run(
        capsys,
        train2d,
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        *TINY_2D,
    )
    assert status == 2 and str(devkit) in err
    assert _digests(tmp_path / "cache") == before
    # the same through `agcl train --domain image2d`
    from agcl.cli import main

    assert (
        main(
            [
                "train",
                "--domain",
                "image2d",
                "--cache-dir",
                str(tmp_path / "cache"),
                "--out",
                str(tmp_path / "run"),
                *TINY_2D,
            ]
        )
        == 2
    )
    assert _digests(tmp_path / "cache") == before


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(run_copy, data, capsys):
    before = _digests(run_copy)
    status, _, err = _train(capsys, data["a"], run_copy)
    assert status == 2
    assert str(run_copy) in err and "--resume" in err and "--overwrite" in err
    assert _digests(run_copy) == before


def test_the_2d_command_refuses_an_earlier_run_too(tmp_path, capsys):
    pytest.importorskip("PIL")
    from agcl.pipeline.run import RunFolder

    out = tmp_path / "run"
    RunFolder.open(out)  # an earlier run (its manifest)
    (out / "results.json").write_text(THESIS)
    status, _, err = _run(
        capsys, train2d, "--cache-dir", str(tmp_path / "cache"), "--out", str(out), *TINY_2D
    )
    assert status == 2 and str(out) in err and "--resume" in err and "--overwrite" in err
    assert (out / "results.json").read_text() == THESIS


def test_overwrite_replaces_the_run_and_keeps_the_users_files(run_copy, data, capsys):
    (run_copy / "notes.txt").write_text(THESIS)
    (run_copy / "predictions" / "reviewed.txt").write_text(THESIS)
    old_id = json.loads((run_copy / "run.json").read_text())["run_id"]
    status, _, err = _train(capsys, data["a"], run_copy, "--overwrite")
    assert status == 0, err
    assert (run_copy / "notes.txt").read_text() == THESIS
    assert (run_copy / "predictions" / "reviewed.txt").read_text() == THESIS
    new_id = json.loads((run_copy / "run.json").read_text())["run_id"]
    assert new_id != old_id
    records = [json.loads(line) for line in (run_copy / "epochs.jsonl").read_text().splitlines()]
    # only the new run's epochs: stage 1 two, stages 2 and 3 one each
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("coarse", 1),
        ("coarse", 2),
        ("pretrain", 1),
        ("segment", 1),
    ]
    assert {r["run"] for r in records} == {new_id}
    assert json.loads((run_copy / "results.json").read_text())["run_id"] == new_id


# --- --resume never continues onto other inputs or settings ---
def test_resume_with_other_scans_redoes_the_stages_and_uses_their_maps(run_copy, data, capsys):
    status, out, err = _train(capsys, data["b"], run_copy, "--resume")
    assert status == 0, err
    assert re.search(
        r"^\[run\] stage 1 changed: cases: contrast/0001 image differs "
        r"\(.*img0001\.nii\.gz\); contrast/0001 label differs .*; redoing stages 1-3$",
        out,
        re.M,
    ), out
    assert "skipped" not in out
    for stage in ("coarse", "pretrain", "segment"):
        assert f"[{stage}] epoch 1/" in out
    _check_maps_come_from_the_checkpoint(run_copy, _cases(data["b"]))
    manifest = json.loads((run_copy / "run.json").read_text())
    scan = data["b"] / "RawData/Training/img/img0002.nii.gz"
    held_out = hashlib.sha256(scan.read_bytes()).hexdigest()
    assert manifest["maps"]["contrast_0002"]["inputs"]["image"] == held_out


def test_resume_with_another_held_out_scan_rebuilds_only_its_map(run_copy, data, tmp_path, capsys):
    mixed = tmp_path / "mixed"
    shutil.copytree(data["a"], mixed)
    for rel in ("RawData/Training/img/img0002.nii.gz", "RawData/Training/label/label0002.nii.gz"):
        shutil.copy2(data["b"] / rel, mixed / rel)
    checkpoints = _digests(run_copy / "checkpoints")
    status, out, err = _train(capsys, mixed, run_copy, "--resume")
    assert status == 0, err
    assert "[coarse] map of contrast_0002 rebuilt: its image or stage 1 changed" in out
    # the training data did not change: nothing else is redone
    assert "contrast_0001 rebuilt" not in out and "[run]" not in out
    assert _digests(run_copy / "checkpoints") == checkpoints
    _check_maps_come_from_the_checkpoint(run_copy, _cases(mixed))


def test_resume_with_more_stage_1_epochs_redoes_stages_1_to_3_and_its_maps(run_copy, data, capsys):
    status, out, err = _train(capsys, data["a"], run_copy, "--resume", "--coarse-epochs", "3")
    assert status == 0, err
    assert "[run] stage 1 changed: coarse.epochs: 2 -> 3; redoing stages 1-3\n" in out
    for line in ("[coarse] epoch 1/3", "[pretrain] epoch 1/1", "[segment] epoch 1/1"):
        assert line in out
    _check_maps_come_from_the_checkpoint(run_copy, _cases(data["a"]))
    # stages 2-3 recorded the maps they were trained on: the new ones
    manifest = json.loads((run_copy / "run.json").read_text())
    maps = {stem: rec["files"][f"coarse/{stem}.prob.pt"] for stem, rec in manifest["maps"].items()}
    for stage in ("pretrain", "segment"):
        attention = manifest["stages"][stage]["inputs"]["attention"]
        assert attention == {"contrast_0001": maps["contrast_0001"]}


def test_resume_with_another_inference_overlap_rebuilds_the_maps_with_it(run_copy, data, capsys):
    from agcl.data import PreparedCases
    from agcl.pipeline.coarse import coarse_probabilities, load_coarse
    from agcl.sampling import load_probabilities

    status, out, err = _train(
        capsys, data["a"], run_copy, "--resume", "--set", "coarse.overlap=0.75"
    )
    assert status == 0, err
    assert "[coarse] map of contrast_0002 rebuilt" in out
    model, _, cfg = load_coarse(run_copy / "checkpoints" / "coarse.pt")
    case = PreparedCases(_cases(data["a"]), [0, 0])[1]
    want, old = (
        coarse_probabilities(model, case.image, grid, spacing=case.spacing).half().float()
        for grid in (dataclasses.replace(cfg.coarse, overlap=0.75), cfg.coarse)
    )
    # the overlap matters on this grid (windows start at 0, 3, 4 instead of 0, 4)
    assert not torch.equal(want, old)
    got = load_probabilities(run_copy / "coarse" / "contrast_0002.prob.pt")[0]
    torch.testing.assert_close(got, want, rtol=0, atol=0)


# --- every case belongs to one patient ---
def test_two_folders_with_the_same_case_ids_are_refused_naming_both_files(tmp_path, data, capsys):
    status, _, err = _run(
        capsys,
        train,
        "--data-dir",
        str(data["a"]),
        "--data-dir",
        str(data["b"]),
        "--out",
        str(tmp_path / "run"),
        *TINY,
    )
    assert status == 2
    assert str(data["a"] / "RawData/Training/img/img0001.nii.gz") in err
    assert str(data["b"] / "RawData/Training/img/img0001.nii.gz") in err
    assert not (tmp_path / "run").exists()


def test_the_same_folder_given_twice_is_refused(tmp_path, data, capsys, monkeypatch):
    monkeypatch.chdir(data["a"].parent)
    for second in ([str(data["a"]) + "/"], ["contrast", "--modality", "non-contrast"]):
        first = ["--data-dir", str(data["a"])]
        if "--modality" in second:
            first += ["--modality", "contrast"]
        try:  # refused as a usage error (argparse) or as an input error
            status, _, err = _run(
                capsys, train, *first, "--data-dir", *second, "--out", str(tmp_path / "run"), *TINY
            )
        except SystemExit as stop:
            status, err = stop.code, capsys.readouterr().err
        assert status == 2 and "twice" in err
    # the folder and its own datalist: the same scans under two modality names
    status, _, err = _run(
        capsys,
        train,
        "--data-dir",
        str(data["a"]),
        "--modality",
        "contrast",
        "--data-dir",
        str(data["a"] / "dataset.json"),
        "--modality",
        "non-contrast",
        "--out",
        str(tmp_path / "run"),
        *TINY,
    )
    assert status == 2 and "listed twice" in err
    assert not (tmp_path / "run").exists()


# --- damaged or cut-short files found on resume ---
def test_damaged_coarse_maps_are_rebuilt_on_resume(run_copy, data, capsys):
    from agcl.data import load_volume
    from agcl.sampling import load_probabilities

    labels = run_copy / "coarse" / "contrast_0002.nii.gz"
    prob = run_copy / "coarse" / "contrast_0001.prob.pt"
    want_labels = load_volume(labels, kind="label").array
    want_prob = load_probabilities(prob)[0]
    labels.write_bytes(labels.read_bytes()[: labels.stat().st_size // 2])  # a write cut short
    prob.write_bytes(b"\x00" * 64 + prob.read_bytes()[64:])  # damaged
    coarse_ckpt = _digests(run_copy / "checkpoints")["coarse.pt"]
    status, out, err = _train(capsys, data["a"], run_copy, "--resume")
    assert status == 0, err
    for stem, name in (
        ("contrast_0002", "contrast_0002.nii.gz"),
        ("contrast_0001", "contrast_0001.prob.pt"),
    ):
        assert f"[coarse] map of {stem} rebuilt: {name} is damaged or was changed" in out
    assert "stage 1 changed" not in out
    assert _digests(run_copy / "checkpoints")["coarse.pt"] == coarse_ckpt
    np.testing.assert_array_equal(load_volume(labels, kind="label").array, want_labels)
    torch.testing.assert_close(load_probabilities(prob)[0], want_prob, rtol=0, atol=0)


def test_a_damaged_finished_checkpoint_is_redone_on_resume(run_copy, data, capsys):
    ckpt = run_copy / "checkpoints" / "pretrain.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])
    status, out, err = _train(capsys, data["a"], run_copy, "--resume")
    assert status == 0, err
    assert (
        "[run] stage 2 changed: its output checkpoints/pretrain.pt changed on disk; "
        "redoing stages 2-3"
    ) in out
    assert "[pretrain] epoch 1/1" in out and "[segment] epoch 1/1" in out
    assert "[coarse] epoch" not in out
