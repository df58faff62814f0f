"""Stage 3: the frozen encoder + ASPP decoder on binary per-organ patches (soft Dice loss).

The encoder comes from the stage-2 checkpoint (random initialisation for ``method="none"``)
and is frozen (:meth:`agcl.models.SegmentationModel.freeze_encoder`: no gradients, BatchNorm in
eval mode). The decoder is :class:`agcl.models.ASPPDecoder` with two output classes (background,
organ) and a softmax, as in the paper (``s_i`` in ``R^{b x 2 x h x w}``); it is trained with
:class:`agcl.SoftDiceLoss` on the organ channel (``include_background=False``) against the
organ's ground-truth mask in each patch. Patches come from the same attention-guided sampler as
stage 2 (image + attention channels in). Adam, as in the paper.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agcl.pipeline import _distributed as dd
from agcl.pipeline._patches import PatchPool, sample_pool
from agcl.pipeline._training import EpochCallback, fit
from agcl.pipeline._volumes import PreparedCase
from agcl.pipeline.checkpoint import EpochLog, seed_everything
from agcl.pipeline.config import PipelineConfig
from agcl.pipeline.stage2_pretrain import _batches, _wrap_ddp, build_encoder

__all__ = ["build_segment_model", "load_segment_model", "segment_step", "train_segmenter"]


def build_segment_model(config: PipelineConfig, encoder_state: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """A :class:`agcl.models.SegmentationModel` (encoder frozen) with a 2-class ASPP decoder."""
    from agcl.models import ASPPDecoder, SegmentationModel

    encoder = build_encoder(config)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    channels = tuple(getattr(encoder, "out_channels"))  # noqa: B009
    decoder = ASPPDecoder(channels, 2, output_stride=config.pretrain.output_stride,
                          aspp_channels=config.segment.aspp_channels)
    return SegmentationModel(encoder, decoder).freeze_encoder()


def _encoder_state(pretrain_checkpoint: str | os.PathLike[str] | None) -> dict[str, torch.Tensor] | None:
    if pretrain_checkpoint is None:
        return None
    from agcl._io import safe_load
    from agcl.pipeline.checkpoint import check_payload

    ckpt = check_payload(safe_load(pretrain_checkpoint), pretrain_checkpoint, ("stage", "model"))
    if ckpt.get("stage") != "pretrain":
        raise ValueError(f"pretrain_checkpoint must be a stage-2 checkpoint; {pretrain_checkpoint} holds {ckpt.get('stage')!r}")
    return {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}


def segment_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> torch.Tensor:
    """The soft Dice loss of one batch of patches.

    Shape:
        x: ``(B, 2, h, w)`` image + attention; y: ``(B, h, w)`` long 0/1 organ mask.
    """
    return loss_fn(model(x), y)


def _settings(config: PipelineConfig, organ_ids: Sequence[int]) -> dict[str, Any]:
    s = config.to_dict()["segment"]
    for key in ("epochs", "stride", "threshold", "inference_batch_size"):
        s.pop(key)
    p = config.to_dict()["pretrain"]
    p.pop("epochs")
    return {"segment": s, "pretrain": p, "seed": config.seed, "organ_ids": [int(i) for i in organ_ids],
            "coarse_source": config.coarse.source, "margin_mm": config.coarse.margin_mm,
            "world_size": dd.world_size()}


def train_segmenter(
    cases: Sequence[PreparedCase],
    attention: Callable[[int], np.ndarray],
    config: PipelineConfig,
    organ_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    pretrain_checkpoint: str | os.PathLike[str] | None,
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
        cases: the labelled training cases.
        attention: ``attention(i) -> (K, X, Y, Z)`` bool attention stack of case ``i``.
        config: the pipeline config (``config.segment`` and the encoder settings).
        organ_ids: the organ codes, one per attention map.
        out_dir: the run folder.
        pretrain_checkpoint: the stage-2 checkpoint, or ``None`` for a random encoder.
        resume, device, log, callback: as :func:`agcl.pipeline.pretrain_encoder`.
    """
    from agcl import SoftDiceLoss

    s, p = config.segment, config.pretrain
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "segment.pt"
    seed_everything(config.seed + 1)
    model = build_segment_model(config, _encoder_state(pretrain_checkpoint)).to(device)
    optimizer = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=s.lr)
    train_model = _wrap_ddp(model, device)
    loss_fn = SoftDiceLoss(activation="softmax", include_background=False)
    per_rank = max(1, s.batch_size // dd.world_size())

    def epoch_batches(epoch: int):
        pool = sample_pool(cases, attention, organ_ids, patch_size=p.patch_size,
                           patches_per_slice=s.patches_per_slice, max_patches=s.max_patches_per_volume,
                           seed=config.seed * 2003 + epoch, with_label=True)
        assert pool is not None  # allow_empty=False raises instead
        yield from _batches(pool, per_rank, seed=config.seed + 17 * epoch)

    def step(batch: PatchPool) -> float:
        loss = segment_step(train_model, batch.x.to(device), batch.label.to(device), loss_fn)  # type: ignore[union-attr]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    settings = _settings(config, organ_ids)
    settings["pretrain_checkpoint"] = None if pretrain_checkpoint is None else Path(pretrain_checkpoint).name
    fit(stage="segment", epochs=s.epochs, ckpt_path=ckpt_path, settings=settings, model=train_model,
        optimizer=optimizer, epoch_batches=epoch_batches, step=step, resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"), callback=callback, device=device, steps_per_epoch=s.steps_per_epoch,
        extra=lambda: {"organ_ids": [int(i) for i in organ_ids], "config": config.to_dict()})
    return ckpt_path


def load_segment_model(checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu"):
    """``(model, organ_ids, config)`` from a stage-3 checkpoint (path or loaded dict)."""
    from agcl._io import safe_load
    from agcl.pipeline.checkpoint import check_payload

    ckpt = checkpoint if isinstance(checkpoint, dict) else safe_load(checkpoint)
    check_payload(ckpt, checkpoint if not isinstance(checkpoint, dict) else "(dict)", ("stage", "model", "extra"))
    check_payload(ckpt["extra"], f"{checkpoint if not isinstance(checkpoint, dict) else '(dict)'} ['extra']", ("config", "organ_ids"))
    if ckpt.get("stage") != "segment":
        raise ValueError(f"segment_checkpoint must be a stage-3 ('segment') checkpoint; got stage {ckpt.get('stage')!r}")
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    model = build_segment_model(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), [int(i) for i in ckpt["extra"]["organ_ids"]], config
