"""Per-organ evaluation of two label maps, and its aggregation over cases.

The table format is the one ``results.json`` uses: ``{"per_organ": {name: {"dice", "hd95",
"assd", "missed", "false_positive"}}, "mean": {the same five keys}}``.

Aggregation rules (pinned, tested):

* an organ **absent from a case's ground truth** has no Dice and no distances in that case
  (``None``, printed "n/a"), so it is left out of that case's means; predicting it there counts
  one **false positive** (``false_positive`` = 1) instead of scoring a Dice of 0 or 1;
* an organ is **missed** in a case when its ground truth is not empty and its prediction is
  (distances ``inf``, Dice 0);
* Dice means are over the (case, organ) pairs whose ground truth holds the organ (a miss
  contributes 0);
* distance means are over the finite values only, and ``missed`` says how many were left out,
  so a missed organ never improves a mean silently; a mean with no finite value is ``inf``;
* a mean over no value at all (an organ absent from every ground truth) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agcl._validation import check_in_range, check_int_sequence, check_positive, is_int
from agcl.metrics._masks import as_spacing
from agcl.metrics.overlap import dice
from agcl.metrics.surface import _directed_percentile, surface_distances

__all__ = ["evaluate_labels", "format_table", "summarize_cases"]

Table = dict[str, Any]


def _label_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor; got {type(value).__name__}"
        )
    if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        raise TypeError(f"{name} must be an integer label map; got dtype {value.dtype}")
    return value


def _organ_names(
    organs: Mapping[int, str] | Sequence[int] | None, gt: np.ndarray
) -> dict[int, str]:
    if organs is None:
        ids = [int(v) for v in np.unique(gt) if v != 0]
        return {i: str(i) for i in ids}
    if isinstance(organs, Mapping):
        bad = [k for k in organs if not is_int(k)]
        if bad:
            raise TypeError(
                f"organs must map integer label ids to names; got the key {bad[0]!r} "
                f"({type(bad[0]).__name__})"
            )
        ids = [int(k) for k in organs]
        names = {i: str(v) for i, v in zip(ids, organs.values())}
    else:
        ids = check_int_sequence("organs", organs)
        names = {i: str(i) for i in ids}
    if len(names) != len(ids):  # a list repeating an id
        raise ValueError(f"organs must not repeat a label id; got {ids}")
    by_name: dict[str, list[int]] = {}
    for i, name in names.items():
        by_name.setdefault(name, []).append(i)
    dup = {name: ix for name, ix in by_name.items() if len(ix) > 1}
    if dup:  # the table is keyed by name: one organ's row would replace the other's
        raise ValueError(
            f"organs must give every label id its own name; got "
            f"{'; '.join(f'{name!r} for ids {ix}' for name, ix in dup.items())}"
        )
    return names


def _mean_finite(values: Sequence[float | None]) -> float | None:
    """Mean of the finite values; ``inf`` when every value is ``inf``; ``None`` when there is
    none."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    finite = [v for v in present if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("inf")


def _mean_present(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def evaluate_labels(
    pred: Any,
    gt: Any,
    *,
    spacing: Sequence[float] | float | None = None,
    organs: Mapping[int, str] | Sequence[int] | None = None,
    percentile: float = 95.0,
) -> Table:
    """Dice, HD95 and ASSD of every organ of two label maps, and their means.

    Args:
        pred: predicted label map (integers, 0 = background), numpy or torch.
        gt: ground-truth label map of the same shape.
        spacing: voxel size per axis in mm (``None``: 1 per axis).
        organs: ``{label id: name}`` (e.g. ``agcl.data.BTCV_ORGANS``) or a list of ids; ``None``
            evaluates the non-zero labels present in ``gt``.
        percentile: the Hausdorff percentile reported as ``"hd95"`` (95 by default).

    Shape:
        pred, gt: ``(*S)``, the same for both (3-D volumes, 2-D slices, ...).

    Returns:
        ``{"per_organ": {name: {"dice", "hd95", "assd", "missed", "false_positive"}}, "mean":
        {the same keys}}`` with Python floats (``inf`` distances for a missed organ, ``None``
        for an organ absent from ``gt``) and integer counts (see the module notes for the rules).

    Raises:
        TypeError: non-integer label maps or organ ids.
        ValueError: shapes differ, bad spacing, ``percentile`` outside (0, 100], two organs
            with one name (the table is keyed by name).

    Examples:
        >>> import numpy as np
        >>> gt = np.zeros((8, 8), np.int64); gt[1:4, 1:4] = 1; gt[5:7, 5:7] = 2
        >>> pred = gt.copy(); pred[pred == 2] = 0; pred[0, 7] = 3
        >>> table = evaluate_labels(pred, gt, organs={1: "spleen", 2: "liver", 3: "aorta"})
        >>> table["per_organ"]["liver"]["hd95"], table["per_organ"]["aorta"]
        (inf, {'dice': None, 'hd95': None, 'assd': None, 'missed': 0, 'false_positive': 1})
        >>> table["mean"]
        {'dice': 0.5, 'hd95': 0.0, 'assd': 0.0, 'missed': 1, 'false_positive': 1}
    """
    check_positive("percentile", percentile)
    percentile = check_in_range("percentile", percentile, 0.0, 100.0)
    p = _label_array("pred", pred)
    g = _label_array("gt", gt)
    if p.shape != g.shape:
        raise ValueError(
            f"pred and gt must have the same shape; got pred {p.shape} and gt {g.shape}"
        )
    sp = as_spacing(spacing, g.ndim)
    per_organ: dict[str, dict[str, Any]] = {}
    for label, name in _organ_names(organs, g).items():
        pm, gm = p == label, g == label
        if not gm.any():  # absent from the ground truth: no score, a prediction is a false positive
            per_organ[name] = {
                "dice": None,
                "hd95": None,
                "assd": None,
                "missed": 0,
                "false_positive": int(pm.any()),
            }
            continue
        d_pg, d_gp = surface_distances(pm, gm, sp)
        hd = max(_directed_percentile(d_pg, percentile), _directed_percentile(d_gp, percentile))
        assd = (
            float((d_pg.sum() + d_gp.sum()) / (d_pg.size + d_gp.size))
            if d_pg.size
            else float("inf")
        )
        per_organ[name] = {
            "dice": dice(pm, gm),
            "hd95": hd,
            "assd": assd,
            "missed": int(math.isinf(hd)),
            "false_positive": 0,
        }
    return {"per_organ": per_organ, "mean": _mean_row(per_organ)}


def _mean_row(per_organ: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(per_organ.values())
    return {
        "dice": _mean_present([r["dice"] for r in rows]),
        "hd95": _mean_finite([r["hd95"] for r in rows]),
        "assd": _mean_finite([r["assd"] for r in rows]),
        "missed": int(sum(r["missed"] for r in rows)),
        "false_positive": int(sum(r.get("false_positive", 0) for r in rows)),
    }


_ROW_KEYS = ("dice", "hd95", "assd", "missed")  # "false_positive" is optional (older tables)


def _check_row(where: str, row: Any) -> None:
    if not isinstance(row, Mapping):
        raise ValueError(
            f"{where} must be a dict with the keys {list(_ROW_KEYS)}; got {type(row).__name__}"
        )
    missing = [k for k in _ROW_KEYS if k not in row]
    if missing:
        raise ValueError(
            f"{where} misses the key(s) {missing} (a row holds {list(_ROW_KEYS)} and "
            f"optionally 'false_positive'); got keys {sorted(map(str, row))}"
        )


def _check_table(where: str, table: Any, *, with_mean: bool) -> None:
    """``ValueError`` naming the first missing key of an :func:`evaluate_labels` table."""
    keys = ["per_organ", "mean"] if with_mean else ["per_organ"]
    if not isinstance(table, Mapping):
        raise ValueError(
            f"{where} must be a table from evaluate_labels (a dict with {keys}); got "
            f"{type(table).__name__}"
        )
    missing = [k for k in keys if k not in table]
    if missing:
        raise ValueError(
            f"{where} misses the key(s) {missing} (a table from evaluate_labels "
            f"holds 'per_organ' and 'mean'); got keys {sorted(map(str, table))}"
        )
    if not isinstance(table["per_organ"], Mapping):
        raise ValueError(
            f"{where}['per_organ'] must be a dict {{organ name: row}}; got "
            f"{type(table['per_organ']).__name__}"
        )
    for name, row in table["per_organ"].items():
        _check_row(f"{where}['per_organ'][{name!r}]", row)
    if with_mean:
        _check_row(f"{where}['mean']", table["mean"])


def summarize_cases(tables: Sequence[Table]) -> Table:
    """Average per-case tables from :func:`evaluate_labels` into one table of the same format.

    Per organ: Dice averaged over the cases whose ground truth holds it; HD95 and ASSD averaged
    over the cases where they are finite; ``missed`` and ``false_positive`` = the number of cases
    in which the organ was missed / predicted without being there. The ``"mean"`` row averages
    the per-organ values (present ones for Dice, finite ones for distances) and sums the counts.

    Args:
        tables: one table per case; organs are matched by name (an organ absent from a table is
            skipped for that case).

    Returns:
        A table ``{"per_organ": ..., "mean": ...}``.

    Raises:
        ValueError: no table given, or a table (named by its index) missing a key.

    Examples:
        >>> a = {"per_organ": {"liver": {"dice": 0.8, "hd95": 4.0, "assd": 1.0, "missed": 0}}}
        >>> b = {"per_organ": {"liver": {"dice": 0.0, "hd95": float("inf"), "assd": float("inf"),
        ...                              "missed": 1}}}
        >>> c = {"per_organ": {"liver": {"dice": None, "hd95": None, "assd": None, "missed": 0,
        ...                              "false_positive": 1}}}
        >>> summarize_cases([a, b, c])["per_organ"]["liver"]
        {'dice': 0.4, 'hd95': 4.0, 'assd': 1.0, 'missed': 1, 'false_positive': 1}
    """
    if isinstance(tables, Mapping) or not isinstance(tables, Sequence):
        raise TypeError(
            f"tables must be a sequence of per-case tables; got {type(tables).__name__}"
        )
    if len(tables) == 0:
        raise ValueError("tables must hold at least one per-case table; got an empty sequence")
    for i, table in enumerate(tables):
        _check_table(f"tables[{i}]", table, with_mean=False)
    names: list[str] = []
    for table in tables:
        names.extend(n for n in table["per_organ"] if n not in names)
    per_organ: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [t["per_organ"][name] for t in tables if name in t["per_organ"]]
        per_organ[name] = {
            "dice": _mean_present([r["dice"] for r in rows]),
            "hd95": _mean_finite([r["hd95"] for r in rows]),
            "assd": _mean_finite([r["assd"] for r in rows]),
            "missed": int(sum(r["missed"] for r in rows)),
            "false_positive": int(sum(r.get("false_positive", 0) for r in rows)),
        }
    return {"per_organ": per_organ, "mean": _mean_row(per_organ)}


def _cell(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def format_table(table: Table, *, title: str | None = None) -> str:
    """A Markdown table of a (per-case or summarised) evaluation: one row per organ and the mean.

    Raises:
        ValueError: ``table`` is not a table of :func:`evaluate_labels` (the missing key is
            named).

    Examples:
        >>> t = {"per_organ": {"liver": {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0},
        ...                    "aorta": {"dice": None, "hd95": None, "assd": None, "missed": 0,
        ...                              "false_positive": 1}},
        ...      "mean": {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0, "false_positive": 1}}
        >>> print(format_table(t))
        | organ | Dice | HD95 (mm) | ASSD (mm) | missed | false positive |
        |---|---|---|---|---|---|
        | liver | 0.900 | 3.00 | 1.00 | 0 | 0 |
        | aorta | n/a | n/a | n/a | 0 | 1 |
        | **mean** | 0.900 | 3.00 | 1.00 | 0 | 1 |
    """
    _check_table("table", table, with_mean=True)
    lines = [f"### {title}", ""] if title else []
    lines += [
        "| organ | Dice | HD95 (mm) | ASSD (mm) | missed | false positive |",
        "|---|---|---|---|---|---|",
    ]
    rows = [*table["per_organ"].items(), ("**mean**", table["mean"])]
    for name, row in rows:
        lines.append(
            f"| {name} | {_cell(row['dice'], '.3f')} | {_cell(row['hd95'], '.2f')} | "
            f"{_cell(row['assd'], '.2f')} | {row['missed']} | {row.get('false_positive', 0)} |"
        )
    return "\n".join(lines)
