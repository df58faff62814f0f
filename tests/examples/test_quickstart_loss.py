"""The quick-start example runs and its loss goes down."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_fast_loss_decreases():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart_loss.py"), "--fast"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    match = re.search(r"first ([\d.]+) -> last ([\d.]+)", run.stdout)
    assert match, run.stdout
    first, last = map(float, match.groups())
    assert last < first, run.stdout
