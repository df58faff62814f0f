"""INTERIM stages 2 and 3 of examples/voc_full.py, until the pipeline's streaming path lands.

DELETE THIS MODULE when ``agcl.sampling.PatchStream`` and the volume-sequence
``agcl.pipeline.pretrain_encoder`` / ``train_segmenter`` are on main (issue 9): voc_full.py then
passes its single-slice volumes (``agcl.pipeline.image2d.image_volume``) to those functions
instead of to :func:`pretrain_2d` / :func:`train_segmenter_2d` here.

Built only from the library's public parts, on images as single-slice volumes ``(C, H, W, 1)``:
:class:`agcl.AttentionPatchSampler` (patches per class inside its attention; the colour channels
after the first are cut at the same centres with :func:`agcl.sampling.extract_windows`, because
the sampler takes one-channel volumes), :class:`agcl.PairAug` with colour distortion,
:class:`agcl.ModalTargetSupConLoss`, the ResNet / projection head / ASPP decoder of
:mod:`agcl.models`, and the pipeline's epoch loop (checkpoints, ``--resume``). Unlike the
streaming path, each epoch's patches are materialised in memory (fine for the synthetic scenes
and a few thousand VOC patches; not for the whole of VOC at the paper's density).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agcl import AttentionPatchSampler, ModalTargetSupConLoss, PairAug, SoftDiceLoss
from agcl.models import AGCLPretrainModel, ASPPDecoder, ProjectionHead, SegmentationModel, create_model
from agcl.pipeline import EpochLog, PipelineConfig, seed_everything
from agcl.pipeline import _distributed as dd
from agcl.pipeline._coarse_attention import densify
from agcl.pipeline._training import fit
from agcl.sampling import extract_windows

PRETRAIN_METHODS = ("agcl", "sscl", "supcon", "ce", "none")


def sample_patches(volumes: Sequence[dict[str, Any]], class_ids: Sequence[int], *, patch_size: int,
                   per_image: int, max_patches: int | None, seed: int, with_label: bool) -> dict[str, torch.Tensor]:
    """One epoch's patches of every volume: ``x (P, C + 1, h, w)`` (image channels, attention),
    ``target``, ``modality`` ``(P,)``; with labels also ``label``, ``valid`` ``(P, h, w)``."""
    sampler = AttentionPatchSampler(patch_size, per_image, axis=-1, centre_mode="mask",
                                    max_patches=max_patches, image_pad_value=0.0)
    gen = torch.Generator().manual_seed(int(seed))
    parts: list[dict[str, torch.Tensor]] = []
    for index, vol in enumerate(volumes):
        image = torch.as_tensor(vol["image"])  # (C, H, W, 1)
        stack = densify(vol["attention"], class_ids, image.shape[1:])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # an image none of whose classes has attention
            batch = sampler.sample(image[0], stack, vol["label"] if with_label else None, vol["modality"],
                                   targets=class_ids, volume_index=index, generator=gen)
        if len(batch) == 0:
            continue
        centres = torch.cat([batch.slice_index[:, None], batch.centre], 1)
        channels = [batch.image] + [extract_windows(image[c], centres, patch_size, pad_value=0.0)[:, None]
                                    for c in range(1, image.shape[0])]
        part = {"x": torch.cat([*channels, batch.attention], 1), "target": batch.target,
                "modality": batch.modality}
        if with_label:
            assert batch.label is not None
            part["label"] = batch.label[:, 0].long()
            ignore = extract_windows(torch.as_tensor(vol["ignore"]).to(torch.uint8), centres, patch_size, pad_value=1)
            part["valid"] = ignore == 0
        parts.append(part)
    if not parts:
        raise RuntimeError("no patches: no class has attention in any training image")
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _batches(pool: dict[str, torch.Tensor], batch_size: int, seed: int):
    order = torch.randperm(len(pool["target"]), generator=torch.Generator().manual_seed(seed))
    order = order[dd.rank()::dd.world_size()]  # per-rank shard under torchrun
    for s in range(0, len(order), batch_size):
        sel = order[s:s + batch_size]
        if len(sel) >= 2:  # BatchNorm needs two samples
            yield {k: v[sel] for k, v in pool.items()}


def _ddp(model: nn.Module, device: str | torch.device) -> nn.Module:
    if not dd.is_distributed():
        return model
    dev = torch.device(device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def build_encoder(config: PipelineConfig, image_channels: int) -> nn.Module:
    p = config.pretrain
    return create_model(p.encoder, in_chans=image_channels + 1, output_stride=p.output_stride, base_width=p.base_width)


def pretrain_2d(volumes: Sequence[dict[str, Any]], config: PipelineConfig, class_ids: Sequence[int],
                out_dir: str | os.PathLike[str], *, num_modalities: int, image_channels: int = 3,
                color_distortion: float = 0.5, resume: bool = False, device: str | torch.device = "cpu",
                log: EpochLog | None = None) -> Path | None:
    """Stage 2; returns ``out_dir/checkpoints/pretrain2d.pt`` (``None`` for method "none")."""
    p = config.pretrain
    if p.method == "none":
        return None
    seed_everything(config.seed)
    encoder = build_encoder(config, image_channels)
    width = int(getattr(encoder, "num_features"))  # noqa: B009
    n_cls = num_modalities * len(class_ids)
    model: nn.Module = (_Classifier(encoder, n_cls) if p.method == "ce"
                        else AGCLPretrainModel(encoder, ProjectionHead(width, width, p.projection_dim)))
    model = model.to(device)
    train_model = _ddp(model, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    loss_fn = ModalTargetSupConLoss(temperature=p.temperature, partial_weight=p.partial_weight,
                                    gather_distributed=dd.is_distributed())
    aug = PairAug(scale=p.aug_scale, degrees=p.aug_degrees, hflip=True, color_distortion=color_distortion,
                  mask_channels=(image_channels,), generator=torch.Generator().manual_seed(config.seed + 7))
    code_index = {int(c): k for k, c in enumerate(class_ids)}
    per_rank = max(2, p.batch_size // dd.world_size())

    def epoch_batches(epoch: int):
        pool = sample_patches(volumes, class_ids, patch_size=p.patch_size, per_image=p.patches_per_slice,
                              max_patches=p.max_patches_per_volume, seed=config.seed * 1000 + epoch, with_label=False)
        aug.generator.manual_seed(config.seed * 7919 + epoch)
        yield from _batches(pool, per_rank, config.seed + 31 * epoch)

    def step(batch: dict[str, torch.Tensor]) -> float:
        v1, v2 = aug(batch["x"])
        out = train_model(torch.cat([v1, v2]).to(device))
        target, modality = batch["target"].to(device), batch["modality"].to(device)
        if p.method == "ce":
            cls = modality * len(class_ids) + torch.tensor([code_index[int(t)] for t in batch["target"]], device=device)
            loss = F.cross_entropy(out, cls.repeat(2))
        else:
            feats = torch.stack(out.chunk(2), 1)
            keys = {"agcl": {"modality": modality, "target": target}, "supcon": {"target": target}, "sscl": {}}[p.method]
            loss = loss_fn(feats, **keys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    out = Path(out_dir)
    ckpt = out / "checkpoints" / "pretrain2d.pt"
    settings = {"pretrain": config.to_dict()["pretrain"], "seed": config.seed, "class_ids": list(map(int, class_ids)),
                "color_distortion": float(color_distortion), "image_channels": int(image_channels),
                "world_size": dd.world_size()}
    fit(stage="pretrain", epochs=p.epochs, ckpt_path=ckpt, settings=settings, model=train_model, optimizer=optimizer,
        epoch_batches=epoch_batches, step=step, resume=resume, log=log or EpochLog(out / "epochs.jsonl"),
        device=device, steps_per_epoch=p.steps_per_epoch)
    return ckpt


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, n: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(int(getattr(encoder, "num_features")), n)  # noqa: B009

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(getattr(self.encoder, "forward_pooled")(x))  # noqa: B009


def build_segment_model_2d(config: PipelineConfig, image_channels: int = 3,
                           encoder_state: dict[str, torch.Tensor] | None = None) -> SegmentationModel:
    encoder = build_encoder(config, image_channels)
    if encoder_state is not None:
        encoder.load_state_dict(encoder_state)
    dec = ASPPDecoder(tuple(getattr(encoder, "out_channels")), 2, output_stride=config.pretrain.output_stride,  # noqa: B009
                      aspp_channels=config.segment.aspp_channels)
    return SegmentationModel(encoder, dec).freeze_encoder()


def train_segmenter_2d(volumes: Sequence[dict[str, Any]], config: PipelineConfig, class_ids: Sequence[int],
                       out_dir: str | os.PathLike[str], *, pretrain_checkpoint: str | os.PathLike[str] | None,
                       image_channels: int = 3, resume: bool = False, device: str | torch.device = "cpu",
                       log: EpochLog | None = None) -> Path:
    """Stage 3 (frozen encoder + 2-class ASPP, soft Dice with void left out); returns the checkpoint."""
    from agcl._io import safe_load

    s, p = config.segment, config.pretrain
    seed_everything(config.seed + 1)
    state = None
    if pretrain_checkpoint is not None:
        ckpt = safe_load(pretrain_checkpoint)
        state = {k[len("encoder."):]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    model = build_segment_model_2d(config, image_channels, state).to(device)
    train_model = _ddp(model, device)
    optimizer = torch.optim.Adam([q for q in model.parameters() if q.requires_grad], lr=s.lr)
    dice = SoftDiceLoss(activation=None, include_background=False)
    per_rank = max(2, s.batch_size // dd.world_size())

    def epoch_batches(epoch: int):
        pool = sample_patches(volumes, class_ids, patch_size=p.patch_size, per_image=s.patches_per_slice,
                              max_patches=s.max_patches_per_volume, seed=config.seed * 2003 + epoch, with_label=True)
        yield from _batches(pool, per_rank, config.seed + 17 * epoch)

    def step(batch: dict[str, torch.Tensor]) -> float:
        x, y, valid = batch["x"].to(device), batch["label"].to(device), batch["valid"].to(device)
        fg = torch.softmax(train_model(x), 1)[:, 1] * valid  # void pixels count for nothing
        loss = dice(torch.stack([1 - fg, fg], 1), y * valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "segment2d.pt"
    settings = {"segment": config.to_dict()["segment"], "pretrain": config.to_dict()["pretrain"], "seed": config.seed,
                "class_ids": list(map(int, class_ids)), "image_channels": int(image_channels),
                "pretrain_checkpoint": None if pretrain_checkpoint is None else Path(pretrain_checkpoint).name,
                "world_size": dd.world_size()}
    fit(stage="segment", epochs=s.epochs, ckpt_path=ckpt_path, settings=settings, model=train_model,
        optimizer=optimizer, epoch_batches=epoch_batches, step=step, resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"), device=device, steps_per_epoch=s.steps_per_epoch,
        extra=lambda: {"config": config.to_dict(), "class_ids": list(map(int, class_ids)),
                       "image_channels": int(image_channels)})
    return ckpt_path


def load_segment_model_2d(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> SegmentationModel:
    from agcl._io import safe_load

    ckpt = safe_load(checkpoint)
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    model = build_segment_model_2d(config, int(ckpt["extra"]["image_channels"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()


def embed_patches(checkpoint: str | os.PathLike[str], volumes: Sequence[dict[str, Any]], config: PipelineConfig,
                  class_ids: Sequence[int], *, limit: int = 600, device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """Projected embeddings of held-out patches for the PCA figure (``None`` for "ce"/"none")."""
    from agcl._io import safe_load

    if config.pretrain.method in ("ce", "none"):
        return None
    ckpt = safe_load(checkpoint)
    image_channels = int(ckpt["config"]["image_channels"])
    encoder = build_encoder(config, image_channels)
    width = int(getattr(encoder, "num_features"))  # noqa: B009
    model = AGCLPretrainModel(encoder, ProjectionHead(width, width, config.pretrain.projection_dim))
    model.load_state_dict(ckpt["model"])
    model.to(device).eval()
    pool = sample_patches(volumes, class_ids, patch_size=config.pretrain.patch_size, per_image=2,
                          max_patches=None, seed=12345, with_label=False)
    sel = torch.randperm(len(pool["target"]), generator=torch.Generator().manual_seed(0))[:limit]
    with torch.no_grad():
        emb = model(pool["x"][sel].to(device)).cpu().numpy()
    return {"embedding": emb, "target": pool["target"][sel].numpy(), "modality": pool["modality"][sel].numpy()}
