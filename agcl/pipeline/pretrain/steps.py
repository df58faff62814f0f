"""Stage 2's loss of one batch, per pre-training method (:data:`PRETRAIN_STEPS`).

* ``"agcl"``: :class:`agcl.ModalTargetSupConLoss` with ``modality`` and ``target`` (Eq. 3);
* ``"supcon"``: the same loss with the organ ``target`` only (Khosla et al.);
* ``"sscl"``: the same loss with no labels, i.e. the other view is the only positive (Eq. 2);
* ``"ce"``: a linear classifier on the pooled features over ``(modality, organ)`` classes,
  cross-entropy on both views (classification pre-training of the same encoder).

(``"none"`` trains nothing: stage 3 starts from a randomly initialised encoder.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["PRETRAIN_STEPS", "PretrainStep", "pretrain_step"]

PretrainStep = Callable[..., torch.Tensor]


def _embed_views(model: nn.Module, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
    out = model(torch.cat([view1, view2]))
    return torch.stack(out.chunk(2), dim=1)  # (B, 2, D): sample-major, views second


def _step_agcl(model, view1, view2, *, target, modality, loss_fn, class_index=None):
    return loss_fn(_embed_views(model, view1, view2), modality=modality, target=target)


def _step_supcon(model, view1, view2, *, target, modality, loss_fn, class_index=None):
    return loss_fn(_embed_views(model, view1, view2), target=target)


def _step_sscl(model, view1, view2, *, target, modality, loss_fn, class_index=None):
    return loss_fn(_embed_views(model, view1, view2))


def _step_ce(model, view1, view2, *, target, modality, loss_fn, class_index=None):
    if class_index is None:
        raise ValueError("class_index is required for method='ce'")
    return loss_fn(model(torch.cat([view1, view2])), class_index.repeat(2))


PRETRAIN_STEPS: dict[str, PretrainStep] = {
    "agcl": _step_agcl,
    "supcon": _step_supcon,
    "sscl": _step_sscl,
    "ce": _step_ce,
}
"""The loss of one batch per pre-training method: ``step(model, view1, view2, *, target,
modality, loss_fn, class_index)``. Add an entry to train a new method through the pipeline."""


def pretrain_step(
    model: nn.Module,
    view1: torch.Tensor,
    view2: torch.Tensor,
    *,
    method: str,
    target: torch.Tensor,
    modality: torch.Tensor,
    loss_fn: nn.Module | None,
    class_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """The loss of one stage-2 batch (both views through ``model`` in one forward pass).

    ``loss_fn=None`` uses ``F.cross_entropy`` for ``ce`` (and is an error otherwise).

    Shape:
        view1, view2: ``(B, C + 1, h, w)``; target, modality, class_index: ``(B,)``.
    """
    if method not in PRETRAIN_STEPS:
        raise ValueError(
            f"method must be one of {', '.join(map(repr, PRETRAIN_STEPS))}; got {method!r}"
        )
    if loss_fn is None:
        if method != "ce":
            raise ValueError(f"loss_fn is required for method {method!r}")
        loss_fn = nn.CrossEntropyLoss()
    return PRETRAIN_STEPS[method](
        model,
        view1,
        view2,
        target=target,
        modality=modality,
        loss_fn=loss_fn,
        class_index=class_index,
    )
