"""benchmarks/gpu_check.py --interpret runs end to end on the CPU and writes a sound report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_check_interpret_json(tmp_path):
    out = tmp_path / "check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py"), "--interpret",
         "--json", str(out), "--m", "37", "--d", "16", "--runs", "1"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    rows = report["kernel_vs_torch"]
    assert [r["dtype"] for r in rows] == ["float32", "float16"]  # no bf16 under the interpreter
    for r in rows:
        assert (r["M"], r["D"]) == (37, 16) and "error" not in r, r
        # fp32 dots in both backends; fp16 inputs are rounded alike, lse accumulates in fp32
        assert 0 <= r["max_abs_diff"] < 1e-4 and 0 <= r["max_abs_diff_f64"] < 1e-4
        assert r["max_rel_grad_diff"] < (1e-4 if r["dtype"] == "float32" else 5e-3)
        assert r["kernel_s"] > 0 and r["mm3_s"] > 0 and r["torch_backend_s"] > 0
    (loss,) = report["loss"]
    assert loss["loss_abs_diff"] < 1e-4 and loss["grad_max_abs_diff"] < 1e-4
    assert loss["no_positive_loss"] == 0.0 and loss["no_positive_grad_finite"]
    assert "skipped" in report["tests"] and report["machine"]["interpret"]
    assert "| 37 | 16 | float32 |" in proc.stdout and "| 37 | 16 | float16 |" in proc.stdout
