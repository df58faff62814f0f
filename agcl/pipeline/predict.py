"""A trained run applied to a new scan: stage 1, the attention (bounded by the body), stage 3,
fusion.

:func:`load_run` loads a finished run folder once (its stage-1 and stage-3 models and settings;
an unfinished run is refused, naming the missing stage); :func:`predict_volume` segments one
scan with it and can return what it went through (:class:`Prediction`: the coarse
probabilities, each organ's attention and where it came from, the body mask, stage 3's own
labels, warnings), which ``agcl predict`` writes next to each label map.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agcl._validation import check_in_range, check_int
from agcl.pipeline.segment.fusion import check_threshold

__all__ = ["Prediction", "TrainedRun", "load_run", "predict_volume"]


@dataclass
class TrainedRun:
    """A finished run's models and settings (:func:`load_run`), loaded once for many scans.

    Attributes:
        segment_model, organ_ids, config: stage 3's model (eval mode), its organ codes and the
            run's :class:`agcl.pipeline.PipelineConfig`.
        coarse_model, coarse_ids, coarse_config: stage 1's U-Net, its organ codes and settings
            (``None`` for a run trained on your own coarse maps).
        path: the run folder (``None`` when built from checkpoints).
        device: where the models are.
    """

    segment_model: torch.nn.Module
    organ_ids: list[int]
    config: Any
    coarse_model: torch.nn.Module | None = None
    coarse_ids: list[int] | None = None
    coarse_config: Any = None
    path: Path | None = None
    device: str | torch.device = "cpu"


def load_run(run: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> TrainedRun:
    """Load the models of a finished run folder.

    Raises:
        FileNotFoundError: no run folder, or no ``run.json`` in it.
        ValueError: the run is unfinished (the missing stage is named) or a checkpoint is
            damaged (its path is named).
    """
    from agcl.pipeline.coarse import load_coarse
    from agcl.pipeline.run import MANIFEST, RunFolder
    from agcl.pipeline.segment import load_segment_model

    root = Path(run)
    if not (root / MANIFEST).is_file():
        raise FileNotFoundError(
            f"{root} is not an agcl run folder (no {MANIFEST}); pass the --out of agcl train"
        )
    manifest = RunFolder.open(root, resume=True).manifest
    segment = manifest.stage("segment")
    if not segment or not segment.get("complete"):
        raise ValueError(
            f"the run in {root} is unfinished: stage 3 (segment) has not completed; finish it with "
            "agcl train --resume --out " + str(root)
        )
    model, organ_ids, config = load_segment_model(root / "checkpoints" / "segment.pt", device)
    out = TrainedRun(model, organ_ids, config, path=root, device=device)
    if config.domain != "ct":
        raise ValueError(
            f"the run in {root} is a {config.domain!r} run; agcl predict applies CT runs"
        )
    coarse = manifest.stage("coarse")
    if coarse is not None:
        if not coarse.get("complete"):
            raise ValueError(f"the run in {root} is unfinished: stage 1 (coarse) has not completed")
        out.coarse_model, out.coarse_ids, cfg = load_coarse(
            root / "checkpoints" / "coarse.pt", device
        )
        out.coarse_config = _inference_grid(cfg.coarse, config)
    return out


def _inference_grid(trained: Any, config: Any) -> Any:
    """Stage 1's settings as the run predicts with them: trained as the checkpoint says, with the
    run's sliding-window overlap (an inference setting)."""
    import dataclasses

    return dataclasses.replace(trained, overlap=config.coarse.overlap)


@dataclass
class Prediction:
    """What :func:`predict_volume` made of one scan (``return_intermediates=True``).

    Attributes:
        labels: ``(X, Y, Z)`` int16 organ codes, canonical orientation (the final map).
        stage3_labels: the same from stage 3 alone (``coarse_weight = 0``).
        coarse_probability: stage 1's softmax ``(K + 1, x, y, z)`` on its coarse grid (``None``
            with your own coarse maps); ``coarse_ids`` its organ codes.
        attention: the sparse attention ``{code: (box, mask)}`` stage 3 ran inside.
        sources: per organ code, where its attention came from: ``"threshold"``, ``"fallback"``
            (no voxel reached the threshold: the organ's most probable region; it may be absent
            from the scan), ``"labels"`` (your coarse map) or ``"none"``.
        body: the body mask that bounded the attention (``None`` when off or not found).
        warnings: what a reader should check, one sentence each.
    """

    labels: np.ndarray
    stage3_labels: np.ndarray | None = None
    coarse_probability: torch.Tensor | None = None
    coarse_ids: list[int] | None = None
    attention: dict[int, Any] = field(default_factory=dict)
    sources: dict[int, str] = field(default_factory=dict)
    body: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)

    def report(self, names: Mapping[int, str], spacing: Sequence[float]) -> dict[str, Any]:
        """A JSON-ready summary: per organ its attention source, attention and predicted voxel
        counts and volume in ml; the body's voxel count; the warnings."""
        ml = float(np.prod([float(s) for s in spacing])) / 1000.0
        counts = np.bincount(self.labels.ravel().astype(np.int64), minlength=max(names) + 1)
        organs = {}
        for code in sorted(names):
            att = self.attention.get(code)
            organs[names[code]] = {
                "attention": self.sources.get(code, "none"),
                "attention_voxels": 0 if att is None else int(np.count_nonzero(att[1])),
                "voxels": int(counts[code]) if code < len(counts) else 0,
                "volume_ml": round((int(counts[code]) if code < len(counts) else 0) * ml, 3),
            }
        return {
            "organs": organs,
            "body_voxels": None if self.body is None else int(self.body.sum()),
            "warnings": list(self.warnings),
        }


def _warnings(pred: Prediction, names: Mapping[int, str], threshold: float) -> list[str]:
    out = []
    for code, source in sorted(pred.sources.items()):
        name = names.get(code, str(code))
        if source == "fallback":
            voxels = int((pred.labels == code).sum())
            out.append(
                f"{name}: no coarse voxel reached the attention threshold {threshold:g}; its "
                "attention is its most probable region, so the organ may be absent from this scan "
                f"({voxels} voxels predicted)"
            )
        elif source == "none":
            out.append(
                f"{name}: stage 1 gives it no probability anywhere (inside the body): not predicted"
            )
    for code in sorted(names):
        if pred.sources.get(code) in ("threshold", "labels") and not (pred.labels == code).any():
            out.append(f"{names[code]}: attention found but nothing predicted")
    return out


def predict_volume(
    image: Any,
    *,
    run: TrainedRun | str | os.PathLike[str] | None = None,
    coarse_checkpoint: str | os.PathLike[str] | None = None,
    segment_checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    spacing: Sequence[float] | None = None,
    coarse_labels: Any = None,
    threshold: float | None = None,
    stride: int | None = None,
    batch_size: int | None = None,
    coarse_weight: float | None = None,
    body_mask: bool | None = None,
    return_intermediates: bool = False,
) -> np.ndarray | Prediction:
    """Segment a new CT volume with a trained run (or its stage-1 and stage-3 checkpoints).

    Attention comes from the coarse model (or ``coarse_labels``), bounded by the patient's body
    (``coarse.body_mask``); each organ is refined by sliding windows inside its attention and the
    organ probabilities are fused.

    Args:
        image: a NIfTI path, an :class:`agcl.data.Volume`, or a ``(X, Y, Z)`` HU array in
            canonical (RAS) orientation (then ``spacing`` is required).
        run: a :class:`TrainedRun` (:func:`load_run`) or a run folder; or else
        coarse_checkpoint: ``checkpoints/coarse.pt`` of a run (may be ``None`` when
            ``coarse_labels`` is given) and
        segment_checkpoint: ``checkpoints/segment.pt`` of a run.
        device: where the models run (with ``run`` as a folder or checkpoints).
        spacing: voxel size in mm (only for an array ``image``).
        coarse_labels: your own coarse label map for this image (array in canonical
            orientation, or a NIfTI path) instead of the coarse model's.
        threshold, stride, batch_size, coarse_weight: override the run's inference settings
            (``coarse_weight`` blends in the coarse model's probabilities; it has no effect with
            ``coarse_labels``, which carry none).
        body_mask: bound the attention by the body (default: the run's ``coarse.body_mask``).
        return_intermediates: return a :class:`Prediction` instead of the label map.

    Returns:
        An ``int16`` label map (organ codes) in canonical orientation, the shape of the image
        (write it next to the scan with ``agcl.data.save_like(labels, image_path, out_path)``),
        or a :class:`Prediction`.

    Raises:
        TypeError: a non-number ``threshold``, non-int ``stride``/``batch_size``.
        ValueError: an array without spacing, neither ``run`` nor ``segment_checkpoint`` (or
            both), a checkpoint of the wrong stage or without its keys, coarse labels of another
            shape, ``threshold`` outside ``[0, 1)`` or NaN, ``stride < 1`` or ``batch_size < 1``
            (checked before any file is read).

    References:
        The AGCL paper, Fig. 2 (coarse attention, per-organ refinement, label fusion).
    """
    if threshold is not None:
        check_threshold(threshold)
    if stride is not None:
        check_int("stride", stride, low=1)
    if batch_size is not None:
        check_int("batch_size", batch_size, low=1)
    if coarse_weight is not None:
        check_in_range("coarse_weight", coarse_weight, 0.0, 1.0)
    if (run is None) == (segment_checkpoint is None):
        raise ValueError(
            "pass either run (a run folder or load_run(...)) or segment_checkpoint (with "
            "coarse_checkpoint or coarse_labels); got " + ("both" if run is not None else "neither")
        )
    from agcl.data import body_mask as find_body
    from agcl.data import load_volume, preprocess_ct
    from agcl.pipeline.coarse import coarse_probabilities
    from agcl.pipeline.segment import segment_as_configured
    from agcl.sampling import (
        attention_from_labels,
        attention_from_probabilities,
        attention_kinds,
        bound_by,
    )

    if isinstance(image, (str, os.PathLike)):
        vol = load_volume(image, kind="image")
        hu, spacing = vol.array, vol.spacing
    elif hasattr(image, "array") and hasattr(image, "spacing"):
        hu, spacing = image.array, image.spacing
    else:
        hu = np.asarray(image, dtype=np.float32)
        if spacing is None:
            raise ValueError(
                "spacing is required when image is an array; pass spacing=(sx, sy, sz) in mm"
            )
    if hu.ndim != 3:
        raise ValueError(f"image must be a 3-D volume; got shape {hu.shape}")
    trained = _trained(run, coarse_checkpoint, segment_checkpoint, coarse_labels, device)
    config = trained.config
    source = image if isinstance(image, (str, os.PathLike)) else None
    norm = preprocess_ct(
        hu, window=tuple(config.clip_hu), percentiles=tuple(config.percentiles), source=source
    )
    use_body = config.coarse.body_mask if body_mask is None else bool(body_mask)
    pred = Prediction(labels=np.zeros(hu.shape, np.int16))
    if use_body:
        try:
            pred.body = find_body(hu, spacing=spacing)
        except ValueError as err:  # no voxel above -500 HU: no body to bound by
            pred.warnings.append(f"no body found ({err}); the attention is not bounded by it")
    c = config.coarse
    if coarse_labels is None:
        if trained.coarse_model is None:
            raise ValueError(
                "this run was trained on your own coarse maps (it has no stage-1 model): pass "
                "coarse_labels (agcl predict --coarse-dir) for the new scan"
            )
        # float16, as the pipeline stores them, so both give the same attention
        prob = (
            coarse_probabilities(
                trained.coarse_model,
                norm,
                trained.coarse_config,
                spacing=spacing,
                device=trained.device,
            )
            .half()
            .float()
        )
        pred.attention = attention_from_probabilities(
            prob,
            trained.coarse_ids,
            norm.shape,
            spacing=spacing,
            margin_mm=c.margin_mm,
            threshold=c.attention_threshold,
            channel=c.attention_channel,
            body=pred.body,
        )
        pred.sources = attention_kinds(
            prob, trained.coarse_ids, threshold=c.attention_threshold, body=pred.body
        )
        pred.coarse_probability, pred.coarse_ids = prob, list(trained.coarse_ids)
    else:
        coarse = (
            load_volume(coarse_labels, kind="label").array
            if isinstance(coarse_labels, (str, os.PathLike))
            else np.asarray(coarse_labels)
        )
        if coarse.shape != hu.shape:
            raise ValueError(
                f"coarse_labels must have the image's shape {hu.shape}; got {coarse.shape}"
            )
        pred.attention = bound_by(
            attention_from_labels(
                coarse,
                trained.organ_ids,
                margin_mm=c.margin_mm,
                spacing=spacing,
                channel=c.attention_channel,
            ),
            pred.body,
        )
        pred.sources = {k: ("labels" if k in pred.attention else "none") for k in trained.organ_ids}
    given = {
        "segment.stride": stride,
        "segment.threshold": threshold,
        "segment.inference_batch_size": batch_size,
        "segment.coarse_weight": coarse_weight,
    }
    config = config.override(**{k: v for k, v in given.items() if v is not None})
    pred.labels, pred.stage3_labels = segment_as_configured(
        trained.segment_model,
        norm,
        pred.attention,
        trained.organ_ids,
        config,
        device=trained.device,
        coarse_probability=pred.coarse_probability,
        coarse_ids=pred.coarse_ids,
        unblended=True,
    )
    if not return_intermediates:
        return pred.labels
    from agcl.data import BTCV_ORGANS

    names = {k: BTCV_ORGANS.get(k, str(k)) for k in trained.organ_ids}
    pred.warnings += _warnings(pred, names, c.attention_threshold)
    return pred


def _trained(
    run: Any, coarse_checkpoint: Any, segment_checkpoint: Any, coarse_labels: Any, device: Any
) -> TrainedRun:
    from agcl.pipeline.coarse import load_coarse
    from agcl.pipeline.segment import load_segment_model

    if isinstance(run, TrainedRun):
        return run
    if run is not None:
        return load_run(run, device=device)
    model, organ_ids, config = load_segment_model(segment_checkpoint, device)
    out = TrainedRun(model, organ_ids, config, device=device)
    if coarse_labels is None:
        if coarse_checkpoint is None:
            raise ValueError("coarse_checkpoint is required unless coarse_labels is given")
        out.coarse_model, out.coarse_ids, cfg = load_coarse(coarse_checkpoint, device)
        out.coarse_config = _inference_grid(cfg.coarse, config)
    return out
