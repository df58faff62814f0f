from __future__ import annotations

import json
import math

import pytest

from agcl.pipeline import ablation_table, results_entry, write_results


def _result(dice: float, hd: float):
    return {
        "per_organ": {
            "spleen": {"dice": dice, "hd95": hd, "assd": 1.0, "missed": int(math.isinf(hd))},
            "liver": {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0},
        },
        "mean": {"dice": (dice + 0.9) / 2, "hd95": 3.0, "assd": 1.0, "missed": int(math.isinf(hd))},
        "config": {"seed": 0},
    }


def test_entry_has_exactly_the_contract_keys_and_no_infinity(tmp_path):
    entry = results_entry(_result(0.0, math.inf), 12.345)
    assert entry["per_organ"]["spleen"] == {
        "dice": 0.0,
        "hd95": None,
        "assd": 1.0,
        "missed": 1,
        "false_positive": 0,
    }
    assert entry["mean"]["missed"] == 1 and entry["runtime_s"] == 12.35
    ablation = {"none": results_entry(_result(0.5, 4.0), 1.0), "agcl": entry}
    json_path, md_path = write_results(tmp_path, entry, ablation=ablation, encoder="resnet18")
    data = json.loads(json_path.read_text())  # strict JSON: allow_nan=False would have raised
    assert set(data) == {"per_organ", "mean", "config", "runtime_s", "ablation"}
    assert list(data["ablation"]) == ["none", "agcl"]
    text = md_path.read_text()
    assert (
        "| resnet18 | AGCL | 0.000 | 0.900 |" in text
        and "| resnet18 | x (random) | 0.500 |" in text
    )


def test_ablation_table_shape():
    table = ablation_table(
        {"sscl": results_entry(_result(0.7, 2.0), 1.0)}, encoder="enc"
    ).splitlines()
    assert table[0].startswith("| Encoder | Pretrain | spleen | liver | mean Dice |")
    assert len(table) == 3 and table[2].startswith("| enc | SSCL | 0.700 | 0.900 | 0.800 |")


def test_non_finite_mean_is_null():
    r = _result(0.0, math.inf)
    r["mean"]["hd95"] = math.inf
    assert results_entry(r, 0.0)["mean"]["hd95"] is None
    with pytest.raises(KeyError):
        results_entry({"per_organ": {}}, 0.0)


def test_absent_organ_is_null_and_false_positives_are_reported(tmp_path):
    r = _result(0.8, 2.0)
    r["per_organ"]["aorta"] = {
        "dice": None,
        "hd95": None,
        "assd": None,
        "missed": 0,
        "false_positive": 2,
    }
    r["mean"]["false_positive"] = 2
    entry = results_entry(r, 1.0)
    assert entry["per_organ"]["aorta"] == {
        "dice": None,
        "hd95": None,
        "assd": None,
        "missed": 0,
        "false_positive": 2,
    }
    assert entry["mean"]["false_positive"] == 2
    json_path, md_path = write_results(tmp_path, entry, ablation={"agcl": entry}, encoder="enc")
    assert json.loads(json_path.read_text())["per_organ"]["aorta"]["dice"] is None
    text = md_path.read_text()
    assert "| aorta | n/a | n/a | n/a | 0 | 2 |" in text
    assert "| **mean** | 0.850 | 3.00 | 1.00 | 0 | 2 |" in text
    assert "| enc | AGCL | 0.800 | 0.900 | n/a | 0.850 | 3.00 | 1.00 | 0 | 2 |" in text


def test_attention_recall_reports_the_mean_the_lowest_case_and_the_setting(tmp_path):
    result = {
        **_result(0.8, 2.0),
        "attention_recall": {"spleen": 0.9, "liver": None},
        "attention_recall_min": {"spleen": 0.8, "liver": None},
        "config": {"seed": 0, "coarse": {"attention_threshold": 0.1, "margin_mm": 15.0}},
    }
    entry = results_entry(result, 1.0)
    assert entry["attention_recall_min"] == {"spleen": 0.8, "liver": None}
    _, md_path = write_results(tmp_path, entry)
    text = md_path.read_text()
    assert "| spleen | 0.900 | 0.800 |" in text and "| liver | n/a | n/a |" in text
    assert (
        "coarse probability >= 0.1 (or the organ's most probable region), dilated by 15 mm.\n"
        in text
    )
    for channel, words in (
        ("mask", "the binary mask"),
        ("probability", "0.5 + 0.5 x the coarse probability / its maximum"),
    ):
        result["config"]["coarse"]["attention_channel"] = channel
        _, md_path = write_results(tmp_path / channel, results_entry(result, 1.0))
        assert f"dilated by 15 mm. Attention channel: {words}" in md_path.read_text()
    # a result from before the lowest case was kept: the one-column table, no setting line
    # without a config
    old = results_entry({**_result(0.8, 2.0), "attention_recall": {"spleen": 0.9}}, 1.0)
    _, md_path = write_results(tmp_path / "old", old)
    text = md_path.read_text()
    assert "| spleen | 0.900 |" in text and "lowest case" not in text and "dilated by" not in text
