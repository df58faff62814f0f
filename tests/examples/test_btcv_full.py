"""The example script as a user runs it: a subprocess, tiny settings, then its files."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pipeline._tiny import TINY_ARGS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "btcv_full.py"
TINY = TINY_ARGS


def _example():
    """The example's module: a thin caller of agcl.cli.train (the tests below use that module)."""
    spec = importlib.util.spec_from_file_location("btcv_full_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_is_a_thin_caller_of_agcl_train():
    from agcl.cli import train

    assert _example().main is train.main
    assert len(SCRIPT.read_text().splitlines()) < 40


def test_seeds_flag_parses_and_is_validated(capsys):
    from agcl.cli.train import parse_args

    assert parse_args(["--ablation", "--seeds", "3"]).seeds == 3
    assert parse_args(["--ablation"]).seeds is None
    for bad in ("0", "-2", "2.5", "two"):
        with pytest.raises(SystemExit):
            parse_args(["--ablation", "--seeds", bad])
        assert "positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--seeds", "2"])
    assert "--seeds needs --ablation" in capsys.readouterr().err


def test_ablation_folders():
    from agcl.cli.train import ablation_dir

    out = Path("run")
    assert ablation_dir(out, "agcl", 4, main_method="agcl", first_seed=4) == out
    assert ablation_dir(out, "ce", 4, main_method="agcl", first_seed=4) == out / "ablation" / "ce"
    assert (
        ablation_dir(out, "agcl", 5, main_method="agcl", first_seed=4)
        == out / "ablation" / "seed5" / "agcl"
    )


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--cache-dir",
        str(tmp_path / "cache"),
        "--out",
        str(tmp_path / "run"),
        *TINY,
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_example_runs_and_writes_its_files(tmp_path):
    proc = _run(tmp_path)
    out = tmp_path / "run"
    data = json.loads((out / "results.json").read_text())
    assert set(data) == {
        "per_organ",
        "mean",
        "config",
        "runtime_s",
        "coarse_mean",
        "attention_recall",
        "attention_recall_min",
        "stage3_only",
        "probe",
        "run_id",
    }
    assert set(data["per_organ"]) == {"spleen", "liver", "stomach"}
    assert set(data["probe"]["knn"]) == {"organ", "modality", "modality_organ"}
    assert "encoder probe" in proc.stdout and "stage 3 alone" in proc.stdout
    assert (out / "run.json").is_file()
    low = {k: v for k, v in data["attention_recall_min"].items() if v is not None}
    organ = min(low, key=low.get)
    assert f"attention recall, lowest held-out case: {organ} {low[organ]:.3f}" in proc.stdout
    assert set(data["mean"]) == {"dice", "hd95", "assd", "missed", "false_positive"}
    assert data["config"]["pretrain"]["method"] == "agcl" and data["config"]["preset"] == "quick"
    assert "Dice" in proc.stdout and "HD95" in proc.stdout and "MSD" in proc.stdout
    assert (out / "results.md").is_file()
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [
        "contrast_0002.nii.gz",
        "non-contrast_0002.nii.gz",
    ]
    pytest.importorskip("matplotlib")
    assert (out / "fig3_embeddings_pca.png").is_file()
    assert (out / "fig4_overlay_contrast_0002.png").is_file()


@pytest.mark.slow
def test_example_ablation_table(tmp_path):
    proc = _run(tmp_path, "--ablation", "--seeds", "2", "--no-figures")
    out = tmp_path / "run"
    data = json.loads((out / "results.json").read_text())
    assert list(data["ablation"]) == ["none", "sscl", "supcon", "ce", "agcl"]
    for entry in data["ablation"].values():
        assert set(entry) == {
            "per_organ",
            "mean",
            "config",
            "runtime_s",
            "coarse_mean",
            "attention_recall",
            "attention_recall_min",
            "stage3_only",
            "probe",
            "run_id",
        }
    assert "probe k-NN" in proc.stdout and "stage 3 alone" in proc.stdout
    assert "| Encoder | Pretrain |" in proc.stdout
    # every method of a seed builds its attention from the same stage-1 probabilities
    for method in ("none", "sscl", "supcon", "ce"):
        for first, other in (
            (out, out / "ablation" / method),
            (out / "ablation" / "seed1" / "agcl", out / "ablation" / "seed1" / method),
        ):
            probs = sorted(p.name for p in (first / "coarse").glob("*.prob.pt"))
            assert probs and probs == sorted(p.name for p in (other / "coarse").glob("*.prob.pt"))
            assert all(
                (first / "coarse" / n).read_bytes() == (other / "coarse" / n).read_bytes()
                for n in probs
            )
        assert (out / "ablation" / "seed1" / method / "predictions").is_dir()
    abl = json.loads((out / "ablation.json").read_text())
    recs = abl["records"]
    assert len(recs) == 5 * 2 * 2  # methods x seeds x held-out cases
    assert {(r["method"], r["seed"]) for r in recs} == {
        (m, s) for m in data["ablation"] for s in (0, 1)
    }
    assert {r["case"] for r in recs} == {"contrast_0002", "non-contrast_0002"}
    # the per-case Dice agree with the run's own evaluation (seed 0, every method)
    for method, entry in data["ablation"].items():
        for organ, row in entry["per_organ"].items():
            vals = [
                r["per_organ"][organ]
                for r in recs
                if r["method"] == method and r["seed"] == 0 and r["per_organ"][organ] is not None
            ]
            assert (row["dice"] is None and not vals) or row["dice"] == pytest.approx(
                sum(vals) / len(vals)
            )
    st = abl["statistics"]
    assert st["reference"] == "agcl" and list(st["methods"]) == [
        "none",
        "sscl",
        "supcon",
        "ce",
        "agcl",
    ]
    for method, e in st["methods"].items():
        assert e["n"] == 4 and e["seeds"] == [0, 1]
        assert e["n_pairs"] == 4 and e["p_value"] is None  # 4 pairs < 6: no test, said so
        assert e["note"] == ("reference" if method == "agcl" else "too few pairs (4 < 6): no test")
    md = (out / "ablation.md").read_text()
    assert "| Pre-training | mean Dice +/- std" in md and "Wilcoxon" in md and "seeds [0, 1]" in md
    assert set(abl["measures"]) == {"dice_stage3", "probe_knn", "probe_linear"}
    assert "## probe k-NN (modality, organ)" in md
    assert "ablation statistics" in proc.stdout


def test_recall_line_names_the_lowest_organ_and_those_below_the_target():
    from agcl.cli import train as example

    line = example.recall_line({"spleen": 0.99, "gallbladder": 0.62, "liver": None, "aorta": 0.94})
    assert line == (
        "attention recall, lowest held-out case: gallbladder 0.620 | organs below 0.95 in some "
        "case: gallbladder, aorta"
    )
    assert example.recall_line({"spleen": 1.0}).endswith("some case: none")
    assert example.recall_line({"liver": None}) is None and example.recall_line({}) is None
