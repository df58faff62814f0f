from __future__ import annotations

import numpy as np
import pytest

from agcl.pipeline import pca_2d, plot_embeddings, plot_overlays


def test_pca_recovers_the_main_axis():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    x = np.stack([3 * t, 0.01 * rng.normal(size=200), np.ones(200)], 1)
    pts = pca_2d(x)
    # float64 SVD: the first component is +-(3t - mean) up to rounding
    np.testing.assert_allclose(np.abs(pts[:, 0]), np.abs(3 * (t - t.mean())), atol=0.05)
    assert np.abs(pts[:, 1]).max() < 0.05
    with pytest.raises(ValueError, match="x"):
        pca_2d(np.zeros(3))


def test_figures_are_written(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(30, 8))
    p = plot_embeddings(
        emb,
        np.repeat([1, 6, 7], 10),
        np.tile([0, 1], 15),
        tmp_path / "pca.png",
        organ_names={1: "spleen", 6: "liver", 7: "stomach"},
        modality_names=["ce", "nce"],
    )
    assert p is not None and p.stat().st_size > 0
    lab = np.zeros((12, 12, 5), np.int16)
    lab[2:6, 2:6, 1:4] = 6
    q = plot_overlays(
        rng.random((12, 12, 5)), lab, np.roll(lab, 1, 0), tmp_path / "ov.png", n_slices=2
    )
    assert q is not None and q.stat().st_size > 0


def test_figures_leave_the_callers_matplotlib_backend_alone(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # a backend the figures must not switch away from
    try:
        emb = np.random.default_rng(2).normal(size=(12, 4))
        assert plot_embeddings(emb, np.repeat([1, 6], 6), np.tile([0, 1], 6), tmp_path / "p.png")
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)
