"""Small public factories shared by the stages: the encoder and the optimizers.

Every stage builds its default components from the config through a factory, and takes your
own in their place (``model=``, ``loss_fn=``, ``optimizer=``, ``augment=``):
:func:`resolve_optimizer` accepts an optimizer, a factory ``params -> optimizer`` or ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Union

import torch
from torch import nn

from agcl._validation import check_choice

__all__ = [
    "OPTIMIZER_STAGES",
    "OptimizerArg",
    "build_encoder",
    "build_optimizer",
    "resolve_optimizer",
]

#: the stages :func:`build_optimizer` knows
OPTIMIZER_STAGES = ("coarse", "coarse2d", "pretrain", "segment")

#: what a stage's ``optimizer=`` takes: an optimizer, a factory ``params -> optimizer``, or ``None``
OptimizerArg = Union[torch.optim.Optimizer, Callable[..., torch.optim.Optimizer], None]


def build_encoder(config: Any) -> nn.Module:
    """The encoder named by ``config.pretrain.encoder`` with ``image_channels + 1`` inputs (the
    image and the organ's attention), used by stages 2 and 3."""
    from agcl.models import create_model

    p = config.pretrain
    return create_model(
        p.encoder,
        in_chans=p.image_channels + 1,
        output_stride=p.output_stride,
        base_width=p.base_width,
    )


def build_optimizer(
    config: Any, params: Iterable[nn.Parameter], *, stage: str
) -> torch.optim.Optimizer:
    """The optimizer of ``stage`` over the trainable ``params``, from the config.

    * ``"coarse"``: Adam, ``coarse.lr`` (nnU-Net-style polynomial decay is applied by the stage);
    * ``"coarse2d"``: ``coarse2d.optimizer`` (SGD with momentum and weight decay, or Adam);
    * ``"pretrain"``: SGD with ``pretrain.momentum`` and ``weight_decay`` (the paper's);
    * ``"segment"``: Adam, ``segment.lr`` (the paper's).

    Raises:
        ValueError: an unknown ``stage`` (the valid ones are listed), no trainable parameter.
    """
    check_choice("stage", stage, OPTIMIZER_STAGES)
    params = [q for q in params if q.requires_grad]
    if not params:
        raise ValueError(f"the {stage} model has no trainable parameter for its optimizer")
    if stage == "coarse":
        return torch.optim.Adam(params, lr=config.coarse.lr)
    if stage == "coarse2d":
        c = config.coarse2d
        if c.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay
            )
        return torch.optim.Adam(params, lr=c.lr, weight_decay=c.weight_decay)
    if stage == "pretrain":
        p = config.pretrain
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    return torch.optim.Adam(params, lr=config.segment.lr)


def resolve_optimizer(
    optimizer: OptimizerArg, model: nn.Module, config: Any, stage: str
) -> torch.optim.Optimizer:
    """The stage's optimizer: ``optimizer`` itself, ``optimizer(params)`` for a factory, or
    :func:`build_optimizer` for ``None``.

    Raises:
        TypeError: anything else, or a factory that returns something other than an optimizer.
    """
    if optimizer is None:
        return build_optimizer(config, model.parameters(), stage=stage)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        made = optimizer([q for q in model.parameters() if q.requires_grad])
        if not isinstance(made, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer factory must return a torch.optim.Optimizer; got {type(made).__name__}"
            )
        return made
    raise TypeError(
        f"optimizer must be a torch.optim.Optimizer, a factory params -> optimizer, or None; "
        f"got {type(optimizer).__name__}"
    )
