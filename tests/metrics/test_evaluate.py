from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agcl.metrics import evaluate_labels, format_table, hausdorff_distance, summarize_cases


def _maps():
    gt = np.zeros((12, 12, 4), np.int64)
    gt[1:5, 1:5, :] = 1
    gt[6:10, 6:10, 1:3] = 2
    pred = gt.copy()
    pred[6:10, 6:10, :] = 0  # organ 2 missed
    pred[1:5, 5, :] = 1  # organ 1 one voxel too wide along axis 1
    return pred, gt


def test_per_organ_values_and_missed_count():
    pred, gt = _maps()
    table = evaluate_labels(
        pred, gt, spacing=(1.0, 2.0, 3.0), organs={1: "spleen", 2: "liver", 3: "aorta"}
    )
    spleen, liver, aorta = (table["per_organ"][k] for k in ("spleen", "liver", "aorta"))
    assert spleen["dice"] == pytest.approx(2 * 64 / (64 + 80))
    assert spleen["hd95"] == 2.0  # the extra column is one step of 2 mm away
    assert liver == {
        "dice": 0.0,
        "hd95": math.inf,
        "assd": math.inf,
        "missed": 1,
        "false_positive": 0,
    }
    # absent from both: no score at all (not Dice 1), and no false positive
    assert aorta == {"dice": None, "hd95": None, "assd": None, "missed": 0, "false_positive": 0}
    mean = table["mean"]
    assert mean["missed"] == 1 and mean["false_positive"] == 0
    assert mean["dice"] == pytest.approx((spleen["dice"] + 0.0) / 2)  # the absent aorta is left out
    # distance means skip the missed organ and the count says so
    assert mean["hd95"] == pytest.approx(2.0)


def test_organ_absent_from_gt_but_predicted_is_a_false_positive_not_a_zero():
    pred, gt = _maps()
    pred[0, 0, 0] = 3  # aorta predicted, absent from the ground truth
    table = evaluate_labels(pred, gt, organs={1: "spleen", 2: "liver", 3: "aorta"})
    assert table["per_organ"]["aorta"] == {
        "dice": None,
        "hd95": None,
        "assd": None,
        "missed": 0,
        "false_positive": 1,
    }
    assert table["mean"]["false_positive"] == 1
    assert table["mean"]["dice"] == pytest.approx((table["per_organ"]["spleen"]["dice"] + 0.0) / 2)
    assert "| aorta | n/a | n/a | n/a | 0 | 1 |" in format_table(table)
    assert (
        format_table(table).splitlines()[-1].endswith("| 1 | 1 |")
    )  # mean row: missed, false positives


def test_summary_leaves_absent_cases_out_and_counts_false_positives():
    pred, gt = _maps()
    fp = pred.copy()
    fp[0, 0, 0] = 3
    present = gt.copy()
    present[0:2, 10:12, :] = 3  # a case whose ground truth holds the aorta, predicted perfectly
    organs = {1: "spleen", 3: "aorta"}
    s = summarize_cases(
        [
            evaluate_labels(fp, gt, organs=organs),
            evaluate_labels(present, present, organs=organs),
            evaluate_labels(gt, gt, organs=organs),
        ]
    )
    assert s["per_organ"]["aorta"] == {
        "dice": 1.0,
        "hd95": 0.0,
        "assd": 0.0,
        "missed": 0,
        "false_positive": 1,
    }
    assert s["mean"]["false_positive"] == 1
    # an organ absent from every ground truth has no mean at all
    s = summarize_cases([evaluate_labels(gt, gt, organs=organs)])
    assert s["per_organ"]["aorta"]["dice"] is None and s["per_organ"]["aorta"]["hd95"] is None
    assert s["mean"]["dice"] == 1.0
    json.dumps(s)


def test_default_organs_are_gt_labels():
    pred, gt = _maps()
    assert list(evaluate_labels(pred, gt)["per_organ"]) == ["1", "2"]


def test_summarize_cases_counts_misses_per_organ():
    pred, gt = _maps()
    t1 = evaluate_labels(pred, gt, organs={1: "spleen", 2: "liver"})
    t2 = evaluate_labels(gt, gt, organs={1: "spleen", 2: "liver"})
    s = summarize_cases([t1, t2])
    assert s["per_organ"]["liver"] == {
        "dice": 0.5,
        "hd95": 0.0,
        "assd": 0.0,
        "missed": 1,
        "false_positive": 0,
    }
    assert s["mean"]["missed"] == 1
    assert s["per_organ"]["spleen"]["dice"] == pytest.approx(
        (t1["per_organ"]["spleen"]["dice"] + 1) / 2
    )
    assert "| liver | 0.500 |" in format_table(s)
    json.dumps(s)  # plain Python data


def test_all_missed_organ_mean_is_inf_not_nan():
    gt = np.zeros((5, 5), np.int64)
    gt[1:3, 1:3] = 1
    s = summarize_cases([evaluate_labels(np.zeros_like(gt), gt)])
    assert math.isinf(s["per_organ"]["1"]["hd95"]) and s["per_organ"]["1"]["missed"] == 1


def test_evaluate_errors():
    pred, gt = _maps()
    with pytest.raises(ValueError, match="same shape"):
        evaluate_labels(pred[:3], gt)
    with pytest.raises(TypeError, match="pred"):
        evaluate_labels(pred.astype(np.float32), gt)
    with pytest.raises(ValueError, match="tables"):
        summarize_cases([])


def test_default_hd95_is_the_95th_percentile():
    # spread-out surface distances (nine spikes of 1..9 px off a square), so that the 90th,
    # 95th and 100th percentiles all differ: evaluate's default must be the 95th (issue 26, row 30)
    gt = np.zeros((40, 40), np.int64)
    gt[10:30, 10:30] = 1
    pred = gt.copy()
    for k in range(1, 10):
        pred[30 : 30 + k, 9 + 2 * k] = 1
    pm, gm = pred == 1, gt == 1
    hd95 = hausdorff_distance(pm, gm, spacing=(1.0, 2.0), percentile=95)
    others = {hausdorff_distance(pm, gm, spacing=(1.0, 2.0), percentile=q) for q in (90, 99, 100)}
    assert hd95 not in others
    got = evaluate_labels(pred, gt, spacing=(1.0, 2.0), organs={1: "spleen"})
    assert got["per_organ"]["spleen"]["hd95"] == hd95
    assert summarize_cases([got])["mean"]["hd95"] == hd95
