"""``run_pipeline``: the three stages, evaluation on held-out cases and prediction files.

Run folder layout (``out_dir``)::

    checkpoints/coarse.pt, pretrain.pt, segment.pt   per-epoch stage checkpoints
    coarse/<modality>_<case>.nii.gz                   stage-1 label maps (every case)
    coarse/<modality>_<case>.prob.pt                  stage-1 probabilities on the coarse grid (float16)
    predictions/<modality>_<case>.nii.gz              fused predictions of the held-out cases
    epochs.jsonl                                      one JSON line per epoch of every stage
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agcl.pipeline import _distributed as dd
from agcl.pipeline._training import EpochCallback
from agcl.pipeline.checkpoint import EpochLog
from agcl.pipeline.config import PipelineConfig
from agcl.pipeline.volumes import CaseAttention, TrainingVolumes, case_stem, find_coarse_file

__all__ = ["find_coarse_file", "run_pipeline"]


def _check_coarse_dir(cases: Sequence[Any], coarse_dir: Any, coarse_labels: Mapping[int, int] | None) -> None:
    """Every case has a map in ``coarse_dir`` (a missing one raises now, not in stage 3); one
    warning lists the codes ``coarse_labels`` does not translate. One map in memory at a time."""
    from agcl.data import load_volume
    from agcl.pipeline.coarse_labels import remap_labels

    unmapped: set[int] = set()
    for case in cases:
        path = find_coarse_file(coarse_dir, str(case.case_id), str(case.modality))
        if coarse_labels is not None:
            _, missing = remap_labels(load_volume(path, kind="label").array, coarse_labels)
            unmapped |= missing
    if unmapped:
        warnings.warn(f"coarse_labels maps no BTCV organ to the codes {sorted(unmapped)} found in the maps of "
                      f"{coarse_dir}; they were set to background (map a code to 0 to silence this)",
                      UserWarning, stacklevel=3)


def _coarse_stage(train: Sequence[Any], test: Sequence[Any], config: PipelineConfig, organ_ids: Sequence[int],
                  out: Path, *, coarse_dir, coarse_labels=None, resume, device, log, callback) -> CaseAttention:
    """Stage 1 (or your own maps): returns where each case's coarse attention comes from.

    ``train`` and ``test`` are lazy sequences of prepared cases: each case is prepared, used and
    let go (the coarse probabilities are written to ``out/coarse/``).
    """
    from agcl.data import save_like
    from agcl.pipeline._coarse_attention import save_probabilities
    from agcl.pipeline.stage1_coarse import (
        coarse_probabilities,
        labels_from_probabilities,
        load_coarse,
        train_coarse,
    )

    margin, threshold, channel = config.coarse.margin_mm, config.coarse.attention_threshold, config.coarse.attention_channel
    if coarse_dir is not None:
        _check_coarse_dir([*train.cases, *test.cases], coarse_dir, coarse_labels)
        return CaseAttention(organ_ids, margin, source="labels", coarse_dir=coarse_dir, coarse_labels=coarse_labels,
                             channel=channel)
    ckpt = train_coarse(train, config, organ_ids, out, resume=resume, device=device, log=log, callback=callback)
    folder = out / "coarse"
    if dd.is_main():
        model, ids, cfg = load_coarse(ckpt, device)
        for cases in (train, test):
            for i, raw in enumerate(cases.cases):
                path = folder / f"{case_stem(raw)}.nii.gz"
                prob_path = folder / f"{case_stem(raw)}.prob.pt"
                if resume and path.is_file() and prob_path.is_file():
                    continue
                case = cases[i]
                prob = coarse_probabilities(model, case.image, cfg.coarse, spacing=case.spacing, device=device)
                save_probabilities(prob_path, prob, ids, case.image.shape)
                save_like(labels_from_probabilities(prob, ids, case.image.shape), case.reference, path)
    dd.barrier()
    return CaseAttention(organ_ids, margin, source="probabilities", prob_dir=folder, label_dir=folder,
                         threshold=threshold, channel=channel)


def run_pipeline(
    train: Sequence[tuple[Any, int]],
    test: Sequence[tuple[Any, int]],
    config: PipelineConfig,
    out_dir: str | os.PathLike[str],
    *,
    organs: Mapping[int, str] | None = None,
    resume: bool = False,
    device: str | torch.device = "cpu",
    coarse_dir: str | os.PathLike[str] | None = None,
    coarse_labels: Mapping[int, int] | None = None,
    callback: EpochCallback | None = None,
    write_predictions: bool = True,
    embed_patches_per_slice: int = 1,
) -> dict[str, Any]:
    """Run stages 1-3 on ``train`` and evaluate on ``test``.

    Args:
        train, test: ``(agcl.data.Case, modality_id)`` pairs (iterating an
            :class:`agcl.data.Cohort` gives them); every case needs a label map.
        config: the settings (``PipelineConfig.quick()`` or ``.paper()``, possibly overridden).
        out_dir: the run folder (see the module notes for its layout).
        organs: ``{code: name}`` of the organs to segment (default :data:`agcl.data.BTCV_ORGANS`,
            restricted to ``config.organs`` when set).
        resume: continue every stage from its last completed epoch; completed stages are skipped.
        device: ``"cpu"``, ``"cuda"``, ...
        coarse_dir: a folder of your own coarse label maps (see :func:`find_coarse_file`) used
            instead of training stage 1.
        coarse_labels: ``{their_code: btcv_code}`` translating the codes of ``coarse_dir``'s maps
            (e.g. TotalSegmentator's, see :func:`agcl.pipeline.load_coarse_labels`); codes it
            does not name become background, with one warning listing them.
        callback: called after every epoch of every stage as ``callback(stage, epoch, record)``.
        write_predictions: save the held-out predictions as NIfTI with the input's header.
        embed_patches_per_slice: patches per organ per slice of the held-out cases (inside their
            ground-truth organs) embedded for the PCA figure.

    Returns:
        ``{"per_organ", "mean", "coarse_mean", "coarse_per_organ", "attention_recall",
        "attention_recall_min", "config", "checkpoints", "predictions", "embeddings",
        "examples"}``; ``per_organ``/``mean`` as :func:`agcl.metrics.summarize_cases`
        (held-out cases; ``coarse_*`` the same for the coarse label maps), ``attention_recall``
        ``{organ name: the mean over the held-out cases holding the organ of the fraction of its
        voxels inside its attention}`` (``None``: absent), ``attention_recall_min`` the same
        with the lowest case instead of the mean (a target such as "recall >= 0.95 for every
        organ" is about it), ``embeddings`` a dict of tensors for the PCA plot (or ``None``),
        ``examples`` up to two held-out cases' image, ground truth and prediction arrays.
        Under torchrun only rank 0 evaluates; the other ranks return ``{}``.
    """
    from agcl.data import BTCV_ORGANS, PreparedCases, VolumeCache, save_like
    from agcl.metrics import evaluate_labels, summarize_cases
    from agcl.pipeline.predict import _segment_as_configured
    from agcl.pipeline.stage2_pretrain import pretrain_encoder
    from agcl.pipeline.stage3_segment import load_segment_model, train_segmenter
    from agcl.sampling import attention_recall

    if len(train) == 0 or len(test) == 0:
        raise ValueError(f"train and test must both hold cases; got {len(train)} and {len(test)}")
    if coarse_labels is not None and coarse_dir is None:
        raise ValueError("coarse_labels translates the maps of coarse_dir; got coarse_labels without coarse_dir")
    dd.init_from_env(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = dict(organs if organs is not None else BTCV_ORGANS)
    organ_ids = sorted(int(k) for k in (config.organs if config.organs is not None else names))
    missing = [k for k in organ_ids if k not in names]
    if missing:
        raise ValueError(f"config.organs holds codes {missing} that organs does not name; organs: {names}")
    kw: dict[str, Any] = {"clip_hu": config.clip_hu, "percentiles": config.percentiles, "organs": dict(BTCV_ORGANS) | names}
    # lazy: a case is loaded when a stage needs it; only TrainingVolumes keeps some, within data.cache_mb
    train_cases = PreparedCases([c for c, _ in train], [m for _, m in train], **kw)
    test_cases = PreparedCases([c for c, _ in test], [m for _, m in test], **kw)
    num_modalities = max([m for _, m in train] + [m for _, m in test]) + 1
    log = EpochLog(out / "epochs.jsonl", enabled=dd.is_main())
    common: dict[str, Any] = {"resume": resume, "device": device, "log": log, "callback": callback}

    t0 = time.perf_counter()
    coarse = _coarse_stage(train_cases, test_cases, config, organ_ids, out, coarse_dir=coarse_dir,
                           coarse_labels=coarse_labels, **common)
    train_att = (CaseAttention(organ_ids, config.coarse.margin_mm, channel=config.coarse.attention_channel)
                 if config.coarse.source == "gt" else coarse)
    cache = VolumeCache(config.data.cache_mb * 2**20)
    volumes = TrainingVolumes(train_cases, train_att, cache=cache)
    pre_ckpt = pretrain_encoder(volumes, config, organ_ids, out, num_modalities=num_modalities, **common)
    seg_ckpt = train_segmenter(volumes, config, organ_ids, out, pretrain_checkpoint=pre_ckpt, **common)
    cache.clear()
    train_time = time.perf_counter() - t0
    if not dd.is_main():
        return {}

    model, _, _ = load_segment_model(seg_ckpt, device)
    s = config.segment
    tables: list[dict[str, Any]] = []
    coarse_tables: list[dict[str, Any]] = []
    predictions: list[str] = []
    examples: list[dict[str, Any]] = []
    recalls: dict[int, list[float]] = {k: [] for k in organ_ids}
    for i in range(len(test_cases)):
        case = test_cases[i]
        stored = coarse.probabilities(case) if coarse.source == "probabilities" else None  # read once
        sparse = coarse(case, probabilities=stored)
        for organ, value in attention_recall(sparse, case.label, organ_ids).items():
            if value is not None:  # the fraction of the organ's voxels the attention covers
                recalls[organ].append(value)
        coarse_prob, coarse_ids = stored if stored is not None and s.coarse_weight > 0 else (None, None)
        pred = _segment_as_configured(model, case.image, sparse, organ_ids, config, device=device,
                                      coarse_probability=coarse_prob, coarse_ids=coarse_ids)
        subset = {k: names[k] for k in organ_ids}
        tables.append(evaluate_labels(pred, case.label, spacing=case.spacing, organs=subset))
        coarse_tables.append(evaluate_labels(coarse.labels(case), case.label, spacing=case.spacing, organs=subset))
        if write_predictions:
            path = out / "predictions" / f"{case_stem(case)}.nii.gz"
            save_like(pred, case.reference, path)
            predictions.append(str(path))
        if len(examples) < 2:
            examples.append({"case": case_stem(case), "image": case.image, "label": case.label, "pred": pred})
    summary = summarize_cases(tables)
    embeddings = None
    if pre_ckpt is not None and embed_patches_per_slice > 0:
        # patches of the held-out cases inside their ground-truth organs (the labels are known)
        embeddings = _embeddings(pre_ckpt, test_cases, config, organ_ids, embed_patches_per_slice, device)
    return {
        "per_organ": summary["per_organ"],
        "mean": summary["mean"],
        "coarse_mean": summarize_cases(coarse_tables)["mean"],
        "coarse_per_organ": summarize_cases(coarse_tables)["per_organ"],
        **_summarize_recalls(recalls, names),
        "config": config.to_dict(),
        "train_time_s": train_time,
        "checkpoints": {"coarse": str(out / "checkpoints" / "coarse.pt") if coarse_dir is None else None,
                        "pretrain": None if pre_ckpt is None else str(pre_ckpt), "segment": str(seg_ckpt)},
        "predictions": predictions,
        "embeddings": embeddings,
        "examples": examples,
    }


def _summarize_recalls(recalls: Mapping[int, Sequence[float]], names: Mapping[int, str]) -> dict[str, dict[str, Any]]:
    """``{"attention_recall": {name: mean}, "attention_recall_min": {name: lowest case}}`` of the
    per-case recalls of each organ code (``None`` for an organ no held-out case holds).

    Examples:
        >>> _summarize_recalls({6: [0.9, 0.7], 7: []}, {6: "liver", 7: "stomach"})["attention_recall_min"]
        {'liver': 0.7, 'stomach': None}
    """
    return {"attention_recall": {names[k]: (float(np.mean(v)) if len(v) else None) for k, v in recalls.items()},
            "attention_recall_min": {names[k]: (float(min(v)) if len(v) else None) for k, v in recalls.items()}}


def _embeddings(ckpt, cases, config, organ_ids, per_slice, device, max_patches: int = 400) -> dict[str, torch.Tensor] | None:
    """Embeddings of at most ``max_patches`` held-out patches inside their ground-truth organs."""
    from agcl import AttentionPatchSampler, PatchBatch
    from agcl.pipeline.stage2_pretrain import embed_patches, load_pretrain_model
    from agcl.sampling import attention_from_labels

    cap = max(1, max_patches // max(1, len(cases)))
    sampler = AttentionPatchSampler(patch_size=config.pretrain.patch_size, patches_per_slice=per_slice,
                                    max_patches=cap, seed=config.seed + 99)
    parts = []
    for i in range(len(cases)):
        case = cases[i]
        att = attention_from_labels(case.label, organ_ids, margin_mm=0.0, spacing=case.spacing)
        if att:
            batch = sampler.sample(case.image, att, modality=case.modality, volume_index=i)
            if len(batch):
                parts.append(batch)
    if not parts:
        return None
    pool = PatchBatch.cat(parts)
    z = embed_patches(load_pretrain_model(ckpt, device), pool.inputs(), device=device)
    return {"embedding": z, "target": pool.target, "modality": pool.modality}
