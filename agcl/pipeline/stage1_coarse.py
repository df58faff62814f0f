"""Stage 1: the coarse 3D segmenter and the attention maps it gives.

A small 3D U-Net (:func:`agcl.models.unet3d`) is trained with cross-entropy + soft Dice at the
voxel size ``config.coarse.spacing_mm``: each volume is resampled with its own spacing to that
voxel size (trilinear for images, nearest for labels; the coarse grid keeps the scan's physical
extent), and training draws 3-D crops of ``coarse.crop_shape`` from it, a
``coarse.foreground_fraction`` of them centred on a voxel of an organ class drawn uniformly from
those present (so small organs are seen often), with zoom, rotation (``coarse.rotation_deg``,
in mm) and intensity augmentation (:mod:`agcl.pipeline._coarse_crops`), in mixed precision
where the hardware has it (``coarse.amp``). Only the coarse-grid arrays of the training cases are
kept, never their full-resolution volumes. With ``spacing_mm=None`` every volume is resized to
the fixed ``coarse.shape`` and trained whole (the earlier behaviour).

:func:`coarse_probabilities` gives the model's softmax probabilities on the whole coarse grid
(sliding windows of the crop size where the grid exceeds it); the pipeline keeps them and builds
each organ's attention from them (probability >= ``coarse.attention_threshold`` or the organ's
most probable connected region, dilated by ``coarse.margin_mm``; see
:mod:`agcl.pipeline._coarse_attention`). :func:`predict_coarse` is the arg-max label map on the
full grid (nearest resampling of the labels), and :func:`coarse_attention` the attention of a
label map (each organ's mask dilated by ``margin_mm``), used for your own coarse maps."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agcl.data.prepared import PreparedCase, resample
from agcl.pipeline import _distributed as dd
from agcl.pipeline._coarse_crops import GridCase, grid_shape, sample_crop, sliding_window, to_grid
from agcl.pipeline._training import EpochCallback, MixedPrecision, fit
from agcl.pipeline.checkpoint import EpochLog, seed_everything
from agcl.pipeline.config import CoarseConfig, PipelineConfig
from agcl.sampling.attention_maps import attention_from_labels, densify

__all__ = ["build_coarse_model", "coarse_attention", "coarse_grid", "coarse_probabilities", "load_coarse",
           "predict_coarse", "train_coarse"]


def build_coarse_model(config: PipelineConfig, num_organs: int) -> torch.nn.Module:
    """The stage-1 U-Net for ``num_organs`` organs plus background."""
    from agcl.models import create_model

    c = config.coarse
    return create_model("unet3d", in_channels=1, num_classes=num_organs + 1,
                        base_channels=c.base_channels, depth=c.depth)


def _settings(config: PipelineConfig, organ_ids: Sequence[int]) -> dict[str, Any]:
    c = config.to_dict()["coarse"]
    c.pop("epochs")
    c.pop("source")
    c.pop("margin_mm")
    c.pop("attention_threshold", None)
    c.pop("attention_channel", None)  # what stages 2-3 see, not how stage 1 trains
    c.pop("amp", None)  # the precision may change between machines without changing the run
    return {"coarse": c, "seed": config.seed, "organ_ids": [int(i) for i in organ_ids],
            "clip_hu": list(config.clip_hu), "percentiles": list(config.percentiles)}


def train_coarse(
    cases: Sequence[PreparedCase],
    config: PipelineConfig,
    organ_ids: Sequence[int],
    out_dir: str | os.PathLike[str],
    *,
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
    is organ ``organ_ids[i - 1]``) and the config, enough for :func:`predict_coarse` and
    :func:`agcl.pipeline.predict_volume`. Runs on rank 0 only under torchrun (the others wait).

    Raises:
        ValueError: a case without labels.
    """
    out = Path(out_dir)
    ckpt_path = out / "checkpoints" / "coarse.pt"
    if dd.is_main():
        _train(cases, config, list(organ_ids), ckpt_path, resume=resume, device=device,
               log=log or EpochLog(out / "epochs.jsonl"), callback=callback)
    dd.barrier()
    return ckpt_path


def _lut(organ_ids: Sequence[int]) -> np.ndarray:
    lut = np.zeros(int(max(organ_ids)) + 1 if organ_ids else 1, dtype=np.int64)
    for i, organ in enumerate(organ_ids):
        lut[organ] = i + 1
    return lut


def coarse_grid(image_shape: Sequence[int], coarse: CoarseConfig, spacing: Sequence[float] | None = None) -> tuple[int, int, int]:
    """The coarse grid of a volume: ``coarse.shape``, or its extent at ``coarse.spacing_mm``.

    Raises:
        ValueError: ``coarse.spacing_mm`` is set and ``spacing`` (the volume's voxel size in mm)
            is missing.

    Examples:
        >>> from agcl.pipeline import CoarseConfig
        >>> coarse_grid((512, 512, 100), CoarseConfig(spacing_mm=(2.0, 2.0, 5.0)), (0.8, 0.8, 2.5))
        (205, 205, 50)
    """
    if coarse.spacing_mm is None:
        return tuple(int(n) for n in coarse.shape)  # type: ignore[return-value]
    if spacing is None:
        raise ValueError(f"spacing (the volume's voxel size in mm) is required when coarse.spacing_mm is set "
                         f"({coarse.spacing_mm}); got None")
    return grid_shape(image_shape, spacing, coarse.spacing_mm)


def _grid_cases(cases, organ_ids, coarse: CoarseConfig, seed: int) -> list[GridCase]:
    # one pass: each case is loaded, resampled to its coarse grid and let go (cases may be lazy)
    lut = _lut(organ_ids)
    out: list[GridCase] = []
    for i in range(len(cases)):
        case = cases[i]
        if case.label is None:
            raise ValueError(f"cases must be labelled for stage 1; case {case.case_id} has no label")
        grid = coarse_grid(case.image.shape, coarse, case.spacing)
        out.append(to_grid(case.image, case.label, lut, grid, rng=np.random.default_rng([seed, 104729, i])))
        del case
    return out


def _train(cases, config, organ_ids, ckpt_path, *, resume, device, log, callback) -> None:
    c = config.coarse
    grid_cases = _grid_cases(cases, organ_ids, c, config.seed)
    if c.spacing_mm is None:  # the fixed-shape mode: whole volumes, every case once per epoch
        x_all = torch.stack([g.image.float() for g in grid_cases])[:, None].to(device)
        y_all = torch.stack([g.label for g in grid_cases]).long().to(device)
        grid_cases = []

        def epoch_batches(epoch: int):
            g = torch.Generator().manual_seed(config.seed * 7919 + epoch)
            order = torch.randperm(len(x_all), generator=g)
            for i in range(0, len(order), c.batch_size):
                idx = order[i: i + c.batch_size]
                yield x_all[idx], y_all[idx]
    else:
        def epoch_batches(epoch: int):
            if c.lr_decay:  # set at each epoch's start, so a resumed run continues the schedule
                for group in optimizer.param_groups:
                    group["lr"] = c.lr * (1.0 - (epoch - 1) / c.epochs) ** 0.9
            rng = np.random.default_rng([config.seed, 7919, epoch])
            order = rng.permutation(np.repeat(np.arange(len(grid_cases)), c.crops_per_case))
            for i in range(0, len(order), c.batch_size):
                crops = [sample_crop(grid_cases[j], c.crop_shape, rng, foreground=c.foreground_fraction,
                                     augment=c.augment, zoom=c.zoom, rotation_deg=c.rotation_deg,
                                     spacing=c.spacing_mm) for j in order[i: i + c.batch_size]]
                yield (torch.stack([x for x, _, _ in crops])[:, None].to(device),
                       torch.stack([y for _, y, _ in crops]).to(device))

    seed_everything(config.seed)
    model = build_coarse_model(config, len(organ_ids)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
    from agcl.losses import DiceCELoss

    criterion = DiceCELoss(include_background=False)
    mp = MixedPrecision(c.amp, device, "coarse.amp")
    forward = mp.forward(model)

    def step(batch) -> float:
        x, y = batch
        loss = criterion(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        mp.step(loss, optimizer)
        return float(loss.detach())

    fit(stage="coarse", epochs=c.epochs, ckpt_path=ckpt_path, settings=_settings(config, organ_ids),
        model=model, optimizer=optimizer, epoch_batches=epoch_batches, step=step, resume=resume,
        log=log, callback=callback, extra=lambda: {"organ_ids": list(organ_ids), "config": config.to_dict()},
        device=device, collective=False)


def load_coarse(checkpoint: str | os.PathLike[str] | dict, device: str | torch.device = "cpu"):
    """``(model, organ_ids, config)`` from a coarse checkpoint (path or loaded dict)."""
    from agcl._io import safe_load
    from agcl.pipeline.checkpoint import check_payload

    ckpt = checkpoint if isinstance(checkpoint, dict) else safe_load(checkpoint)
    check_payload(ckpt, checkpoint if not isinstance(checkpoint, dict) else "(dict)", ("stage", "model", "extra"))
    check_payload(ckpt["extra"], f"{checkpoint if not isinstance(checkpoint, dict) else '(dict)'} ['extra']", ("config", "organ_ids"))
    if ckpt.get("stage") != "coarse":
        raise ValueError(f"coarse_checkpoint must be a stage-1 ('coarse') checkpoint; got stage {ckpt.get('stage')!r}")
    data = dict(ckpt["extra"]["config"])
    if isinstance(data.get("coarse"), dict) and "spacing_mm" not in data["coarse"]:
        # written before coarse.spacing_mm existed: the model was trained on the fixed shape
        data["coarse"] = {**data["coarse"], "spacing_mm": None}
    config = PipelineConfig.from_dict(data)
    organ_ids = [int(i) for i in ckpt["extra"]["organ_ids"]]
    model = build_coarse_model(config, len(organ_ids))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), organ_ids, config


def _grid_probabilities(model, image, grid, spacing, device) -> torch.Tensor:
    if isinstance(grid, CoarseConfig):
        shape = coarse_grid(image.shape, grid, spacing)
        if grid.spacing_mm is not None:
            x = resample(image, shape, mode="trilinear")
            return sliding_window(model, x, grid.crop_shape, overlap=grid.overlap, pad=float(x.min()), device=device)
    else:
        shape = tuple(int(s) for s in grid)
        if len(shape) != 3:
            raise ValueError(f"grid must be a CoarseConfig or a 3-D shape; got {grid!r}")
    x = resample(image, shape, mode="trilinear")[None, None].to(device)
    return torch.softmax(model(x).float(), dim=1)[0].cpu()


@torch.no_grad()
def predict_coarse(model: torch.nn.Module, image: np.ndarray, organ_ids: Sequence[int],
                   grid: CoarseConfig | Sequence[int], *, spacing: Sequence[float] | None = None,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """The coarse label map (organ codes, full resolution) of one preprocessed image.

    ``grid`` as in :func:`coarse_probabilities`.

    Shape:
        image: ``(X, Y, Z)`` float32 (preprocessed); output ``(X, Y, Z)`` int16.
    """
    model.eval()
    prob = _grid_probabilities(model, image, grid, spacing, device)
    return labels_from_probabilities(prob, organ_ids, image.shape)


@torch.no_grad()
def coarse_probabilities(model: torch.nn.Module, image: np.ndarray, grid: CoarseConfig | Sequence[int], *,
                         spacing: Sequence[float] | None = None,
                         device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax class probabilities of one preprocessed image on the coarse grid (CPU, float32).

    Args:
        model: the stage-1 U-Net (:func:`load_coarse`).
        image: the preprocessed image.
        grid: the stage-1 settings (``load_coarse(...)[2].coarse``): with ``spacing_mm`` set,
            the image is resampled to that voxel size (the grid :func:`coarse_grid`) and
            predicted with sliding windows of ``crop_shape`` overlapping by ``overlap``
            (Gaussian-weighted); otherwise resized to ``shape`` and predicted in one pass. A
            plain 3-D shape: resized to it, one pass.
        spacing: the image's voxel size in mm (required with ``spacing_mm``).
        device: where the model runs.

    Shape:
        image: ``(X, Y, Z)`` float32; output ``(K + 1, x, y, z)`` (the coarse grid), channel 0
        the background. The coarse grid spans the whole volume, so
        :func:`~agcl.pipeline._coarse_attention.attention_from_probabilities` maps it back by
        the grid-size ratio.
    """
    model.eval()
    return _grid_probabilities(model, image, grid, spacing, device)


def labels_from_probabilities(prob: torch.Tensor, organ_ids: Sequence[int], full_shape: Sequence[int]) -> np.ndarray:
    """The arg-max label map (organ codes) of coarse probabilities, on the full grid (nearest)."""
    lut = torch.tensor([0, *[int(i) for i in organ_ids]], dtype=torch.int16)
    full = resample(prob.argmax(0).to(torch.int16), full_shape, mode="nearest").long()
    return lut[full].numpy()


def coarse_attention(coarse_labels: np.ndarray, organ_ids: Sequence[int], *, margin_mm: float,
                     spacing: Sequence[float]) -> np.ndarray:
    """Attention maps ``(K, X, Y, Z)`` bool: each organ's coarse mask dilated by ``margin_mm``.

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((5, 5, 1), np.int16); lab[2, 2, 0] = 3
        >>> att = coarse_attention(lab, [3], margin_mm=1.0, spacing=(1.0, 1.0, 1.0))
        >>> int(att.sum())  # the voxel and its 4 in-plane neighbours (1 mm away)
        5
    """
    labels = np.asarray(coarse_labels)
    sparse = attention_from_labels(labels, list(organ_ids), margin_mm=margin_mm, spacing=spacing)
    return densify(sparse, list(organ_ids), labels.shape)
