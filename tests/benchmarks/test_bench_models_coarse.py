"""Smoke runs of benchmarks/bench_models.py (the mixed-precision group, tiny sizes) and an
import of benchmarks/bench_coarse.py (it once imported a removed module and nothing noticed),
with its use of ``agcl train``'s argument parsing, phantoms and config."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_models_mixed_precision_group_quick(tmp_path):
    out = tmp_path / "models.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_models.py"),
            "--quick",
            "--groups",
            "mixed",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=True,
    )
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {r["case"] for r in rows} == {"float32", "bf16 autocast"} and len(rows) == 4
    assert all(r["group"].startswith("mixed precision") and r["seconds_per_step"] > 0 for r in rows)
    assert [r["ratio_to_group_baseline"] for r in rows if r["case"] == "float32"] == [1.0, 1.0]
    assert "native bf16:" in run.stdout


def _bench_coarse():
    spec = importlib.util.spec_from_file_location(
        "bench_coarse", ROOT / "benchmarks" / "bench_coarse.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # fails on a stale import
    return module


def test_bench_coarse_imports_and_parses_its_arguments():
    module = _bench_coarse()
    assert callable(module.main)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0


def test_bench_coarse_attention_setting_parses_and_rejects_bad_values():
    module = _bench_coarse()
    assert module._setting("0.1:15") == (0.1, 15.0)
    for bad in ("0.1", "a:b", "0:10", "1.5:10", "0.3:-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="THRESHOLD:MARGIN_MM|threshold in"):
            module._setting(bad)


def test_bench_coarse_report_counts_pairs_below_the_target_per_setting(capsys):
    module = _bench_coarse()
    spleen, gallbladder = module.BTCV_ORGANS[1], module.BTCV_ORGANS[4]

    def case(r_tight, r_wide, size_tight, size_wide):
        return {
            "dice": {spleen: 0.9, gallbladder: None if r_tight is None else 0.5},
            "recall": {
                "0.3:10": {spleen: 1.0, gallbladder: r_tight},
                "0.1:15": {spleen: 1.0, gallbladder: r_wide},
            },
            "attention_size": {"0.3:10": size_tight, "0.1:15": size_wide},
        }

    cases = {
        "a": case(0.90, 0.97, 2.0, 4.0),
        "b": case(0.80, 0.99, 3.0, 5.0),
        "c": case(None, None, 1.0, 3.0),
    }
    out = module.report("t", cases, [1, 4], [(0.3, 10.0), (0.1, 15.0)])
    tight, wide = out["settings"]["0.3:10"], out["settings"]["0.1:15"]
    assert (
        tight["below_0.95"] == 2 and wide["below_0.95"] == 0
    )  # an absent organ (None) is not counted
    assert tight["min_recall"] == pytest.approx(0.80) and wide["min_recall"] == pytest.approx(0.97)
    assert tight["mean_recall"] == pytest.approx((1.0 + 0.85) / 2)
    assert tight["attention_size"] == pytest.approx(2.0) and wide[
        "attention_size"
    ] == pytest.approx(4.0)
    assert out["mean_dice"] == pytest.approx((0.9 + 0.5) / 2)
    assert "2 (case, organ) pairs below recall 0.95" in capsys.readouterr().out


def test_bench_coarse_extra_cases_follow_the_demo_cases_unchanged(tmp_path):
    module = _bench_coarse()
    grid = [
        "--n-cases",
        "2",
        "--synthetic-shape",
        "24",
        "24",
        "6",
        "--synthetic-spacing",
        "14.6",
        "14.6",
        "25",
    ]
    demo = module.cli.parse_args([*grid, "--cache-dir", str(tmp_path / "demo")])
    extra = module.extra_cases(demo, 1, root=tmp_path / "extended")
    assert sorted((c.modality, c.case_id) for c, _ in extra) == [
        ("contrast", "0003"),
        ("non-contrast", "0003"),
    ]
    assert sorted(m for _, m in extra) == [0, 1]
    module.cli.synthetic_dataset(demo)  # the demo's own 2 cases per modality
    for modality in ("contrast", "non-contrast"):
        for name in ("img0001.nii.gz", "label0002.nii.gz"):
            kind = "img" if name.startswith("img") else "label"
            own = tmp_path / "demo" / modality / "RawData" / "Training" / kind / name
            ext = tmp_path / "extended" / modality / "RawData" / "Training" / kind / name
            assert nib.load(own).get_fdata().tobytes() == nib.load(ext).get_fdata().tobytes()


def test_bench_coarse_example_args_reach_the_example_and_refuse_one_case(tmp_path):
    module = _bench_coarse()
    default = module.example_args("quick", [])
    args = module.example_args("paper", ["coarse.epochs=3"], n_cases=9, seed=2)
    assert (default.n_cases, default.seed, default.preset) == (5, 0, "quick")
    assert (args.n_cases, args.seed, args.preset, args.set) == (9, 2, "paper", ["coarse.epochs=3"])
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--out", str(tmp_path), "--n-cases", "1"])
    assert exit_info.value.code == 2


def test_bench_coarse_config_is_agcl_trains():
    module = _bench_coarse()
    args = module.example_args("quick", ["coarse.epochs=3", "organs=[1,6]"], seed=4)
    cfg = module.cli.config_for(args, "agcl")
    assert (cfg.coarse.epochs, cfg.organs, cfg.seed, cfg.pretrain.method) == (3, (1, 6), 4, "agcl")


def test_bench_coarse_refuses_a_bad_set_and_a_pipeline_run_before_reading_data(
    tmp_path, capsys, monkeypatch
):
    module = _bench_coarse()

    def no_data(
        *args, **kwargs
    ):  # reached only when a refusal is missing: fail fast, train nothing
        raise AssertionError("bench_coarse read data instead of refusing")

    monkeypatch.setattr(module.cli, "load_cohorts", no_data)
    monkeypatch.setattr(module.pl, "train_coarse", no_data)
    with pytest.raises(SystemExit) as exit_info:  # agcl train's UserError, as a usage error
        module.main(["--out", str(tmp_path / "b"), "--set", "coarse.no_such_field=1"])
    assert exit_info.value.code == 2 and "no_such_field" in capsys.readouterr().err
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:  # training would replace the run's stage 1
        module.main(["--out", str(run)])
    assert exit_info.value.code == 2
    assert "holds a pipeline run (run.json)" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoints", "run.json"]
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--out", str(run), "--eval-only"])
    assert exit_info.value.code == 2
    assert f"{run / 'checkpoints' / 'coarse.pt'} not found" in capsys.readouterr().err
