"""Training-step time of the reference networks, as ratios to a baseline from the same run.

One step = forward, backward and an SGD update, median over ``--reps`` after one warm-up.
Three groups, each with its own baseline (the first row, ratio 1.00):

* stage 2: ResNet-50 (paper width) + projection head on 2 x batch two-channel patches, against
  slimmer ``base_width`` and ResNet-18 encoders (what a CPU demo can afford);
* stage 3: trainable vs frozen encoder (``SegmentationModel.freeze_encoder``) with the ASPP
  decoder at output stride 16, and the frozen encoder at output stride 8;
* stage 1: the coarse 3D U-Net on downsampled volumes, ``base_channels`` 8 vs 16;
* mixed precision (the stages' ``amp`` field): the quick preset's stage-1 U-Net (base 8, depth
  2, 2 x 48 x 48 x 24 crops, 14 classes, Dice + CE) and stage-3 model (ResNet-18 width 16,
  frozen, DeepLabV3+ 64) in float32 against bf16 autocast on the CPU (fp16 on CUDA is not
  measured here). Whether the CPU has native bf16 kernels is printed: without them bf16 is
  emulated and slower, which is why ``amp="auto"`` uses it only where they exist.

    python benchmarks/bench_models.py           # 128 x 128 patches, batch 4, 64 x 64 x 32 volumes
    python benchmarks/bench_models.py --quick   # tiny sizes, seconds
    python benchmarks/bench_models.py --groups mixed   # only float32 vs bf16

Prints a table and writes JSON (machine, versions, results) under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from agcl.models import (
    AGCLPretrainModel,
    ASPPDecoder,
    ProjectionHead,
    SegmentationModel,
    create_model,
)

ROOT = Path(__file__).resolve().parents[1]


def time_step(
    model: torch.nn.Module,
    make_loss: Callable[[torch.nn.Module], torch.Tensor],
    reps: int,
    warmup: int = 1,
) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4)
    times = []
    for i in range(reps + warmup):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        make_loss(model).backward()
        opt.step()
        if (
            i >= warmup
        ):  # oneDNN builds its kernels (bf16 ones for several steps) in the first steps
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def stage2(name: str, base_width: int, x: torch.Tensor):
    enc = create_model(name, in_chans=2, base_width=base_width)
    model = AGCLPretrainModel(enc, ProjectionHead(enc.num_features, enc.num_features, 256))
    return model, lambda m: m(x).square().mean()


def stage3(base_width: int, output_stride: int, frozen: bool, x: torch.Tensor, y: torch.Tensor):
    enc = create_model("resnet50", in_chans=2, output_stride=output_stride, base_width=base_width)
    model = SegmentationModel(enc, ASPPDecoder(enc.out_channels, 2, output_stride=output_stride))
    if frozen:
        model.freeze_encoder()
    return model.train(), lambda m: F.cross_entropy(m(x), y)


def unet(base: int, x: torch.Tensor, y: torch.Tensor):
    model = create_model("unet3d", num_classes=5, base_channels=base, depth=3)
    return model, lambda m: F.cross_entropy(m(x), y)


def amp_unet(amp: str, x: torch.Tensor, y: torch.Tensor):
    from agcl.losses import DiceCELoss
    from agcl.pipeline.toolkit import MixedPrecision

    model = create_model("unet3d", num_classes=14, base_channels=8, depth=2)
    forward, loss = MixedPrecision(amp, "cpu").forward(model), DiceCELoss(include_background=False)
    return model, lambda m: loss(forward(x), y)


def amp_stage3(amp: str, x: torch.Tensor, y: torch.Tensor):
    from agcl.pipeline import PipelineConfig, build_segment_model
    from agcl.pipeline.toolkit import MixedPrecision

    model = build_segment_model(PipelineConfig.quick(), None)  # frozen encoder, DeepLabV3+ decoder
    forward = MixedPrecision(amp, "cpu").forward(model.train())
    return model, lambda m: F.cross_entropy(forward(x), y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed steps first (the mixed-precision group: at least 6)",
    )
    ap.add_argument(
        "--groups", default="", help="only the groups whose title holds this text, e.g. 'mixed'"
    )
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    p, b, vol = (32, 2, (1, 1, 16, 32, 32)) if args.quick else (128, 4, (2, 1, 32, 64, 64))
    x2 = torch.randn(2 * b, 2, p, p)
    x3, y3 = torch.randn(b, 2, p, p), torch.randint(0, 2, (b, p, p))
    xv, yv = torch.randn(*vol), torch.randint(0, 5, (vol[0], *vol[2:]))
    xa, ya = (
        (torch.rand(2, 1, 24, 24, 12), torch.randint(0, 14, (2, 24, 24, 12)))
        if args.quick
        else (torch.rand(2, 1, 48, 48, 24), torch.randint(0, 14, (2, 48, 48, 24)))
    )
    xs, ys = (
        torch.randn(32 if not args.quick else 4, 2, 64, 64),
        torch.randint(0, 2, (32 if not args.quick else 4, 64, 64)),
    )
    from agcl.pipeline.toolkit import amp_dtype

    native = amp_dtype("auto", "cpu") is torch.bfloat16  # what amp="auto" decides on this CPU
    groups = {
        f"stage 2: encoder + projection, {2 * b} x 2 x {p} x {p}": [
            ("resnet50 base_width=64 (paper)", lambda: stage2("resnet50", 64, x2)),
            ("resnet50 base_width=32", lambda: stage2("resnet50", 32, x2)),
            ("resnet50 base_width=16", lambda: stage2("resnet50", 16, x2)),
            ("resnet18 base_width=64", lambda: stage2("resnet18", 64, x2)),
            ("resnet18 base_width=16", lambda: stage2("resnet18", 16, x2)),
        ],
        f"stage 3: resnet50 + ASPP, {b} x 2 x {p} x {p}": [
            ("OS 16, encoder trainable", lambda: stage3(64, 16, False, x3, y3)),
            ("OS 16, encoder frozen", lambda: stage3(64, 16, True, x3, y3)),
            ("OS 8, encoder frozen", lambda: stage3(64, 8, True, x3, y3)),
        ],
        f"stage 1: unet3d depth 3, {' x '.join(map(str, vol))}": [
            ("base_channels=8", lambda: unet(8, xv, yv)),
            ("base_channels=16", lambda: unet(16, xv, yv)),
        ],
        f"mixed precision, stage-1 U-Net (quick preset), {' x '.join(map(str, xa.shape))}; "
        f"native bf16: {native}": [
            ("float32", lambda: amp_unet("off", xa, ya)),
            ("bf16 autocast", lambda: amp_unet("bf16", xa, ya)),
        ],
        "mixed precision, stage-3 ResNet-18/16 + DeepLabV3+ 64 (quick preset), "
        f"{' x '.join(map(str, xs.shape))}": [
            ("float32", lambda: amp_stage3("off", xs, ys)),
            ("bf16 autocast", lambda: amp_stage3("bf16", xs, ys)),
        ],
    }
    results = []
    for group, cases in groups.items():
        if args.groups not in group:
            continue
        mixed = group.startswith("mixed")
        print(f"\n{group}\n{'case':<34}{'params':>12}{'s/step':>10}{'ratio':>8}")
        base = None
        for label, build in cases:
            model, loss = build()
            n = sum(q.numel() for q in model.parameters())
            t = time_step(
                model,
                loss,
                max(args.reps, 9) if mixed else args.reps,
                max(args.warmup, 6) if mixed else args.warmup,
            )
            base = base or t
            print(f"{label:<34}{n:>12,}{t:>10.3f}{t / base:>8.2f}")
            results.append(
                {
                    "group": group,
                    "case": label,
                    "params": n,
                    "seconds_per_step": t,
                    "ratio_to_group_baseline": t / base,
                }
            )
    info = {
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "quick": args.quick,
        "reps": args.reps,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(info, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
