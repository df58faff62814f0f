"""Functional soft Dice loss (AGCL Eq. 1), the segmentation loss of stage 3."""

from __future__ import annotations

from typing import Literal

import torch

from agcl._validation import check_choice, check_has_data, check_positive, check_tensor
from agcl._warnings import warn_user

__all__ = ["ACTIVATIONS", "soft_dice_loss"]

Activation = Literal["softmax", "sigmoid"]
ACTIVATIONS: tuple[str | None, ...] = ("softmax", "sigmoid", None)


def _check_activation(activation: object) -> None:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of 'softmax', 'sigmoid', None; got {activation!r}"
        )


def _unit_interval(soft: torch.Tensor, what: str, hint: str) -> torch.Tensor:
    """``soft`` unchanged, or ``ValueError`` when a value lies outside [0, 1] (or is NaN)."""
    if soft.numel():
        lo, hi = float(soft.min()), float(soft.max())
        if not (0.0 <= lo and hi <= 1.0):  # also False for NaN
            raise ValueError(
                f"target {what} and must lie in [0, 1]; got values in [{lo}, {hi}] (a 0/255 "
                f"mask: divide by 255; {hint})"
            )
    return soft


def _one_hot_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """``target`` as a float ``(B, C, ...)`` map matching ``logits``."""
    b, c = logits.shape[:2]
    spatial = tuple(logits.shape[2:])
    if tuple(target.shape) == tuple(logits.shape):
        return _unit_interval(
            target.to(torch.float32),
            "shaped like logits is a one-hot/soft target",
            "class indices: pass (B, *spatial)",
        )
    if tuple(target.shape) in ((b, *spatial), (b, 1, *spatial)):
        if target.is_floating_point() or target.dtype == torch.bool:
            if c == 1:
                return _unit_interval(
                    target.reshape(b, 1, *spatial).to(torch.float32),
                    "of a single channel (C=1) is a binary/soft mask",
                    "or pass an integer 0/1 mask",
                )
            raise TypeError(
                f"target of shape {tuple(target.shape)} holds class indices and must be an integer "
                f"tensor; got {target.dtype} (or pass a one-hot target shaped like logits "
                f"{tuple(logits.shape)})"
            )
        labels = target.reshape(b, *spatial).long()
        lo, hi = (int(labels.min()), int(labels.max())) if labels.numel() else (0, 0)
        top = max(c - 1, 1)  # C = 1: a binary mask of 0/1
        if lo < 0 or hi > top:
            raise ValueError(
                f"target class indices must lie in [0, {top}] for C={c}; got [{lo}, {hi}]"
            )
        if c == 1:
            return labels.unsqueeze(1).to(torch.float32)
        one_hot = torch.zeros(logits.shape, dtype=torch.float32, device=logits.device)
        return one_hot.scatter_(1, labels.unsqueeze(1), 1.0)
    raise ValueError(
        f"target must be (B, *spatial) or (B, 1, *spatial) class indices, or one-hot shaped like "
        f"logits; got logits {tuple(logits.shape)} and target {tuple(target.shape)}"
    )


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    activation: Activation | None = "softmax",
    include_background: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    reduction: Literal["mean", "sum", "none"] = "mean",
    batch_dice: bool = False,
) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 sum p y + smooth_nr) / (sum p + sum y + smooth_dr)`` per channel.

    Args:
        logits: network outputs (probabilities when ``activation=None``).
        target: integer class indices ``(B, *spatial)`` / ``(B, 1, *spatial)``, or a one-hot /
            soft target shaped like ``logits``. With ``C = 1`` a binary mask.
        activation: ``"softmax"`` over channels (needs ``C >= 2``), ``"sigmoid"`` per channel,
            or ``None``.
        include_background: keep channel 0 (set ``False`` to drop it; needs ``C >= 2``).
        smooth_nr, smooth_dr: added to numerator (>= 0) and denominator (> 0); equal values
            make an empty target with an empty prediction score 0 (not NaN).
        reduction: ``"mean"`` or ``"sum"`` over (batch, channel) terms, or ``"none"``.
        batch_dice: pool the sums over the batch before the ratio (one Dice per channel).

    Shape:
        - logits: ``(B, C, H, W)`` or ``(B, C, H, W, D)``.
        - target: ``(B, H, W[, D])``, ``(B, 1, H, W[, D])`` or like ``logits``.
        - output: scalar, or ``(B, C')`` (``(C',)`` with ``batch_dice``) for ``"none"``.

    Returns:
        The float32 loss.

    Raises:
        TypeError: non-tensor input, float class indices.
        ValueError: bad shapes (both are printed), class indices out of range, unknown
            activation/reduction, softmax with one channel, negative smoothing or
            ``smooth_dr = 0``, non-finite logits, a one-hot/soft target outside [0, 1].

    References:
        Lee et al., AGCL, Eq. 1. Milletari et al., "V-Net", 3DV 2016.

    Examples:
        >>> logits = torch.tensor([[[[9.0, -9.0]], [[-9.0, 9.0]]]])  # (1, 2, 1, 2)
        >>> round(float(soft_dice_loss(logits, torch.tensor([[[0, 1]]]))), 3)
        0.0
    """
    check_tensor("logits", logits)
    check_tensor("target", target)
    if logits.ndim not in (4, 5) or not logits.is_floating_point():
        raise ValueError(
            f"logits must be a float (B, C, H, W) or (B, C, H, W, D) tensor; got shape "
            f"{tuple(logits.shape)} and dtype {logits.dtype}"
        )
    if logits.shape[0] == 0 or logits.shape[1] == 0:
        raise ValueError(
            f"logits must hold at least one sample and one channel; got shape {tuple(logits.shape)}"
        )
    _check_activation(activation)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    smooth_nr = check_positive("smooth_nr", smooth_nr, allow_zero=True)
    smooth_dr = check_positive("smooth_dr", smooth_dr)  # > 0: empty prediction and target: 0/0
    check_has_data("logits", logits)
    check_has_data("target", target)
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("logits must be finite; got NaN or inf entries")
    c = logits.shape[1]
    if activation == "softmax" and c == 1:
        raise ValueError("activation='softmax' needs C >= 2 channels; got C=1 (use 'sigmoid')")
    with torch.autocast(logits.device.type, enabled=False):
        x = logits.float()
        prob = x.softmax(1) if activation == "softmax" else x.sigmoid() if activation else x
        onehot = _one_hot_target(target, logits)
        if not include_background:
            if c == 1:
                warn_user("include_background=False is ignored with a single channel")
            else:
                prob, onehot = prob[:, 1:], onehot[:, 1:]
        dims = tuple(range(2, x.ndim))
        if batch_dice:
            dims = (0, *dims)
        inter = (prob * onehot).sum(dims)
        denom = prob.sum(dims) + onehot.sum(dims)
        dice = 1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)
    if reduction == "mean":
        return dice.mean()
    return dice.sum() if reduction == "sum" else dice
