"""Smoke runs of benchmarks/bench_models.py (the mixed-precision group, tiny sizes) and an
import of benchmarks/bench_coarse.py (it once imported a removed module and nothing noticed)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_bench_models_mixed_precision_group_quick(tmp_path):
    out = tmp_path / "models.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_models.py"), "--quick", "--groups", "mixed",
         "--out", str(out)],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )
    report = json.loads(out.read_text())
    rows = report["results"]
    assert {r["case"] for r in rows} == {"float32", "bf16 autocast"} and len(rows) == 4
    assert all(r["group"].startswith("mixed precision") and r["seconds_per_step"] > 0 for r in rows)
    assert [r["ratio_to_group_baseline"] for r in rows if r["case"] == "float32"] == [1.0, 1.0]
    assert "native bf16:" in run.stdout


def test_bench_coarse_imports_and_parses_its_arguments():
    spec = importlib.util.spec_from_file_location("bench_coarse", ROOT / "benchmarks" / "bench_coarse.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # fails on a stale import
    assert callable(module.main)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
