"""Stage 1: the coarse 3D segmenter and the attention maps it gives.

A small 3D U-Net (:func:`agcl.models.unet3d`) is trained with cross-entropy + soft Dice on
whole volumes resampled to ``config.coarse.shape`` (trilinear for images, nearest for labels).
:func:`coarse_probabilities` gives its softmax probabilities on that grid; the pipeline keeps
them and builds each organ's attention from them (probability >= ``coarse.attention_threshold``
or the organ's most probable connected region, dilated by ``coarse.margin_mm``; see
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
import torch.nn.functional as F

from agcl.data.prepared import PreparedCase, resample
from agcl.pipeline import _distributed as dd
from agcl.pipeline._training import EpochCallback, fit
from agcl.pipeline.checkpoint import EpochLog, seed_everything
from agcl.pipeline.config import PipelineConfig
from agcl.sampling.attention_maps import attention_from_labels, densify

__all__ = ["build_coarse_model", "coarse_attention", "coarse_probabilities", "load_coarse", "predict_coarse",
           "train_coarse"]


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


def _train(cases, config, organ_ids, ckpt_path, *, resume, device, log, callback) -> None:
    c = config.coarse
    lut = np.zeros(int(max(organ_ids)) + 1 if organ_ids else 1, dtype=np.int64)
    for i, organ in enumerate(organ_ids):
        lut[organ] = i + 1
    images, labels = [], []
    for case in cases:
        if case.label is None:
            raise ValueError(f"cases must be labelled for stage 1; case {case.case_id} has no label")
        images.append(resample(case.image, c.shape, mode="trilinear"))
        lab = np.where(case.label <= len(lut) - 1, case.label, 0)
        labels.append(resample(torch.from_numpy(lut[lab]), c.shape, mode="nearest"))
    x_all = torch.stack(images)[:, None].to(device)
    y_all = torch.stack(labels).long().to(device)
    seed_everything(config.seed)
    model = build_coarse_model(config, len(organ_ids)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
    from agcl.losses import SoftDiceLoss

    dice = SoftDiceLoss(activation="softmax", include_background=False)

    def epoch_batches(epoch: int):
        g = torch.Generator().manual_seed(config.seed * 7919 + epoch)
        order = torch.randperm(len(x_all), generator=g)
        for i in range(0, len(order), c.batch_size):
            idx = order[i: i + c.batch_size]
            yield x_all[idx], y_all[idx]

    def step(batch) -> float:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits, y) + dice(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
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
    config = PipelineConfig.from_dict(ckpt["extra"]["config"])
    organ_ids = [int(i) for i in ckpt["extra"]["organ_ids"]]
    model = build_coarse_model(config, len(organ_ids))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), organ_ids, config


@torch.no_grad()
def predict_coarse(model: torch.nn.Module, image: np.ndarray, organ_ids: Sequence[int],
                   shape: Sequence[int], *, device: str | torch.device = "cpu") -> np.ndarray:
    """The coarse label map (organ codes, full resolution) of one preprocessed image.

    Shape:
        image: ``(X, Y, Z)`` float32 (preprocessed); output ``(X, Y, Z)`` int16.
    """
    model.eval()
    x = resample(image, shape, mode="trilinear")[None, None].to(device)
    classes = model(x).argmax(1)[0].cpu()
    lut = torch.tensor([0, *[int(i) for i in organ_ids]], dtype=torch.int16)
    full = resample(classes.to(torch.int16), image.shape, mode="nearest").long()
    return lut[full].numpy()


@torch.no_grad()
def coarse_probabilities(model: torch.nn.Module, image: np.ndarray, shape: Sequence[int], *,
                         device: str | torch.device = "cpu") -> torch.Tensor:
    """Softmax class probabilities of one preprocessed image on the coarse grid (CPU, float32).

    Shape:
        image: ``(X, Y, Z)`` float32; output ``(K + 1, *shape)``, channel 0 the background.
    """
    model.eval()
    x = resample(image, shape, mode="trilinear")[None, None].to(device)
    return torch.softmax(model(x).float(), dim=1)[0].cpu()


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
