"""Stage 2: attention-guided contrastive pre-training of the encoder (and the baselines).

Patches stream from the training volumes through :class:`agcl.sampling.PatchStream` (a
``DataLoader`` with ``config.data.num_workers`` workers; fresh patches each epoch, seeded by the
run seed and the epoch); each patch is the image with the organ's attention stacked as a last
channel. The augmentation (default :class:`agcl.PairAug`) makes two views; the model embeds
both views in one pass, and the step depends on ``config.pretrain.method``
(:data:`PRETRAIN_STEPS`):

* ``"agcl"``: :class:`agcl.ModalTargetSupConLoss` with ``modality`` and ``target`` (Eq. 3);
* ``"supcon"``: the same loss with the organ ``target`` only (Khosla et al.);
* ``"sscl"``: the same loss with no labels, i.e. the other view is the only positive (Eq. 2);
* ``"ce"``: a linear classifier on the pooled features over ``(modality, organ)`` classes,
  cross-entropy on both views (classification pre-training of the same encoder);
* ``"none"``: nothing is trained; stage 3 starts from a randomly initialised encoder.

Every component can be passed in (``model``, ``loss_fn``, ``augment``, ``optimizer``); the
defaults come from the config through :func:`build_pretrain_model`, :func:`build_pretrain_loss`,
:func:`build_pair_aug` and :func:`build_optimizer`.

Under torchrun the model is wrapped in DistributedDataParallel, each rank streams its own share
of the volumes (per-rank batch = global batch / world size) and the loss gathers every rank's
embeddings (``gather_distributed=True``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agcl.models.heads import PretrainClassifier
from agcl.pipeline.config import PRETRAIN_METHODS, PipelineConfig
from agcl.pipeline.pretrain.steps import PRETRAIN_STEPS
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.checkpoint import load_checkpoint, load_weights, seed_everything
from agcl.pipeline.toolkit.factories import OptimizerArg, build_encoder, resolve_optimizer
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.streams import epoch_batches, patch_stream
from agcl.pipeline.toolkit.training import EpochCallback, MixedPrecision, fit

__all__ = [
    "PretrainClassifier",
    "build_pair_aug",
    "build_pretrain_loss",
    "build_pretrain_model",
    "embed_patches",
    "load_pretrain_model",
    "pretrain_encoder",
]


def build_pretrain_model(
    config: PipelineConfig, *, num_modalities: int, num_organs: int
) -> nn.Module:
    """Encoder + projection head (contrastive methods) or + classifier (``ce``)."""
    from agcl.models import AGCLPretrainModel, ProjectionHead

    encoder = build_encoder(config)
    if config.pretrain.method == "ce":
        return PretrainClassifier(encoder, num_modalities * num_organs)
    width = int(getattr(encoder, "num_features"))  # noqa: B009
    head = ProjectionHead(width, width, config.pretrain.projection_dim)
    return AGCLPretrainModel(encoder, head)


def build_pretrain_loss(config: PipelineConfig) -> nn.Module:
    """The loss of ``config.pretrain.method``: :class:`agcl.ModalTargetSupConLoss` (``agcl``,
    ``supcon``, ``sscl``; gathers across ranks under torchrun) or ``nn.CrossEntropyLoss`` (``ce``).

    Raises:
        ValueError: ``queue_size`` with a method other than ``agcl``/``supcon``, or method ``none``.
    """
    from agcl import ModalTargetSupConLoss

    p = config.pretrain
    if p.method == "none":
        raise ValueError("config.pretrain.method 'none' trains nothing and has no loss")
    if p.queue_size and p.method not in ("agcl", "supcon"):
        raise ValueError(
            f"config.pretrain.queue_size needs method 'agcl' or 'supcon'; got {p.method!r}"
        )
    if p.method == "ce":
        return nn.CrossEntropyLoss()
    return ModalTargetSupConLoss(
        p.temperature,
        partial_weight=p.partial_weight,
        gather_distributed=dd.is_distributed(),
        queue_size=p.queue_size,
    )


def build_pair_aug(config: PipelineConfig, *, generator: torch.Generator | None = None):
    """:class:`agcl.PairAug` with the ``config.pretrain.aug_*`` options; the attention (the last
    channel) is warped as a mask."""
    from agcl import PairAug

    p = config.pretrain
    return PairAug(
        scale=(float(p.aug_scale[0]), float(p.aug_scale[1])),
        ratio=(float(p.aug_ratio[0]), float(p.aug_ratio[1])),
        degrees=p.aug_degrees,
        hflip=p.aug_hflip,
        intensity_jitter=p.aug_intensity_jitter,
        color_distortion=p.aug_color_distortion,
        mask_channels=(p.image_channels,),
        generator=generator,
    )


def pretrain_encoder(
    volumes: Sequence[Mapping[str, Any]],
    config: PipelineConfig,
    organ_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    num_modalities: int,
    model: nn.Module | None = None,
    loss_fn: nn.Module | None = None,
    augment: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    optimizer: OptimizerArg = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    callback: EpochCallback | None = None,
) -> Path | None:
    """Run stage 2; returns ``out_dir/checkpoints/pretrain.pt`` (``None`` for method ``"none"``).

    Args:
        volumes: the training volumes, ``volumes[i]`` a dict ``{"image", "attention", "label",
            "modality"}`` as :class:`agcl.sampling.PatchStream` reads them (the pipeline passes
            :class:`agcl.pipeline.TrainingVolumes`).
        config: the pipeline config (``config.pretrain`` and ``config.data`` are used).
        organ_ids: the organ codes to sample.
        out_dir: the run folder.
        num_modalities: the number of modality ids (``ce`` classes are modality x organ).
        model: the network (default :func:`build_pretrain_model`); maps ``(2B, C + 1, h, w)``
            to ``(2B, D)`` embeddings (or ``ce`` logits).
        loss_fn: default :func:`build_pretrain_loss`.
        augment: ``augment(x) -> (view1, view2)`` (default :func:`build_pair_aug`, reseeded
            every epoch).
        optimizer: an optimizer over ``model``'s parameters, or a factory ``params -> optimizer``
            (default :func:`build_optimizer`).
        resume: continue from the last completed epoch's checkpoint.
        device: where to train.
        log: the epoch log (default ``out_dir/epochs.jsonl``).
        callback: called after every epoch as ``callback("pretrain", epoch, record)``.
    """
    p = config.pretrain
    if p.method not in PRETRAIN_METHODS:
        raise ValueError(
            f"config.pretrain.method must be one of {', '.join(map(repr, PRETRAIN_METHODS))}; "
            f"got {p.method!r}"
        )
    if p.method == "none":
        return None
    if p.method not in PRETRAIN_STEPS:
        raise ValueError(f"config.pretrain.method {p.method!r} has no step in PRETRAIN_STEPS")
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "pretrain.pt"
    seed_everything(config.seed)
    model_arg, loss_arg = model, loss_fn
    loss_fn = build_pretrain_loss(config) if loss_fn is None else loss_fn
    if model is None:
        model = build_pretrain_model(
            config, num_modalities=num_modalities, num_organs=len(organ_ids)
        )
    model = model.to(device)
    loss_fn = loss_fn.to(device) if isinstance(loss_fn, nn.Module) else loss_fn
    opt = resolve_optimizer(optimizer, model, config, "pretrain")
    train_model = dd.wrap_ddp(model, device)
    organ_index = {int(o): i for i, o in enumerate(organ_ids)}
    lut = torch.zeros(max(organ_index) + 1, dtype=torch.long)
    for o, i in organ_index.items():
        lut[o] = i
    gen = torch.Generator()
    aug = build_pair_aug(config, generator=gen) if augment is None else augment
    stream = patch_stream(volumes, config, organ_ids, stage="pretrain")
    step_fn = PRETRAIN_STEPS[p.method]

    def batches(epoch: int):
        gen.manual_seed(config.seed * 7919 + epoch * 101 + dd.rank())
        _reseed(aug, config.seed * 7919 + epoch * 101 + dd.rank())
        return epoch_batches(stream, config, epoch, device)

    mp = MixedPrecision(p.amp, device, "pretrain.amp")
    forward = mp.forward(train_model)  # the encoder under autocast, embeddings and loss in float32

    def step(batch) -> float:
        x = batch.inputs().to(device, non_blocking=True)
        v1, v2 = aug(x)
        target = batch.target.to(device)
        modality = batch.modality.to(device)
        cls = modality * len(organ_ids) + lut[batch.target].to(device)
        loss = step_fn(
            forward, v1, v2, target=target, modality=modality, loss_fn=loss_fn, class_index=cls
        )
        opt.zero_grad(set_to_none=True)
        mp.step(loss, opt)
        return float(loss.detach())

    settings = stage_fingerprint(
        "pretrain",
        config,
        organ_ids=[int(i) for i in organ_ids],
        num_modalities=int(num_modalities),
        world_size=dd.world_size(),
        components=components_record(
            model=model_arg, loss_fn=loss_arg, optimizer=optimizer, augment=augment
        ),
    )
    fit(
        stage="pretrain",
        epochs=p.epochs,
        ckpt_path=ckpt_path,
        settings=settings,
        model=train_model,
        optimizer=opt,
        epoch_batches=batches,
        step=step,
        resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"),
        callback=callback,
        device=device,
        steps_per_epoch=p.steps_per_epoch,
        extra=lambda: {
            "organ_ids": [int(i) for i in organ_ids],
            "num_modalities": int(num_modalities),
            "config": config.to_dict(),
        },
    )
    return ckpt_path


def _reseed(augment: Any, seed: int) -> None:
    """Reseed a user augmentation's own ``generator`` too, so a resumed epoch repeats its views."""
    g = getattr(augment, "generator", None)
    if isinstance(g, torch.Generator):
        g.manual_seed(seed)


@torch.no_grad()
def embed_patches(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 256, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Projected embeddings (or ``ce`` logits) of patches ``(N, C + 1, h, w)`` in eval mode,
    ``(N, D)``."""
    model.eval()
    return torch.cat(
        [model(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)]
    )


def load_pretrain_model(
    checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu"
) -> nn.Module:
    """Rebuild the stage-2 model (encoder + head) from its checkpoint.

    Raises:
        FileNotFoundError, ValueError: no file, a damaged one, another stage's, or weights that
            do not fit the configuration (the path is named).
    """
    ckpt = load_checkpoint(
        checkpoint, stage="pretrain", extra_keys=("config", "organ_ids", "num_modalities")
    )
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    model = build_pretrain_model(
        config,
        num_modalities=ckpt["extra"]["num_modalities"],
        num_organs=len(ckpt["extra"]["organ_ids"]),
    )
    load_weights(model, ckpt["model"], checkpoint if not isinstance(checkpoint, dict) else "(dict)")
    return model.to(device).eval()
