"""The stage sections of :class:`agcl.pipeline.PipelineConfig`: one dataclass per stage.

Every field is checked when a config is built (``__post_init__``, so also by ``override``,
``from_dict`` and ``dataclasses.replace``), from the ``RULES`` table of its class
(:mod:`agcl.pipeline.config.rules`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from agcl.pipeline.config.rules import (
    LEARNING_RATE,
    MAX_PATCHES,
    POSITIVE,
    Rule,
    boolean,
    check_fields,
    choice,
    integer,
    number,
    text,
    tuple_of,
)
from agcl.sampling.attention_maps import ATTENTION_CHANNELS

__all__ = [
    "AMP_CHOICES",
    "PRETRAIN_METHODS",
    "CoarseConfig",
    "DataConfig",
    "PretrainConfig",
    "PretrainMethod",
    "SegmentConfig",
]

PretrainMethod = Literal["agcl", "sscl", "supcon", "ce", "none"]
PRETRAIN_METHODS: tuple[str, ...] = ("agcl", "sscl", "supcon", "ce", "none")

#: the values of the stages' ``amp`` fields (see :func:`agcl.pipeline.toolkit.amp_dtype`)
AMP_CHOICES = ("off", "bf16", "fp16", "auto")


@dataclass
class CoarseConfig:
    """Stage 1: the coarse 3D U-Net on downsampled volumes and the attention maps it gives.

    Attributes:
        spacing_mm: the voxel size in mm (canonical axes) the U-Net trains and predicts at:
            every volume is resampled with its own spacing to it (trilinear image, nearest
            labels), so the coarse grid keeps each scan's physical extent. ``None``: the
            fixed-``shape`` mode (every volume resized to ``shape`` whatever its size and
            trained whole; ``crop_shape``, ``foreground_fraction``, ``crops_per_case``,
            ``overlap`` and ``augment`` are then unused).
        shape: the fixed grid of the ``spacing_mm=None`` mode (canonical axes).
        crop_shape: training crops (voxels of the resampled grid) and the inference window;
            a volume smaller than the crop is padded; a larger one is predicted by sliding
            windows overlapping by ``overlap`` (Gaussian-weighted).
        foreground_fraction: the fraction of crops centred on a voxel of an organ class drawn
            uniformly from the classes present in the case (nnU-Net's class-by-class
            oversampling, so small organs are seen often); the rest are placed at random.
        crops_per_case: crops drawn from each training case per epoch.
        augment: augmentation of the crops: a random isotropic zoom in ``[1 - zoom, 1 + zoom]``,
            a rotation in ``[-rotation_deg, rotation_deg]`` about each axis (in mm, so
            anisotropic voxels rotate correctly) and an intensity scale in [0.9, 1.1] and shift
            in [-0.05, 0.05] (no flips: left and right organs differ).
        zoom, rotation_deg: the ranges of the spatial augmentation (``rotation_deg=0``: none).
        amp: mixed-precision training of the U-Net: "off" (float32), "bf16" or "fp16" (autocast;
            fp16 with a gradient scaler), or "auto": fp16 on CUDA, bf16 on a CPU with native
            bf16 support (AVX512-BF16/AMX; a quick-preset step takes 0.52x of float32 on this
            project's CPU), float32 otherwise.
            Prediction stays in float32. Not part of the resume check.
        lr_decay: the polynomial learning-rate decay of nnU-Net, ``lr * (1 - (e - 1) /
            epochs) ** 0.9`` in epoch ``e`` (voxel-size mode only; otherwise a constant ``lr``).
        base_channels, depth: U-Net width and number of down-sampling levels.
        epochs, lr, batch_size: Adam training (Dice + cross-entropy loss) on crops (or on whole
            volumes when ``spacing_mm`` is ``None``).
        margin_mm: each organ's attention region is dilated by this many mm (15 by default;
            see ``attention_threshold`` for what was measured).
        attention_threshold: organ k's attention is where its coarse softmax probability reaches
            this (well below 0.5, so an organ that loses the arg-max, or shares its voxels'
            probability with a neighbour, as thin veins next to the pancreas, still counts); where
            no voxel does, its most probable connected region (see
            :mod:`agcl.pipeline._coarse_attention`). The attention bounds where stage 3 may
            predict an organ, so it errs on the side of recall: 0.1 with ``margin_mm=15`` left 1
            of those 260 pairs below 0.95 (0.3 with 10 mm: 21), for an attention 3.9x the
            foreground's size instead of 2.3x (docs/results.md, stop 20).
        attention_channel: what stages 2 and 3 see in the attention channel (the region, where
            patches are drawn and predictions kept, is the same): "mask" (default, the paper's
            binary map, 1 inside the dilated region) or "probability" (0.5 + 0.5 p / max(p) inside
            the region, p the organ's coarse probability and max(p) its highest in the volume, 0
            outside; label maps give 1 on the organ and 0.5 in the margin), so the network also
            sees where the organ is likeliest, not only where it may be. The quick preset uses
            "probability" (measured better on the phantoms, docs/results.md stop 22).
        source: "coarse" (default: the coarse predictions, as at test time) or "gt" (the
            training cases' ground truth as attention, the paper's experiment option).
        body_mask: at inference (held-out cases and ``agcl predict``), bound every organ's
            attention, its fallback region and so its prediction by the patient's body
            (:func:`agcl.data.body_mask`: the largest component above -500 HU, holes filled), so
            that nothing is predicted in the arms, the table or the air of a scan with a wide
            field of view. Training attention is not bounded.
    """

    spacing_mm: tuple[float, float, float] | None = (2.0, 2.0, 3.0)
    shape: tuple[int, int, int] = (96, 96, 48)
    crop_shape: tuple[int, int, int] = (128, 128, 64)
    foreground_fraction: float = 0.33
    crops_per_case: int = 4
    overlap: float = 0.5
    augment: bool = True
    zoom: float = 0.1
    rotation_deg: float = 15.0
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    lr_decay: bool = True
    base_channels: int = 16
    depth: int = 3
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 2
    margin_mm: float = 15.0
    source: Literal["coarse", "gt"] = "coarse"
    attention_threshold: float = 0.1
    attention_channel: Literal["mask", "probability"] = "mask"
    body_mask: bool = True

    RULES: ClassVar[dict[str, Rule | None]] = {
        "spacing_mm": tuple_of(number(0.0, low_open=True), 3, optional=True),
        "shape": tuple_of(POSITIVE, 3),
        "crop_shape": tuple_of(POSITIVE, 3),
        "foreground_fraction": number(0.0, 1.0),
        "crops_per_case": POSITIVE,
        "overlap": number(0.0, 1.0, high_open=True),
        "augment": boolean,
        "lr_decay": boolean,
        "zoom": number(0.0, 1.0, high_open=True),
        "rotation_deg": number(0.0, 180.0),
        "amp": choice(AMP_CHOICES),
        "base_channels": POSITIVE,
        "depth": POSITIVE,
        "epochs": POSITIVE,
        "lr": LEARNING_RATE,
        "batch_size": POSITIVE,
        "margin_mm": number(0.0),
        "source": choice(("coarse", "gt")),
        "attention_threshold": number(0.0, 1.0, low_open=True),
        "attention_channel": choice(ATTENTION_CHANNELS),
        "body_mask": boolean,
    }

    def __post_init__(self) -> None:
        check_fields(self, "coarse.")


@dataclass
class PretrainConfig:
    """Stage 2: attention-guided patches, two views, encoder + projection, contrastive loss.

    Attributes:
        method: "agcl" (modality x organ positives, Eq. 3), "sscl" (views only, Eq. 2),
            "supcon" (organ only), "ce" (cross-entropy over (modality, organ) classes) or
            "none" (random initialisation; the stage is skipped).
        encoder: a registered encoder name (``agcl.models.list_models()``); base_width 64 is the
            standard width.
        patch_size, patches_per_slice, max_patches_per_volume: the sampler's settings.
        temperature, partial_weight: the loss's settings (T = 0.1 in the paper).
        queue_size: rows of earlier batches kept as extra contrast rows by the loss's memory
            queue (``ModalTargetSupConLoss(queue_size=...)``; "agcl"/"supcon" only); 0 = off.
        epochs, lr, momentum, weight_decay, batch_size: SGD (the paper: 5 epochs, lr 5e-4, batch 4).
        projection_dim: the projection head's output size (256).
        aug_scale, aug_degrees: PairAug's random-resized-crop area range and rotation range.
        aug_ratio, aug_hflip, aug_intensity_jitter, aug_color_distortion: PairAug's aspect-ratio
            range, horizontal flips, intensity jitter and colour distortion (see
            :class:`agcl.PairAug`).
        image_channels: channels of the image volumes (1 for CT; the encoder takes
            ``image_channels + 1`` inputs: the image and the organ's attention).
        steps_per_epoch: at most this many optimisation steps per epoch (``None``: one pass
            over the epoch's sampled patches), e.g. to check a configuration in minutes.
        amp: mixed-precision training, as ``coarse.amp`` ("auto": fp16 on CUDA, bf16 on a CPU
            with native bf16 kernels, float32 otherwise; not part of the resume check).
    """

    method: PretrainMethod = "agcl"
    encoder: str = "resnet50"
    base_width: int = 64
    output_stride: int = 16
    patch_size: int = 128
    patches_per_slice: int = 30
    max_patches_per_volume: int | None = None
    temperature: float = 0.1
    partial_weight: float = 0.0
    queue_size: int = 0
    epochs: int = 5
    lr: float = 5e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    batch_size: int = 4
    projection_dim: int = 256
    aug_scale: tuple[float, float] = (0.3, 0.7)
    aug_degrees: float = 30.0
    aug_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    aug_hflip: bool = False
    aug_intensity_jitter: float = 0.0
    aug_color_distortion: float = 0.0
    image_channels: int = 1
    steps_per_epoch: int | None = None
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"

    RULES: ClassVar[dict[str, Rule | None]] = {
        "aug_ratio": tuple_of(number(0.0, low_open=True), 2, increasing=False),
        "aug_hflip": boolean,
        "aug_intensity_jitter": number(0.0),
        "aug_color_distortion": number(0.0, 1.0),
        "image_channels": POSITIVE,
        "method": choice(PRETRAIN_METHODS),
        "encoder": text,
        "base_width": POSITIVE,
        "output_stride": choice((8, 16, 32)),
        "patch_size": POSITIVE,
        "patches_per_slice": POSITIVE,
        "max_patches_per_volume": MAX_PATCHES,
        "temperature": number(0.0, low_open=True),
        "partial_weight": number(0.0, 1.0),
        "epochs": POSITIVE,
        "lr": LEARNING_RATE,
        "momentum": number(0.0, 1.0),
        "weight_decay": number(0.0),
        "batch_size": POSITIVE,
        "projection_dim": POSITIVE,
        "aug_scale": tuple_of(number(0.0, 1.0, low_open=True), 2),
        "aug_degrees": number(0.0, 180.0),
        "queue_size": integer(0),
        "steps_per_epoch": integer(1, optional=True),
        "amp": choice(AMP_CHOICES),
    }

    def __post_init__(self) -> None:
        check_fields(self, "pretrain.")
        if self.aug_scale[0] > self.aug_scale[1]:
            raise ValueError(
                f"pretrain.aug_scale must be (low, high) with low <= high; got {self.aug_scale!r}"
            )
        if self.aug_ratio[0] > self.aug_ratio[1]:
            raise ValueError(
                f"pretrain.aug_ratio must be (low, high) with low <= high; got {self.aug_ratio!r}"
            )


@dataclass
class SegmentConfig:
    """Stage 3: frozen encoder + ASPP decoder on binary per-organ patches, then fusion.

    Attributes:
        patches_per_slice, max_patches_per_volume: training patches (same sampler as stage 2).
        aspp_channels: the ASPP width (512 in the paper).
        decoder: ``"aspp"`` (the paper's) or ``"deeplabv3plus"`` (ASPP + a low-level skip).
        decoder_channels: width of DeepLabV3+'s two 3 x 3 refinement convs at stride 4 (256 in
            DeepLabV3+; unused by ``"aspp"``). Their cost grows with its square.
        loss: ``"dice"`` (the paper's soft Dice on the organ channel) or ``"dice_ce"`` (soft
            Dice plus cross-entropy, :class:`agcl.DiceCELoss`, as nnU-Net and stage 1 train).
        epochs, lr, batch_size: Adam with ``loss`` (the paper: 10 epochs, 1e-4, 4).
        stride: sliding-window stride at inference (<= the patch size).
        threshold: label fusion threshold on the foreground probability.
        inference_batch_size: windows per forward pass at inference.
        steps_per_epoch: at most this many optimisation steps per epoch (``None``: one pass).
        coarse_weight: at inference each organ's score is ``(1 - w) p3 + w pc``, the stage-3
            probability blended with the stage-1 probability (upsampled); 0 is the paper's fusion
            of ``p3`` alone. Used where the coarse probabilities exist (stage 1 of the run or
            ``predict_volume`` with a coarse checkpoint), not with your own label maps. 0.5
            ensembles the two stages (see :func:`agcl.pipeline.segment_with_attention`;
            docs/results.md has the measurement).
        window: how overlapping inference windows are averaged: "uniform" or "gaussian"
            (:func:`agcl.pipeline.predict.window_weight`).
        amp: mixed-precision training, as ``coarse.amp`` ("auto": fp16 on CUDA, bf16 on a CPU
            with native bf16 kernels, float32 otherwise; not part of the resume check).
        label_fraction: the fraction of the training cases whose labels stage 3 may use (in
            ``(0, 1]``; at least one case per modality, chosen by a seeded shuffle of each
            modality's cases); stages 1 and 2 still use every training case. Lower it to ask
            whether pre-training helps when few cases are labelled.
    """

    patches_per_slice: int = 30
    max_patches_per_volume: int | None = None
    aspp_channels: int = 512
    decoder: Literal["aspp", "deeplabv3plus"] = "aspp"
    decoder_channels: int = 256
    loss: Literal["dice", "dice_ce"] = "dice"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 4
    stride: int = 64
    threshold: float = 0.5
    inference_batch_size: int = 32
    steps_per_epoch: int | None = None
    coarse_weight: float = 0.5
    window: Literal["uniform", "gaussian"] = "uniform"
    amp: Literal["off", "bf16", "fp16", "auto"] = "auto"
    label_fraction: float = 1.0

    RULES: ClassVar[dict[str, Rule | None]] = {
        "label_fraction": number(0.0, 1.0, low_open=True),
        "patches_per_slice": POSITIVE,
        "max_patches_per_volume": MAX_PATCHES,
        "aspp_channels": POSITIVE,
        "decoder": choice(("aspp", "deeplabv3plus")),
        "decoder_channels": POSITIVE,
        "loss": choice(("dice", "dice_ce")),
        "epochs": POSITIVE,
        "lr": LEARNING_RATE,
        "batch_size": POSITIVE,
        "stride": POSITIVE,
        "threshold": number(0.0, 1.0, high_open=True),
        "inference_batch_size": POSITIVE,
        "steps_per_epoch": integer(1, optional=True),
        "coarse_weight": number(0.0, 1.0),
        "window": choice(("uniform", "gaussian")),
        "amp": choice(AMP_CHOICES),
    }

    def __post_init__(self) -> None:
        check_fields(self, "segment.")


@dataclass
class DataConfig:
    """How stages 2 and 3 read their patches (:class:`agcl.sampling.PatchStream`).

    Attributes:
        cache_mb: loaded training volumes (image, labels, attention) kept in memory, in MiB,
            per process (each DataLoader worker has its own); 0 reloads a volume every epoch.
        num_workers: DataLoader worker processes (0: sample in the training process). The
            batches are the same for every value.
        shards, streams: independent sub-streams (a worker's unit of work) and volumes each
            samples from at once; a batch mixes the patches of ``streams`` volumes or more
            (what is left in the buffer from earlier ones), and at most ``shards * streams``
            volumes are open at a time (plus the cache).
        shuffle_buffer: patches in each shard's shuffle buffer (>= the batch sizes).
        chunk_size: patches cut from a volume at a time.
    """

    cache_mb: int = 512
    num_workers: int = 0
    shards: int = 2
    streams: int = 2
    shuffle_buffer: int = 1024
    chunk_size: int = 128

    RULES: ClassVar[dict[str, Rule | None]] = {
        "cache_mb": integer(0),
        "num_workers": integer(0),
        "shards": POSITIVE,
        "streams": POSITIVE,
        "shuffle_buffer": POSITIVE,
        "chunk_size": POSITIVE,
    }

    def __post_init__(self) -> None:
        check_fields(self, "data.")
