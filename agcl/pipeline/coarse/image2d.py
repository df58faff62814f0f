"""Stage 1 on 2-D images (PASCAL VOC): a DeepLabV3+ segmenter and the attention it gives.

The segmenter (a library ResNet with :class:`agcl.models.DeepLabV3PlusDecoder`,
:func:`build_coarse_model_2d`) is trained with cross-entropy (void ignored) on random crops of
whole images (:class:`ImageCropDataset` through a ``DataLoader``; default augmentation
:class:`agcl.augment.RandomCropFlip2D`), like every other stage: resumable, with the components
replaceable. Class ``k``'s attention (:func:`attention_2d`) is where its softmax probability
reaches ``coarse2d.attention_threshold``, else its most probable connected region, dilated by
``margin_px`` -- the CT rule of :func:`agcl.sampling.attention_from_probabilities` applied to
``(K + 1, H, W, 1)`` probabilities; classes that never reach ``presence_threshold`` get none.
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
from torch.utils.data import Dataset

from agcl.data.images2d import VOID, image_tensor
from agcl.pipeline.config import Coarse2DConfig, PipelineConfig
from agcl.pipeline.toolkit.checkpoint import load_checkpoint, load_weights, seed_everything
from agcl.pipeline.toolkit.factories import OptimizerArg, resolve_optimizer
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.training import EpochCallback, fit
from agcl.sampling.attention_maps import Attention
from agcl.sampling.coarse_attention import attention_from_probabilities

__all__ = [
    "ImageCropDataset",
    "attention_2d",
    "build_coarse_model_2d",
    "load_coarse_2d",
    "predict_probabilities_2d",
    "train_coarse_2d",
]


def build_coarse_model_2d(
    config: PipelineConfig | Coarse2DConfig, num_classes: int, *, in_chans: int = 3
) -> nn.Module:
    """The stage-1 segmenter: ``coarse2d.encoder`` + DeepLabV3+ decoder with ``num_classes``
    outputs."""
    from agcl.models import DeepLabV3PlusDecoder, SegmentationModel, create_model

    c = config.coarse2d if isinstance(config, PipelineConfig) else config
    encoder = create_model(
        c.encoder, in_chans=in_chans, output_stride=c.output_stride, base_width=c.base_width
    )
    decoder = DeepLabV3PlusDecoder(
        tuple(getattr(encoder, "out_channels")),  # noqa: B009
        num_classes,
        output_stride=c.output_stride,
        aspp_channels=c.aspp_channels,
        decoder_channels=c.decoder_channels,
        low_level_reduced=c.low_level_reduced,
    )
    return SegmentationModel(encoder, decoder)


class ImageCropDataset(Dataset):
    """The training crops of one epoch of the 2-D stage 1 (call :meth:`set_epoch` first).

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays (may be read lazily; each is turned into a
            tensor only when its crop is cut).
        masks: uint8 ``(H, W)`` class ids (255 = void), one per image.
        augment: ``augment(image (3, H, W), mask (H, W), generator=) -> (image, mask)`` (e.g.
            :class:`agcl.augment.RandomCropFlip2D`).
        seed: the base seed; item ``i`` of epoch ``e`` is drawn by a generator seeded with
            ``(seed, e, i)`` (the same batches for any number of workers).
    """

    def __init__(
        self,
        images: Sequence[Any],
        masks: Sequence[Any],
        *,
        augment: Callable[..., Any],
        seed: int = 0,
    ) -> None:
        if len(images) != len(masks) or len(images) == 0:
            raise ValueError(
                f"images and masks must be non-empty and of equal length; got {len(images)} and "
                f"{len(masks)}"
            )
        self.images, self.masks, self.augment, self.seed = images, masks, augment, int(seed)
        self.set_epoch(1)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        gen = torch.Generator().manual_seed(self.seed * 1009 + self.epoch)
        self.order = torch.randperm(len(self.images), generator=gen).tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.order[index]
        gen = torch.Generator().manual_seed(
            int(
                np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(
                    1, dtype=np.uint64
                )[0]
                >> 1
            )
        )
        x = image_tensor(self.images[k])
        y = torch.from_numpy(np.asarray(self.masks[k]).astype(np.int64))
        return self.augment(x, y, generator=gen)


def _check_masks(images: Sequence[Any], masks: Sequence[Any], num_classes: int) -> int:
    # one checking pass; the images stay as given (uint8, possibly read lazily)
    longest = 0
    for k in range(len(images)):
        im, y = np.asarray(images[k]), np.asarray(masks[k])
        if im.ndim != 3 or tuple(y.shape) != tuple(im.shape[:2]):
            raise ValueError(
                f"masks[{k}] has shape {tuple(y.shape)}, images[{k}] (H, W) = {tuple(im.shape[:2])}"
            )
        bad = (y != VOID) & ((y < 0) | (y >= num_classes))
        if bool(bad.any()):
            raise ValueError(
                f"masks[{k}] must hold class ids in [0, {num_classes}) or {VOID}; "
                f"got {int(y[bad][0])}"
            )
        longest = max(longest, *y.shape)
    return longest


def train_coarse_2d(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    config: PipelineConfig,
    num_classes: int,
    out_dir: str | os.PathLike[str],
    *,
    model: nn.Module | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    optimizer: OptimizerArg = None,
    augment: Callable[..., Any] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: EpochLog | None = None,
    callback: EpochCallback | None = None,
) -> Path:
    """Train stage 1 on whole images; returns ``out_dir/checkpoints/coarse2d.pt``.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays.
        masks: uint8 ``(H, W)`` class ids (``0 .. num_classes - 1``, 255 = void).
        config: the settings (``config.coarse2d``, ``config.seed``, ``config.data.num_workers``).
        num_classes: classes including the background.
        out_dir: the run folder (checkpoint after every epoch, ``epochs.jsonl``).
        model: default :func:`build_coarse_model_2d`.
        loss_fn: ``loss_fn(logits, mask)`` (default cross-entropy with void ignored).
        optimizer: an optimizer, a factory or ``None`` (``coarse2d.optimizer``).
        augment: default :class:`agcl.augment.RandomCropFlip2D` of ``coarse2d.crop_size`` (at
            most the longest image side) and ``coarse2d.hflip``.
        resume, device, log, callback: as :func:`agcl.pipeline.train_coarse`.
    """
    from torch.utils.data import DataLoader

    from agcl.augment.crop2d import RandomCropFlip2D

    c = config.coarse2d
    if len(images) != len(masks) or len(images) == 0:
        raise ValueError(
            "images and masks must be non-empty and of equal length; "
            f"got {len(images)} and {len(masks)}"
        )
    longest = _check_masks(images, masks, num_classes)
    settings = stage_fingerprint(
        "coarse2d",
        config,
        num_classes=int(num_classes),
        n_images=len(images),
        components=components_record(
            model=model, loss_fn=loss_fn, optimizer=optimizer, augment=augment
        ),
    )
    crops = ImageCropDataset(
        images,
        masks,
        seed=config.seed,
        augment=augment
        if augment is not None
        else RandomCropFlip2D(min(c.crop_size, longest), hflip=c.hflip, void=VOID),
    )
    seed_everything(config.seed + 101)
    model = (build_coarse_model_2d(config, num_classes) if model is None else model).to(device)
    opt = resolve_optimizer(optimizer, model, config, "coarse2d")
    criterion = (
        loss_fn
        if loss_fn is not None
        else (lambda logits, y: F.cross_entropy(logits, y, ignore_index=VOID))
    )
    workers = config.data.num_workers

    def epoch_batches(epoch: int):
        crops.set_epoch(epoch)
        # BatchNorm in the ASPP pooling branch needs 2 samples: a last batch of one is skipped
        return DataLoader(
            crops, batch_size=max(2, c.batch_size), shuffle=False, num_workers=workers
        )

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> float | None:
        if len(batch[0]) < 2:
            return None
        x, y = batch[0].to(device), batch[1].to(device)
        loss = criterion(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    out = Path(out_dir)
    ckpt = out / "checkpoints" / "coarse2d.pt"
    fit(
        stage="coarse2d",
        epochs=c.epochs,
        ckpt_path=ckpt,
        settings=settings,
        model=model,
        optimizer=opt,
        epoch_batches=epoch_batches,
        step=step,
        resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"),
        callback=callback,
        device=device,
        collective=False,
        extra=lambda: {
            "coarse2d": c.to_dict(),
            "num_classes": int(num_classes),
            "config": config.to_dict(),
        },
    )
    return ckpt


def load_coarse_2d(
    checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[nn.Module, Coarse2DConfig, int]:
    """``(model in eval mode, its coarse2d settings, num_classes)`` from
    :func:`train_coarse_2d`'s checkpoint."""
    ckpt = load_checkpoint(checkpoint, stage="coarse2d", extra_keys=("coarse2d", "num_classes"))
    config = Coarse2DConfig(**ckpt["extra"]["coarse2d"])
    k = int(ckpt["extra"]["num_classes"])
    model = load_weights(build_coarse_model_2d(config, k), ckpt["model"], checkpoint)
    return model.to(device).eval(), config, k


@torch.no_grad()
def predict_probabilities_2d(
    model: nn.Module, image: np.ndarray, *, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """Softmax class probabilities of one whole image.

    Shape:
        image: RGB uint8 ``(H, W, 3)``; output ``(K + 1, H, W)`` float32 on the CPU.
    """
    model.eval()
    x = image_tensor(image)[None].to(device)
    return torch.softmax(model(x), 1)[0].float().cpu()


def attention_2d(
    prob: torch.Tensor | np.ndarray, class_ids: Sequence[int], config: Coarse2DConfig
) -> Attention:
    """Per-class attention of one image from its probabilities (boxes over ``(H, W, 1)``).

    Classes whose probability never reaches ``config.presence_threshold`` are left out.

    Shape:
        prob: ``(K + 1, H, W)``, channel ``i`` class ``class_ids[i - 1]``; output
        ``{code: (box of three slices, bool mask (h, w, 1))}``.

    Examples:
        >>> import numpy as np
        >>> p = np.full((3, 6, 6), 0.05, np.float32); p[0] = 0.9
        >>> p[1, 1:3, 1:3] = 0.8; p[2, 4, 4] = 0.2
        >>> att = attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0))
        >>> att[1][0], int(att[1][1].sum()), int(att[2][1].sum())
        ((slice(1, 3, None), slice(1, 3, None), slice(0, 1, None)), 4, 1)
        >>> sorted(attention_2d(p, [1, 2], Coarse2DConfig(margin_px=0, presence_threshold=0.5)))
        [1]
    """
    p = prob if isinstance(prob, torch.Tensor) else torch.as_tensor(np.asarray(prob, np.float32))
    if p.ndim != 3:
        raise ValueError(f"prob must be (K + 1, H, W); got shape {tuple(p.shape)}")
    absent = p.flatten(1).amax(1) < config.presence_threshold
    absent[0] = False
    if bool(absent.any()):
        p = p.clone()
        p[absent] = 0.0  # left out by the CT rule (probability 0 everywhere)
    return attention_from_probabilities(
        p[..., None],
        class_ids,
        (*p.shape[1:], 1),
        spacing=(1.0, 1.0, 1.0),
        margin_mm=config.margin_px,
        threshold=config.attention_threshold,
        fraction=config.fraction,
    )
