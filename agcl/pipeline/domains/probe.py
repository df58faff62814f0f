"""The encoder probe of a run: does the frozen encoder separate organs and modalities?

Patches are sampled as stage 2 samples them (each volume's attention, the sampler's settings of
``config.pretrain``) from the training volumes (fit) and the held-out volumes with their test-time
attention (score), and embedded by the frozen encoder stage 3 ran on (the pre-trained one, or the
random one of ``pretrain.method="none"``): its deepest feature map, average-pooled
(:func:`agcl.metrics.pooled_features`). :func:`agcl.metrics.probe_embeddings` then gives k-NN
(cosine, k = 20) and linear-probe accuracy for the organ, the modality and the (modality, organ)
pair, and the silhouette of the organ clusters. The accuracy per held-out case is kept too, so
that methods can be compared case by case (paired tests in the ablation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["PROBE_LABELS", "probe_domain", "probe_encoder", "probe_patches"]

#: the label sets the probe scores
PROBE_LABELS = ("organ", "modality", "modality_organ")


def probe_patches(
    volumes: Sequence[Mapping[str, Any]],
    config: Any,
    organ_ids: Sequence[int],
    *,
    max_patches: int,
    seed: int,
) -> Any:
    """At most ``max_patches`` patches from ``volumes`` (spread evenly over them), drawn as stage
    2 draws them; ``None`` when no volume gives any."""
    from agcl.sampling import AttentionPatchSampler, PatchBatch

    p = config.pretrain
    cap = max(1, max_patches // max(1, len(volumes)))
    if p.max_patches_per_volume is not None:
        cap = min(cap, p.max_patches_per_volume)
    sampler = AttentionPatchSampler(
        patch_size=p.patch_size, patches_per_slice=p.patches_per_slice, max_patches=cap, seed=0
    )
    parts = []
    for i in range(len(volumes)):
        vol = volumes[i]
        if not vol["attention"]:
            continue
        gen = torch.Generator().manual_seed(
            int(np.random.SeedSequence([seed, 9113, i]).generate_state(1)[0])
        )
        batch = sampler.sample(
            vol["image"],
            vol["attention"],
            modality=int(vol["modality"]),
            targets=list(organ_ids),
            volume_index=i,
            generator=gen,
        )
        if len(batch):
            parts.append(batch)
    return PatchBatch.cat(parts) if parts else None


def _labels(batch: Any, organ_ids: Sequence[int], num_modalities: int) -> dict[str, torch.Tensor]:
    lut = torch.zeros(int(max(organ_ids)) + 1, dtype=torch.long)
    for i, code in enumerate(organ_ids):
        lut[int(code)] = i
    organ = lut[batch.target.long()]
    modality = batch.modality.long()
    return {
        "organ": organ,
        "modality": modality,
        "modality_organ": modality * len(organ_ids) + organ,
    }


@torch.no_grad()
def probe_encoder(
    encoder: torch.nn.Module,
    fit_volumes: Sequence[Mapping[str, Any]],
    score_volumes: Sequence[Mapping[str, Any]],
    config: Any,
    organ_ids: Sequence[int],
    *,
    num_modalities: int,
    case_names: Sequence[str] | None = None,
    device: str | torch.device = "cpu",
    max_fit: int = 1500,
    max_score: int = 600,
) -> dict[str, Any] | None:
    """The probe's scores (see the module notes), or ``None`` when either side has no patch.

    Returns:
        ``{"knn": {label: accuracy}, "linear": {...}, "silhouette": s, "patches": n_score,
        "fit_patches": n_fit, "per_case": {case: {"knn": {...}, "linear": {...}, "patches": n}}}``
        with the labels of :data:`PROBE_LABELS`; ``per_case`` keyed by ``case_names`` (default
        the score volume's index).
    """
    from agcl.metrics import pooled_features, probe_embeddings

    seed = int(config.seed)
    fit = probe_patches(fit_volumes, config, organ_ids, max_patches=max_fit, seed=seed)
    score = probe_patches(score_volumes, config, organ_ids, max_patches=max_score, seed=seed + 1)
    if fit is None or score is None:
        return None
    was = (
        next(encoder.parameters()).device
        if any(True for _ in encoder.parameters())
        else torch.device("cpu")
    )
    encoder = encoder.to(device)
    try:
        fz = pooled_features(encoder, fit.inputs().to(device)).float().cpu()
        sz = pooled_features(encoder, score.inputs().to(device)).float().cpu()
    finally:
        encoder.to(was)
    fit_y, score_y = (
        _labels(fit, organ_ids, num_modalities),
        _labels(score, organ_ids, num_modalities),
    )
    out = probe_embeddings(
        fz, fit_y, sz, score_y, k=20, silhouette_key="organ", seed=seed, return_predictions=True
    )
    preds = out.pop("predictions")
    names = (
        list(case_names) if case_names is not None else [str(i) for i in range(len(score_volumes))]
    )
    per_case: dict[str, Any] = {}
    for index in sorted(set(score.volume_index.tolist())):
        rows = score.volume_index == index
        per_case[names[index]] = {
            kind: {
                label: float((preds[kind][label][rows] == score_y[label][rows]).double().mean())
                for label in PROBE_LABELS
            }
            for kind in ("knn", "linear")
        }
        per_case[names[index]]["patches"] = int(rows.sum())
    out.update(fit_patches=len(fit), per_case=per_case)
    return out


def probe_domain(
    domain: Any, encoder: torch.nn.Module, config: Any, *, device: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """:func:`probe_encoder` on a pipeline domain's own cases: fit on its training volumes, score
    on its held-out ones (``domain.probe_volumes``, through a :class:`agcl.data.VolumeCache` of
    ``config.data.cache_mb``), as every run reports it."""
    from agcl.data import VolumeCache

    fit, score, names = domain.probe_volumes(VolumeCache(config.data.cache_mb * 2**20))
    return probe_encoder(
        encoder,
        fit,
        score,
        config,
        domain.organ_ids,
        num_modalities=domain.num_modalities,
        case_names=names,
        device=device,
    )
