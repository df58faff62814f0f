"""Smoke run of benchmarks/bench_loss.py --quick in a subprocess (tiny M; checks the plumbing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_loss_quick(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_loss.py"),
            "--quick",
            "--ms",
            "128",
            "--backends",
            "naive",
            "torch",
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
    assert report["machine"]["torch"] and report["machine"]["cpu_count"] >= 1
    rows = {r["backend"]: r for r in report["results"]}
    for backend in ("naive", "torch"):
        assert rows[backend]["m"] == 128 and rows[backend]["time_s"] > 0, rows[backend]
        assert rows[backend]["matmul_s"] > 0 and rows[backend]["isfinite_s"] > 0
        assert rows[backend]["plain_mm_s"] > 0  # the single-torch.mm yardstick
        assert f"M=   128 D=  32 {backend}" in run.stdout
    assert "x matmul" in run.stdout and "x one mm" in run.stdout and "wrote" in run.stdout
