"""Per-organ evaluation of two label maps, and its aggregation over cases.

The table format is the one ``results.json`` uses: ``{"per_organ": {name: {"dice", "hd95",
"assd", "missed"}}, "mean": {"dice", "hd95", "assd", "missed"}}``.

Aggregation rules (pinned, tested):

* an organ is **missed** in a case when exactly one of prediction and ground truth is empty
  (its distances are ``inf`` and its Dice 0); organs empty in both count as Dice 1, distance 0;
* Dice means include every case (a miss contributes 0);
* distance means are over the finite values only, and ``missed`` says how many were left out,
  so a missed organ never improves a mean silently; a mean with no finite value is ``inf``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agcl.metrics._masks import as_spacing
from agcl.metrics.overlap import dice
from agcl.metrics.surface import _directed_percentile, surface_distances

__all__ = ["evaluate_labels", "format_table", "summarize_cases"]

Table = dict[str, Any]


def _label_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or a torch tensor; got {type(value).__name__}")
    if not (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_):
        raise TypeError(f"{name} must be an integer label map; got dtype {value.dtype}")
    return value


def _organ_names(organs: Mapping[int, str] | Sequence[int] | None, gt: np.ndarray) -> dict[int, str]:
    if organs is None:
        ids = [int(v) for v in np.unique(gt) if v != 0]
        return {i: str(i) for i in ids}
    if isinstance(organs, Mapping):
        return {int(k): str(v) for k, v in organs.items()}
    return {int(k): str(int(k)) for k in organs}


def _mean_finite(values: Sequence[float]) -> tuple[float, int]:
    finite = [v for v in values if math.isfinite(v)]
    return (float(np.mean(finite)) if finite else float("inf")), len(values) - len(finite)


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
        ``{"per_organ": {name: {"dice", "hd95", "assd", "missed"}}, "mean": {"dice", "hd95",
        "assd", "missed"}}`` with Python floats (``inf`` distances for a missed organ) and
        integer ``missed`` counts (see the module notes for the rules).

    Raises:
        TypeError: non-integer label maps.
        ValueError: shapes differ, bad spacing.

    Examples:
        >>> import numpy as np
        >>> gt = np.zeros((8, 8), np.int64); gt[1:4, 1:4] = 1; gt[5:7, 5:7] = 2
        >>> pred = gt.copy(); pred[pred == 2] = 0
        >>> table = evaluate_labels(pred, gt, organs={1: "spleen", 2: "liver"})
        >>> table["per_organ"]["spleen"]["dice"], table["per_organ"]["liver"]["hd95"]
        (1.0, inf)
        >>> table["mean"]
        {'dice': 0.5, 'hd95': 0.0, 'assd': 0.0, 'missed': 1}
    """
    p = _label_array("pred", pred)
    g = _label_array("gt", gt)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt must have the same shape; got pred {p.shape} and gt {g.shape}")
    sp = as_spacing(spacing, g.ndim)
    per_organ: dict[str, dict[str, Any]] = {}
    for label, name in _organ_names(organs, g).items():
        pm, gm = p == label, g == label
        d_pg, d_gp = surface_distances(pm, gm, sp)
        if d_pg.size == 0 and d_gp.size == 0:
            hd = assd = 0.0
        else:
            hd = max(_directed_percentile(d_pg, percentile), _directed_percentile(d_gp, percentile))
            assd = float((d_pg.sum() + d_gp.sum()) / (d_pg.size + d_gp.size))
        missed = int(math.isinf(hd))
        per_organ[name] = {"dice": dice(pm, gm), "hd95": hd, "assd": assd, "missed": missed}
    return {"per_organ": per_organ, "mean": _mean_row(per_organ)}


def _mean_row(per_organ: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    rows = list(per_organ.values())
    if not rows:
        return {"dice": float("nan"), "hd95": float("nan"), "assd": float("nan"), "missed": 0}
    hd, _ = _mean_finite([r["hd95"] for r in rows])
    assd, _ = _mean_finite([r["assd"] for r in rows])
    return {
        "dice": float(np.mean([r["dice"] for r in rows])),
        "hd95": hd,
        "assd": assd,
        "missed": int(sum(r["missed"] for r in rows)),
    }


def summarize_cases(tables: Sequence[Table]) -> Table:
    """Average per-case tables from :func:`evaluate_labels` into one table of the same format.

    Per organ: Dice averaged over every case; HD95 and ASSD averaged over the cases where they
    are finite; ``missed`` = the number of cases in which the organ was missed. The ``"mean"``
    row averages the per-organ values (finite ones for distances) and sums ``missed``.

    Args:
        tables: one table per case; organs are matched by name (an organ absent from a table is
            skipped for that case).

    Returns:
        A table ``{"per_organ": ..., "mean": ...}``.

    Raises:
        ValueError: no table given.

    Examples:
        >>> a = {"per_organ": {"liver": {"dice": 0.8, "hd95": 4.0, "assd": 1.0, "missed": 0}}}
        >>> b = {"per_organ": {"liver": {"dice": 0.0, "hd95": float("inf"), "assd": float("inf"), "missed": 1}}}
        >>> summarize_cases([a, b])["per_organ"]["liver"]
        {'dice': 0.4, 'hd95': 4.0, 'assd': 1.0, 'missed': 1}
    """
    if len(tables) == 0:
        raise ValueError("tables must hold at least one per-case table; got an empty sequence")
    names: list[str] = []
    for table in tables:
        names.extend(n for n in table["per_organ"] if n not in names)
    per_organ: dict[str, dict[str, Any]] = {}
    for name in names:
        rows = [t["per_organ"][name] for t in tables if name in t["per_organ"]]
        hd, _ = _mean_finite([r["hd95"] for r in rows])
        assd, _ = _mean_finite([r["assd"] for r in rows])
        per_organ[name] = {
            "dice": float(np.mean([r["dice"] for r in rows])),
            "hd95": hd,
            "assd": assd,
            "missed": int(sum(r["missed"] for r in rows)),
        }
    return {"per_organ": per_organ, "mean": _mean_row(per_organ)}


def format_table(table: Table, *, title: str | None = None) -> str:
    """A Markdown table of a (per-case or summarised) evaluation: one row per organ and the mean.

    Examples:
        >>> t = {"per_organ": {"liver": {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0}},
        ...      "mean": {"dice": 0.9, "hd95": 3.0, "assd": 1.0, "missed": 0}}
        >>> print(format_table(t))
        | organ | Dice | HD95 (mm) | ASSD (mm) | missed |
        |---|---|---|---|---|
        | liver | 0.900 | 3.00 | 1.00 | 0 |
        | **mean** | 0.900 | 3.00 | 1.00 | 0 |
    """
    lines = [f"### {title}", ""] if title else []
    lines += ["| organ | Dice | HD95 (mm) | ASSD (mm) | missed |", "|---|---|---|---|---|"]
    for name, row in table["per_organ"].items():
        lines.append(f"| {name} | {row['dice']:.3f} | {row['hd95']:.2f} | {row['assd']:.2f} | {row['missed']} |")
    m = table["mean"]
    lines.append(f"| **mean** | {m['dice']:.3f} | {m['hd95']:.2f} | {m['assd']:.2f} | {m['missed']} |")
    return "\n".join(lines)
