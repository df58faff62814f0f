"""Smoke run of ``benchmarks/bench_loss.py --queue --quick`` (tiny B, K; checks the plumbing)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_loss_queue_quick(tmp_path):
    out = tmp_path / "queue.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_loss.py"),
            "--queue",
            "--quick",
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
    rows = {r["queue"]: r for r in report["results"]}
    assert rows["agcl"]["time_s"] > 0 and rows["agcl"]["extra_peak_mb"] >= 0, rows
    assert rows["agcl"]["k"] == 2048 and "ModalTargetSupConLoss(queue_size=K)" in run.stdout
