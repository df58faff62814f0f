"""Benchmark the data path: AttentionPatchSampler against MONAI, PairAug against a per-sample loop.

1. Patches per second on a 512 x 512 x 100 synthetic abdominal CT with all 13 BTCV organs
   (0.7 x 0.7 x 2.0 mm), 128 x 128 patches, ``patches_per_slice`` per organ per axial slice.
   Baseline: the same number of patches through MONAI's ``RandCropByLabelClassesd`` (image and
   label, equal ratios over the 13 organs; it samples per class but not per slice), if MONAI
   is installed. agcl is timed twice: attention = the ground truth (one mask gather serves
   attention and label) and attention != label (three gathers: image, attention, label).
2. PairAug: views per second for a batch of 256 two-channel 128 x 128 patches on the CPU.
   Baseline: the same affine warps done one sample at a time (a Python loop of
   ``affine_grid``/``grid_sample`` calls).

Prints a table of throughputs and ratios against the baselines measured in the same run and
writes JSON (machine, versions, numbers) to ``benchmarks/results/bench_data.json``.

Usage: ``python benchmarks/bench_data.py [--shape 512 512 100] [--patches-per-slice 2]
[--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from agcl import AttentionPatchSampler, PairAug
from agcl.data import preprocess_ct
from agcl.data.synthetic import make_phantom


def _time(fn: Callable[[], Any], repeats: int, warmup: bool = True) -> tuple[float, Any]:
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_sampler(shape: tuple[int, int, int], k: int, repeats: int) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    img_hu, lab = make_phantom(0, "contrast", shape=shape, spacing=(0.7, 0.7, 2.0))
    img = preprocess_ct(img_hu)
    print(
        f"phantom {shape} generated in {time.perf_counter() - t0:.1f} s; organs "
        f"{sorted(set(np.unique(lab).tolist()) - {0})}"
    )
    img_t, lab_t = torch.from_numpy(img), torch.from_numpy(lab)
    lab_copy = lab_t.clone()
    sampler = AttentionPatchSampler(patch_size=128, patches_per_slice=k, seed=0)
    rows = []
    t_shared, b = _time(lambda: sampler.sample(img_t, lab_t, label=lab_t), repeats)
    n = len(b)
    rows.append({"method": "agcl sampler (attention = label)", "patches": n, "seconds": t_shared})
    t_sep, _ = _time(lambda: sampler.sample(img_t, lab_t, label=lab_copy), repeats)
    rows.append({"method": "agcl sampler (attention != label)", "patches": n, "seconds": t_sep})
    try:
        from monai.transforms import RandCropByLabelClassesd
    except ImportError:
        print("MONAI not installed: no baseline for the sampler")
        return rows
    crop = RandCropByLabelClassesd(
        keys=["image", "label"],
        label_key="label",
        spatial_size=(128, 128, 1),
        num_classes=14,
        ratios=[0] + [1] * 13,
        num_samples=n,
    )
    crop.set_random_state(0)
    data = {"image": img[None], "label": lab[None]}

    def monai_run() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return crop(data)

    def monai_batched() -> (
        Any
    ):  # the crops stacked into (P, 1, 128, 128) batches, as a collate would
        crops = monai_run()
        image = torch.stack([torch.as_tensor(c["image"])[..., 0] for c in crops])
        label = torch.stack([torch.as_tensor(c["label"])[..., 0] for c in crops])
        return image, label

    t_monai, out = _time(monai_run, repeats)
    rows.append(
        {"method": "MONAI RandCropByLabelClassesd", "patches": len(out), "seconds": t_monai}
    )
    t_monai_b, out_b = _time(monai_batched, repeats)
    rows.append(
        {
            "method": "MONAI crops + stack (baseline)",
            "patches": int(out_b[0].shape[0]),
            "seconds": t_monai_b,
        }
    )
    for r in rows:
        r["ratio_vs_baseline"] = t_monai_b / r["seconds"]
        r["ratio_vs_monai_crops_only"] = t_monai / r["seconds"]
    return rows


def bench_pair_aug(repeats: int) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(256, 2, 128, 128, generator=g)
    x[:, 1] = (x[:, 1] > 0.5).float()
    aug = PairAug(generator=torch.Generator().manual_seed(0))
    t_ours, _ = _time(lambda: aug(x), repeats)

    def loop() -> Any:  # the same warps, one sample at a time
        views = []
        for _ in range(2):
            theta = aug.sample_theta(x.shape[0]).float()
            out = torch.empty_like(x)
            for i in range(x.shape[0]):
                grid = F.affine_grid(theta[i : i + 1], [1, 1, 128, 128], align_corners=False)
                out[i : i + 1, :1] = F.grid_sample(
                    x[i : i + 1, :1], grid, mode="bilinear", align_corners=False
                )
                out[i : i + 1, 1:] = F.grid_sample(
                    x[i : i + 1, 1:], grid, mode="nearest", align_corners=False
                )
            views.append(out)
        return views

    t_loop, _ = _time(loop, 1, warmup=False)  # ~15 s: one run is long enough to be stable
    rows = [
        {"method": "PairAug (batched)", "views": 2 * x.shape[0], "seconds": t_ours},
        {"method": "per-sample loop", "views": 2 * x.shape[0], "seconds": t_loop},
    ]
    for r in rows:
        r["ratio_vs_baseline"] = t_loop / r["seconds"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 100))
    ap.add_argument("--patches-per-slice", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sampler_rows = bench_sampler(tuple(args.shape), args.patches_per_slice, args.repeats)
    aug_rows = bench_pair_aug(args.repeats)
    print(
        f"\nSampler: {tuple(args.shape)} volume, 13 organs, 128 x 128 patches, "
        f"{args.patches_per_slice} per organ per slice, median of {args.repeats}, "
        f"{args.threads} threads"
    )
    print(
        f"{'method':36s} {'patches':>8s} {'seconds':>8s} {'patches/s':>10s} {'x base':>7s} "
        f"{'x crops':>8s}"
    )
    for r in sampler_rows:
        print(
            f"{r['method']:36s} {r['patches']:8d} {r['seconds']:8.3f} "
            f"{r['patches'] / r['seconds']:10.0f} "
            f"{r.get('ratio_vs_baseline', float('nan')):7.2f} "
            f"{r.get('ratio_vs_monai_crops_only', float('nan')):8.2f}"
        )
    print(
        "x base: speed-up over MONAI crops + stack; x crops: over MONAI's crops alone "
        "(views, no batch)"
    )
    print("\nPairAug: 256 x 2 x 128 x 128 batch, two views per call")
    print(f"{'method':36s} {'views':>8s} {'seconds':>8s} {'views/s':>10s} {'x loop':>8s}")
    for r in aug_rows:
        print(
            f"{r['method']:36s} {r['views']:8d} {r['seconds']:8.3f} "
            f"{r['views'] / r['seconds']:10.0f} {r['ratio_vs_baseline']:8.2f}"
        )
    try:
        import monai

        monai_version = monai.__version__
    except ImportError:
        monai_version = None
    result = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
        },
        "versions": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "monai": monai_version,
            "python": platform.python_version(),
        },
        "args": vars(args) | {"shape": list(args.shape)},
        "sampler": sampler_rows,
        "pair_aug": aug_rows,
    }
    out = Path(__file__).resolve().parent / "results" / "bench_data.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
