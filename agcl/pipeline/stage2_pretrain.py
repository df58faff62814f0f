"""Stage 2: attention-guided contrastive pre-training of the encoder (and the baselines).

Per epoch, :class:`agcl.AttentionPatchSampler` draws patches inside each organ's attention in
every training case (seeded by the run seed and the epoch); each patch is the image with the
organ's attention stacked as a second channel. :class:`agcl.PairAug` makes two views; the
encoder (``in_chans=2``) and :class:`agcl.models.ProjectionHead` embed both views in one pass,
and the loss depends on ``config.pretrain.method``:

* ``"agcl"``: :class:`agcl.ModalTargetSupConLoss` with ``modality`` and ``target`` (Eq. 3);
* ``"supcon"``: the same loss with the organ ``target`` only (Khosla et al.);
* ``"sscl"``: the same loss with no labels, i.e. the other view is the only positive (Eq. 2);
* ``"ce"``: a linear classifier on the pooled features over ``(modality, organ)`` classes,
  cross-entropy on both views (classification pre-training of the same encoder);
* ``"none"``: nothing is trained; stage 3 starts from a randomly initialised encoder.

Under torchrun the model is wrapped in DistributedDataParallel, the patch pool (identical on
every rank, same seed) is split with a DistributedSampler (per-rank batch = global batch /
world size) and the loss gathers every rank's embeddings (``gather_distributed=True``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agcl.pipeline import _distributed as dd
from agcl.pipeline._patches import PatchPool, sample_pool
from agcl.pipeline._training import EpochCallback, fit
from agcl.pipeline._volumes import PreparedCase
from agcl.pipeline.checkpoint import EpochLog, seed_everything
from agcl.pipeline.config import PRETRAIN_METHODS, PipelineConfig

__all__ = ["PretrainClassifier", "build_encoder", "build_pretrain_model", "embed_patches", "load_pretrain_model",
           "pretrain_encoder", "pretrain_step"]


class PretrainClassifier(nn.Module):
    """Encoder + linear classifier over ``(modality, organ)`` classes (the ``ce`` baseline)."""

    def __init__(self, encoder: nn.Module, num_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.classifier = nn.Linear(int(getattr(encoder, "num_features")), num_classes)  # noqa: B009

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.encoder, "forward_pooled")(x)  # noqa: B009

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build_encoder(config: PipelineConfig) -> nn.Module:
    """The 2-channel (image + attention) encoder named by ``config.pretrain.encoder``."""
    from agcl.models import create_model

    p = config.pretrain
    return create_model(p.encoder, in_chans=2, output_stride=p.output_stride, base_width=p.base_width)


def build_pretrain_model(config: PipelineConfig, *, num_modalities: int, num_organs: int) -> nn.Module:
    """Encoder + projection head (contrastive methods) or + classifier (``ce``)."""
    from agcl.models import AGCLPretrainModel, ProjectionHead

    encoder = build_encoder(config)
    if config.pretrain.method == "ce":
        return PretrainClassifier(encoder, num_modalities * num_organs)
    width = int(getattr(encoder, "num_features"))  # noqa: B009
    head = ProjectionHead(width, width, config.pretrain.projection_dim)
    return AGCLPretrainModel(encoder, head)


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

    Shape:
        view1, view2: ``(B, 2, h, w)``; target, modality, class_index: ``(B,)``.
    """
    out = model(torch.cat([view1, view2]))
    if method == "ce":
        if class_index is None:
            raise ValueError("class_index is required for method='ce'")
        return F.cross_entropy(out, class_index.repeat(2))
    feats = torch.stack(out.chunk(2), dim=1)  # (B, 2, D): sample-major, views second
    if method == "agcl":
        return loss_fn(feats, modality=modality, target=target)  # type: ignore[misc]
    if method == "supcon":
        return loss_fn(feats, target=target)  # type: ignore[misc]
    if method == "sscl":
        return loss_fn(feats)  # type: ignore[misc]
    raise ValueError(f"method must be one of {', '.join(repr(m) for m in PRETRAIN_METHODS if m != 'none')}; got {method!r}")


def _settings(config: PipelineConfig, organ_ids: Sequence[int], num_modalities: int) -> dict[str, Any]:
    p = config.to_dict()["pretrain"]
    p.pop("epochs")
    return {"pretrain": p, "seed": config.seed, "organ_ids": [int(i) for i in organ_ids],
            "num_modalities": int(num_modalities), "coarse_source": config.coarse.source,
            "margin_mm": config.coarse.margin_mm, "world_size": dd.world_size()}


def pretrain_encoder(
    cases: Sequence[PreparedCase],
    attention: Callable[[int], np.ndarray],
    config: PipelineConfig,
    organ_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
    num_modalities: int,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    callback: EpochCallback | None = None,
) -> Path | None:
    """Run stage 2; returns ``out_dir/checkpoints/pretrain.pt`` (``None`` for method ``"none"``).

    Args:
        cases: the training cases (preprocessed).
        attention: ``attention(i) -> (K, X, Y, Z)`` bool attention stack of case ``i``.
        config: the pipeline config (``config.pretrain`` is used).
        organ_ids: the organ codes, one per attention map.
        out_dir: the run folder.
        num_modalities: the number of modality ids (``ce`` classes are modality x organ).
        resume: continue from the last completed epoch's checkpoint.
        device: where to train.
        log: the epoch log (default ``out_dir/epochs.jsonl``).
        callback: called after every epoch as ``callback("pretrain", epoch, record)``.
    """
    from agcl import ModalTargetSupConLoss, PairAug

    p = config.pretrain
    if p.method not in PRETRAIN_METHODS:
        raise ValueError(f"config.pretrain.method must be one of {', '.join(map(repr, PRETRAIN_METHODS))}; got {p.method!r}")
    if p.method == "none":
        return None
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "pretrain.pt"
    seed_everything(config.seed)
    model: nn.Module = build_pretrain_model(config, num_modalities=num_modalities, num_organs=len(organ_ids)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    train_model = _wrap_ddp(model, device)
    if p.queue_size and p.method not in ("agcl", "supcon"):
        raise ValueError(f"config.pretrain.queue_size needs method 'agcl' or 'supcon'; got {p.method!r}")
    loss_fn = ModalTargetSupConLoss(p.temperature, partial_weight=p.partial_weight,
                                    gather_distributed=dd.is_distributed(), queue_size=p.queue_size)
    organ_index = {int(o): i for i, o in enumerate(organ_ids)}
    lut = torch.zeros(max(organ_index) + 1, dtype=torch.long)
    for o, i in organ_index.items():
        lut[o] = i
    gen = torch.Generator()
    aug = PairAug(scale=(float(p.aug_scale[0]), float(p.aug_scale[1])), degrees=p.aug_degrees, mask_channels=(1,),
                  generator=gen)
    per_rank = max(1, p.batch_size // dd.world_size())

    def epoch_batches(epoch: int):
        pool = sample_pool(cases, attention, organ_ids, patch_size=p.patch_size,
                           patches_per_slice=p.patches_per_slice, max_patches=p.max_patches_per_volume,
                           seed=config.seed * 1009 + epoch, with_label=False)
        assert pool is not None  # allow_empty=False raises instead
        gen.manual_seed(config.seed * 7919 + epoch * 101 + dd.rank())
        yield from _batches(pool, per_rank, seed=config.seed + epoch)

    def step(batch: PatchPool) -> float:
        x = batch.x.to(device)
        v1, v2 = aug(x)
        cls = batch.modality.to(device) * len(organ_ids) + lut[batch.target].to(device)
        loss = pretrain_step(train_model, v1, v2, method=p.method, target=batch.target.to(device),
                             modality=batch.modality.to(device), loss_fn=loss_fn, class_index=cls)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    fit(stage="pretrain", epochs=p.epochs, ckpt_path=ckpt_path,
        settings=_settings(config, organ_ids, num_modalities), model=train_model, optimizer=optimizer,
        epoch_batches=epoch_batches, step=step, resume=resume, log=log or EpochLog(out / "epochs.jsonl"),
        callback=callback, device=device, steps_per_epoch=p.steps_per_epoch,
        extra=lambda: {"organ_ids": [int(i) for i in organ_ids], "num_modalities": int(num_modalities),
                       "config": config.to_dict()})
    return ckpt_path


def _wrap_ddp(model: nn.Module, device: str | torch.device) -> nn.Module:
    if not dd.is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    return DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


def _batches(pool: PatchPool, batch_size: int, *, seed: int):
    """Mini-batches of this rank's share of ``pool`` (DistributedSampler: same order on every rank)."""
    from torch.utils.data import DistributedSampler

    n = len(pool)
    world = dd.world_size()
    indices: Any = range(n)  # a Sequence is all the sampler needs (len); typed as a Dataset
    sampler: DistributedSampler[int] = DistributedSampler(indices, num_replicas=world, rank=dd.rank(), shuffle=True,
                                                          seed=seed, drop_last=world > 1)
    idx = torch.tensor(list(sampler), dtype=torch.long)
    # a last batch of one sample would leave BatchNorm with a single value per channel
    stop = len(idx) if len(idx) % batch_size != 1 or len(idx) == 1 else len(idx) - 1
    for i in range(0, stop, batch_size):
        j = idx[i: min(i + batch_size, stop)]
        yield PatchPool(x=pool.x[j], target=pool.target[j], modality=pool.modality[j],
                        label=None if pool.label is None else pool.label[j],
                        volume_index=pool.volume_index[j])


@torch.no_grad()
def embed_patches(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Projected embeddings (or ``ce`` logits) of patches ``(N, 2, h, w)`` in eval mode, ``(N, D)``."""
    model.eval()
    return torch.cat([model(x[i: i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


def load_pretrain_model(checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the stage-2 model (encoder + head) from its checkpoint."""
    from agcl._io import safe_load
    from agcl.pipeline.checkpoint import check_payload

    ckpt = checkpoint if isinstance(checkpoint, dict) else safe_load(checkpoint)
    check_payload(ckpt, checkpoint if not isinstance(checkpoint, dict) else "(dict)", ("stage", "model", "extra"))
    check_payload(ckpt["extra"], f"{checkpoint if not isinstance(checkpoint, dict) else '(dict)'} ['extra']", ("config", "organ_ids", "num_modalities"))
    if ckpt.get("stage") != "pretrain":
        raise ValueError(f"checkpoint must be a stage-2 ('pretrain') checkpoint; got stage {ckpt.get('stage')!r}")
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    model = build_pretrain_model(config, num_modalities=ckpt["extra"]["num_modalities"],
                                 num_organs=len(ckpt["extra"]["organ_ids"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval()
