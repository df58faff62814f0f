"""The one sliding-window helper of stages 1 and 3, its window starts and weights."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from agcl.augment.crop3d import extract
from agcl.pipeline.toolkit.windows import sliding_window, window_starts, window_weight


@pytest.mark.parametrize(
    "lo,hi,size,stride",
    [(0, 9, 4, 3), (3, 40, 16, 8), (5, 6, 4, 2), (0, 63, 64, 32), (2, 2, 1, 1), (10, 60, 16, 16)],
)
def test_window_starts_cover_the_range(lo, hi, size, stride):
    starts = window_starts(lo, hi, size, stride)
    covered = set()
    for s in starts:
        covered |= set(range(s, s + size))
    assert set(range(lo, hi + 1)) <= covered
    assert all(b - a <= stride for a, b in zip(starts, starts[1:]))
    if hi - lo + 1 >= size:  # windows stay inside the range where it is long enough
        assert starts[0] == lo and starts[-1] + size - 1 == hi
    else:  # a short range: one window centred on it, or starting at it
        assert len(starts) == 1 and abs((starts[0] + size / 2) - (lo + hi + 1) / 2) <= 0.5
        assert window_starts(lo, hi, size, stride, short="start") == [lo]


def test_window_starts_with_an_overlap_tile_a_padded_axis():
    for n, size in [(10, 4), (64, 24), (25, 25), (26, 25), (5, 8)]:
        starts = window_starts(0, n - 1, size, max(1, int(size * 0.5)), short="start")
        covered = np.zeros(max(n, size), bool)
        for s in starts:
            covered[s : s + size] = True
            assert 0 <= s and s + size <= max(n, size)
        assert covered[:n].all()


def test_window_weight_peaks_in_the_centre_and_stays_positive():
    w = window_weight((9, 8, 5))
    assert w.shape == (9, 8, 5) and (w > 0).all() and float(w.max()) == pytest.approx(1.0)
    assert float(w[4, 3, 2]) > float(w[0, 0, 0]) * 100
    assert torch.allclose(w, w.flip(0)) and torch.allclose(w, w.flip(1))
    sq = window_weight(8)
    assert sq.shape == (8, 8) and float(sq[0, 0]) == pytest.approx(1e-3, rel=1e-3)  # floored
    assert window_weight((3, 4), "uniform").unique().tolist() == [1.0]
    with pytest.raises(ValueError, match="window weight"):
        window_weight(4, "cosine")


def _unet():
    from agcl.models import create_model

    torch.manual_seed(0)
    return create_model("unet3d", in_channels=1, num_classes=3, base_channels=2, depth=1).eval()


def _softmax(model):
    return lambda x: torch.softmax(model(x), 1)


def _grid(shape, window, overlap=0.5):
    steps = [max(1, int(w * (1 - overlap))) for w in window]
    return list(
        itertools.product(
            *[window_starts(0, n - 1, w, s, short="start") for n, w, s in zip(shape, window, steps)]
        )
    )


@torch.no_grad()
def test_one_window_is_the_single_pass_and_a_small_volume_is_padded():
    model = _unet()
    vol = torch.rand(12, 10, 8)
    single = torch.softmax(model(vol[None, None]), 1)[0]
    out = sliding_window(_softmax(model), vol[None], (12, 10, 8), _grid(vol.shape, (12, 10, 8)))
    assert torch.allclose(out, single, atol=1e-6)
    # smaller than the window: padded (with pad_value), then cropped back
    padded = extract(vol, (0, 0, 0), (16, 16, 8), -0.5)
    ref = torch.softmax(model(padded[None, None]), 1)[0][:, :12, :10, :8]
    out = sliding_window(
        _softmax(model), vol[None], (16, 16, 8), _grid(vol.shape, (16, 16, 8)), pad_value=-0.5
    )
    assert torch.allclose(out, ref, atol=1e-6)


@torch.no_grad()
def test_windows_stitch_every_voxel():
    torch.manual_seed(0)
    pointwise = torch.nn.Conv3d(
        1, 4, 1
    ).eval()  # no context: the stitched output must equal one pass
    vol = torch.rand(23, 17, 9)
    whole = torch.softmax(pointwise(vol[None, None]), 1)[0]
    for weight in ("gaussian", "uniform"):
        out = sliding_window(
            _softmax(pointwise),
            vol[None],
            (8, 8, 4),
            _grid(vol.shape, (8, 8, 4)),
            weight=weight,
            batch_size=3,
        )
        assert out.shape == (4, 23, 17, 9) and torch.allclose(out, whole, atol=1e-5)
    out = sliding_window(_softmax(_unet()), vol[None], (8, 8, 4), _grid(vol.shape, (8, 8, 4)))
    assert out.shape == (3, 23, 17, 9) and torch.allclose(
        out.sum(0), torch.ones(23, 17, 9), atol=1e-5
    )


def test_weights_decide_how_overlaps_are_averaged_and_uncovered_voxels_are_zero():
    x = torch.zeros(1, 6)
    ramp = lambda b: torch.arange(4.0).expand(b.shape[0], 1, 4) + 10 * b[:, :, :1]  # noqa: E731
    # windows [0, 4) and [2, 6): voxel 2 gets 2 from the first and 0 from the second
    uniform = sliding_window(ramp, x, (4,), [[0], [2]], weight="uniform")
    assert uniform[0].tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 3.0]
    w = torch.tensor([1.0, 3.0, 3.0, 1.0])
    weighted = sliding_window(ramp, x, (4,), [[0], [2]], weight=w)
    # voxel 2: the first window's index 2 (value 2, weight 3) and the second's index 0 (value 0,
    # weight 1)
    assert weighted[0, 2].item() == pytest.approx((2 * 3 + 0 * 1) / 4)
    assert weighted[0, 3].item() == pytest.approx((3 * 1 + 1 * 3) / 4)
    sparse = sliding_window(ramp, torch.zeros(1, 10), (4,), [[0]], weight="uniform")
    assert sparse[0, 4:].tolist() == [0.0] * 6  # no window covers them
    # windows reaching outside take the pad value, one per channel
    seen = []
    sliding_window(
        lambda b: (seen.append(b.clone()), b)[1],
        torch.zeros(2, 3),
        (4,),
        [[-1]],
        pad_value=(7.0, -7.0),
    )
    assert seen[0][0, :, 0].tolist() == [7.0, -7.0]


def test_bad_arguments_are_refused():
    f = lambda b: b  # noqa: E731
    with pytest.raises(ValueError, match="window"):
        sliding_window(f, torch.zeros(1, 4, 4), (2,), [[0, 0]])
    with pytest.raises(ValueError, match="corners"):
        sliding_window(f, torch.zeros(1, 4), (2,), [])
    with pytest.raises(ValueError, match="pad_value"):
        sliding_window(f, torch.zeros(2, 4), (2,), [[0]], pad_value=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="weight"):
        sliding_window(f, torch.zeros(1, 4), (2,), [[0]], weight=torch.ones(3))
