"""Statistics of a pre-training ablation: mean +/- std per method and paired Wilcoxon tests.

An ablation runs every pre-training method over several seeds on the same held-out cases (within
a seed all methods share stage 1, so they differ only in stages 2-3). Each ``(method, seed,
case)`` gives one value, the case's mean Dice over the organs its ground truth holds.
:func:`ablation_statistics` turns those values into the table the paper reports: mean +/- std per
method and the two-sided Wilcoxon signed-rank p-value of each method against the reference
(AGCL), paired over ``(case, seed)`` (``scipy.stats.wilcoxon``). :func:`write_ablation` writes
``ablation.json`` (every value and the statistics) and ``ablation.md`` (the table).

Degenerate comparisons give a value or ``None`` with a note, never NaN or an exception:

* fewer than ``min_pairs`` pairs: ``p_value`` ``None`` ("too few pairs"); with ``n`` pairs the
  exact two-sided test cannot go below ``2 / 2**n``, so the default ``min_pairs=6`` is the
  smallest ``n`` that can reach ``p < 0.05``;
* every difference zero (the method equals the reference on every pair): ``p_value`` 1.0;
* the reference itself: ``p_value`` ``None`` ("reference").

Differences are rounded to 12 decimals before ranking, so float noise does not break ties that
are ties in the Dice values (``0.3 - 0.1`` and ``0.5 - 0.3``). Zero differences are dropped
(``zero_method="wilcox"``, Wilcoxon's original rule) and scipy chooses the exact or the normal
approximation (``method="auto"``: exact for up to 50 pairs without ties or zeros).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agcl._atomic import write_json, write_text
from agcl._validation import check_int

__all__ = ["MEASURES", "ablation_markdown", "ablation_statistics", "case_dice", "write_ablation"]

_LABELS = {
    "none": "none (random init)",
    "sscl": "SSCL",
    "supcon": "SupCon",
    "ce": "CE",
    "agcl": "AGCL",
}


def case_dice(pred: Any, label: Any, organs: Mapping[int, str]) -> dict[str, float | None]:
    """Dice of every organ of one case; ``None`` for an organ its ground truth lacks.

    Args:
        pred, label: integer label maps of one case (organ codes, 0 background).
        organs: ``{code: name}`` of the organs to score.

    Shape:
        pred, label: the same shape, any number of axes.

    Returns:
        ``{name: dice or None}`` in the order of ``organs``.

    Raises:
        ValueError: the shapes differ.

    Examples:
        >>> import numpy as np
        >>> gt = np.array([1, 1, 0, 0]); pr = np.array([1, 0, 0, 2])
        >>> case_dice(pr, gt, {1: "spleen", 2: "kidney"})
        {'spleen': 0.6666666666666666, 'kidney': None}
    """
    pred, label = np.asarray(pred), np.asarray(label)
    if pred.shape != label.shape:
        raise ValueError(
            f"pred and label must have the same shape; got {pred.shape} and {label.shape}"
        )
    out: dict[str, float | None] = {}
    for code, name in organs.items():
        g = label == int(code)
        n_g = int(g.sum())
        if n_g == 0:
            out[name] = None
            continue
        p = pred == int(code)
        out[name] = 2.0 * float((p & g).sum()) / float(int(p.sum()) + n_g)
    return out


def _mean_of(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _check_records(
    records: Iterable[Mapping[str, Any]], value: str = "dice"
) -> list[tuple[str, int, str, float | None]]:
    rows: list[tuple[str, int, str, float | None]] = []
    seen: set[tuple[str, int, str]] = set()
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise TypeError(
                f"records[{i}] must be a mapping with method, seed, case and {value}; "
                f"got {type(rec).__name__}"
            )
        missing = [k for k in ("method", "seed", "case", value) if k not in rec]
        if missing:
            raise ValueError(f"records[{i}] lacks the keys {missing}; got keys {sorted(rec)}")
        method, case = rec["method"], rec["case"]
        if not isinstance(method, str) or not method:
            raise TypeError(f"records[{i}]['method'] must be a non-empty string; got {method!r}")
        if not isinstance(case, str) or not case:
            raise TypeError(f"records[{i}]['case'] must be a non-empty string; got {case!r}")
        seed = check_int(f"records[{i}]['seed']", rec["seed"])
        dice = rec[value]
        if dice is not None:
            if isinstance(dice, bool) or not isinstance(
                dice, (int, float, np.floating, np.integer)
            ):
                raise TypeError(
                    f"records[{i}][{value!r}] must be a number or None; got {type(dice).__name__} "
                    f"{dice!r}"
                )
            dice = float(dice)
            if not (math.isfinite(dice) and 0.0 <= dice <= 1.0):
                raise ValueError(
                    f"records[{i}][{value!r}] must lie in [0, 1] (or be None); got {dice!r}"
                )
        key = (method, seed, case)
        if key in seen:
            raise ValueError(
                f"records hold (method, seed, case) = {key} twice; each must appear once"
            )
        seen.add(key)
        rows.append((method, seed, case, dice))
    return rows


def _wilcoxon(diffs: np.ndarray, min_pairs: int) -> tuple[float | None, str | None]:
    from scipy.stats import wilcoxon

    if len(diffs) < min_pairs:
        return None, f"too few pairs ({len(diffs)} < {min_pairs}): no test"
    if not np.any(diffs):
        return 1.0, "equal to the reference on every pair"
    p = float(wilcoxon(diffs, zero_method="wilcox", alternative="two-sided", method="auto").pvalue)
    if not math.isfinite(p):  # scipy edge cases; never hand NaN on
        return None, "the test gave no finite p-value"
    return p, None


def ablation_statistics(
    records: Iterable[Mapping[str, Any]],
    *,
    reference: str = "agcl",
    min_pairs: int = 6,
    value: str = "dice",
) -> dict[str, Any]:
    """Mean +/- std per method and the paired Wilcoxon p-value of each method against ``reference``.

    Args:
        records: one mapping per ``(method, seed, case)``: ``{"method": str, "seed": int,
            "case": str, "dice": float in [0, 1] or None}`` (``dice``: the case's mean Dice over
            its present organs; ``None``, e.g. a case without any of the organs, is left out).
            The order does not matter: pairs are matched on ``(case, seed)``.
        reference: the method every other one is compared with.
        min_pairs: the fewest ``(case, seed)`` pairs a test needs (see the module notes).
        value: the record key compared (``"dice"``; any per-case measure in [0, 1] the records
            carry, e.g. stage 3's own Dice or the encoder probe's accuracy on the case).

    Returns:
        ``{"reference", "min_pairs", "methods": {method: {"mean", "std", "n", "seeds",
        "seed_means", "std_over_seeds", "n_pairs", "mean_difference", "p_value", "note"}}}`` with
        the methods in order of first appearance. ``mean``/``std`` are over every ``(case, seed)``
        value of the method (``std`` with ``ddof=1``, ``None`` below two values);
        ``seed_means`` ``{seed: mean over cases}`` and ``std_over_seeds`` their ``ddof=1`` std;
        ``n_pairs`` the ``(case, seed)`` pairs that both the method and the reference score,
        ``mean_difference`` the mean of ``method - reference`` over them, ``p_value`` the
        two-sided Wilcoxon signed-rank p-value over them (``None`` with a ``note`` when
        there is no test).

    Raises:
        TypeError, ValueError: a record that is not such a mapping, a Dice outside [0, 1] or
            non-finite, a ``(method, seed, case)`` given twice, a ``reference`` without records,
            ``min_pairs < 1``.

    Examples:
        >>> recs = [{"method": m, "seed": 0, "case": c, "dice": d}
        ...         for m, ds in (("none", (0.5, 0.6)), ("agcl", (0.7, 0.6)))
        ...         for c, d in zip("ab", ds)]
        >>> st = ablation_statistics(recs, min_pairs=2)["methods"]
        >>> round(st["none"]["mean_difference"], 3), st["none"]["p_value"], st["agcl"]["note"]
        (-0.1, 1.0, 'reference')
    """
    check_int("min_pairs", min_pairs, low=1)
    rows = _check_records(records, value)
    methods: list[str] = []
    for method, *_ in rows:
        if method not in methods:
            methods.append(method)
    if reference not in methods:
        raise ValueError(f"reference {reference!r} has no records; methods found: {methods}")
    values: dict[str, dict[tuple[str, int], float]] = {m: {} for m in methods}
    for method, seed, case, dice in rows:
        if dice is not None:
            values[method][(case, seed)] = dice
    ref = values[reference]
    table: dict[str, dict[str, Any]] = {}
    for m in methods:
        vals = values[m]
        arr = np.array([vals[k] for k in sorted(vals)], dtype=np.float64)
        seeds = sorted({s for _, s, _, _ in (r for r in rows if r[0] == m)})
        seed_means = {s: _mean_of(v for (c, t), v in vals.items() if t == s) for s in seeds}
        finite_means = [v for v in seed_means.values() if v is not None]
        entry: dict[str, Any] = {
            "mean": float(arr.mean()) if arr.size else None,
            "std": float(arr.std(ddof=1)) if arr.size >= 2 else None,
            "n": int(arr.size),
            "seeds": seeds,
            "seed_means": seed_means,
            "std_over_seeds": float(np.std(finite_means, ddof=1))
            if len(finite_means) >= 2
            else None,
        }
        keys = sorted(set(vals) & set(ref))
        diffs = np.round(np.array([vals[k] - ref[k] for k in keys], dtype=np.float64), 12)
        entry["n_pairs"] = len(keys)
        entry["mean_difference"] = float(diffs.mean()) if keys else None
        if m == reference:
            entry["mean_difference"], entry["p_value"], entry["note"] = None, None, "reference"
        else:
            entry["p_value"], entry["note"] = _wilcoxon(diffs, min_pairs)
        table[m] = entry
    return {"reference": reference, "min_pairs": min_pairs, "value": value, "methods": table}


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _p(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.2e}" if v < 1e-3 else f"{v:.4f}"


#: how the ablation's tables name each measure
MEASURES = {
    "dice": "mean Dice",
    "dice_stage3": "stage-3-alone Dice",
    "probe_knn": "probe k-NN (modality, organ)",
    "probe_linear": "probe linear (modality, organ)",
}


def ablation_markdown(stats: Mapping[str, Any]) -> str:
    """The Markdown table of :func:`ablation_statistics`'s output (one row per method)."""
    ref = stats["reference"]
    ref_label = _LABELS.get(ref, ref)
    what = MEASURES.get(stats.get("value", "dice"), stats.get("value", "dice"))
    lines = [
        f"| Pre-training | {what} +/- std | values (case x seed) | seeds | std over seed means "
        f"| mean diff vs {ref_label} | p vs {ref_label} (Wilcoxon, pairs) | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, e in stats["methods"].items():
        ms = f"{_fmt(e['mean'], '.3f')} +/- {_fmt(e['std'], '.3f')}"
        diff = _fmt(e["mean_difference"], "+.3f")
        lines.append(
            f"| {_LABELS.get(m, m)} | {ms} | {e['n']} | {len(e['seeds'])} | "
            f"{_fmt(e['std_over_seeds'], '.3f')} | {diff} | {_p(e['p_value'])} ({e['n_pairs']}) | "
            f"{e['note'] or ''} |"
        )
    return "\n".join(lines)


def write_ablation(
    out_dir: str | os.PathLike[str],
    records: Sequence[Mapping[str, Any]],
    stats: Mapping[str, Any],
    *,
    notes: Sequence[str] = (),
    measures: Mapping[str, Mapping[str, Any]] | None = None,
) -> tuple[Path, Path]:
    """Write ``ablation.json`` (``{"records": [...], "statistics": stats}``) and ``ablation.md``.

    ``measures`` (``{value: ablation_statistics(records, value=value)}``) adds the same table for
    other per-case measures (stage 3 alone, the encoder probe), under ``"measures"``.

    ``records`` are written as given (they may carry more keys than ``ablation_statistics``
    needs, e.g. the per-organ Dice ``{"per_organ": {name: dice or null}}``). Both files are
    written to a temporary name and renamed. Returns ``(json_path, md_path)``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = {
        "records": [dict(r) for r in records],
        "statistics": _jsonable(stats),
    }
    if measures:
        payload["measures"] = _jsonable(measures)
    json_path, md_path = out / "ablation.json", out / "ablation.md"
    write_json(json_path, payload)
    md = [
        "# Pre-training ablation",
        "",
        *notes,
        "",
        ablation_markdown(stats),
        "",
        "Mean +/- std over every (held-out case, seed) value (a case's value: its mean Dice over "
        "the organs its ground truth holds); p: two-sided Wilcoxon signed-rank test against "
        f"{stats['reference']} over the (case, seed) pairs, none below {stats['min_pairs']} "
        "pairs.",
        "",
    ]
    for value, extra in (measures or {}).items():
        md += [f"## {MEASURES.get(value, value)}", "", ablation_markdown(extra), ""]
    if measures:
        md += [
            "Stage 3 alone: the held-out cases scored with segment.coarse_weight = 0 (the encoder "
            "and decoder without the coarse ensemble). Probe: the frozen encoder's accuracy at "
            "telling (modality, organ) apart on each held-out case's patches (k-NN, k = 20, "
            "cosine; a linear probe), fitted on the training cases' patches.",
            "",
        ]
    write_text(md_path, "\n".join(md))
    return json_path, md_path


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value
