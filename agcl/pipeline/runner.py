"""``run_pipeline``: the three stages in a run folder, evaluated on held-out cases.

One pipeline for CT volumes (``config.domain="ct"``) and 2-D images (``"image2d"``); the
domains (:mod:`agcl.pipeline.domains`) differ in their data, stage 1 and metrics, and share
stages 2-3, the run folder and its manifest. Run folder layout (``out_dir``)::

    run.json                                          what each stage was made from (the manifest)
    checkpoints/coarse.pt (2-D: coarse2d.pt), pretrain.pt, segment.pt   per-epoch stage checkpoints
    coarse/<modality>_<case>.nii.gz, .prob.pt         stage-1 maps of every case (CT)
    predictions/<modality>_<case>.nii.gz (2-D: <id>.png)   predictions of the held-out cases
    epochs.jsonl                                      one JSON line per epoch of every stage
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from agcl.pipeline.config import PipelineConfig
from agcl.pipeline.run.folder import RunFolder
from agcl.pipeline.run.stages import StageBook
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.fingerprint import components_record, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.training import EpochCallback

__all__ = ["COMPONENT_STAGES", "RunContext", "run_pipeline"]

#: the components each stage takes (``run_pipeline(components={stage: {name: value}})``)
COMPONENT_STAGES: dict[str, tuple[str, ...]] = {
    "coarse": ("model", "loss_fn", "optimizer", "augment"),
    "coarse2d": ("model", "loss_fn", "optimizer", "augment"),
    "pretrain": ("model", "loss_fn", "optimizer", "augment"),
    "segment": ("model", "loss_fn", "optimizer"),
}


@dataclass
class RunContext:
    """What every stage of one run shares: the folder, its bookkeeping, the log and the device."""

    folder: RunFolder
    book: StageBook
    config: PipelineConfig
    device: str | torch.device
    log: EpochLog
    callback: EpochCallback | None = None
    components: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def out(self) -> Path:
        return self.folder.path


def _check_components(
    components: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, dict[str, Any]]:
    if components is None:
        return {}
    if not isinstance(components, Mapping):
        raise TypeError(
            "components must be a dict {stage: {name: component}}; "
            f"got {type(components).__name__}"
        )
    out: dict[str, dict[str, Any]] = {}
    for stage, parts in components.items():
        if stage not in COMPONENT_STAGES:
            raise ValueError(
                f"components: unknown stage {stage!r}; stages: {', '.join(COMPONENT_STAGES)}"
            )
        if not isinstance(parts, Mapping):
            raise TypeError(
                f"components[{stage!r}] must be a dict {{name: component}}; "
                f"got {type(parts).__name__}"
            )
        unknown = sorted(set(parts) - set(COMPONENT_STAGES[stage]))
        if unknown:
            raise ValueError(
                f"components[{stage!r}]: unknown names {unknown}; {stage} takes "
                f"{', '.join(COMPONENT_STAGES[stage])}"
            )
        out[stage] = {k: v for k, v in parts.items() if v is not None}
    return out


def _domain(
    config: PipelineConfig,
    train: Any,
    test: Any,
    *,
    organs: Any,
    coarse_dir: Any,
    coarse_labels: Any,
    class_names: Any,
) -> Any:
    if config.domain == "image2d":
        from agcl.pipeline.domains.image2d import ImageDomain

        if coarse_dir is not None or coarse_labels is not None:
            raise ValueError("coarse_dir and coarse_labels are for CT runs (config.domain='ct')")
        return ImageDomain(train, test, config, class_names=class_names)
    from agcl.pipeline.domains.ct import CTDomain

    if class_names is not None:
        raise ValueError(
            "class_names is for 2-D runs (config.domain='image2d'); CT runs take organs"
        )
    return CTDomain(
        train, test, config, organs=organs, coarse_dir=coarse_dir, coarse_labels=coarse_labels
    )


def run_pipeline(
    train: Sequence[Any],
    test: Sequence[Any],
    config: PipelineConfig,
    out_dir: str | os.PathLike[str],
    *,
    organs: Mapping[int, str] | None = None,
    class_names: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    device: str | torch.device = "cpu",
    coarse_dir: str | os.PathLike[str] | None = None,
    coarse_labels: Mapping[int, int] | None = None,
    components: Mapping[str, Mapping[str, Any]] | None = None,
    callback: EpochCallback | None = None,
    write_predictions: bool = True,
    embed_patches_per_slice: int = 1,
    probe: bool = True,
) -> dict[str, Any]:
    """Run stages 1-3 on ``train`` and evaluate on ``test`` in the run folder ``out_dir``.

    Args:
        train, test: CT (``config.domain="ct"``): ``(agcl.data.Case, modality_id)`` pairs
            (iterating an :class:`agcl.data.Cohort` gives them), every case labelled. 2-D
            (``"image2d"``): image sets such as :class:`agcl.data.VOCSegmentation` (``[i]`` an
            ``(image, mask)`` pair; ``ids`` and the files' paths where known).
        config: the settings (``PipelineConfig.quick()`` or ``.paper()``, possibly overridden).
        out_dir: the run folder (see the module notes): a folder holding an earlier run needs
            ``resume`` or ``overwrite`` (:class:`agcl.pipeline.run.RunFolder`).
        organs: CT: ``{code: name}`` of the organs to segment (default
            :data:`agcl.data.BTCV_ORGANS`, restricted to ``config.organs`` when set).
        class_names: 2-D: the class names, background first (default: VOC's 21 classes).
        resume: continue the run in ``out_dir``: each stage continues from its last epoch when
            its recorded settings and inputs still match, and is redone (with every stage built
            on it) when they do not; the log says which and why.
        overwrite: replace the run in ``out_dir`` (its own files only).
        device: ``"cpu"``, ``"cuda"``, ...
        coarse_dir: CT: a folder of your own coarse label maps (see
            :func:`agcl.data.find_coarse_file`) used instead of training stage 1.
        coarse_labels: ``{their_code: btcv_code}`` translating the codes of ``coarse_dir``'s maps
            (e.g. TotalSegmentator's, see :func:`agcl.data.load_coarse_labels`).
        components: your own parts per stage, ``{"coarse" | "coarse2d" | "pretrain" |
            "segment": {"model", "loss_fn", "optimizer", "augment"}}`` (``segment`` takes no
            augment); each replaces the default the stage builds from the config (a component
            is part of the stage's fingerprint by its class).
        callback: called after every epoch of every stage as ``callback(stage, epoch, record)``.
        write_predictions: save the held-out predictions (NIfTI with the input's header; 2-D PNG).
        embed_patches_per_slice: CT: patches per organ per slice of the held-out cases (inside
            their ground-truth organs) embedded for the PCA figure.
        probe: score the frozen encoder itself (:mod:`agcl.pipeline.domains.probe`: k-NN and
            linear-probe accuracy of organ, modality and both, and the organ silhouette, on
            patches drawn as stage 2 draws them), as ``result["probe"]``.

    Returns:
        CT: ``{"per_organ", "mean", "coarse_mean", "coarse_per_organ", "stage3_only",
        "attention_recall", "attention_recall_min", "config", "train_time_s", "checkpoints",
        "predictions", "embeddings", "examples", "run_id", "probe"}``: ``per_organ``/``mean`` as
        :func:`agcl.metrics.summarize_cases` of the held-out cases (``coarse_*`` the same for
        the coarse label maps; ``stage3_only`` for stage 3 alone, ``segment.coarse_weight=0``),
        ``attention_recall`` ``{organ: the mean over the held-out cases holding it of the
        fraction of its voxels inside its attention}`` and ``attention_recall_min`` the lowest
        case. 2-D: ``{"mean": {"miou"}, "per_class", "coarse", ...}``. Under torchrun only rank
        0 evaluates; the other ranks return ``{}``.

    Raises:
        agcl.pipeline.run.RunExistsError: ``out_dir`` holds a run and neither ``resume`` nor
            ``overwrite`` was given.
    """
    parts = _check_components(components)
    dd.init_from_env(device)
    domain = _domain(
        config,
        train,
        test,
        organs=organs,
        coarse_dir=coarse_dir,
        coarse_labels=coarse_labels,
        class_names=class_names,
    )
    if dd.is_main():
        domain.check()
    folder = RunFolder.open(out_dir, resume=resume, overwrite=overwrite, main=dd.is_main())
    dd.barrier()
    if (
        not dd.is_main()
    ):  # the main rank's manifest decides what is redone; the others follow its files
        folder = RunFolder(Path(out_dir), folder.manifest, main=False)

    log = EpochLog(folder.path / "epochs.jsonl", enabled=dd.is_main(), run_id=folder.run_id)
    folder.own(log.path)

    def discard(redo: list[str]) -> None:  # what a stage being redone leaves behind
        log.drop(redo)
        if domain.stage1 in redo:
            for record in folder.manifest.data.get("maps", {}).values():
                folder.remove([folder.path / rel for rel in record.get("files", {})])
            folder.manifest.drop_maps()

    from_maps = config.coarse.source != "gt" and coarse_dir is None
    book = StageBook(
        folder,
        {domain.stage1: ["pretrain", "segment"] if from_maps else [], "pretrain": ["segment"]},
        on_redo=discard,
    )
    ctx = RunContext(folder, book, config, device, log, callback, parts)

    t0 = time.perf_counter()
    domain.run_stage1(ctx)
    pre_ckpt, seg_ckpt = _stages_2_and_3(ctx, domain)
    train_time = time.perf_counter() - t0
    if not dd.is_main():
        return {}
    # what was evaluated, so a finished run can be re-scored or probed from its folder alone
    folder.manifest.data["evaluation"] = {
        "cases": domain.records("test"),
        "config": config.to_dict(),
    }
    folder.save()
    result = domain.evaluate(ctx, seg_ckpt, write_predictions=write_predictions)
    result.update(
        config=config.to_dict(),
        train_time_s=train_time,
        run_id=folder.run_id,
        checkpoints={
            domain.stage1: None
            if coarse_dir is not None
            else str(folder.path / "checkpoints" / f"{domain.stage1}.pt"),
            "pretrain": None if pre_ckpt is None else str(pre_ckpt),
            "segment": str(seg_ckpt),
        },
    )
    result["probe"] = _probe(domain, seg_ckpt, config, device) if probe else None
    if config.domain == "ct":
        result["embeddings"] = None
        if pre_ckpt is not None and embed_patches_per_slice > 0:
            from agcl.pipeline.domains.embeddings import held_out_embeddings

            # patches of the held-out cases inside their ground-truth organs (the labels are known)
            result["embeddings"] = held_out_embeddings(
                pre_ckpt,
                domain.test_cases,
                config,
                domain.organ_ids,
                embed_patches_per_slice,
                device,
            )
    folder.save()
    return result


def _probe(
    domain: Any, seg_ckpt: Path, config: PipelineConfig, device: Any
) -> dict[str, Any] | None:
    from agcl.pipeline.domains.probe import probe_domain
    from agcl.pipeline.segment import load_segment_model

    model, _, _ = load_segment_model(seg_ckpt, device)
    return probe_domain(domain, model.encoder, config, device=device)


def _stages_2_and_3(ctx: RunContext, domain: Any) -> tuple[Path | None, Path]:
    from torch.utils.data import Subset

    from agcl.data import VolumeCache
    from agcl.pipeline.pretrain import pretrain_encoder
    from agcl.pipeline.segment import train_segmenter

    config, book = ctx.config, ctx.book
    inputs = {
        "cases": domain.records("train"),
        **(domain.attention_inputs() if dd.is_main() else {}),
    }
    cache = VolumeCache(config.data.cache_mb * 2**20)
    volumes = domain.training_volumes(cache)
    common: dict[str, Any] = {
        "resume": True,
        "device": ctx.device,
        "log": ctx.log,
        "callback": ctx.callback,
    }
    world = dd.world_size()
    pre_ckpt: Path | None = None
    parts = ctx.components.get("pretrain", {})
    if config.pretrain.method != "none":
        fp = stage_fingerprint(
            "pretrain",
            config,
            organ_ids=domain.organ_ids,
            num_modalities=domain.num_modalities,
            world_size=world,
            components=components_record(**parts),
        )
        book.begin("pretrain", fp, inputs)
        dd.barrier()
        pre_ckpt = pretrain_encoder(
            volumes,
            config,
            domain.organ_ids,
            ctx.out,
            num_modalities=domain.num_modalities,
            **parts,
            **common,
        )
        book.done("pretrain", [pre_ckpt])
    else:
        book.begin(
            "pretrain",
            stage_fingerprint(
                "pretrain",
                config,
                organ_ids=domain.organ_ids,
                num_modalities=domain.num_modalities,
                world_size=world,
            ),
            inputs,
        )
        book.done("pretrain", [])
    parts = ctx.components.get("segment", {})
    labelled = domain.labelled()
    fp = stage_fingerprint(
        "segment",
        config,
        organ_ids=domain.organ_ids,
        world_size=world,
        components=components_record(**parts),
    )
    cases = inputs["cases"]
    seg_inputs = {
        **inputs,
        "labelled": [f"{cases[i]['modality']}/{cases[i]['case_id']}" for i in labelled],
        "pretrain": None if pre_ckpt is None else book.digest("pretrain", pre_ckpt),
    }
    book.begin("segment", fp, seg_inputs)
    dd.barrier()
    seg_volumes = volumes if len(labelled) == len(volumes) else Subset(volumes, labelled)
    seg_ckpt = train_segmenter(
        seg_volumes,
        config,
        domain.organ_ids,
        ctx.out,
        pretrain_checkpoint=pre_ckpt,
        **parts,
        **common,
    )
    book.done("segment", [seg_ckpt])
    cache.clear()
    return pre_ckpt, seg_ckpt
