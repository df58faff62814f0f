"""``ModalTargetSupConLoss``: AGCL's modal-target supervised contrastive loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from agcl.functional.modal_target import (
    Backend,
    Reduction,
    _check_options,
    modal_target_supcon_loss,
)

__all__ = ["ModalTargetSupConLoss"]


class ModalTargetSupConLoss(nn.Module):
    """Modal-target supervised contrastive loss (AGCL Eq. 3), with SupCon and SSCL as cases.

    Positives of an anchor are the other views sharing its ``(modality, target)`` pair (or its
    ``target`` / ``labels`` / ``modality`` when only one is given; its own sample's other views
    when none is). ``partial_weight`` counts same-modality, different-target rows as positives
    with that weight. See :func:`agcl.functional.modal_target_supcon_loss` for the formula, the
    bound ``loss_i >= log(|P_i| + w |Q_i|)``, the row layout and the distributed semantics.

    Args:
        temperature: ``T > 0`` (the paper uses 0.1).
        partial_weight: weight ``w`` in ``[0, 1]`` of partial positives; 0 gives Eq. 3 exactly.
        normalize: L2-normalise rows inside (``False`` if the caller already did).
        reduction: ``"mean"`` (over anchors with a positive), ``"sum"`` or ``"none"``.
        backend: ``"auto"``, ``"torch"``, ``"naive"`` or ``"triton"``.
        gather_distributed: all-gather rows from every rank with gradients (DDP-ready).
        block_size: anchor rows per block of the torch backend (``None``: at most 64 MiB each).

    Shape:
        - features: ``(B, V, D)`` or ``(M, D)``; labels, modality, target: ``(B,)`` / ``(M,)``.
        - output: scalar; ``(B, V)`` or ``(M,)`` with ``reduction="none"``.

    Raises:
        ValueError, TypeError: bad options here, bad inputs in ``forward`` (messages name the
            argument and print shapes).

    References:
        Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation" (AGCL), Eq. 3. Khosla et al., "Supervised Contrastive Learning", 2020.

    Examples:
        >>> loss_fn = ModalTargetSupConLoss(temperature=0.1)
        >>> feats = torch.randn(6, 2, 8, requires_grad=True)
        >>> loss = loss_fn(feats, modality=torch.tensor([0, 0, 0, 1, 1, 1]),
        ...                target=torch.tensor([0, 1, 1, 0, 1, 1]))
        >>> loss.backward(); feats.grad.shape
        torch.Size([6, 2, 8])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        partial_weight: float = 0.0,
        normalize: bool = True,
        reduction: Reduction = "mean",
        backend: Backend = "auto",
        gather_distributed: bool = False,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(temperature, partial_weight, reduction, backend, block_size)
        self.temperature = float(temperature)
        self.partial_weight = float(partial_weight)
        self.normalize = bool(normalize)
        self.reduction = reduction
        self.backend = backend
        self.gather_distributed = bool(gather_distributed)
        self.block_size = block_size

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        modality: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        views: int | None = None,
        return_valid: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The loss of ``features``; with ``return_valid``, ``(loss, valid)``."""
        return modal_target_supcon_loss(
            features,
            labels,
            modality=modality,
            target=target,
            views=views,
            temperature=self.temperature,
            partial_weight=self.partial_weight,
            normalize=self.normalize,
            reduction=self.reduction,
            backend=self.backend,
            gather_distributed=self.gather_distributed,
            block_size=self.block_size,
            return_valid=return_valid,
        )

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, partial_weight={self.partial_weight}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}, backend={self.backend!r}"
        )
