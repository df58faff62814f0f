"""Training throughput of the paper preset's stages 2-3 on CUDA, and whether the GPU waits for data.

    python benchmarks/gpu_pipeline.py --json gpu_pipeline.json         # on a CUDA machine
    python benchmarks/gpu_pipeline.py --dry-run --json dry.json        # toy sizes on the CPU

Two BTCV-size phantoms (``agcl.data.synthetic.make_phantom``, one per modality; default
512 x 512 x 96 voxels of 0.8 x 0.8 x 3 mm) are preprocessed as the pipeline does, and their
ground-truth organs, dilated by ``coarse.margin_mm``, are the attention. Then a fixed number of
optimisation steps of ``PipelineConfig.paper()`` (ResNet-50, 128 x 128 patches, 30 patches per
organ per slice, its batch sizes and mixed precision) run through the library's public parts:
``agcl.sampling.PatchStream`` (its ``DataLoader``), ``AttentionPatchSampler``,
``build_pair_aug``, ``build_pretrain_model``, ``build_pretrain_loss`` (``ModalTargetSupConLoss``)
for stage 2, and ``build_segment_model`` / ``build_segment_loss`` on the stage-2 encoder for
stage 3; the loop is written here, not taken from the pipeline's private modules.

Per stage and ``DataLoader`` worker count, after ``--warmup`` steps (the shuffle buffer's first
fill, cuDNN's first calls): training patches/s, peak GPU memory (``max_memory_allocated``) and
the DataLoader's share of the step time: seconds spent waiting for the next batch over the whole
step (wait + transfer + augmentation + forward + backward + optimiser; each step ends when the
GPU is done, as the pipeline's ``float(loss)`` makes it). A share near 0 means the GPU never
waits for data.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from _gpu_common import Deadline, cuda_peak_mb, cuda_peak_start, machine, write_json

# "workers": the DataLoader worker counts measured after the preset's own (data.num_workers)
GPU = {
    "shape": (512, 512, 96),
    "spacing": (0.8, 0.8, 3.0),
    "steps": 100,
    "warmup": 10,
    "workers": (2,),
}
DRY = {"shape": (64, 64, 8), "spacing": (5.5, 5.5, 25.0), "steps": 3, "warmup": 1, "workers": (1,)}
# The dry run's toy network and patches (the paper preset's structure, tiny widths).
DRY_OVERRIDES = {
    "pretrain.encoder": "resnet18",
    "pretrain.base_width": 4,
    "pretrain.patch_size": 16,
    "pretrain.patches_per_slice": 2,
    "pretrain.projection_dim": 16,
    "pretrain.batch_size": 8,
    "segment.aspp_channels": 8,
    "segment.batch_size": 8,
    "segment.patches_per_slice": 2,
    "segment.stride": 16,
    "data.shuffle_buffer": 32,
    "data.chunk_size": 16,
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", metavar="PATH", help="write the JSON report here (after every run)")
    p.add_argument("--dry-run", action="store_true", help="toy sizes and network on the CPU")
    p.add_argument("--steps", type=int, help="measured steps per run (default 100; dry 3)")
    p.add_argument("--warmup", type=int, help="steps before measuring (default 10; dry 1)")
    p.add_argument(
        "--workers",
        type=int,
        nargs="+",
        help="DataLoader worker counts to measure (default: the preset's, 0, then 2)",
    )
    p.add_argument(
        "--shape",
        type=int,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="phantom grid (default 512 512 96)",
    )
    p.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("SX", "SY", "SZ"),
        help="phantom voxel size in mm (default 0.8 0.8 3.0)",
    )
    p.add_argument(
        "--stages", nargs="+", choices=("pretrain", "segment"), default=["pretrain", "segment"]
    )
    p.add_argument(
        "--deadline-s",
        type=float,
        default=None,
        help="stop measuring at this many seconds (the runs left out are listed)",
    )
    return p.parse_args(argv)


def _amp(torch: Any, setting: str, device: Any) -> Any:
    """The autocast dtype of a config ``amp`` value here: "auto" is fp16 on CUDA, float32
    (None) on the CPU; "bf16"/"fp16" as named; "off" None."""
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting in ("fp16", "auto"):
        return torch.float16
    return torch.bfloat16


def phantoms(cfg: Any, shape: tuple[int, ...], spacing: tuple[float, ...]) -> tuple[list, list]:
    """Two preprocessed phantoms (contrast, non-contrast) with their ground-truth attention."""
    from agcl.data.preprocessing import preprocess_ct
    from agcl.data.synthetic import make_phantom
    from agcl.sampling import attention_from_labels

    organ_ids = list(cfg.organs or range(1, 14))
    volumes = []
    for index, modality in enumerate(("contrast", "non-contrast")):
        hu, labels = make_phantom(index, modality, shape=shape, spacing=spacing)
        image = preprocess_ct(hu, window=cfg.clip_hu, percentiles=cfg.percentiles)
        attention = attention_from_labels(
            labels,
            organ_ids,
            margin_mm=cfg.coarse.margin_mm,
            spacing=spacing,
            channel=cfg.coarse.attention_channel,
        )
        volumes.append({"image": image, "attention": attention, "label": labels, "modality": index})
    present = sorted({code for v in volumes for code in v["attention"]})
    return volumes, present


def stream(cfg: Any, volumes: list, organs: list[int], stage: str) -> Any:
    from agcl import AttentionPatchSampler, PatchStream

    s = cfg.pretrain if stage == "pretrain" else cfg.segment
    sampler = AttentionPatchSampler(
        patch_size=cfg.pretrain.patch_size,
        patches_per_slice=s.patches_per_slice,
        max_patches=s.max_patches_per_volume,
        seed=0,
    )
    d = cfg.data
    return PatchStream(
        volumes,
        sampler,
        batch_size=s.batch_size,
        with_label=stage == "segment",
        targets=organs,
        shards=d.shards,
        streams=d.streams,
        buffer_size=max(d.shuffle_buffer, s.batch_size),
        chunk_size=d.chunk_size,
        seed=cfg.seed,
    )


def pretrain_step_fn(torch: Any, cfg: Any, model: Any, device: Any, amp: Any) -> Any:
    """One stage-2 optimisation step on a PatchBatch; returns the loss as a float."""
    from agcl.pipeline import build_optimizer, build_pair_aug, build_pretrain_loss

    loss_fn = build_pretrain_loss(cfg).to(device)
    aug = build_pair_aug(cfg, generator=torch.Generator().manual_seed(cfg.seed))
    opt = build_optimizer(cfg, model.parameters(), stage="pretrain")
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    def step(batch: Any) -> float:
        x = batch.inputs().to(device, non_blocking=True)
        v1, v2 = aug(x)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(torch.cat([v1, v2]))
        feats = torch.stack(out.float().chunk(2), dim=1)  # (B, 2, D): two views per patch
        loss = loss_fn(feats, modality=batch.modality.to(device), target=batch.target.to(device))
        return _update(loss, opt, scaler)

    return step


def segment_step_fn(torch: Any, cfg: Any, model: Any, device: Any, amp: Any) -> Any:
    """One stage-3 optimisation step (frozen encoder, decoder trained with the soft Dice loss)."""
    from agcl.pipeline import build_optimizer, build_segment_loss

    loss_fn = build_segment_loss(cfg).to(device)
    opt = build_optimizer(cfg, model.parameters(), stage="segment")
    scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None

    def step(batch: Any) -> float:
        x = batch.inputs().to(device, non_blocking=True)
        y = (batch.label[:, 0] > 0.5).long().to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            logits = model(x)
        return _update(loss_fn(logits.float(), y), opt, scaler)

    return step


def _update(loss: Any, opt: Any, scaler: Any) -> float:
    opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        opt.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return float(loss.detach())  # waits for the GPU, as the pipeline's step does


def measure(
    torch: Any,
    data: Any,
    step: Any,
    *,
    workers: int,
    warmup: int,
    steps: int,
    device: Any,
    deadline: Deadline,
) -> dict:
    """Run ``warmup + steps`` steps from ``data``'s loader; time each wait and each step."""
    epoch = 0
    data.set_epoch(epoch)
    loader = data.loader(workers, pin_memory=device.type == "cuda")
    waits, totals, sizes, losses = [], [], [], []
    base = cuda_peak_start(torch, device)
    stopped = None
    try:
        for k in range(warmup + steps):
            if deadline.left() < 1.0:
                stopped = f"--deadline-s reached after {k} steps"
                break
            t0 = time.perf_counter()
            batch = next(loader, None)
            if batch is None:  # the epoch's patches are spent: the next epoch, as training does
                loader.close()
                epoch += 1
                data.set_epoch(epoch)
                loader = data.loader(workers, pin_memory=device.type == "cuda")
                batch = next(loader)
            t1 = time.perf_counter()
            losses.append(step(batch))
            if device.type == "cuda":
                torch.cuda.synchronize()
            t2 = time.perf_counter()
            waits.append(t1 - t0)
            totals.append(t2 - t0)
            sizes.append(len(batch))
    finally:
        loader.close()  # shuts the DataLoader's workers down
    out: dict[str, Any] = {
        "workers": workers,
        "warmup": min(warmup, len(totals)),
        "steps": max(0, len(totals) - warmup),
        "peak_gpu_mb": cuda_peak_mb(torch, device, base),
        "first_wait_s": waits[0] if waits else None,
        "last_loss": losses[-1] if losses else None,
    }
    if stopped:
        out["stopped"] = stopped
    w, t, n = waits[warmup:], totals[warmup:], sizes[warmup:]
    if t:
        out.update(
            patches_per_s=sum(n) / sum(t),
            wait_share=sum(w) / sum(t),
            step_ms_median=1e3 * statistics.median(t),
            wait_ms_median=1e3 * statistics.median(w),
            batch_size=max(n),
        )
    out["finite"] = all(map(_isfinite, losses))
    return out


def _isfinite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def main(argv: list[str] | None = None) -> dict:
    args = _parse(argv)
    import torch

    import agcl.kernels as kernels
    from agcl.pipeline import PipelineConfig, build_pretrain_model, build_segment_model

    deadline = Deadline(args.deadline_s)
    sizes = DRY if args.dry_run else GPU
    device = torch.device("cpu" if args.dry_run else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run to check the script on the CPU")
    shape = tuple(args.shape or sizes["shape"])
    spacing = tuple(args.spacing or sizes["spacing"])
    steps, warmup = args.steps or sizes["steps"], args.warmup or sizes["warmup"]
    cfg = PipelineConfig.paper()
    workers = (
        args.workers
        if args.workers is not None
        else [cfg.data.num_workers, *(w for w in sizes["workers"] if w != cfg.data.num_workers)]
    )
    if args.dry_run:
        cfg = cfg.override(**DRY_OVERRIDES)
    cfg = cfg.override(
        **{"pretrain.steps_per_epoch": warmup + steps, "segment.steps_per_epoch": warmup + steps}
    )
    report: dict[str, Any] = {
        "machine": machine(torch),
        "dry_run": args.dry_run,
        "device": str(device),
        "phantoms": {
            "count": 2,
            "shape": list(shape),
            "spacing_mm": list(spacing),
            "attention": "ground truth dilated by coarse.margin_mm",
        },
        "config": {k: cfg.to_dict()[k] for k in ("pretrain", "segment", "data")},
        "loss_backend": kernels.resolve_backend("auto", device),
        "runs": [],
        "skipped": [],
    }

    def save() -> None:
        report["seconds"] = deadline.elapsed()
        write_json(args.json, report)

    t0 = time.perf_counter()
    volumes, organs = phantoms(cfg, shape, spacing)
    report["data_prep_s"] = time.perf_counter() - t0
    report["organs"] = organs
    save()
    torch.manual_seed(cfg.seed)
    amp_p, amp_s = _amp(torch, cfg.pretrain.amp, device), _amp(torch, cfg.segment.amp, device)
    report["amp"] = {"pretrain": str(amp_p), "segment": str(amp_s)}
    model = build_pretrain_model(cfg, num_modalities=2, num_organs=len(organs)).to(device)
    # both stages with the preset's workers first, then the other worker counts
    plans = [
        (stage, w) for w in workers for stage in ("pretrain", "segment") if stage in args.stages
    ]
    steppers: dict[str, Any] = {}
    for stage, w in plans:
        if deadline.left() < 5.0:
            report["skipped"].append(
                {"stage": stage, "workers": w, "reason": f"--deadline-s {args.deadline_s} reached"}
            )
            continue
        if stage not in steppers:
            if stage == "pretrain":
                model.train()
                steppers[stage] = pretrain_step_fn(torch, cfg, model, device, amp_p)
            else:  # the stage-2 encoder, frozen, under a fresh decoder
                seg = build_segment_model(cfg, encoder_state=model.encoder.state_dict())
                seg = seg.to(device)
                steppers[stage] = segment_step_fn(torch, cfg, seg, device, amp_s)
        run = measure(
            torch,
            stream(cfg, volumes, organs, stage),
            steppers[stage],
            workers=w,
            warmup=warmup,
            steps=steps,
            device=device,
            deadline=deadline,
        )
        report["runs"].append({"stage": stage, **run})
        print(_line(report["runs"][-1]), flush=True)
        save()
    save()
    return report


def _line(r: dict) -> str:
    head = f"{r['stage']:>8} workers={r['workers']}"
    if "patches_per_s" not in r:
        return f"{head}  no measured step ({r.get('stopped', '')})"
    peak = "-" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f} MiB"
    return (
        f"{head}  {r['patches_per_s']:8.1f} patches/s  step {r['step_ms_median']:.1f} ms  "
        f"wait {100 * r['wait_share']:.1f}%  peak {peak}  loss {r['last_loss']:.4f}"
    )


if __name__ == "__main__":
    main()
