"""The CT domain of :func:`agcl.pipeline.run_pipeline`: volumes, a 3D U-Net stage 1, Dice and
surface distances per organ.

Cases are prepared on demand (:class:`agcl.data.PreparedCases`); stage 1 writes each case's
coarse probabilities (``coarse/<modality>_<case>.prob.pt``, float16) and arg-max label map
(``coarse/<modality>_<case>.nii.gz``), each recorded in ``run.json`` with the digests of the
image and the stage-1 checkpoint it came from, so a map that is missing, damaged or made from
other inputs is rebuilt on resume, and the others are kept.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agcl.pipeline.domains.ct_coarse import check_coarse_dir, write_coarse_maps
from agcl.pipeline.run.manifest import case_record, file_record
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint

__all__ = ["CTDomain", "labelled_indices"]


def labelled_indices(modalities: Sequence[int], fraction: float, seed: int) -> list[int]:
    """The training cases whose labels stage 3 may use: per modality ``ceil(fraction * n)``
    cases (at least one) of a seeded shuffle, in their original order.

    Examples:
        >>> labelled_indices([0, 0, 0, 0, 1, 1], 0.25, seed=0)
        [1, 5]
        >>> labelled_indices([0, 0, 1], 1.0, seed=0)
        [0, 1, 2]
    """
    if fraction >= 1.0:
        return list(range(len(modalities)))
    keep: list[int] = []
    for m in sorted(set(modalities)):
        members = [i for i, v in enumerate(modalities) if v == m]
        rng = np.random.default_rng([int(seed), 424242, int(m)])
        chosen = rng.permutation(members)[: max(1, math.ceil(fraction * len(members)))]
        keep += [int(i) for i in chosen]
    return sorted(keep)


class CTDomain:
    """Cases, stage 1 and evaluation of a CT run (see the module notes)."""

    stage1 = "coarse"

    def __init__(
        self,
        train: Sequence[tuple[Any, int]],
        test: Sequence[tuple[Any, int]],
        config: Any,
        *,
        organs: Mapping[int, str] | None = None,
        coarse_dir: Any = None,
        coarse_labels: Mapping[int, int] | None = None,
    ) -> None:
        from agcl.data import BTCV_ORGANS, PreparedCases

        if len(train) == 0 or len(test) == 0:
            raise ValueError(
                f"train and test must both hold cases; got {len(train)} and {len(test)}"
            )
        if coarse_labels is not None and coarse_dir is None:
            raise ValueError(
                "coarse_labels translates the maps of coarse_dir; got coarse_labels without "
                "coarse_dir"
            )
        self.config, self.coarse_dir, self.coarse_labels = config, coarse_dir, coarse_labels
        self.names = dict(organs if organs is not None else BTCV_ORGANS)
        self.organ_ids = sorted(
            int(k) for k in (config.organs if config.organs is not None else self.names)
        )
        missing = [k for k in self.organ_ids if k not in self.names]
        if missing:
            raise ValueError(
                f"config.organs holds codes {missing} that organs does not name; "
                f"organs: {self.names}"
            )
        kw: dict[str, Any] = {
            "clip_hu": config.clip_hu,
            "percentiles": config.percentiles,
            "organs": dict(BTCV_ORGANS) | self.names,
        }
        # lazy: a case is loaded when a stage needs it; only TrainingVolumes keeps some, within
        # data.cache_mb
        self.train_cases = PreparedCases([c for c, _ in train], [m for _, m in train], **kw)
        # the held-out cases carry their body mask: it bounds the attention at inference
        self.test_cases = PreparedCases(
            [c for c, _ in test], [m for _, m in test], body=config.coarse.body_mask, **kw
        )
        self.num_modalities = max([m for _, m in train] + [m for _, m in test]) + 1
        self.coarse: Any = None
        self._records: dict[str, list[dict[str, Any]]] = {}

    # --- what the run read ---
    def records(self, which: str) -> list[dict[str, Any]]:
        """The case records (ids, files, digests) of ``"train"`` or ``"test"``."""
        if which not in self._records:
            cases = self.train_cases if which == "train" else self.test_cases
            self._records[which] = [case_record(c) for c in cases.cases]
        return self._records[which]

    def check(self) -> None:
        """Refuse what would fail later: a patch larger than the volumes."""
        import nibabel as nib

        patch = self.config.pretrain.patch_size
        first = self.train_cases.cases[0]
        shape = tuple(int(n) for n in nib.load(str(first.image_path)).shape[:3])
        if patch > max(shape):
            raise ValueError(
                f"pretrain.patch_size={patch} is larger than the volumes (e.g. {first.image_path}: "
                f"{shape}); a patch must fit the image, choose at most {max(shape)}"
            )

    # --- stage 1 ---
    def run_stage1(self, ctx: Any) -> None:
        """Train stage 1 (or take the user's maps) and make every case's coarse maps."""
        from agcl.sampling import CaseAttention

        c = self.config.coarse
        if self.coarse_dir is not None:
            if dd.is_main():
                check_coarse_dir(self)
            self.coarse = CaseAttention(
                self.organ_ids,
                c.margin_mm,
                source="labels",
                coarse_dir=self.coarse_dir,
                coarse_labels=self.coarse_labels,
                channel=c.attention_channel,
            )
            return
        from agcl.pipeline.coarse import train_coarse

        parts = ctx.components.get("coarse", {})
        fp = stage_fingerprint(
            "coarse", self.config, organ_ids=self.organ_ids, components=components_record(**parts)
        )
        ctx.book.begin("coarse", fp, {"cases": self.records("train")})
        dd.barrier()
        ckpt = train_coarse(
            self.train_cases,
            self.config,
            self.organ_ids,
            ctx.out,
            resume=True,
            device=ctx.device,
            log=ctx.log,
            callback=ctx.callback,
            **parts,
        )
        ctx.book.done("coarse", [ckpt])
        if dd.is_main():
            write_coarse_maps(self, ctx, ckpt)
        dd.barrier()
        self.use_coarse_maps(ctx.out / "coarse")

    def use_coarse_maps(self, folder: Path) -> None:
        """Take the stage-1 maps in ``folder`` (a run's ``coarse/``) as the coarse attention."""
        from agcl.sampling import CaseAttention

        c = self.config.coarse
        self.coarse = CaseAttention(
            self.organ_ids,
            c.margin_mm,
            source="probabilities",
            prob_dir=folder,
            label_dir=folder,
            threshold=c.attention_threshold,
            channel=c.attention_channel,
        )

    # --- stages 2-3 ---
    def training_attention(self) -> Any:
        from agcl.sampling import CaseAttention

        c = self.config.coarse
        if c.source == "gt":
            return CaseAttention(self.organ_ids, c.margin_mm, channel=c.attention_channel)
        return self.coarse

    def attention_inputs(self) -> dict[str, Any]:
        """What stages 2-3 read as attention (part of their records)."""
        from agcl.data import case_stem, find_coarse_file

        if self.config.coarse.source == "gt":
            return {"attention": "ground truth"}
        if self.coarse_dir is not None:
            return {
                "attention": {
                    case_stem(c): file_record(
                        find_coarse_file(self.coarse_dir, str(c.case_id), str(c.modality))
                    )
                    for c in self.train_cases.cases
                },
                "coarse_labels": {str(k): v for k, v in sorted((self.coarse_labels or {}).items())},
            }
        maps = {}
        for c in self.train_cases.cases:
            path = self.coarse.probability_path(c)
            maps[case_stem(c)] = file_record(path)["sha256"]
        return {"attention": maps}

    def training_volumes(self, cache: Any) -> Any:
        from agcl.data import TrainingVolumes

        return TrainingVolumes(self.train_cases, self.training_attention(), cache=cache)

    def labelled(self) -> list[int]:
        return labelled_indices(
            self.train_cases.modality_ids, self.config.segment.label_fraction, self.config.seed
        )

    # --- evaluation ---
    def evaluate(
        self, ctx: Any, seg_ckpt: Path, *, write_predictions: bool = True
    ) -> dict[str, Any]:
        """Held-out cases: predictions (blended and stage 3 alone), Dice/HD95/ASSD, recall."""
        from agcl.data import case_stem, save_like
        from agcl.metrics import evaluate_labels, summarize_cases
        from agcl.pipeline.segment import load_segment_model, segment_as_configured
        from agcl.sampling import attention_recall

        model, _, _ = load_segment_model(seg_ckpt, ctx.device)
        s, coarse = self.config.segment, self.coarse
        subset = {k: self.names[k] for k in self.organ_ids}
        tables, coarse_tables, alone_tables = [], [], []
        predictions: list[str] = []
        examples: list[dict[str, Any]] = []
        recalls: dict[int, list[float]] = {k: [] for k in self.organ_ids}
        stage3_cases: dict[str, float | None] = {}
        for i in range(len(self.test_cases)):
            case = self.test_cases[i]
            stored = (
                coarse.probabilities(case) if coarse.source == "probabilities" else None
            )  # read once
            sparse = coarse(case, probabilities=stored)
            for organ, value in attention_recall(sparse, case.label, self.organ_ids).items():
                if value is not None:  # the fraction of the organ's voxels the attention covers
                    recalls[organ].append(value)
            prob, ids = stored if stored is not None and s.coarse_weight > 0 else (None, None)
            pred, alone = segment_as_configured(
                model,
                case.image,
                sparse,
                self.organ_ids,
                self.config,
                device=ctx.device,
                coarse_probability=prob,
                coarse_ids=ids,
                unblended=True,
            )
            tables.append(evaluate_labels(pred, case.label, spacing=case.spacing, organs=subset))
            alone_tables.append(
                evaluate_labels(alone, case.label, spacing=case.spacing, organs=subset)
            )
            stage3_cases[case_stem(case)] = alone_tables[-1]["mean"]["dice"]
            coarse_tables.append(
                evaluate_labels(
                    coarse.labels(case), case.label, spacing=case.spacing, organs=subset
                )
            )
            if write_predictions:
                path = ctx.out / "predictions" / f"{case_stem(case)}.nii.gz"
                save_like(pred, case.reference, path)
                ctx.folder.own(path)
                predictions.append(str(path))
            if len(examples) < 2:
                examples.append(
                    {
                        "case": case_stem(case),
                        "image": case.image,
                        "label": case.label,
                        "pred": pred,
                    }
                )
        ctx.folder.save()
        summary, coarse_summary, alone = (
            summarize_cases(t) for t in (tables, coarse_tables, alone_tables)
        )
        return {
            "per_organ": summary["per_organ"],
            "mean": summary["mean"],
            "coarse_mean": coarse_summary["mean"],
            "coarse_per_organ": coarse_summary["per_organ"],
            "stage3_only": {"mean": alone["mean"], "per_organ": alone["per_organ"]},
            "stage3_cases": stage3_cases,
            **summarize_recalls(recalls, self.names),
            "predictions": predictions,
            "examples": examples,
        }

    def probe_volumes(self, cache: Any) -> tuple[Any, Any, list[str]]:
        """``(fit, score, names)`` for the encoder probe: the training volumes with their
        training attention, the held-out ones with their test-time attention, and the held-out
        cases' names."""
        from agcl.data import TrainingVolumes, case_stem

        return (
            self.training_volumes(cache),
            TrainingVolumes(self.test_cases, self.coarse),
            [case_stem(c) for c in self.test_cases.cases],
        )


def summarize_recalls(
    recalls: Mapping[int, Sequence[float]], names: Mapping[int, str]
) -> dict[str, dict[str, Any]]:
    """``{"attention_recall": {name: mean}, "attention_recall_min": {name: lowest case}}`` of the
    per-case recalls of each organ code (``None`` for an organ no held-out case holds).

    Examples:
        >>> out = summarize_recalls({6: [0.9, 0.7], 7: []}, {6: "liver", 7: "stomach"})
        >>> out["attention_recall_min"]
        {'liver': 0.7, 'stomach': None}
    """
    return {
        "attention_recall": {
            names[k]: (float(np.mean(v)) if len(v) else None) for k, v in recalls.items()
        },
        "attention_recall_min": {
            names[k]: (float(min(v)) if len(v) else None) for k, v in recalls.items()
        },
    }
