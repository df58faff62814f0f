from __future__ import annotations

import numpy as np
import pytest
import torch

from agcl.sampling import (
    attention_from_probabilities,
    attention_recall,
    densify,
    load_probabilities,
    save_probabilities,
)


def _probs():
    """Coarse grid 6 x 6 x 2; organ 6 wins the arg-max in a block, organ 12 never wins."""
    p = np.zeros((3, 6, 6, 2), np.float32)
    p[0] = 1.0
    p[0, 0:3, 0:3] = 0.1
    p[1, 0:3, 0:3] = 0.9  # organ 6: clear winner
    p[0, 4, 4] = 0.55
    p[2, 4, 4] = 0.45  # organ 12: second everywhere, above 0.3 at (4, 4)
    return p


def test_organ_that_never_wins_the_argmax_still_gets_its_region():
    p = _probs()
    assert not (p.argmax(0) == 2).any()
    att = attention_from_probabilities(
        p, [6, 12], (12, 12, 4), spacing=(1, 1, 1), margin_mm=0, threshold=0.3
    )
    box, mask = att[12]
    assert (
        box == (slice(8, 10), slice(8, 10), slice(0, 4)) and mask.all()
    )  # coarse voxel (4, 4) x 2 on the full grid
    box, mask = att[6]
    assert box == (slice(0, 6), slice(0, 6), slice(0, 4)) and mask.all()


def test_threshold_is_honoured_and_fallback_is_the_most_probable_component():
    p = _probs()
    # above the organ's best probability: no voxel reaches it, so the fallback region is used
    att = attention_from_probabilities(
        p, [6, 12], (6, 6, 2), spacing=(1, 1, 1), margin_mm=0, threshold=0.5
    )
    assert int(att[12][1].sum()) == 2  # the component of prob >= 0.5 * 0.45 holding the peak
    # a lower threshold grows the region: add a weak halo around organ 12's peak
    p[2, 3, 4] = 0.2
    low = attention_from_probabilities(
        p, [6, 12], (6, 6, 2), spacing=(1, 1, 1), margin_mm=0, threshold=0.15
    )
    high = attention_from_probabilities(
        p, [6, 12], (6, 6, 2), spacing=(1, 1, 1), margin_mm=0, threshold=0.3
    )
    assert int(low[12][1].sum()) == 4 and int(high[12][1].sum()) == 2
    # a second, weaker blob not connected to the peak stays out of the fallback region
    p[2, 0, 5] = 0.3
    fb = attention_from_probabilities(
        p, [6, 12], (6, 6, 2), spacing=(1, 1, 1), margin_mm=0, threshold=0.9
    )
    dense = densify(fb, [6, 12], (6, 6, 2))
    assert dense[1, 4, 4].all() and not dense[1, 0, 5].any()


def test_margin_dilates_in_mm_and_organs_with_zero_probability_are_left_out():
    p = _probs()
    p[2] = 0.0
    att = attention_from_probabilities(
        p, [6, 12], (6, 6, 2), spacing=(2.0, 1.0, 10.0), margin_mm=2.0
    )
    assert 12 not in att
    dense = densify(att, [6, 12], (6, 6, 2))
    # 2 mm: one voxel along axis 0 (2 mm), two along axis 1 (1 mm), none along axis 2 (10 mm)
    assert dense[0, 3, 0, 0] and not dense[0, 4, 0, 0]
    assert dense[0, 0, 4, 0] and not dense[0, 0, 5, 0]
    assert not dense[1].any()


def test_recall_counts_ground_truth_inside_attention():
    p = _probs()
    att = attention_from_probabilities(p, [6, 12], (6, 6, 2), spacing=(1, 1, 1), margin_mm=0)
    gt = np.zeros((6, 6, 2), np.int16)
    gt[0:3, 0:4, 0] = 6  # 12 voxels, 9 inside organ 6's attention
    r = attention_recall(att, gt, [6, 12, 1])
    assert r[6] == pytest.approx(9 / 12) and r[12] is None and r[1] is None
    gt[5, 5, 0] = 12
    assert attention_recall(att, gt, [12])[12] == 0.0


def test_probability_channel_grades_the_same_region_by_the_coarse_probability():
    """``channel="probability"``: the region is the mask channel's, and inside it each full-grid
    voxel holds 0.5 + 0.5 p / max(p) of the coarse voxel it reads (nearest, 2x here); the margin
    ring, where p is ~0, holds 0.5, never 0 (0 is outside)."""
    p = _probs()
    p[1, 0:3, 0:3, 0] = 0.6  # organ 6: one probability per coarse slice
    kw = dict(spacing=(1, 1, 1), margin_mm=2.0, threshold=0.3)
    binary = attention_from_probabilities(p, [6, 12], (12, 12, 4), **kw)
    soft = attention_from_probabilities(p, [6, 12], (12, 12, 4), channel="probability", **kw)
    assert soft.keys() == binary.keys()
    for organ in soft:
        (box, mask), (box_b, mask_b) = soft[organ], binary[organ]
        assert box == box_b and mask.dtype == np.float16 and mask_b.dtype == bool
        np.testing.assert_array_equal(mask != 0, mask_b)
    box, mask = soft[6]
    full = densify(soft, [6, 12], (12, 12, 4))[0]
    assert full.dtype == np.float16 and box[0].start == 0
    assert full[0, 0, 0] == pytest.approx(0.5 + 0.5 * 0.6 / 0.9, abs=1e-3)  # coarse slice 0
    assert full[0, 0, 2] == pytest.approx(1.0, abs=1e-3)  # coarse slice 1: the organ's highest, 0.9
    assert full[6, 0, 0] == pytest.approx(0.5, abs=1e-3)  # the margin: p = 0 there, still inside
    assert full[9, 0, 0] == 0  # beyond the 2 mm margin
    # organ 12 never exceeds 0.45: relative to its own maximum, its peak still reads 1
    peak = densify(soft, [6, 12], (12, 12, 4))[1]
    assert float(peak.max()) == pytest.approx(1.0, abs=1e-3) and peak[8, 8, 0] == peak.max()


def test_probabilities_round_trip_weights_only(tmp_path):
    prob = torch.rand(3, 4, 4, 2)
    path = save_probabilities(tmp_path / "c" / "x.prob.pt", prob, [6, 12], (8, 8, 4))
    assert not list(path.parent.glob("*.tmp"))
    back, ids, shape = load_probabilities(path)
    torch.testing.assert_close(back, prob.half().float())
    assert ids == [6, 12] and shape == (8, 8, 4)


def test_errors():
    with pytest.raises(ValueError, match="K = len"):
        attention_from_probabilities(
            np.zeros((2, 3, 3, 3)), [1, 2], (3, 3, 3), spacing=(1, 1, 1), margin_mm=0
        )
    with pytest.raises(ValueError, match="threshold"):
        attention_from_probabilities(
            np.zeros((2, 3, 3, 3)), [1], (3, 3, 3), spacing=(1, 1, 1), margin_mm=0, threshold=0.0
        )
    with pytest.raises(ValueError, match="channel must be one of .*'soft'"):
        attention_from_probabilities(
            np.ones((2, 3, 3, 3)), [1], (3, 3, 3), spacing=(1, 1, 1), margin_mm=0, channel="soft"
        )
