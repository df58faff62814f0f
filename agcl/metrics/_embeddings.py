"""Input checks and shared maths of the embedding probes (probe.py and silhouette.py)."""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from agcl._validation import check_has_data, check_integer_tensor, check_tensor

Metric = Literal["cosine", "euclidean"]
METRICS = ("cosine", "euclidean")


def check_embeddings(name: str, z: Any, *, dim: int | None = None) -> torch.Tensor:
    """Validate an ``(N, D)`` floating embedding with N >= 1 finite rows; return it as float."""
    check_tensor(name, z)
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (N, D); got dtype {z.dtype}")
    check_has_data(name, z)
    if z.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D (N, D), one embedding per row; got shape {tuple(z.shape)}"
        )
    if z.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one row; got shape {tuple(z.shape)}")
    if dim is not None and z.shape[1] != dim:
        raise ValueError(
            f"{name} must have D={dim} columns like the fit embeddings; got shape {tuple(z.shape)}"
        )
    if not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).any(dim=1).sum())
        raise ValueError(
            f"{name} must hold finite values; got NaN or inf in {bad} of {z.shape[0]} rows"
        )
    # half precision would make ties and overflow likely; compute in float32 (float64 stays)
    return z if z.dtype == torch.float64 else z.float()


def check_labels(name: str, y: Any, n: int, z_name: str, device: torch.device) -> torch.Tensor:
    """Check ``(n,)`` integer labels (any sign) for the rows of ``z_name``; return them long."""
    check_integer_tensor(name, y, what=f"per row of {z_name}", nonnegative=False)
    if y.numel() != n:
        raise ValueError(
            f"{name} must have one entry per row of {z_name} ({n} rows); got {y.numel()} entries"
        )
    return y.to(device=device, dtype=torch.long)


def unit_rows(z: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm; a zero row stays zero (cosine 0 to everything)."""
    # dividing by the largest entry first keeps the norm from overflowing for huge values
    peak = z.abs().amax(dim=1, keepdim=True)
    z = z / torch.where(peak > 0, peak, torch.ones_like(peak))
    return F.normalize(z, dim=1)


def check_pair(
    fit_z: Any, fit_y: Any, score_z: Any, score_y: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Check a fit and a score set; return them on ``fit_z``'s device and dtype, labels long."""
    fit_z = check_embeddings("fit_z", fit_z)
    score_z = check_embeddings("score_z", score_z, dim=fit_z.shape[1])
    score_z = score_z.to(device=fit_z.device, dtype=fit_z.dtype)
    fit_y = check_labels("fit_y", fit_y, fit_z.shape[0], "fit_z", fit_z.device)
    score_y = check_labels("score_y", score_y, score_z.shape[0], "score_z", fit_z.device)
    return fit_z, fit_y, score_z, score_y
