"""Stage 1 on CT: the coarse 3D U-Net, trained like every other stage.

A small 3D U-Net (:func:`agcl.models.unet3d`) is trained with cross-entropy + soft Dice at the
voxel size ``config.coarse.spacing_mm``: each volume is resampled with its own spacing to that
voxel size (trilinear for images, nearest for labels; the coarse grid keeps the scan's physical
extent), and its crops (:class:`~agcl.pipeline.coarse.crops.CoarseCropDataset`) come through a
``torch.utils.data.DataLoader`` with ``config.data.num_workers`` workers (the same batches for
any number), augmented by :class:`agcl.augment.RandomAffineCrop3D`, in mixed precision where the
hardware has it (``coarse.amp``). Only the coarse-grid arrays of the training cases are kept,
never their full-resolution volumes. With ``spacing_mm=None`` every volume is resized to the
fixed ``coarse.shape`` and trained whole.

Every component can be passed in (``model``, ``loss_fn``, ``optimizer``, ``augment``); the
defaults come from the config through :func:`build_coarse_model`, :func:`build_coarse_loss`,
:func:`build_coarse_augment` and :func:`agcl.pipeline.toolkit.build_optimizer`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agcl.pipeline.config import CoarseConfig, PipelineConfig
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.checkpoint import load_checkpoint, load_weights, seed_everything
from agcl.pipeline.toolkit.factories import OptimizerArg, resolve_optimizer
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.training import EpochCallback, MixedPrecision, fit

__all__ = [
    "build_coarse_augment",
    "build_coarse_loss",
    "build_coarse_model",
    "coarse_grid",
    "load_coarse",
    "train_coarse",
]


def build_coarse_model(config: PipelineConfig, num_organs: int) -> nn.Module:
    """The stage-1 U-Net for ``num_organs`` organs plus background."""
    from agcl.models import create_model

    c = config.coarse
    return create_model(
        "unet3d",
        in_channels=1,
        num_classes=num_organs + 1,
        base_channels=c.base_channels,
        depth=c.depth,
    )


def build_coarse_loss(config: PipelineConfig) -> nn.Module:
    """Stage 1's loss: soft Dice over the organ classes + cross-entropy
    (:class:`agcl.DiceCELoss`)."""
    from agcl.losses import DiceCELoss

    return DiceCELoss(include_background=False)


def build_coarse_augment(config: PipelineConfig) -> Callable[..., Any]:
    """Stage 1's crop augmentation from ``config.coarse`` (a plain crop when ``augment`` is off or
    in the fixed-shape mode)."""
    from agcl.augment.crop3d import RandomAffineCrop3D

    c = config.coarse
    if not c.augment or c.spacing_mm is None:
        return RandomAffineCrop3D(zoom=0.0, rotation_deg=0.0, intensity=0.0)
    return RandomAffineCrop3D(
        zoom=c.zoom, rotation_deg=c.rotation_deg, intensity=0.1, spacing=c.spacing_mm
    )


def coarse_grid(
    image_shape: Sequence[int], coarse: CoarseConfig, spacing: Sequence[float] | None = None
) -> tuple[int, int, int]:
    """The coarse grid of a volume: ``coarse.shape``, or its extent at ``coarse.spacing_mm``.

    Raises:
        ValueError: ``coarse.spacing_mm`` is set and ``spacing`` (the volume's voxel size in mm)
            is missing.

    Examples:
        >>> from agcl.pipeline import CoarseConfig
        >>> coarse_grid((512, 512, 100), CoarseConfig(spacing_mm=(2.0, 2.0, 5.0)), (0.8, 0.8, 2.5))
        (205, 205, 50)
    """
    from agcl.pipeline.coarse.crops import grid_shape

    if coarse.spacing_mm is None:
        return tuple(int(n) for n in coarse.shape)  # type: ignore[return-value]
    if spacing is None:
        raise ValueError(
            f"spacing (the volume's voxel size in mm) is required when coarse.spacing_mm is set "
            f"({coarse.spacing_mm}); got None"
        )
    return grid_shape(image_shape, spacing, coarse.spacing_mm)


def _lut(organ_ids: Sequence[int]) -> np.ndarray:
    lut = np.zeros(int(max(organ_ids)) + 1 if organ_ids else 1, dtype=np.int64)
    for i, organ in enumerate(organ_ids):
        lut[organ] = i + 1
    return lut


def _grid_cases(
    cases: Sequence[Any], organ_ids: Sequence[int], coarse: CoarseConfig, seed: int
) -> list[Any]:
    # one pass: each case is loaded, resampled to its coarse grid and let go (cases may be lazy)
    from agcl.pipeline.coarse.crops import to_grid

    lut = _lut(organ_ids)
    out = []
    for i in range(len(cases)):
        case = cases[i]
        if case.label is None:
            raise ValueError(
                f"cases must be labelled for stage 1; case {case.case_id} has no label"
            )
        grid = coarse_grid(case.image.shape, coarse, case.spacing)
        out.append(
            to_grid(case.image, case.label, lut, grid, rng=np.random.default_rng([seed, 104729, i]))
        )
        del case
    if not any(g.locations for g in out):
        raise ValueError(
            f"no training case holds any of the organs {list(organ_ids)} in its labels (all "
            "background): stage 1 has nothing to learn; check the label files and config.organs"
        )
    return out


def train_coarse(
    cases: Sequence[Any],
    config: PipelineConfig,
    organ_ids: Sequence[int],
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
    """Train the coarse U-Net on the labelled ``cases``; returns the checkpoint path.

    ``cases`` may be lazy (``cases[i]`` loading a case that is evicted later): each is read once,
    resampled to its coarse grid (:func:`coarse_grid`) and only that small image (float16) and
    class map (uint8) are kept while training.

    The checkpoint ``out_dir/checkpoints/coarse.pt`` holds the model, the organ ids (class ``i``
    is organ ``organ_ids[i - 1]``) and the config, enough for
    :func:`agcl.pipeline.coarse_probabilities` and :func:`agcl.pipeline.predict_volume`. Runs on
    rank 0 only under torchrun (the others wait).

    Args:
        cases: prepared, labelled training cases (:class:`agcl.data.PreparedCase`).
        config: the settings (``config.coarse``; ``config.data.num_workers`` loader workers).
        organ_ids: the organ codes (classes ``1..K``).
        out_dir: the run folder.
        model: maps ``(B, 1, *crop)`` to ``(B, K + 1, *crop)`` logits (default
            :func:`build_coarse_model`; to predict from the checkpoint later it must be what
            :func:`load_coarse` rebuilds from the config).
        loss_fn: ``loss_fn(logits, labels)`` (default :func:`build_coarse_loss`).
        optimizer: an optimizer, a factory ``params -> optimizer`` or ``None`` (Adam,
            ``coarse.lr``).
        augment: the crop augmentation (default :func:`build_coarse_augment`), see
            :class:`~agcl.pipeline.coarse.crops.CoarseCropDataset`.
        resume: continue from the checkpoint's last completed epoch (same fingerprint only).
        device, log, callback: where to train; the epoch log; ``callback(stage, epoch, record)``.

    Raises:
        ValueError: a case without labels; no training case holds any organ.
    """
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "coarse.pt"
    if dd.is_main():
        _train(
            cases,
            config,
            list(organ_ids),
            ckpt_path,
            model=model,
            loss_fn=loss_fn,
            optimizer=optimizer,
            augment=augment,
            resume=resume,
            device=device,
            log=log or EpochLog(out / "epochs.jsonl"),
            callback=callback,
        )
    dd.barrier()
    return ckpt_path


def _train(
    cases,
    config,
    organ_ids,
    ckpt_path,
    *,
    model,
    loss_fn,
    optimizer,
    augment,
    resume,
    device,
    log,
    callback,
) -> None:
    from torch.utils.data import DataLoader

    from agcl.pipeline.coarse.crops import CoarseCropDataset

    c = config.coarse
    grid_cases = _grid_cases(cases, organ_ids, c, config.seed)
    whole = c.spacing_mm is None  # the fixed-shape mode: whole volumes, every case once per epoch
    settings = stage_fingerprint(
        "coarse",
        config,
        organ_ids=organ_ids,
        components=components_record(
            model=model, loss_fn=loss_fn, optimizer=optimizer, augment=augment
        ),
    )
    crops = CoarseCropDataset(
        grid_cases,
        c.shape if whole else c.crop_shape,
        crops_per_case=1 if whole else c.crops_per_case,
        foreground=0.0 if whole else c.foreground_fraction,
        augment=build_coarse_augment(config) if augment is None else augment,
        seed=config.seed,
    )
    seed_everything(config.seed)
    model = (build_coarse_model(config, len(organ_ids)) if model is None else model).to(device)
    opt = resolve_optimizer(optimizer, model, config, "coarse")
    criterion = build_coarse_loss(config) if loss_fn is None else loss_fn
    workers = config.data.num_workers

    def epoch_batches(epoch: int):
        if (
            c.lr_decay and not whole
        ):  # set at each epoch's start, so a resumed run continues the schedule
            for group in opt.param_groups:
                group["lr"] = c.lr * (1.0 - (epoch - 1) / c.epochs) ** 0.9
        crops.set_epoch(epoch)
        loader = DataLoader(
            crops,
            batch_size=c.batch_size,
            shuffle=False,
            num_workers=workers,
            pin_memory=torch.device(device).type == "cuda",
        )
        return (
            (x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in loader
        )

    mp = MixedPrecision(c.amp, device, "coarse.amp")
    forward = mp.forward(model)

    def step(batch) -> float:
        x, y = batch
        loss = criterion(forward(x), y)
        opt.zero_grad(set_to_none=True)
        mp.step(loss, opt)
        return float(loss.detach())

    fit(
        stage="coarse",
        epochs=c.epochs,
        ckpt_path=ckpt_path,
        settings=settings,
        model=model,
        optimizer=opt,
        epoch_batches=epoch_batches,
        step=step,
        resume=resume,
        log=log,
        callback=callback,
        extra=lambda: {"organ_ids": list(organ_ids), "config": config.to_dict()},
        device=device,
        collective=False,
    )


def load_coarse(checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu"):
    """``(model, organ_ids, config)`` from a stage-1 checkpoint (path or loaded dict).

    Raises:
        FileNotFoundError, ValueError: no file, a damaged one, another stage's, or weights that
            do not fit the configuration (the path is named).
    """
    ckpt = load_checkpoint(checkpoint, stage="coarse", extra_keys=("config", "organ_ids"))
    data = dict(ckpt["extra"]["config"])
    if isinstance(data.get("coarse"), dict) and "spacing_mm" not in data["coarse"]:
        # written before coarse.spacing_mm existed: the model was trained on the fixed shape
        data["coarse"] = {**data["coarse"], "spacing_mm": None}
    config = PipelineConfig.from_dict(data)
    organ_ids = [int(i) for i in ckpt["extra"]["organ_ids"]]
    model = load_weights(
        build_coarse_model(config, len(organ_ids)),
        ckpt["model"],
        checkpoint if not isinstance(checkpoint, dict) else "(dict)",
    )
    return model.to(device).eval(), organ_ids, config
