"""benchmarks/gpu_check.py --interpret runs end to end on the CPU and writes a sound report."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("triton")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(tmp_path, *extra):
    out = tmp_path / "check.json"
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "gpu_check.py"),
            "--interpret",
            "--json",
            str(out),
            "--m",
            "37",
            "--d",
            "16",
            "--runs",
            "1",
            *extra,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_gpu_check_interpret_json(tmp_path):
    proc, report = _run(tmp_path)
    rows = report["kernel_vs_torch"]
    assert [r["dtype"] for r in rows] == ["float32", "float16"]  # no bf16 under the interpreter
    for r in rows:
        assert (r["M"], r["D"]) == (37, 16) and "error" not in r, r
        # fp32 dots in both backends; fp16 inputs are rounded alike, lse accumulates in fp32
        assert 0 <= r["max_abs_diff"] < 1e-4 and 0 <= r["max_abs_diff_f64"] < 1e-4
        assert r["max_rel_grad_diff"] < (1e-4 if r["dtype"] == "float32" else 5e-3)
        assert r["kernel_s"] > 0 and r["mm3_s"] > 0 and r["torch_backend_s"] > 0
        assert r["finite"] and r["ok"] is True
    # the anchor block inside the rows and the memory queue, per dtype the interpreter runs
    variants = report["variants"]
    assert [(r["dtype"], r["variant"]) for r in variants] == [
        ("float32", "anchor_start"),
        ("float32", "grad_rows"),
        ("float16", "anchor_start"),
        ("float16", "grad_rows"),
    ]
    for r in variants:
        assert r["ok"] is True and r["max_abs_diff"] < 1e-4, r
        assert r["max_rel_grad_diff"] < (1e-4 if r["dtype"] == "float32" else 5e-3)
    assert variants[0]["anchor_start"] == 37 // 8 + 3 and variants[0]["num_anchors"] == 37 // 2
    assert variants[1]["grad_rows"] == variants[1]["num_anchors"] == 37 // 4 + 5
    assert variants[1]["queue_grad_abs_max"] == 0.0  # queued rows: exactly no gradient
    (loss,) = report["loss"]
    assert loss["loss_abs_diff"] < 1e-4 and loss["grad_max_abs_diff"] < 1e-4
    assert loss["no_positive_loss"] == 0.0 and loss["no_positive_grad_finite"]
    assert loss["queue_loss_abs_diff"] < 1e-4 and loss["queue_grad_max_abs_diff"] < 1e-4
    assert loss["ok"] is True and report["all_ok"] is True
    skipped = [r for r in report["skipped"] if "bfloat16" in json.dumps(r)]
    assert len(skipped) == 2 and all("cannot run bf16" in r["reason"] for r in skipped)
    assert "skipped" in report["tests"] and report["machine"]["interpret"]
    assert "| 37 | 16 | float32 |" in proc.stdout and "| 37 | 16 | float16 |" in proc.stdout


def test_gpu_check_deadline_skips_rows_and_says_so(tmp_path):
    # a deadline already past: no row runs, every one is listed with the reason
    proc, report = _run(tmp_path, "--deadline-s", "0")
    assert report["kernel_vs_torch"] == [] and report["variants"] == [] and report["loss"] == []
    reasons = [r["reason"] for r in report["skipped"]]
    # fp32 and fp16 kernel rows and variants, one loss row (bf16: the interpreter's reason)
    assert sum("--deadline-s 0.0 reached" in r for r in reasons) == 2 + 2 + 1, reasons
    assert report["all_ok"] is False  # nothing checked is not a pass
    assert "reached" in proc.stdout
