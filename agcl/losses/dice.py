"""``SoftDiceLoss``: the soft Dice loss of AGCL's segmentation stage (Eq. 1) as a module;
``DiceCELoss``: soft Dice plus cross-entropy (nnU-Net's segmentation loss)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from agcl._validation import check_choice, check_positive
from agcl.functional.dice import Activation, _check_activation, soft_dice_loss

__all__ = ["DiceCELoss", "SoftDiceLoss"]


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


class DiceCELoss(nn.Module):
    """``dice_weight * SoftDiceLoss(softmax) + ce_weight * cross_entropy`` on class-index targets.

    The cross-entropy term gives every pixel a gradient of its own (the Dice term alone gives a
    patch whose organ is small or absent little signal), which is why nnU-Net trains with the
    sum of the two; stage 1 of the pipeline uses the same sum.

    Args:
        include_background: keep channel 0 in the Dice term (the cross-entropy always covers
            every class).
        dice_weight, ce_weight: the terms' weights (>= 0, not both 0).
        smooth_nr, smooth_dr, batch_dice: as :class:`SoftDiceLoss`.

    Shape:
        - logits: ``(B, C, H, W[, D])`` with ``C >= 2``; target: ``(B, H, W[, D])`` or
          ``(B, 1, ...)`` integer class indices in ``[0, C - 1]``; output: a scalar.

    Raises:
        ValueError: negative weights, both weights 0, ``C < 2``; the Dice term's own checks
            (shapes, index range).
        TypeError: a floating-point target.

    References:
        F. Isensee et al., nnU-Net, Nature Methods 2021 (Dice + cross-entropy).

    Examples:
        >>> loss_fn = DiceCELoss(include_background=False)
        >>> logits = torch.zeros(2, 2, 4, 4, requires_grad=True)
        >>> y = torch.ones(2, 4, 4, dtype=torch.long)
        >>> round(loss_fn(logits, y).item(), 4)  # Dice 1 - 16/24 plus ln 2
        1.0265
    """

    def __init__(
        self,
        *,
        include_background: bool = False,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        batch_dice: bool = False,
    ) -> None:
        super().__init__()
        self.dice_weight = check_positive("dice_weight", dice_weight, allow_zero=True)
        self.ce_weight = check_positive("ce_weight", ce_weight, allow_zero=True)
        if self.dice_weight == 0 and self.ce_weight == 0:
            raise ValueError("dice_weight and ce_weight must not both be 0; got 0 and 0")
        self.dice = SoftDiceLoss(
            activation="softmax",
            include_background=include_background,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
            batch_dice=batch_dice,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weighted sum of the two terms for ``logits`` against class indices ``target``."""
        if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
            raise TypeError(
                f"logits and target must be tensors; got {type(logits).__name__} and "
                f"{type(target).__name__}"
            )
        if logits.ndim < 3 or logits.shape[1] < 2:
            raise ValueError(
                "logits must be (B, C, *spatial) with C >= 2 classes; "
                f"got shape {tuple(logits.shape)}"
            )
        if target.is_floating_point():
            raise TypeError(f"target must hold integer class indices; got dtype {target.dtype}")
        dice = self.dice(logits, target)  # checks shapes and the index range
        idx = target[:, 0] if target.ndim == logits.ndim else target
        low = logits.dtype in (
            torch.float16,
            torch.bfloat16,
        )  # the log-softmax in float32 under autocast
        ce = F.cross_entropy(logits.float() if low else logits, idx.long())
        return self.dice_weight * dice + self.ce_weight * ce
