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
from agcl.pipeline._volumes import LazyCases, PreparedCase, attention_from_labels
from agcl.pipeline.checkpoint import EpochLog
from agcl.pipeline.config import PipelineConfig

__all__ = ["find_coarse_file", "run_pipeline"]

_EXTS = (".nii.gz", ".nii")


def _file_stem(case: PreparedCase) -> str:
    return f"{case.modality_name}_{case.case_id}"


def find_coarse_file(folder: str | os.PathLike[str], case_id: str, modality: str) -> Path:
    """The label map of a case in a ``--coarse-dir`` folder, matched by case id.

    Accepted names (first match wins): ``<modality>_<case_id>``, ``<modality>/<case_id>``,
    ``<case_id>``, ``label<case_id>`` and ``img<case_id>``, each ``.nii.gz`` or ``.nii``.

    Raises:
        FileNotFoundError: none of them exists (the message lists the paths tried).
    """
    folder = Path(folder)
    stems = [f"{modality}_{case_id}", f"{modality}/{case_id}", case_id, f"label{case_id}", f"img{case_id}"]
    tried = [folder / f"{s}{e}" for s in stems for e in _EXTS]
    for path in tried:
        if path.is_file():
            return path
    raise FileNotFoundError(f"no coarse label map for case {case_id!r} ({modality}) in {folder}; tried "
                            + ", ".join(p.name if p.parent == folder else str(p.relative_to(folder)) for p in tried))


class _Attention:
    """Attention stacks of a case list: from coarse probabilities, coarse label maps or the ground truth."""

    def __init__(self, cases: Sequence[PreparedCase], coarse: Mapping[str, np.ndarray] | None,
                 organ_ids: Sequence[int], margin_mm: float, *, prob_dir: Path | None = None,
                 threshold: float = 0.3) -> None:
        self.cases, self.coarse, self.organ_ids, self.margin = cases, coarse, list(organ_ids), margin_mm
        self.prob_dir, self.threshold = prob_dir, threshold

    def sparse(self, i: int):
        """``{organ: (box, mask)}`` from the stored coarse probabilities (``None`` without them)."""
        if self.coarse is None or self.prob_dir is None:
            return None
        from agcl.pipeline._coarse_attention import attention_from_probabilities, load_probabilities

        case = self.cases[i]
        prob, ids, _ = load_probabilities(self.prob_dir / f"{_file_stem(case)}.prob.pt")
        return attention_from_probabilities(prob, ids, case.image.shape, spacing=case.spacing,
                                            margin_mm=self.margin, threshold=self.threshold)

    def labels(self, i: int) -> np.ndarray:
        case = self.cases[i]
        if self.coarse is None:
            return case.label  # type: ignore[return-value]
        return self.coarse[_file_stem(case)]

    def __call__(self, i: int) -> np.ndarray:
        sparse = self.sparse(i)
        if sparse is not None:
            from agcl.pipeline._coarse_attention import densify

            return densify(sparse, self.organ_ids, self.cases[i].image.shape)
        return attention_from_labels(self.labels(i), self.organ_ids, margin_mm=self.margin,
                                     spacing=self.cases[i].spacing)


def _coarse_maps(train: Sequence[PreparedCase], test: Sequence[PreparedCase], config: PipelineConfig,
                 organ_ids: Sequence[int], out: Path, *, coarse_dir, coarse_labels=None, resume, device, log,
                 callback) -> dict[str, np.ndarray]:
    from agcl.data import load_volume, save_like
    from agcl.pipeline._coarse_attention import save_probabilities
    from agcl.pipeline.coarse_labels import remap_labels
    from agcl.pipeline.stage1_coarse import (
        coarse_probabilities,
        labels_from_probabilities,
        load_coarse,
        train_coarse,
    )

    everything = list(train) + list(test)
    maps: dict[str, np.ndarray] = {}
    if coarse_dir is not None:
        unmapped: set[int] = set()
        for case in everything:
            arr = load_volume(find_coarse_file(coarse_dir, case.case_id, case.modality_name), kind="label").array
            if arr.shape != case.image.shape:
                raise ValueError(f"coarse label map of case {case.case_id} has shape {arr.shape}; its image has {case.image.shape}")
            if coarse_labels is not None:
                arr, missing = remap_labels(arr, coarse_labels)
                unmapped |= missing
            maps[_file_stem(case)] = arr
        if unmapped:
            warnings.warn(f"coarse_labels maps no BTCV organ to the codes {sorted(unmapped)} found in the maps of "
                          f"{coarse_dir}; they were set to background (map a code to 0 to silence this)",
                          UserWarning, stacklevel=3)
        return maps
    ckpt = train_coarse(train, config, organ_ids, out, resume=resume, device=device, log=log, callback=callback)
    folder = out / "coarse"
    if dd.is_main():
        model, ids, cfg = load_coarse(ckpt, device)
        for case in everything:
            path = folder / f"{_file_stem(case)}.nii.gz"
            prob_path = folder / f"{_file_stem(case)}.prob.pt"
            if resume and path.is_file() and prob_path.is_file():
                continue
            prob = coarse_probabilities(model, case.image, cfg.coarse, spacing=case.spacing, device=device)
            save_probabilities(prob_path, prob, ids, case.image.shape)
            save_like(labels_from_probabilities(prob, ids, case.image.shape), case.reference, path)
    dd.barrier()
    for case in everything:
        maps[_file_stem(case)] = load_volume(folder / f"{_file_stem(case)}.nii.gz", kind="label").array
    return maps


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
        ``{"per_organ", "mean", "coarse_mean", "coarse_per_organ", "attention_recall", "config",
        "checkpoints", "predictions", "embeddings", "examples"}``; ``per_organ``/``mean`` as
        :func:`agcl.metrics.summarize_cases` (held-out cases; ``coarse_*`` the same for the
        coarse label maps), ``attention_recall`` ``{organ name: the mean over the held-out cases
        holding the organ of the fraction of its voxels inside its attention}`` (``None``: absent), ``embeddings`` a dict of tensors for the PCA plot (or ``None``),
        ``examples`` up to two held-out cases' image, ground truth and prediction arrays.
        Under torchrun only rank 0 evaluates; the other ranks return ``{}``.
    """
    from agcl.data import BTCV_ORGANS, save_like
    from agcl.metrics import evaluate_labels, summarize_cases
    from agcl.pipeline.predict import segment_with_attention
    from agcl.pipeline.stage2_pretrain import pretrain_encoder
    from agcl.pipeline.stage3_segment import load_segment_model, train_segmenter

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
    train_cases = LazyCases([c for c, _ in train], [m for _, m in train], cache=len(train), **kw)
    test_cases = LazyCases([c for c, _ in test], [m for _, m in test], cache=2, **kw)
    prepared_train = [train_cases[i] for i in range(len(train_cases))]
    num_modalities = max([m for _, m in train] + [m for _, m in test]) + 1
    log = EpochLog(out / "epochs.jsonl", enabled=dd.is_main())
    common: dict[str, Any] = {"resume": resume, "device": device, "log": log, "callback": callback}

    t0 = time.perf_counter()
    coarse = _coarse_maps(prepared_train, [test_cases[i] for i in range(len(test_cases))], config, organ_ids, out,
                          coarse_dir=coarse_dir, coarse_labels=coarse_labels, **common)
    prob_dir = out / "coarse" if coarse_dir is None else None
    threshold = config.coarse.attention_threshold
    train_att = _Attention(prepared_train, None if config.coarse.source == "gt" else coarse, organ_ids,
                           config.coarse.margin_mm, prob_dir=prob_dir, threshold=threshold)
    pre_ckpt = pretrain_encoder(prepared_train, train_att, config, organ_ids, out, num_modalities=num_modalities,
                                **common)
    seg_ckpt = train_segmenter(prepared_train, train_att, config, organ_ids, out, pretrain_checkpoint=pre_ckpt,
                               **common)
    train_time = time.perf_counter() - t0
    if not dd.is_main():
        return {}

    model, _, _ = load_segment_model(seg_ckpt, device)
    s = config.segment
    tables: list[dict[str, Any]] = []
    coarse_tables: list[dict[str, Any]] = []
    predictions: list[str] = []
    examples: list[dict[str, Any]] = []
    test_att = _Attention([test_cases[i] for i in range(len(test_cases))], coarse, organ_ids, config.coarse.margin_mm,
                          prob_dir=prob_dir, threshold=threshold)
    recalls: dict[int, list[float]] = {k: [] for k in organ_ids}
    for i in range(len(test_cases)):
        case = test_cases[i]
        attention = test_att(i)
        for k, organ in enumerate(organ_ids):
            gt = case.label == organ
            if gt.any():  # the fraction of the organ's voxels the attention covers
                recalls[organ].append(float((gt & attention[k]).sum()) / float(gt.sum()))
        pred = segment_with_attention(model, case.image, attention, organ_ids, patch_size=config.pretrain.patch_size,
                                      stride=s.stride, threshold=s.threshold, batch_size=s.inference_batch_size,
                                      device=device)
        subset = {k: names[k] for k in organ_ids}
        tables.append(evaluate_labels(pred, case.label, spacing=case.spacing, organs=subset))
        coarse_tables.append(evaluate_labels(test_att.labels(i), case.label, spacing=case.spacing, organs=subset))
        if write_predictions:
            path = out / "predictions" / f"{_file_stem(case)}.nii.gz"
            save_like(pred, case.reference, path)
            predictions.append(str(path))
        if len(examples) < 2:
            examples.append({"case": _file_stem(case), "image": case.image, "label": case.label, "pred": pred})
    summary = summarize_cases(tables)
    embeddings = None
    if pre_ckpt is not None and embed_patches_per_slice > 0:
        # patches of the held-out cases inside their ground-truth organs (the labels are known)
        gt_att = _Attention([test_cases[i] for i in range(len(test_cases))], None, organ_ids, 0.0)
        embeddings = _embeddings(pre_ckpt, test_cases, gt_att, config, organ_ids, embed_patches_per_slice, device)
    return {
        "per_organ": summary["per_organ"],
        "mean": summary["mean"],
        "coarse_mean": summarize_cases(coarse_tables)["mean"],
        "coarse_per_organ": summarize_cases(coarse_tables)["per_organ"],
        "attention_recall": {names[k]: (float(np.mean(v)) if v else None) for k, v in recalls.items()},
        "config": config.to_dict(),
        "train_time_s": train_time,
        "checkpoints": {"coarse": str(out / "checkpoints" / "coarse.pt") if coarse_dir is None else None,
                        "pretrain": None if pre_ckpt is None else str(pre_ckpt), "segment": str(seg_ckpt)},
        "predictions": predictions,
        "embeddings": embeddings,
        "examples": examples,
    }


def _embeddings(ckpt, cases, attention, config, organ_ids, per_slice, device) -> dict[str, torch.Tensor] | None:
    from agcl.pipeline._patches import sample_pool
    from agcl.pipeline.stage2_pretrain import embed_patches, load_pretrain_model

    prepared = [cases[i] for i in range(len(cases))]
    pool = sample_pool(prepared, attention, organ_ids, patch_size=config.pretrain.patch_size,
                       patches_per_slice=per_slice, max_patches=400, seed=config.seed + 99, with_label=False, allow_empty=True)
    if pool is None:
        return None
    z = embed_patches(load_pretrain_model(ckpt, device), pool.x, device=device)
    return {"embedding": z, "target": pool.target, "modality": pool.modality}
