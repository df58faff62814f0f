"""``SoftDiceLoss``: the soft Dice loss of AGCL's segmentation stage (Eq. 1) as a module."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from agcl._validation import check_choice, check_positive
from agcl.functional.dice import Activation, _check_activation, soft_dice_loss

__all__ = ["SoftDiceLoss"]


class SoftDiceLoss(nn.Module):
    """Soft Dice loss ``1 - (2 sum p y + smooth_nr) / (sum p + sum y + smooth_dr)``.

    Binary patches work either as ``C = 1`` with ``activation="sigmoid"`` or as ``C = 2`` with
    ``activation="softmax"``. An empty target with an empty prediction gives 0.

    Args:
        activation: ``"softmax"`` (over channels), ``"sigmoid"`` or ``None`` (probabilities).
        include_background: keep channel 0.
        smooth_nr, smooth_dr: smoothing terms of numerator (>= 0) and denominator (> 0).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        batch_dice: one Dice per channel over the whole batch.

    Shape:
        - logits: ``(B, C, H, W[, D])``; target: ``(B, H, W[, D])``, ``(B, 1, ...)`` or one-hot
          like logits; output: scalar or ``(B, C')`` / ``(C',)``.

    References:
        Lee et al., AGCL, Eq. 1. Milletari et al., "V-Net", 3DV 2016.

    Examples:
        >>> loss_fn = SoftDiceLoss(activation="sigmoid")
        >>> logits = torch.zeros(2, 1, 4, 4, requires_grad=True)
        >>> loss = loss_fn(logits, torch.ones(2, 4, 4, dtype=torch.long))
        >>> round(loss.item(), 3)  # p = 0.5 everywhere, y = 1: 1 - 2 * 8 / (8 + 16)
        0.333
    """

    def __init__(
        self,
        *,
        activation: Activation | None = "softmax",
        include_background: bool = True,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: Literal["mean", "sum", "none"] = "mean",
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        _check_activation(activation)
        check_choice("reduction", reduction, ("mean", "sum", "none"))
        self.smooth_nr = check_positive("smooth_nr", smooth_nr, allow_zero=True)
        self.smooth_dr = check_positive("smooth_dr", smooth_dr)
        self.activation = activation
        self.include_background = bool(include_background)
        self.reduction = reduction
        self.batch_dice = bool(batch_dice)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The Dice loss of ``logits`` against ``target``."""
        return soft_dice_loss(
            logits,
            target,
            activation=self.activation,
            include_background=self.include_background,
            smooth_nr=self.smooth_nr,
            smooth_dr=self.smooth_dr,
            reduction=self.reduction,
            batch_dice=self.batch_dice,
        )
