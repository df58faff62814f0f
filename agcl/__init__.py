"""agcl: attention-guided supervised contrastive learning for multi-object segmentation.

The public API is re-exported here. Submodules are imported on first use (PEP 562), so
``import agcl`` costs no more than importing torch and numpy: nibabel, scipy, tqdm, matplotlib
and triton are only imported by the parts that need them.

Examples:
    >>> import agcl
    >>> "ModalTargetSupConLoss" in agcl.__all__
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

# public name -> module that defines it
_LAZY_ATTRS: dict[str, str] = {
    "ModalTargetSupConLoss": "agcl.losses.modal_target",
    "SoftDiceLoss": "agcl.losses.dice",
    "DiceCELoss": "agcl.losses.dice",
    "AttentionPatchSampler": "agcl.sampling.attention_patches",
    "PatchBatch": "agcl.sampling.patch_batch",
    "AttentionPatchDataset": "agcl.sampling.dataset",
    "PatchStream": "agcl.sampling.stream",
    "PairAug": "agcl.augment.pair_aug",
    "modal_target_supcon_loss": "agcl.functional.modal_target",
    "soft_dice_loss": "agcl.functional.dice",
    "create_model": "agcl.models._registry",
    "list_models": "agcl.models._registry",
    "PipelineConfig": "agcl.pipeline.config",
    "run_pipeline": "agcl.pipeline.runner",
}
_SUBMODULES = (
    "augment",
    "data",
    "functional",
    "kernels",
    "losses",
    "metrics",
    "models",
    "pipeline",
    "sampling",
)

__all__ = [
    "AttentionPatchDataset",
    "AttentionPatchSampler",
    "DiceCELoss",
    "ModalTargetSupConLoss",
    "PairAug",
    "PipelineConfig",
    "PatchBatch",
    "PatchStream",
    "SoftDiceLoss",
    "__version__",
    "augment",
    "create_model",
    "data",
    "functional",
    "kernels",
    "list_models",
    "losses",
    "metrics",
    "modal_target_supcon_loss",
    "models",
    "pipeline",
    "run_pipeline",
    "sampling",
    "soft_dice_loss",
]

if TYPE_CHECKING:  # pragma: no cover - for static analysers only
    from agcl import (
        augment,
        data,
        functional,
        kernels,
        losses,
        metrics,
        models,
        pipeline,
        sampling,
    )
    from agcl.augment.pair_aug import PairAug
    from agcl.functional.dice import soft_dice_loss
    from agcl.functional.modal_target import modal_target_supcon_loss
    from agcl.losses.dice import DiceCELoss, SoftDiceLoss
    from agcl.losses.modal_target import ModalTargetSupConLoss
    from agcl.models._registry import create_model, list_models
    from agcl.pipeline.config import PipelineConfig
    from agcl.pipeline.runner import run_pipeline
    from agcl.sampling.attention_patches import AttentionPatchSampler
    from agcl.sampling.dataset import AttentionPatchDataset
    from agcl.sampling.patch_batch import PatchBatch
    from agcl.sampling.stream import PatchStream


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRS:
        value = getattr(importlib.import_module(_LAZY_ATTRS[name]), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"agcl.{name}")
    else:
        raise AttributeError(f"module 'agcl' has no attribute {name!r}")
    globals()[name] = value  # cache: later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
