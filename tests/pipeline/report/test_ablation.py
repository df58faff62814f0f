"""Ablation statistics: mean +/- std, paired Wilcoxon against the reference, degenerate inputs."""

from __future__ import annotations

import itertools
import json
import random
import statistics

import numpy as np
import pytest

from agcl.pipeline import ablation_markdown, ablation_statistics, case_dice, write_ablation

CASES = ("c0", "c1", "c2", "c3")
SEEDS = (0, 1)
# agcl's value per (case, seed) and the differences "none - agcl" (distinct magnitudes, 2 negative)
AGCL = {(c, s): 0.50 + 0.05 * i + 0.01 * s for i, c in enumerate(CASES) for s in SEEDS}
DIFFS = dict(zip(sorted(AGCL), (-0.01, 0.02, -0.03, 0.04, 0.05, 0.06, 0.07, 0.08)))


def _records(extra=()):
    recs = [{"method": "agcl", "seed": s, "case": c, "dice": v} for (c, s), v in AGCL.items()]
    recs += [
        {"method": "none", "seed": s, "case": c, "dice": AGCL[(c, s)] + DIFFS[(c, s)]}
        for (c, s) in AGCL
    ]
    return recs + list(extra)


def _exact_two_sided(diffs):
    """Two-sided exact Wilcoxon p by enumerating every sign flip (distinct non-zero |d| only)."""
    mags = sorted(abs(d) for d in diffs)
    assert len(set(mags)) == len(mags) and mags[0] > 0
    ranks = {m: i + 1 for i, m in enumerate(mags)}
    t_obs = sum(ranks[abs(d)] for d in diffs if d > 0)
    n = len(diffs)
    sums = [
        sum(r for r, sign in zip(range(1, n + 1), signs) if sign)
        for signs in itertools.product((0, 1), repeat=n)
    ]
    lower = sum(t <= t_obs for t in sums) / len(sums)
    upper = sum(t >= t_obs for t in sums) / len(sums)
    return min(1.0, 2 * min(lower, upper))


def test_table_matches_a_hand_computed_example():
    st = ablation_statistics(_records())
    assert st["reference"] == "agcl" and list(st["methods"]) == ["agcl", "none"]
    none, agcl = st["methods"]["none"], st["methods"]["agcl"]
    none_vals = [AGCL[k] + DIFFS[k] for k in AGCL]
    assert none["mean"] == pytest.approx(statistics.fmean(none_vals))
    assert none["std"] == pytest.approx(statistics.stdev(none_vals))
    assert agcl["std"] == pytest.approx(statistics.stdev(AGCL.values()))
    assert none["n"] == 8 and none["n_pairs"] == 8 and none["seeds"] == [0, 1]
    assert none["mean_difference"] == pytest.approx(statistics.fmean(DIFFS.values()))
    # ranks of |d|: 1..8, the negatives hold ranks 1 and 3 (T- = 4); sign-flip subsets with rank sum
    # <= 4: {}, {1}, {2}, {3}, {4}, {1,2}, {1,3}, so p = 2 * 7 / 256
    expected = _exact_two_sided(list(DIFFS.values()))
    assert expected == pytest.approx(14 / 256)
    assert none["p_value"] == pytest.approx(expected)
    assert none["note"] is None
    assert (
        agcl["p_value"] is None and agcl["note"] == "reference" and agcl["mean_difference"] is None
    )
    seed0 = [AGCL[(c, 0)] + DIFFS[(c, 0)] for c in CASES]
    seed1 = [AGCL[(c, 1)] + DIFFS[(c, 1)] for c in CASES]
    assert none["seed_means"] == {
        0: pytest.approx(statistics.fmean(seed0)),
        1: pytest.approx(statistics.fmean(seed1)),
    }
    assert none["std_over_seeds"] == pytest.approx(
        statistics.stdev([statistics.fmean(seed0), statistics.fmean(seed1)])
    )


def test_pairing_is_by_case_and_seed_not_by_order():
    recs = _records()
    ref = ablation_statistics(recs)
    for seed in range(5):
        shuffled = list(recs)
        random.Random(seed).shuffle(shuffled)
        got = ablation_statistics(shuffled)
        assert got["methods"]["none"]["p_value"] == pytest.approx(ref["methods"]["none"]["p_value"])
        assert got["methods"]["none"]["mean_difference"] == pytest.approx(
            ref["methods"]["none"]["mean_difference"]
        )
    # pairing by position would differ: reverse the none records only -> same result still
    flipped = recs[:8] + recs[8:][::-1]
    assert ablation_statistics(flipped)["methods"]["none"]["p_value"] == pytest.approx(
        ref["methods"]["none"]["p_value"]
    )


def test_only_pairs_both_methods_score_are_compared():
    drop = {("c0", 0), ("c1", 1)}
    recs = [r for r in _records() if not (r["method"] == "none" and (r["case"], r["seed"]) in drop)]
    recs.append(
        {"method": "none", "seed": 0, "case": "c0", "dice": None}
    )  # no organ present: left out
    # ("c1", 1) has no none record at all
    st = ablation_statistics(recs)["methods"]["none"]
    assert st["n"] == 6 and st["n_pairs"] == 6
    diffs = [d for k, d in DIFFS.items() if k not in drop]
    assert st["p_value"] == pytest.approx(_exact_two_sided(diffs))
    assert st["mean_difference"] == pytest.approx(statistics.fmean(diffs))


def test_identical_method_gives_p_one_with_a_note():
    same = [dict(r, method="sscl") for r in _records() if r["method"] == "agcl"]
    st = ablation_statistics(_records(same))["methods"]["sscl"]
    assert st["p_value"] == 1.0 and "every pair" in st["note"] and st["mean_difference"] == 0.0


def test_float_noise_does_not_make_differences_nonzero():
    # 0.1 + 0.2 - 0.3 is 5.6e-17 in floating point, not 0
    recs = [{"method": "agcl", "seed": 0, "case": f"c{i}", "dice": 0.3} for i in range(6)]
    recs += [{"method": "ce", "seed": 0, "case": f"c{i}", "dice": 0.1 + 0.2} for i in range(6)]
    assert ablation_statistics(recs)["methods"]["ce"]["p_value"] == 1.0


def test_too_few_pairs_gives_none_with_a_note():
    recs = [r for r in _records() if r["seed"] == 0 and r["case"] in ("c0", "c1", "c2")]
    st = ablation_statistics(recs)["methods"]["none"]
    assert st["n_pairs"] == 3 and st["p_value"] is None and "too few pairs" in st["note"]
    assert st["mean"] is not None and st["std"] is not None
    one = ablation_statistics([r for r in recs if r["case"] == "c0"])["methods"]["none"]
    assert one["std"] is None and one["std_over_seeds"] is None and one["p_value"] is None
    assert ablation_statistics(recs, min_pairs=3)["methods"]["none"]["p_value"] == pytest.approx(
        _exact_two_sided([DIFFS[(c, 0)] for c in ("c0", "c1", "c2")])
    )


def test_a_method_without_any_value():
    recs = _records([{"method": "ce", "seed": 0, "case": c, "dice": None} for c in CASES])
    st = ablation_statistics(recs)["methods"]["ce"]
    assert st["mean"] is None and st["std"] is None and st["n"] == 0 and st["n_pairs"] == 0
    assert st["mean_difference"] is None and st["p_value"] is None and st["seed_means"] == {0: None}
    json.dumps(ablation_statistics(recs), allow_nan=False)  # no NaN anywhere


@pytest.mark.parametrize(
    "bad, err, match",
    [
        ({"method": "none", "seed": 0, "case": "c0", "dice": 0.5}, ValueError, "twice"),
        ({"method": "ce", "seed": 0, "case": "c0", "dice": 1.5}, ValueError, "dice"),
        ({"method": "ce", "seed": 0, "case": "c0", "dice": float("nan")}, ValueError, "dice"),
        ({"method": "ce", "seed": 0, "case": "c0", "dice": "0.5"}, TypeError, "dice"),
        ({"method": "ce", "seed": 0.5, "case": "c0", "dice": 0.5}, TypeError, "seed"),
        ({"method": "ce", "seed": 0, "case": "c0"}, ValueError, "lacks"),
        ({"method": "", "seed": 0, "case": "c0", "dice": 0.5}, TypeError, "method"),
        ("not a mapping", TypeError, "mapping"),
    ],
)
def test_bad_records_are_refused(bad, err, match):
    with pytest.raises(err, match=match):
        ablation_statistics(_records([bad]))


def test_bad_reference_and_min_pairs():
    with pytest.raises(ValueError, match="reference 'supcon'"):
        ablation_statistics(_records(), reference="supcon")
    with pytest.raises(ValueError, match="min_pairs"):
        ablation_statistics(_records(), min_pairs=0)


def test_markdown_and_files(tmp_path):
    recs = _records()
    st = ablation_statistics(recs)
    md = ablation_markdown(st).splitlines()
    assert md[0].startswith("| Pre-training | mean Dice +/- std") and len(md) == 4
    assert md[3].startswith("| none (random init) | 0.") and "(8)" in md[3]
    assert "| AGCL |" in md[2] and "reference" in md[2]
    json_path, md_path = write_ablation(tmp_path, recs, st, notes=["a note"])
    data = json.loads(json_path.read_text())
    assert data["records"] == recs
    assert data["statistics"]["methods"]["none"]["p_value"] == pytest.approx(
        st["methods"]["none"]["p_value"]
    )
    assert data["statistics"]["methods"]["none"]["seed_means"].keys() == {"0", "1"}
    text = md_path.read_text()
    assert "a note" in text and "Wilcoxon" in text
    assert not list(tmp_path.glob("*.tmp"))


def test_case_dice():
    gt = np.zeros((4, 4, 2), np.int16)
    gt[:2, :2] = 1
    pred = np.zeros_like(gt)
    pred[:2, :1] = 1
    pred[3, 3] = 6  # predicted where the ground truth lacks organ 6: no Dice (a false positive)
    assert case_dice(pred, gt, {1: "spleen", 6: "liver"}) == {
        "spleen": pytest.approx(2 * 4 / (4 + 8)),
        "liver": None,
    }
    with pytest.raises(ValueError, match="same shape"):
        case_dice(pred[:2], gt, {1: "spleen"})
