"""Stage-2 data path at its users' scale: peak memory and patches/s, each measurement in a fresh
process.

Part 1 (scale): the paper preset's sampling (128 x 128 patches, 30 per organ per slice, 13
organs) on N synthetic BTCV-size training cases (512 x 512 x 100 at 0.78 x 0.78 x 3 mm, written
once by ``agcl.data.synthetic.write_btcv_like``), ground-truth attention (``coarse.margin_mm``), a
slim ResNet-18 (width 8) and a fixed ``steps_per_epoch``: peak RSS of the process and training
patches/s, for each N (default 2 and 6). Each N runs in its own process, so one's memory does
not count in another's peak.

Part 2 (throughput): the quick preset's stage 2 on the demo's default phantoms, the patches
produced per second by (a) the old data path, rebuilt here from the public sampler as it was
(every patch of the epoch materialised per volume with ``AttentionPatchSampler.sample`` on a
dense attention stack, concatenated, shuffled and sliced into batches), and (b)
:class:`agcl.sampling.PatchStream` (what stages 2-3 use now), both in the same run; plus the
training patches/s of one quick-preset stage-2 epoch through the pipeline.

    python benchmarks/bench_pipeline.py                 # both parts, the ratios at the end
    python benchmarks/bench_pipeline.py --cases 2 6 --steps 20 --json out.json

Timings on a shared machine vary 2-3x between runs: read the ratios, measured in one run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BTCV_SHAPE = (512, 512, 100)
BTCV_SPACING = (0.78, 0.78, 3.0)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _cases(root: Path, per_modality: int, shape, spacing):
    import agcl.data as adata
    from agcl.data.synthetic import write_btcv_like

    marker = root / f"done-{per_modality}"
    if not marker.is_file():
        write_btcv_like(root, per_modality, shape=shape, spacing=spacing, seed=11)
        marker.write_text("ok")
    return list(
        adata.build_cohort({m: adata.discover_btcv(root / m) for m in ("contrast", "non-contrast")})
    )


def child_scale(n: int, steps: int, root: Path, per_modality: int, channel: str = "mask") -> dict:
    import torch

    from agcl.data import BTCV_ORGANS, PreparedCases, TrainingVolumes, VolumeCache
    from agcl.pipeline import PipelineConfig, pretrain_encoder
    from agcl.sampling import CaseAttention

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    pairs = _cases(root, per_modality, BTCV_SHAPE, BTCV_SPACING)
    by_mod: dict[int, list] = {}
    for case, m in pairs:
        by_mod.setdefault(m, []).append((case, m))
    train = [p for i in range(n // 2) for p in (by_mod[0][i], by_mod[1][i])][:n]
    cfg = PipelineConfig.paper().override(
        **{
            "pretrain.encoder": "resnet18",
            "pretrain.base_width": 8,
            "pretrain.epochs": 1,
            "pretrain.steps_per_epoch": steps,
            "pretrain.projection_dim": 32,
            "coarse.source": "gt",
            "coarse.attention_channel": channel,
        }
    )
    organs = sorted(BTCV_ORGANS)
    cases = PreparedCases(
        [c for c, _ in train],
        [m for _, m in train],
        clip_hu=cfg.clip_hu,
        percentiles=cfg.percentiles,
    )
    attention = CaseAttention(organs, cfg.coarse.margin_mm, channel=cfg.coarse.attention_channel)
    volumes = TrainingVolumes(cases, attention, cache=VolumeCache(cfg.data.cache_mb << 20))
    rss0 = _peak_rss_mb()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        pretrain_encoder(volumes, cfg, organs, out, num_modalities=2)
    dt = time.perf_counter() - t0
    return {
        "cases": n,
        "steps": steps,
        "attention_channel": channel,
        "batch_size": cfg.pretrain.batch_size,
        "seconds": round(dt, 2),
        "train_patches_per_s": round(steps * cfg.pretrain.batch_size / dt, 2),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "rss_before_stage2_mb": round(rss0, 1),
        "cache_mb": cfg.data.cache_mb,
        "shards": cfg.data.shards,
        "streams": cfg.data.streams,
    }


def _old_pool_batches(volumes, sampler, organ_ids, batch_size, seed):
    """Today's-pool baseline: every patch of the epoch in memory, then shuffled batches."""
    import torch

    from agcl import PatchBatch
    from agcl.sampling import densify

    parts = []
    for i, vol in enumerate(volumes):
        stack = densify(
            vol["attention"], organ_ids, vol["image"].shape
        )  # the old dense (K, X, Y, Z) stack
        gen = torch.Generator().manual_seed(seed * 1_000_003 + i)
        b = sampler.sample(
            vol["image"],
            stack,
            targets=organ_ids,
            modality=vol["modality"],
            volume_index=i,
            generator=gen,
        )
        parts.append(b)
    pool = PatchBatch.cat(parts)
    x = pool.inputs()  # the old pool's (P, 2, h, w) tensor
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        yield x[idx], pool.target[idx], pool.modality[idx]


def child_quick(root: Path, repeats: int) -> dict:
    import torch

    import agcl.data as adata
    from agcl import AttentionPatchSampler
    from agcl.data import BTCV_ORGANS, PreparedCases, TrainingVolumes, VolumeCache
    from agcl.data.synthetic import write_btcv_like
    from agcl.pipeline import PipelineConfig, pretrain_encoder
    from agcl.pipeline.toolkit import epoch_batches, patch_stream
    from agcl.sampling import CaseAttention

    cfg = PipelineConfig.quick().override(**{"coarse.source": "gt", "pretrain.epochs": 1})
    marker = root / "done"
    if not marker.is_file():
        write_btcv_like(
            root, 4, seed=0
        )  # the demo's default phantoms (4 training cases per modality)
        marker.write_text("ok")
    pairs = list(
        adata.build_cohort({m: adata.discover_btcv(root / m) for m in ("contrast", "non-contrast")})
    )
    organs = sorted(BTCV_ORGANS)
    cases = PreparedCases([c for c, _ in pairs], [m for _, m in pairs])
    volumes = TrainingVolumes(
        cases, CaseAttention(organs, cfg.coarse.margin_mm), cache=VolumeCache(1 << 30)
    )
    loaded = [volumes[i] for i in range(len(volumes))]  # both paths read the same cached volumes
    p = cfg.pretrain
    sampler = AttentionPatchSampler(
        patch_size=p.patch_size,
        patches_per_slice=p.patches_per_slice,
        max_patches=p.max_patches_per_volume,
    )
    stream = patch_stream(volumes, cfg, organs, stage="pretrain")
    old_t, new_t, old_n, new_n = [], [], 0, 0
    for r in range(repeats):  # interleaved, so both see the same machine load
        t0 = time.perf_counter()
        old_n = sum(
            len(b[0]) for b in _old_pool_batches(loaded, sampler, organs, p.batch_size, seed=r)
        )
        old_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        new_n = sum(len(b) for b in epoch_batches(stream, cfg, r + 1, "cpu"))
        new_t.append(time.perf_counter() - t0)
    old_best, new_best = min(old_t), min(new_t)
    # one full quick-preset stage-2 epoch through the pipeline (data + PairAug + model step)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        pretrain_encoder(volumes, cfg, organs, out, num_modalities=2)
    train_s = time.perf_counter() - t0
    return {
        "cases": len(pairs),
        "patches_old": old_n,
        "patches_stream": new_n,
        "old_pool_patches_per_s": round(old_n / old_best, 1),
        "stream_patches_per_s": round(new_n / new_best, 1),
        "stream_vs_old": round((new_n / new_best) / (old_n / old_best), 3),
        "train_epoch_s": round(train_s, 2),
        "train_patches_per_s": round(new_n / train_s, 1),
        "threads": torch.get_num_threads(),
    }


def _run_child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cases",
        type=int,
        nargs="+",
        default=[2, 6],
        help="training cases of each scale run (even)",
    )
    ap.add_argument("--steps", type=int, default=100, help="stage-2 steps of each scale run")
    ap.add_argument(
        "--repeats", type=int, default=3, help="repeats of the quick-preset data-path timing"
    )
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="where the synthetic cases are written (default: a temp dir)",
    )
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-quick", action="store_true")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument(
        "--attention-channel",
        choices=("mask", "probability"),
        default="mask",
        help="the scale runs' coarse.attention_channel (graded masks are float16, 2x bool's bytes)",
    )
    ap.add_argument("--child", choices=("write", "scale", "quick"), help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--per-modality", type=int, default=3, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    root = Path(args.cache_dir or tempfile.mkdtemp(prefix="agcl-bench-pipeline-"))
    if args.child == "write":  # in its own process, so generating the phantoms counts in no peak
        _cases(root / "btcv", args.per_modality, BTCV_SHAPE, BTCV_SPACING)
        print(json.dumps({"written": str(root / "btcv")}))
        return 0
    if args.child == "scale":
        print(
            json.dumps(
                child_scale(
                    args.n, args.steps, root / "btcv", args.per_modality, args.attention_channel
                )
            )
        )
        return 0
    if args.child == "quick":
        print(json.dumps(child_quick(root / "quick", args.repeats)))
        return 0
    results: dict = {"scale": [], "quick": None}
    if any(n < 2 or n % 2 for n in args.cases):
        ap.error(
            f"--cases must be even numbers >= 2 (one case per modality in turn); got {args.cases}"
        )
    common = [
        "--cache-dir",
        str(root),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
        "--per-modality",
        str(max(args.cases) // 2),
        "--attention-channel",
        args.attention_channel,
    ]
    if not args.skip_scale:
        _run_child(["--child", "write", *common])
        for n in args.cases:
            row = _run_child(["--child", "scale", "--n", str(n), *common])
            results["scale"].append(row)
            print(
                f"scale N={n} ({args.attention_channel}): peak RSS {row['peak_rss_mb']:.0f} MB, "
                f"{row['train_patches_per_s']:.1f} training patches/s ({row['steps']} steps, "
                f"{row['seconds']:.1f} s)",
                flush=True,
            )
        rows = results["scale"]
        if len(rows) >= 2:
            ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
            results["rss_ratio"] = round(ratio, 3)
            print(
                f"peak RSS N={rows[-1]['cases']} / N={rows[0]['cases']}: {ratio:.2f}x "
                f"(target <= 1.5x; N={rows[-1]['cases']} target <= 4096 MB)"
            )
    if not args.skip_quick:
        q = _run_child(["--child", "quick", *common])
        results["quick"] = q
        print(
            f"quick preset, data path only: old pool {q['old_pool_patches_per_s']:.0f} patches/s, "
            f"PatchStream {q['stream_patches_per_s']:.0f} patches/s = {q['stream_vs_old']:.2f}x "
            f"(target >= 1x); one stage-2 epoch {q['train_epoch_s']:.1f} s "
            f"({q['train_patches_per_s']:.0f} patches/s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
