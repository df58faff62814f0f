"""Stage 3: the frozen encoder + ASPP decoder on binary per-organ patches (soft Dice loss).

The encoder comes from the stage-2 checkpoint (random initialisation for ``method="none"``)
and is frozen (:meth:`agcl.models.SegmentationModel.freeze_encoder`: no gradients, BatchNorm in
eval mode). The decoder is :class:`agcl.models.ASPPDecoder` with two output classes (background,
organ) and a softmax, as in the paper (``s_i`` in ``R^{b x 2 x h x w}``); it is trained with
:class:`agcl.SoftDiceLoss` on the organ channel (``include_background=False``) against the
organ's ground-truth mask in each patch. Patches stream from the training volumes through the
same :class:`agcl.sampling.PatchStream` as stage 2 (image + attention channels in, the organ's
mask as the label). Adam, as in the paper. ``config.segment.decoder`` chooses the ASPP decoder
or DeepLabV3+; ``model``, ``loss_fn`` and ``optimizer`` can be passed in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agcl.pipeline.config import PipelineConfig
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.checkpoint import load_checkpoint, load_weights, seed_everything
from agcl.pipeline.toolkit.factories import OptimizerArg, build_encoder, resolve_optimizer
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.streams import epoch_batches, patch_stream
from agcl.pipeline.toolkit.training import EpochCallback, MixedPrecision, fit

__all__ = [
    "build_segment_loss",
    "build_segment_model",
    "load_segment_model",
    "segment_step",
    "train_segmenter",
]


def build_segment_model(
    config: PipelineConfig, encoder_state: dict[str, torch.Tensor] | None = None
) -> nn.Module:
    """A :class:`agcl.models.SegmentationModel` (encoder frozen) with a 2-class decoder:
    ``config.segment.decoder`` ``"aspp"`` (:class:`agcl.models.ASPPDecoder`) or
    ``"deeplabv3plus"``."""
    from agcl.models import ASPPDecoder, DeepLabV3PlusDecoder, SegmentationModel

    encoder = build_encoder(config)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    channels = tuple(getattr(encoder, "out_channels"))  # noqa: B009
    s = config.segment
    cls = DeepLabV3PlusDecoder if s.decoder == "deeplabv3plus" else ASPPDecoder
    extra = {"decoder_channels": s.decoder_channels} if s.decoder == "deeplabv3plus" else {}
    decoder = cls(
        channels,
        2,
        output_stride=config.pretrain.output_stride,
        aspp_channels=s.aspp_channels,
        **extra,
    )
    return SegmentationModel(encoder, decoder).freeze_encoder()


def build_segment_loss(config: PipelineConfig) -> nn.Module:
    """``config.segment.loss``: ``"dice"``, the paper's soft Dice loss on the organ channel
    (softmax over background / organ), or ``"dice_ce"``, the same plus cross-entropy
    (:class:`agcl.DiceCELoss`)."""
    from agcl import DiceCELoss, SoftDiceLoss

    if config.segment.loss == "dice_ce":
        return DiceCELoss(include_background=False)
    return SoftDiceLoss(activation="softmax", include_background=False)


def _encoder_state(
    pretrain_checkpoint: str | os.PathLike[str] | None,
) -> dict[str, torch.Tensor] | None:
    if pretrain_checkpoint is None:
        return None
    ckpt = load_checkpoint(pretrain_checkpoint, stage="pretrain", keys=("stage", "model"))
    return {k[len("encoder.") :]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}


def segment_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: nn.Module,
    ignore: torch.Tensor | None = None,
) -> torch.Tensor:
    """The soft Dice loss of one batch of patches.

    ``ignore`` pixels (e.g. VOC's void) are left out: there the logits are replaced by a
    constant, certain background and the target by background, so they add nothing to the
    Dice sums and get no gradient.

    Shape:
        x: ``(B, C + 1, h, w)`` image + attention; y: ``(B, h, w)`` long 0/1 organ mask;
        ignore: ``(B, h, w)`` bool or ``None``.
    """
    logits = model(x)
    if ignore is not None:
        sure = torch.tensor([30.0, -30.0], dtype=logits.dtype, device=logits.device).view(
            1, 2, 1, 1
        )
        logits = torch.where(ignore[:, None], sure, logits)
        y = y.masked_fill(ignore, 0)
    return loss_fn(logits, y)


def train_segmenter(
    volumes: Sequence[Mapping[str, Any]],
    config: PipelineConfig,
    organ_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    pretrain_checkpoint: str | os.PathLike[str] | None,
    model: nn.Module | None = None,
    loss_fn: nn.Module | None = None,
    optimizer: OptimizerArg = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    callback: EpochCallback | None = None,
) -> Path:
    """Run stage 3; returns ``out_dir/checkpoints/segment.pt``.

    The checkpoint holds the whole segmentation model (frozen encoder + decoder), the organ ids
    and the config: with the stage-1 checkpoint it is all :func:`agcl.pipeline.predict_volume`
    needs.

    Args:
        volumes: the labelled training volumes (as :func:`agcl.pipeline.pretrain_encoder`; each
            needs a ``"label"``).
        config: the pipeline config (``config.segment``, ``config.data`` and the encoder settings).
        organ_ids: the organ codes to sample.
        out_dir: the run folder.
        pretrain_checkpoint: the stage-2 checkpoint, or ``None`` for a random encoder (ignored
            when ``model`` is given).
        model: default :func:`build_segment_model` (encoder from ``pretrain_checkpoint``, frozen);
            one you pass in must be rebuildable from the config by :func:`load_segment_model`
            if you use the pipeline's prediction.
        loss_fn: ``loss_fn(logits, y)`` (default :func:`build_segment_loss`).
        optimizer: an optimizer or a factory ``params -> optimizer`` (default Adam, ``segment.lr``).
        resume, device, log, callback: as :func:`agcl.pipeline.pretrain_encoder`.
    """
    s = config.segment
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "segment.pt"
    seed_everything(config.seed + 1)
    settings = stage_fingerprint(
        "segment",
        config,
        organ_ids=[int(i) for i in organ_ids],
        world_size=dd.world_size(),
        pretrain_checkpoint=None if pretrain_checkpoint is None else Path(pretrain_checkpoint).name,
        components=components_record(model=model, loss_fn=loss_fn, optimizer=optimizer),
    )
    if model is None:
        model = build_segment_model(config, _encoder_state(pretrain_checkpoint))
    model = model.to(device)
    opt = resolve_optimizer(optimizer, model, config, "segment")
    train_model = dd.wrap_ddp(model, device)
    loss_fn = build_segment_loss(config) if loss_fn is None else loss_fn
    stream = patch_stream(volumes, config, organ_ids, stage="segment")

    mp = MixedPrecision(s.amp, device, "segment.amp")
    forward = mp.forward(train_model)  # the model under autocast, logits and loss in float32

    def step(batch) -> float | None:
        if len(batch) < 2:  # BatchNorm in the decoder's pooling branch needs two samples: skipped
            return None
        x = batch.inputs().to(device, non_blocking=True)
        y = batch.label[:, 0].to(device).long()  # type: ignore[index]
        ignore = None if batch.ignore is None else batch.ignore[:, 0].to(device)
        loss = segment_step(forward, x, y, loss_fn, ignore)
        opt.zero_grad(set_to_none=True)
        mp.step(loss, opt)
        return float(loss.detach())

    fit(
        stage="segment",
        epochs=s.epochs,
        ckpt_path=ckpt_path,
        settings=settings,
        model=train_model,
        optimizer=opt,
        epoch_batches=lambda epoch: epoch_batches(stream, config, epoch, device),
        step=step,
        resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"),
        callback=callback,
        device=device,
        steps_per_epoch=s.steps_per_epoch,
        extra=lambda: {"organ_ids": [int(i) for i in organ_ids], "config": config.to_dict()},
    )
    return ckpt_path


def load_segment_model(
    checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu"
):
    """``(model, organ_ids, config)`` from a stage-3 checkpoint (path or loaded dict).

    Raises:
        FileNotFoundError, ValueError: no file, a damaged one, another stage's, or weights that
            do not fit the configuration (the path and the mismatch are named).
    """
    ckpt = load_checkpoint(checkpoint, stage="segment", extra_keys=("config", "organ_ids"))
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    model = load_weights(
        build_segment_model(config),
        ckpt["model"],
        checkpoint if not isinstance(checkpoint, dict) else "(dict)",
    )
    return model.to(device).eval(), [int(i) for i in ckpt["extra"]["organ_ids"]], config
