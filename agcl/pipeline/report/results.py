"""``results.json`` and ``results.md`` of a run (and of an ablation).

``results.json`` holds ``{"per_organ": {name: {"dice", "hd95", "assd", "missed",
"false_positive"}}, "mean": {the same five keys}, "config": {...}, "runtime_s": ...}`` and, after
``--ablation``, ``"ablation": {method: {the same four keys}}``; from a pipeline run also
``"coarse_mean"`` (the stage-1 maps' mean row) and ``"attention_recall"`` ``{name: fraction of
the organ's ground-truth voxels inside its attention, averaged over the held-out cases}``. JSON
has no infinity: a distance that is ``inf`` (an organ missed in every held-out case) is written
as ``null``, and so is every value of an organ absent from every held-out ground truth (no
score, see :mod:`agcl.metrics.evaluate`); ``missed`` says how many (case, organ) pairs were
missed and ``false_positive`` how many were predicted where the ground truth has no such organ.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agcl._atomic import write_json, write_text

__all__ = ["ablation_table", "probe_markdown", "results_entry", "write_results"]


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "dice": _finite(row["dice"]),
        "hd95": _finite(row["hd95"]),
        "assd": _finite(row["assd"]),
        "missed": int(row.get("missed", 0)),
        "false_positive": int(row.get("false_positive", 0)),
    }


def results_entry(result: Mapping[str, Any], runtime_s: float) -> dict[str, Any]:
    """The contract's four keys from a :func:`agcl.pipeline.run_pipeline` result.

    Examples:
        >>> r = {"per_organ": {"liver": {"dice": 0.9, "hd95": float("inf"), "assd": 1.0,
        ...                              "missed": 1}},
        ...      "mean": {"dice": 0.9, "hd95": 2.0, "assd": 1.0, "missed": 1},
        ...      "config": {"seed": 0}}
        >>> results_entry(r, 1.5)["per_organ"]
        {'liver': {'dice': 0.9, 'hd95': None, 'assd': 1.0, 'missed': 1, 'false_positive': 0}}
    """
    entry: dict[str, Any] = {
        "per_organ": {name: _row(row) for name, row in result["per_organ"].items()},
        "mean": _row(result["mean"]),
        "config": result["config"],
        "runtime_s": round(float(runtime_s), 2),
    }
    if "coarse_mean" in result:
        entry["coarse_mean"] = _row(result["coarse_mean"])
    for key in ("attention_recall", "attention_recall_min"):
        if key in result:
            entry[key] = {name: _finite(v) for name, v in result[key].items()}
    if (
        "stage3_only" in result
    ):  # stage 3 alone (segment.coarse_weight = 0), shaped like the main result
        alone = result["stage3_only"]
        entry["stage3_only"] = {
            "mean": _row(alone["mean"]),
            "per_organ": {name: _row(row) for name, row in alone["per_organ"].items()},
        }
    for key in ("run_id", "probe"):
        if result.get(key) is not None:
            entry[key] = result[key]
    return entry


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _probe_cell(entry: Mapping[str, Any], kind: str) -> str:
    probe = entry.get("probe") or {}
    return _fmt((probe.get(kind) or {}).get("modality_organ"), ".3f")


def ablation_table(ablation: Mapping[str, Mapping[str, Any]], *, encoder: str) -> str:
    """A Markdown table shaped like the paper's Table 1: encoder x pre-training x organ Dice,
    then the means, stage 3 alone (``segment.coarse_weight = 0``) and the encoder probe's
    (modality, organ) accuracy (k-NN and linear), where the runs have them."""
    methods = list(ablation)
    organs: list[str] = []
    for entry in ablation.values():
        organs.extend(o for o in entry["per_organ"] if o not in organs)
    head = (
        "| Encoder | Pretrain | "
        + " | ".join(organs)
        + " | mean Dice | HD95 (mm) | ASSD (mm) | missed | false positive | stage 3 alone "
        "| probe k-NN | probe linear |"
    )
    lines = [head, "|" + "---|" * (len(organs) + 10)]
    label = {"none": "x (random)", "sscl": "SSCL", "supcon": "SupCon", "ce": "CE", "agcl": "AGCL"}
    for m in methods:
        e = ablation[m]
        cells = [_fmt(e["per_organ"].get(o, {}).get("dice"), ".3f") for o in organs]
        mean = e["mean"]
        alone = (e.get("stage3_only") or {}).get("mean", {}).get("dice")
        lines.append(
            f"| {encoder} | {label.get(m, m)} | "
            + " | ".join(cells)
            + f" | {_fmt(mean['dice'], '.3f')} | {_fmt(mean['hd95'], '.2f')}"
            + f" | {_fmt(mean['assd'], '.2f')}"
            + f" | {mean['missed']} | {mean.get('false_positive', 0)} | {_fmt(alone, '.3f')}"
            + f" | {_probe_cell(e, 'knn')} | {_probe_cell(e, 'linear')} |"
        )
    return "\n".join(lines)


def probe_markdown(probe: Mapping[str, Any]) -> list[str]:
    """The probe's section of ``results.md``."""
    lines = [
        "## Encoder probe (frozen encoder, held-out patches)",
        "",
        f"{probe.get('patches')} held-out patches scored with {probe.get('fit_patches', '?')} "
        "training patches (drawn as stage 2 draws them); organ silhouette "
        f"{_fmt(probe.get('silhouette'), '.3f')}.",
        "",
        "| label | k-NN (cosine, k = 20) | linear probe |",
        "|---|---|---|",
    ]
    for key in probe.get("knn") or {}:
        lines.append(
            f"| {key} | {_fmt(probe['knn'][key], '.3f')} | "
            f"{_fmt(probe['linear'].get(key), '.3f')} |"
        )
    return [*lines, ""]


def _organ_table(entry: Mapping[str, Any]) -> str:
    lines = [
        "| organ | Dice | HD95 (mm) | ASSD (mm) | missed | false positive |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in [*entry["per_organ"].items(), ("**mean**", entry["mean"])]:
        lines.append(
            f"| {name} | {_fmt(row['dice'], '.3f')} | {_fmt(row['hd95'], '.2f')} | "
            f"{_fmt(row['assd'], '.2f')} | {row.get('missed', 0)} | "
            f"{row.get('false_positive', 0)} |"
        )
    return "\n".join(lines)


def write_results(
    out_dir: str | os.PathLike[str],
    entry: Mapping[str, Any],
    *,
    ablation: Mapping[str, Mapping[str, Any]] | None = None,
    encoder: str = "",
    notes: Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``results.json`` and ``results.md`` into ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = dict(entry)
    if ablation is not None:
        data["ablation"] = {m: dict(e) for m, e in ablation.items()}
    json_path = write_json(out / "results.json", data)
    md = [
        "# AGCL pipeline results",
        "",
        *notes,
        "",
        "## Held-out cases",
        "",
        _organ_table(entry),
        "",
    ]
    if "coarse_mean" in entry:
        c = entry["coarse_mean"]
        md += [
            f"Stage-1 coarse maps alone: mean Dice {_fmt(c['dice'], '.3f')}, "
            f"HD95 {_fmt(c['hd95'], '.2f')} mm, missed {c['missed']}, "
            f"false positives {c['false_positive']}.",
            "",
        ]
    if "attention_recall" in entry:
        md += [
            "## Attention recall (fraction of each organ's ground truth inside its attention, "
            "held-out cases)",
            "",
        ]
        coarse = entry.get("config", {}).get("coarse", {})
        if "attention_threshold" in coarse and "margin_mm" in coarse:
            channel = {
                "mask": " Attention channel: the binary mask.",
                "probability": " Attention channel: 0.5 + 0.5 x the coarse probability / its "
                "maximum, inside the region.",
            }
            md += [
                f"Attention: coarse probability >= {coarse['attention_threshold']:g} (or the "
                f"organ's most probable region), dilated by {coarse['margin_mm']:g} mm."
                + channel.get(coarse.get("attention_channel", ""), ""),
                "",
            ]
        lowest = entry.get("attention_recall_min")
        if lowest is None:
            md += ["| organ | recall |", "|---|---|"]
            md += [
                f"| {name} | {_fmt(v, '.3f')} |" for name, v in entry["attention_recall"].items()
            ] + [""]
        else:
            md += ["| organ | recall (mean) | lowest case |", "|---|---|---|"]
            md += [
                f"| {name} | {_fmt(v, '.3f')} | {_fmt(lowest.get(name), '.3f')} |"
                for name, v in entry["attention_recall"].items()
            ] + [""]
    if "stage3_only" in entry:
        a = entry["stage3_only"]["mean"]
        md += [
            f"Stage 3 alone (segment.coarse_weight = 0): mean Dice {_fmt(a['dice'], '.3f')}, "
            f"HD95 {_fmt(a['hd95'], '.2f')} mm, missed {a['missed']}, "
            f"false positives {a['false_positive']}.",
            "",
        ]
    if entry.get("probe"):
        md += probe_markdown(entry["probe"])
    if ablation is not None:
        md += [
            "## Ablation (Dice per organ; the paper's Table 1 layout)",
            "",
            ablation_table(ablation, encoder=encoder),
            "",
        ]
    md_path = write_text(out / "results.md", "\n".join(md))
    return json_path, md_path
