"""A tiny finished CT run (stage 1 trained, so prediction runs every stage), shared by the
command tests of this folder."""

from __future__ import annotations

import pytest

from tests.pipeline._tiny import tiny_cohort, tiny_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """``(run folder, train, test, result)`` of a finished tiny run (coarse attention)."""
    from agcl.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("tiny_run")
    train, test = tiny_cohort(root / "data")
    cfg = tiny_config(**{"coarse.epochs": 3, "coarse.base_channels": 4, "segment.epochs": 3})
    out = root / "run"
    result = run_pipeline(train, test, cfg, out)
    return out, train, test, result
