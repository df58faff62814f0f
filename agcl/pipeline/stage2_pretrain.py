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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agcl.models.heads import PretrainClassifier
from agcl.pipeline import _distributed as dd
from agcl.pipeline._training import EpochCallback, MixedPrecision, fit
from agcl.pipeline.checkpoint import EpochLog, seed_everything
from agcl.pipeline.config import PRETRAIN_METHODS, PipelineConfig

__all__ = ["PRETRAIN_STEPS", "PretrainClassifier", "build_encoder", "build_optimizer", "build_pair_aug",
           "build_pretrain_loss", "build_pretrain_model", "embed_patches", "load_pretrain_model", "patch_stream",
           "pretrain_encoder", "pretrain_step"]

PretrainStep = Callable[..., torch.Tensor]


def build_encoder(config: PipelineConfig) -> nn.Module:
    """The encoder named by ``config.pretrain.encoder``, ``image_channels + 1`` inputs (image + attention)."""
    from agcl.models import create_model

    p = config.pretrain
    return create_model(p.encoder, in_chans=p.image_channels + 1, output_stride=p.output_stride,
                        base_width=p.base_width)


def build_pretrain_model(config: PipelineConfig, *, num_modalities: int, num_organs: int) -> nn.Module:
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
        raise ValueError(f"config.pretrain.queue_size needs method 'agcl' or 'supcon'; got {p.method!r}")
    if p.method == "ce":
        return nn.CrossEntropyLoss()
    return ModalTargetSupConLoss(p.temperature, partial_weight=p.partial_weight,
                                 gather_distributed=dd.is_distributed(), queue_size=p.queue_size)


def build_pair_aug(config: PipelineConfig, *, generator: torch.Generator | None = None):
    """:class:`agcl.PairAug` with the ``config.pretrain.aug_*`` options; the attention (the last
    channel) is warped as a mask."""
    from agcl import PairAug

    p = config.pretrain
    return PairAug(scale=(float(p.aug_scale[0]), float(p.aug_scale[1])),
                   ratio=(float(p.aug_ratio[0]), float(p.aug_ratio[1])), degrees=p.aug_degrees, hflip=p.aug_hflip,
                   intensity_jitter=p.aug_intensity_jitter, color_distortion=p.aug_color_distortion,
                   mask_channels=(p.image_channels,), generator=generator)


def build_optimizer(config: PipelineConfig, params: Iterable[nn.Parameter], *, stage: str) -> torch.optim.Optimizer:
    """The paper's optimizers: SGD with momentum for ``stage="pretrain"``, Adam for ``"segment"``."""
    params = [q for q in params if q.requires_grad]
    if stage == "pretrain":
        p = config.pretrain
        return torch.optim.SGD(params, lr=p.lr, momentum=p.momentum, weight_decay=p.weight_decay)
    if stage == "segment":
        return torch.optim.Adam(params, lr=config.segment.lr)
    raise ValueError(f"stage must be 'pretrain' or 'segment'; got {stage!r}")


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
        raise ValueError(f"method must be one of {', '.join(map(repr, PRETRAIN_STEPS))}; got {method!r}")
    if loss_fn is None:
        if method != "ce":
            raise ValueError(f"loss_fn is required for method {method!r}")
        loss_fn = nn.CrossEntropyLoss()
    return PRETRAIN_STEPS[method](model, view1, view2, target=target, modality=modality, loss_fn=loss_fn,
                                  class_index=class_index)


def patch_stream(volumes: Sequence[Mapping[str, Any]], config: PipelineConfig, organ_ids: Sequence[int], *,
                 stage: str) -> Any:
    """The :class:`agcl.sampling.PatchStream` of ``stage`` (``"pretrain"``: no labels; ``"segment"``: labels).

    Per-rank batches of ``batch_size // world_size`` patches; the seed differs per stage.
    """
    from agcl import AttentionPatchSampler
    from agcl.sampling import PatchStream

    p, d = config.pretrain, config.data
    s = config.pretrain if stage == "pretrain" else config.segment
    sampler = AttentionPatchSampler(patch_size=p.patch_size, patches_per_slice=s.patches_per_slice,
                                    max_patches=s.max_patches_per_volume, seed=0)
    world = dd.world_size()
    return PatchStream(volumes, sampler, batch_size=max(1, s.batch_size // world), with_label=stage == "segment",
                       targets=list(organ_ids), shards=d.shards, streams=d.streams,
                       buffer_size=max(d.shuffle_buffer, s.batch_size), chunk_size=d.chunk_size,
                       seed=config.seed * 1009 + (0 if stage == "pretrain" else 7), rank=dd.rank(),
                       world_size=world, drop_last=world > 1)


def epoch_batches(stream: Any, config: PipelineConfig, epoch: int, device: str | torch.device) -> Iterator[Any]:
    """The batches of one epoch (the stream reseeded for ``epoch``, pinned on CUDA)."""
    stream.set_epoch(epoch)
    return stream.loader(config.data.num_workers, pin_memory=torch.device(device).type == "cuda")


def _settings(config: PipelineConfig, organ_ids: Sequence[int], num_modalities: int) -> dict[str, Any]:
    p = config.to_dict()["pretrain"]
    p.pop("epochs")
    p.pop("amp", None)  # the precision may change between machines without changing the run
    return {"pretrain": p, "seed": config.seed, "organ_ids": [int(i) for i in organ_ids],
            "num_modalities": int(num_modalities), "coarse_source": config.coarse.source,
            **_attention_settings(config), "world_size": dd.world_size(), "stream": _stream_settings(config)}


def _attention_settings(config: PipelineConfig) -> dict[str, Any]:
    """The attention fields stages 2-3 must not resume across (where patches are drawn, what the
    attention channel holds). The binary channel leaves no key, so a run written before
    ``coarse.attention_channel`` existed (binary) still resumes."""
    c = config.coarse
    out: dict[str, Any] = {"margin_mm": c.margin_mm, "attention_threshold": c.attention_threshold}
    if c.attention_channel != "mask":
        out["attention_channel"] = c.attention_channel
    return out


def _stream_settings(config: PipelineConfig) -> dict[str, Any]:
    d = config.to_dict()["data"]
    for key in ("cache_mb", "num_workers"):  # the batches do not depend on these
        d.pop(key)
    return d


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
    optimizer: torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
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
        raise ValueError(f"config.pretrain.method must be one of {', '.join(map(repr, PRETRAIN_METHODS))}; got {p.method!r}")
    if p.method == "none":
        return None
    if p.method not in PRETRAIN_STEPS:
        raise ValueError(f"config.pretrain.method {p.method!r} has no step in PRETRAIN_STEPS")
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "pretrain.pt"
    seed_everything(config.seed)
    loss_fn = build_pretrain_loss(config) if loss_fn is None else loss_fn
    if model is None:
        model = build_pretrain_model(config, num_modalities=num_modalities, num_organs=len(organ_ids))
    model = model.to(device)
    loss_fn = loss_fn.to(device) if isinstance(loss_fn, nn.Module) else loss_fn
    opt = _optimizer(optimizer, model, config, "pretrain")
    train_model = wrap_ddp(model, device)
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
        loss = step_fn(forward, v1, v2, target=target, modality=modality, loss_fn=loss_fn, class_index=cls)
        opt.zero_grad(set_to_none=True)
        mp.step(loss, opt)
        return float(loss.detach())

    fit(stage="pretrain", epochs=p.epochs, ckpt_path=ckpt_path,
        settings=_settings(config, organ_ids, num_modalities), model=train_model, optimizer=opt,
        epoch_batches=batches, step=step, resume=resume, log=log or EpochLog(out / "epochs.jsonl"),
        callback=callback, device=device, steps_per_epoch=p.steps_per_epoch,
        extra=lambda: {"organ_ids": [int(i) for i in organ_ids], "num_modalities": int(num_modalities),
                       "config": config.to_dict()})
    return ckpt_path


def _reseed(augment: Any, seed: int) -> None:
    """Reseed a user augmentation's own ``generator`` too, so a resumed epoch repeats its views."""
    g = getattr(augment, "generator", None)
    if isinstance(g, torch.Generator):
        g.manual_seed(seed)


def _optimizer(optimizer: Any, model: nn.Module, config: PipelineConfig, stage: str) -> torch.optim.Optimizer:
    if optimizer is None:
        return build_optimizer(config, model.parameters(), stage=stage)
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        made = optimizer([q for q in model.parameters() if q.requires_grad])
        if not isinstance(made, torch.optim.Optimizer):
            raise TypeError(f"optimizer factory must return a torch.optim.Optimizer; got {type(made).__name__}")
        return made
    raise TypeError(f"optimizer must be a torch.optim.Optimizer, a factory params -> optimizer, or None; "
                    f"got {type(optimizer).__name__}")


def wrap_ddp(model: nn.Module, device: str | torch.device) -> nn.Module:
    """``model`` in DistributedDataParallel under torchrun (itself otherwise)."""
    if not dd.is_distributed():
        return model
    from torch.nn.parallel import DistributedDataParallel

    dev = torch.device(device)
    return DistributedDataParallel(model, device_ids=[dev.index or 0] if dev.type == "cuda" else None)


@torch.no_grad()
def embed_patches(model: nn.Module, x: torch.Tensor, *, batch_size: int = 256,
                  device: str | torch.device = "cpu") -> torch.Tensor:
    """Projected embeddings (or ``ce`` logits) of patches ``(N, C + 1, h, w)`` in eval mode, ``(N, D)``."""
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
