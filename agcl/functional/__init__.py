"""Functional forms of agcl's losses (the maths; the ``nn.Module`` twins live in agcl.losses)."""

from __future__ import annotations

from agcl.functional.dice import soft_dice_loss
from agcl.functional.modal_target import modal_target_supcon_loss

__all__ = ["modal_target_supcon_loss", "soft_dice_loss"]
