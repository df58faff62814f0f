"""The example script as a user runs it: a subprocess, tiny settings, then its files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "btcv_full.py"
TINY = [
    "--n-cases", "2", "--synthetic-shape", "48", "48", "12", "--synthetic-spacing", "7.3", "7.3", "16.0",
    "--attention", "gt", "--coarse-epochs", "2", "--epochs", "1",
    "--set", "organs=[1,6,7]", "--set", "coarse.spacing_mm=[21.9,21.9,24]",
    "--set", "coarse.crop_shape=[12,12,8]", "--set", "coarse.base_channels=2",
    "--set", "coarse.depth=1", "--set", "pretrain.base_width=4", "--set", "pretrain.patch_size=16",
    "--set", "pretrain.patches_per_slice=1", "--set", "pretrain.max_patches_per_volume=12",
    "--set", "pretrain.batch_size=8", "--set", "segment.patches_per_slice=1",
    "--set", "segment.max_patches_per_volume=12", "--set", "segment.aspp_channels=8", "--set", "segment.stride=16",
]


def _run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, str(SCRIPT), "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "run"),
           *TINY, *extra]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_example_runs_and_writes_its_files(tmp_path):
    proc = _run(tmp_path)
    out = tmp_path / "run"
    data = json.loads((out / "results.json").read_text())
    assert set(data) == {"per_organ", "mean", "config", "runtime_s", "coarse_mean", "attention_recall"}
    assert set(data["per_organ"]) == {"spleen", "liver", "stomach"}
    assert set(data["mean"]) == {"dice", "hd95", "assd", "missed", "false_positive"}
    assert data["config"]["pretrain"]["method"] == "agcl" and data["config"]["preset"] == "quick"
    assert "Dice" in proc.stdout and "HD95" in proc.stdout and "MSD" in proc.stdout
    assert (out / "results.md").is_file()
    assert sorted(p.name for p in (out / "predictions").iterdir()) == ["contrast_0002.nii.gz", "non-contrast_0002.nii.gz"]
    pytest.importorskip("matplotlib")
    assert (out / "fig3_embeddings_pca.png").is_file()
    assert (out / "fig4_overlay_contrast_0002.png").is_file()


@pytest.mark.slow
def test_example_ablation_table(tmp_path):
    proc = _run(tmp_path, "--ablation", "--no-figures")
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(data["ablation"]) == ["none", "sscl", "supcon", "ce", "agcl"]
    for entry in data["ablation"].values():
        assert set(entry) == {"per_organ", "mean", "config", "runtime_s", "coarse_mean", "attention_recall"}
    assert "| Encoder | Pretrain |" in proc.stdout
