"""Private plumbing of the modal-target loss: validation, row layout and positive keys."""

from __future__ import annotations

import torch

from agcl._validation import check_has_data, check_int, check_integer_tensor, check_tensor

# warn_user is re-exported here so that older imports of it from this module keep working
from agcl._warnings import warn_user

__all__ = ["build_rows", "positive_keys", "warn_user"]


def _labels_or_none(
    name: str, value: torch.Tensor | None, n: int, what: str, device: torch.device
) -> torch.Tensor | None:
    if value is None:
        return None
    check_integer_tensor(name, value, numel=n, what=what)
    return value.to(device=device, dtype=torch.long)


def build_rows(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    modality: torch.Tensor | None,
    target: torch.Tensor | None,
    views: int | None,
) -> tuple[torch.Tensor, torch.Tensor, bool, tuple[int, ...]]:
    """Validate the inputs and lay the features out as one row per view.

    Returns:
        ``(rows, label_cols, has_partial, out_shape)``: ``rows`` is ``(M, D)`` view-major,
        ``label_cols`` is ``(M, K)`` int64 whose equal rows are positives (``K = 2`` with
        columns ``(modality, target)`` when ``has_partial``), and ``out_shape`` is the shape of
        a per-anchor result (``(B, V)`` or ``(M,)``).
    """
    check_tensor("features", features)
    check_has_data("features", features)
    if not features.is_floating_point():
        raise TypeError(f"features must be a floating-point tensor; got {features.dtype}")
    if features.ndim not in (2, 3):
        raise ValueError(
            "features must be (B, V, D) (B samples x V views) or (M, D) (one row per view); "
            f"got shape {tuple(features.shape)}"
        )
    if features.shape[0] == 0 or features.shape[-1] == 0 or features.numel() == 0:
        raise ValueError(
            "features must hold at least one row and one dimension; "
            f"got shape {tuple(features.shape)}"
        )
    if labels is not None and (modality is not None or target is not None):
        raise ValueError(
            "labels cannot be combined with modality/target: pass either labels, or modality "
            "and/or target"
        )
    if views is not None:
        views = check_int("views", views, low=1)
    device = features.device
    out_shape: tuple[int, ...]
    if features.ndim == 3:
        b, v, d = features.shape
        if views is not None and views != v:
            raise ValueError(f"views={views} disagrees with features of shape {(b, v, d)} (V={v})")
        rows = features.transpose(0, 1).reshape(v * b, d)  # view-major: rows 0..B-1 are view 0
        n, what, out_shape = b, f"one per sample, B={b}, of features {(b, v, d)}", (b, v)
    else:
        m, d = features.shape
        rows, out_shape = features, (m,)
        if labels is None and modality is None and target is None:
            if views is None:
                raise ValueError(
                    f"features of shape {(m, d)} (2-D) need labels (one per row) or views=V "
                    "(rows are V stacked blocks of B = M/V samples) to define positives; or pass "
                    "(B, V, D) features"
                )
            if m % views != 0:
                raise ValueError(f"views={views} must divide the number of rows M={m} of features")
            v, b = views, m // views
        else:
            if views is not None:
                warn_user("views is ignored when labels, modality or target are given")
            v, b = 1, m
        n, what = (b if v > 1 else m), f"one per row of features {(m, d)}"
    lab = _labels_or_none("labels", labels, n, what, device)
    mod = _labels_or_none("modality", modality, n, what, device)
    tgt = _labels_or_none("target", target, n, what, device)
    has_partial = mod is not None and tgt is not None
    if mod is not None and tgt is not None:
        cols = torch.stack([mod, tgt], dim=1)
    else:
        key = next((x for x in (tgt, lab, mod) if x is not None), None)
        if key is None:  # SSCL: the sample index
            key = torch.arange(n, device=device)
        cols = key[:, None]
    if rows.shape[0] != cols.shape[0]:  # per-sample labels, repeated for every view
        cols = cols.repeat(rows.shape[0] // cols.shape[0], 1)
    return rows, cols, has_partial, out_shape


def positive_keys(
    cols: torch.Tensor, has_partial: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Compact integer keys: one per distinct label row (positives), and per modality.

    Each column is compacted to ``0 .. n_c - 1`` first (``torch.unique``), then the columns are
    combined by integer arithmetic (``key * n_c + col``), which stays below ``M ** K``.
    """
    key = None
    compact = []
    for col in cols.unbind(1):
        values, inverse = torch.unique(col, return_inverse=True)
        compact.append(inverse)
        key = inverse if key is None else key * values.numel() + inverse
    _, key = torch.unique(key, return_inverse=True)
    return key, (compact[0] if has_partial else None)
