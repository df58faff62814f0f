"""The pipeline on 2-D natural images (PASCAL VOC): images as single-slice volumes.

An RGB image ``(H, W, 3)`` becomes a one-slice volume: image ``(3, H, W, 1)`` float32, class
labels ``(H, W, 1)``, so stages 2 and 3 use the same sampler, augmentation, loss and models as
the CT pipeline (the slice axis is the last one, as for axial CT slices).

* Stage 1 (:func:`train_coarse_2d`): a DeepLabV3+ segmenter (a library ResNet with
  :class:`agcl.models.DeepLabV3PlusDecoder`) trained with cross-entropy on whole images (void
  ignored); class ``k``'s attention (:func:`attention_2d`) is where its softmax probability
  reaches ``attention_threshold``, else its most probable connected region, dilated by
  ``margin_px`` -- the CT rule of :func:`agcl.pipeline._coarse_attention.attention_from_probabilities`
  applied to ``(K + 1, H, W, 1)`` probabilities.
* Stage 3 inference (:func:`segment_image_2d`): the frozen encoder + ASPP decoder is fully
  convolutional, so each class runs once on the whole image with its attention channel; the
  per-class foreground probabilities (0 outside the attention) are fused by
  :func:`agcl.pipeline.fuse_labels`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agcl.pipeline._coarse_attention import Attention, attention_from_probabilities
from agcl.pipeline.config import _POS, _bool, _check_fields, _choice, _float, _int, _str
from agcl.pipeline.fusion import fuse_labels

__all__ = [
    "Coarse2DConfig",
    "ImageVolumes",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "attention_2d",
    "build_coarse_model_2d",
    "image_tensor",
    "image_volume",
    "load_coarse_2d",
    "predict_probabilities_2d",
    "segment_image_2d",
    "train_coarse_2d",
]

VOID = 255
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass
class Coarse2DConfig:
    """Stage 1 in 2-D: the coarse DeepLabV3+ segmenter and the attention it gives.

    Attributes:
        encoder, base_width, output_stride: the ResNet (the paper: ResNet-50, width 64).
        aspp_channels, decoder_channels, low_level_reduced: the DeepLabV3+ decoder's widths
            (ASPP, the two 3x3 refinement convs, the projected stride-4 skip).
        epochs, optimizer, lr, momentum, weight_decay, batch_size: training on whole images
            (the paper: SGD, lr 1e-3, batch 8), cross-entropy with void ignored.
        crop_size: training images are padded (image 0, label void) to at least this size and
            randomly cropped to it, so images of different sizes batch together.
        hflip: random horizontal flips while training.
        attention_threshold, fraction, margin_px: the attention rule (see the module docstring).
        presence_threshold: a class whose probability stays below this everywhere gets no
            attention in the image. CT organs are in every scan, so the CT rule always finds a
            region; a natural image lacks most classes, and their "most probable region" is
            arbitrary background whose patches would be labelled with the absent class (in
            stage 2 that made the contrastive loss collapse on the synthetic scenes). 0 restores
            the CT rule.
    """

    encoder: str = "resnet50"
    base_width: int = 64
    output_stride: int = 16
    aspp_channels: int = 256
    decoder_channels: int = 256
    low_level_reduced: int = 48
    epochs: int = 30
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    batch_size: int = 8
    crop_size: int = 321
    hflip: bool = True
    attention_threshold: float = 0.3
    fraction: float = 0.5
    margin_px: float = 8.0
    presence_threshold: float = 0.1

    RULES: ClassVar[dict[str, Any]] = {
        "encoder": _str, "base_width": _POS, "output_stride": _choice((8, 16, 32)), "aspp_channels": _POS,
        "decoder_channels": _POS, "low_level_reduced": _POS, "epochs": _POS, "optimizer": _choice(("sgd", "adam")), "lr": _float(0.0, low_open=True),
        "momentum": _float(0.0, 1.0), "weight_decay": _float(0.0), "batch_size": _POS, "crop_size": _int(16),
        "hflip": _bool, "attention_threshold": _float(0.0, 1.0, low_open=True),
        "fraction": _float(0.0, 1.0, low_open=True), "margin_px": _float(0.0),
        "presence_threshold": _float(0.0, 1.0),
    }

    def __post_init__(self) -> None:
        _check_fields(self, "coarse2d.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def image_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 ``(H, W, 3)`` -> normalised float32 ``(3, H, W)`` (ImageNet mean and std)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be an RGB (H, W, 3) array; got shape {arr.shape}")
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(3, 1, 1)
    return (x - mean) / std


def image_volume(image: np.ndarray, attention: Attention | np.ndarray, label: np.ndarray | None = None, *,
                 modality: int = 0) -> dict[str, Any]:
    """One image as the single-slice volume the pipeline's patch streams read.

    Returns ``{"image": (3, H, W, 1) float32, "attention": {code: (box, mask)} or (H, W, 1),
    "label": (H, W, 1) uint8 or None, "ignore": (H, W, 1) bool or None, "modality": int}``. In
    ``label`` the void pixels (255) become 0, so they are never a positive of any class; ``ignore``
    marks them so that losses and metrics can leave them out.
    """
    x = image_tensor(image).numpy()[..., None]
    out: dict[str, Any] = {"image": x, "attention": attention, "label": None, "ignore": None,
                           "modality": int(modality)}
    if label is not None:
        lab = np.asarray(label)
        if lab.shape != x.shape[1:3]:
            raise ValueError(f"label must have the image's (H, W) = {x.shape[1:3]}; got shape {lab.shape}")
        void = lab == VOID
        out["label"] = np.where(void, 0, lab).astype(np.uint8)[..., None]
        out["ignore"] = void[..., None]
    if isinstance(attention, np.ndarray) and attention.ndim == 2:
        out["attention"] = attention[..., None]
    return out


class ImageVolumes(Sequence):
    """The ``volumes`` sequence of stages 2-3 for a set of images, built lazily.

    Holds the images as given (uint8, 3 bytes a pixel) and makes the float32 single-slice
    volume of :func:`image_volume` only when ``volumes[i]`` is read (by
    :class:`agcl.sampling.PatchStream`, once per image per epoch), so a split of VOC costs its
    uint8 size in memory, not four times it.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays.
        attention: one ``{code: (box, mask)}`` per image.
        masks: optional class masks (uint8 ``(H, W)``, 255 = void), one per image.
        modality: the modality id of every image.
    """

    def __init__(self, images: Sequence[np.ndarray], attention: Sequence[Attention],
                 masks: Sequence[np.ndarray] | None = None, *, modality: int = 0) -> None:
        if len(attention) != len(images) or (masks is not None and len(masks) != len(images)):
            raise ValueError(f"images, attention and masks must have one entry per image; got {len(images)}, "
                             f"{len(attention)} and {None if masks is None else len(masks)}")
        self.images, self.attention, self.masks, self.modality = images, attention, masks, int(modality)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        mask = None if self.masks is None else self.masks[index]
        return image_volume(self.images[index], self.attention[index], mask, modality=self.modality)


def build_coarse_model_2d(config: Coarse2DConfig, num_classes: int, *, in_chans: int = 3) -> nn.Module:
    """The stage-1 segmenter: ``config.encoder`` + DeepLabV3+ decoder with ``num_classes`` outputs."""
    from agcl.models import DeepLabV3PlusDecoder, SegmentationModel, create_model

    encoder = create_model(config.encoder, in_chans=in_chans, output_stride=config.output_stride,
                           base_width=config.base_width)
    decoder = DeepLabV3PlusDecoder(tuple(getattr(encoder, "out_channels")), num_classes,  # noqa: B009
                                   output_stride=config.output_stride, aspp_channels=config.aspp_channels,
                                   decoder_channels=config.decoder_channels,
                                   low_level_reduced=config.low_level_reduced)
    return SegmentationModel(encoder, decoder)


def _crop(x: torch.Tensor, y: torch.Tensor, size: int, gen: torch.Generator, hflip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = y.shape
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        y = F.pad(y, (0, pw, 0, ph), value=VOID)
    h, w = y.shape
    i = int(torch.randint(0, h - size + 1, (1,), generator=gen))
    j = int(torch.randint(0, w - size + 1, (1,), generator=gen))
    x, y = x[:, i:i + size, j:j + size], y[i:i + size, j:j + size]
    if hflip and bool(torch.rand(1, generator=gen) < 0.5):
        x, y = x.flip(-1), y.flip(-1)
    return x, y


def train_coarse_2d(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    config: Coarse2DConfig,
    num_classes: int,
    out_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "cpu",
    log: Any = None,
) -> Path:
    """Train stage 1 on whole images; returns ``out_dir/checkpoints/coarse2d.pt``.

    Args:
        images: RGB uint8 ``(H, W, 3)`` arrays.
        masks: uint8 ``(H, W)`` class ids (``0 .. num_classes - 1``, 255 = void).
        config: the stage's settings.
        num_classes: classes including the background.
        out_dir: the run folder (checkpoint after every epoch, ``epochs.jsonl``).
        seed: the run seed (batches and crops derive from it and the epoch).
        resume: continue from the checkpoint's last completed epoch.
        device: where to train.
        log: an :class:`agcl.pipeline.EpochLog` (default ``out_dir/epochs.jsonl``).
    """
    from agcl.pipeline._training import fit
    from agcl.pipeline.checkpoint import EpochLog, seed_everything

    if len(images) != len(masks) or not images:
        raise ValueError(f"images and masks must be non-empty and of equal length; got {len(images)} and {len(masks)}")
    # one checking pass; the images stay as given (uint8, possibly read lazily) and are turned
    # into tensors per batch, so stage 1 does not hold a float copy of the whole training set
    longest = 0
    for k in range(len(images)):
        im, y = np.asarray(images[k]), np.asarray(masks[k])
        if im.ndim != 3 or tuple(y.shape) != tuple(im.shape[:2]):
            raise ValueError(f"masks[{k}] has shape {tuple(y.shape)}, images[{k}] (H, W) = {tuple(im.shape[:2])}")
        bad = (y != VOID) & ((y < 0) | (y >= num_classes))
        if bool(bad.any()):
            raise ValueError(f"masks[{k}] must hold class ids in [0, {num_classes}) or {VOID}; got {int(y[bad][0])}")
        longest = max(longest, *y.shape)

    def pair(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return image_tensor(images[i]), torch.from_numpy(np.asarray(masks[i]).astype(np.int64))

    seed_everything(seed + 101)
    model = build_coarse_model_2d(config, num_classes).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    size = min(config.crop_size, longest)

    def epoch_batches(epoch: int):
        gen = torch.Generator().manual_seed(seed * 1009 + epoch)
        order = torch.randperm(len(images), generator=gen).tolist()
        bs = max(2, config.batch_size)  # BatchNorm in the ASPP pooling branch needs 2 samples
        for s in range(0, len(order), bs):
            pairs = [_crop(*pair(i), size, gen, config.hflip) for i in order[s:s + bs]]
            if len(pairs) < 2:
                continue
            yield torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> float:
        x, y = batch[0].to(device), batch[1].to(device)
        loss = F.cross_entropy(model(x), y, ignore_index=VOID)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    out = Path(out_dir)
    ckpt = out / "checkpoints" / "coarse2d.pt"
    settings = {"coarse2d": config.to_dict(), "num_classes": int(num_classes), "seed": int(seed),
                "n_images": len(images)}
    fit(stage="coarse2d", epochs=config.epochs, ckpt_path=ckpt, settings=settings, model=model,
        optimizer=optimizer, epoch_batches=epoch_batches, step=step, resume=resume,
        log=log or EpochLog(out / "epochs.jsonl"), device=device, collective=False,
        extra=lambda: {"coarse2d": config.to_dict(), "num_classes": int(num_classes)})
    return ckpt


def load_coarse_2d(checkpoint: str | os.PathLike[str], device: str | torch.device = "cpu") -> tuple[nn.Module, Coarse2DConfig, int]:
    """``(model in eval mode, config, num_classes)`` from :func:`train_coarse_2d`'s checkpoint."""
    from agcl._io import safe_load
    from agcl.pipeline.checkpoint import check_payload

    ckpt = check_payload(safe_load(checkpoint), checkpoint, ("stage", "model", "extra"))
    if ckpt["stage"] != "coarse2d":
        raise ValueError(f"checkpoint {checkpoint} is a {ckpt['stage']!r} checkpoint, not 'coarse2d'")
    config = Coarse2DConfig(**ckpt["extra"]["coarse2d"])
    k = int(ckpt["extra"]["num_classes"])
    model = build_coarse_model_2d(config, k)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), config, k


@torch.no_grad()
def predict_probabilities_2d(model: nn.Module, image: np.ndarray, *, device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax class probabilities of one whole image.

    Shape:
        image: RGB uint8 ``(H, W, 3)``; output ``(K + 1, H, W)`` float32 on the CPU.
    """
    model.eval()
    x = image_tensor(image)[None].to(device)
    return torch.softmax(model(x), 1)[0].float().cpu()


def attention_2d(prob: torch.Tensor | np.ndarray, class_ids: Sequence[int], config: Coarse2DConfig) -> Attention:
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
    return attention_from_probabilities(p[..., None], class_ids, (*p.shape[1:], 1), spacing=(1.0, 1.0, 1.0),
                                        margin_mm=config.margin_px, threshold=config.attention_threshold,
                                        fraction=config.fraction)


def _attention_map(attention: Mapping[int, Any], code: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*shape, 1), bool)
    if code in attention:
        box, mask = attention[code]
        out[box] = mask
    return out[..., 0]


@torch.no_grad()
def segment_image_2d(
    model: nn.Module,
    image: np.ndarray,
    attention: Mapping[int, Any],
    class_ids: Sequence[int],
    *,
    threshold: float = 0.5,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-3 inference on one whole image: one pass per class with its attention, then fusion.

    Args:
        model: the stage-3 model (input image channels + 1 attention channel, 2 outputs).
        image: RGB uint8 ``(H, W, 3)``.
        attention: ``{code: (box, mask)}`` as :func:`attention_2d` returns.
        class_ids: the foreground class codes.
        threshold: the fusion threshold on the foreground probability.

    Shape:
        Output ``(labels (H, W) uint8, probabilities (K, H, W) float32)``; a class's
        probability is 0 outside its attention.
    """
    model.eval()
    x = image_tensor(image)
    shape = (int(x.shape[1]), int(x.shape[2]))
    probs = np.zeros((len(class_ids), *shape), np.float32)
    for k, code in enumerate(class_ids):
        att = _attention_map(attention, int(code), shape)
        if not att.any():
            continue
        inp = torch.cat([x, torch.from_numpy(att.astype(np.float32))[None]], 0)[None].to(device)
        fg = torch.softmax(model(inp), 1)[0, 1].float().cpu().numpy()
        probs[k] = np.where(att, fg, 0.0)
    labels = fuse_labels(probs, [int(c) for c in class_ids], threshold=threshold)
    return labels.astype(np.uint8), probs
