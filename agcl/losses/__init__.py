"""Loss modules: the modal-target contrastive loss (stage 2) and soft Dice (stage 3)."""

from __future__ import annotations

from agcl.losses.dice import DiceCELoss, SoftDiceLoss
from agcl.losses.modal_target import ModalTargetSupConLoss

__all__ = ["DiceCELoss", "ModalTargetSupConLoss", "SoftDiceLoss"]
