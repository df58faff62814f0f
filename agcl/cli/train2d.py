"""``agcl train --domain image2d`` (or ``agcl train-2d``): the pipeline on natural images (PASCAL
VOC layout), evaluated in IoU.

With no arguments it writes built-in synthetic 2-D scenes (four object classes with their own
colours, textures and shapes on cluttered backgrounds, void bands along the outlines) in the VOC
layout into a cache folder, reads them back through the VOC reader and runs the ``quick``
preset (minutes on a 2-core CPU), printing IoU per class on the held-out (val) images.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from agcl.cli._common import (
    FLAG_FIELDS,
    METHOD_ORDER,
    add_run_arguments,
    check_device,
    make_config,
    positive_int,
    seed,
    share_stage1,
    user_errors,
)
from agcl.cli._train2d_report import fmt, overlay_figure, write_figures, write_report

__all__ = [
    "build_parser",
    "config_for",
    "main",
    "overlay_figure",
    "parse_args",
    "write_report",
]

EPILOG = """\
examples:
  agcl train-2d                                      synthetic scenes, quick preset
  agcl train-2d --data-dir /data/VOCdevkit --preset paper --device cuda
  agcl train-2d --ablation                           all five pre-trainings
  agcl train-2d --resume                             continue an interrupted run

Stage 1: a DeepLabV3+ segmenter on whole images; class k's attention is where its probability
reaches the threshold, else its most probable region, dilated. Stage 2: patches per class inside
the attention (images as single-slice volumes), two views with colour distortion, the modal-target
loss (T = 0.07; one modality). Stage 3: the frozen encoder + ASPP decoder, run on the whole image
once per class with that class's attention channel; per-class probabilities fused into one label
map. Void (255) is ignored throughout.

files written in --out: run.json, results.json ({"mean": {"miou", "coarse_miou"}, "per_class":
{name: {"iou", "coarse_iou", "attention_recall"}}, ...}), results.md, predictions/<id>.png (VOC
palette), coarse/<id>.png (stage-1 arg-max), checkpoints/, epochs.jsonl and, with matplotlib,
fig_overlays.png and fig_embeddings_pca.png.

exit status: 0 done; 2 a usage or input error (the message says what).
"""


def build_parser(prog: str = "agcl train-2d") -> argparse.ArgumentParser:
    """The parser of the 2-D pipeline (also used by ``examples/voc_full.py``)."""
    doc = __doc__.split("\n\n")
    ap = argparse.ArgumentParser(
        prog=prog,
        description=doc[0].split(": ", 1)[1] + "\n\n" + doc[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--domain", choices=("image2d",), default="image2d", help=argparse.SUPPRESS)
    ap.add_argument(
        "--data-dir",
        default=None,
        metavar="PATH",
        help="an extracted VOCdevkit (VOC2012/JPEGImages, SegmentationClass, "
        "ImageSets/Segmentation); default: the built-in synthetic scenes",
    )
    ap.add_argument("--train-split", default="train", help="default: %(default)s")
    ap.add_argument("--val-split", default="val", help="held-out split (default: %(default)s)")
    ap.add_argument(
        "--max-train", type=positive_int, default=None, help="use only the first N training images"
    )
    ap.add_argument(
        "--max-val",
        type=positive_int,
        default=None,
        help="evaluate only the first N held-out images",
    )
    add_run_arguments(ap, out="runs/voc_full")
    ap.add_argument(
        "--pretrain",
        choices=METHOD_ORDER,
        default="agcl",
        help="pre-training (default: %(default)s)",
    )
    ap.add_argument(
        "--ablation", action="store_true", help="run all five pre-trainings and print a table"
    )
    ap.add_argument("--seed", type=seed, default=0, help="default: %(default)s")
    ap.add_argument(
        "--attention",
        choices=("coarse", "gt"),
        default="coarse",
        help="training attention: stage-1 predictions or the ground truth (default: %(default)s)",
    )
    ap.add_argument(
        "--color-distortion",
        type=float,
        default=None,
        help="PairAug colour-distortion strength in stage 2 (default: the preset's)",
    )
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="where the synthetic devkit is written/reused; a VOCdevkit agcl did not write is "
        "refused",
    )
    ap.add_argument(
        "--n-train", type=int, default=48, help="synthetic training scenes (default: %(default)s)"
    )
    ap.add_argument(
        "--n-val", type=int, default=16, help="synthetic held-out scenes (default: %(default)s)"
    )
    ap.add_argument(
        "--image-size",
        type=positive_int,
        default=96,
        help="synthetic scene size (default: %(default)s)",
    )
    ap.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field: coarse2d.*, pretrain.*, segment.* (values are JSON; repeatable), "
        "e.g. --set coarse2d.epochs=5 --set segment.lr=3e-4",
    )
    return ap


def parse_args(argv: list[str] | None = None, *, prog: str | None = None) -> argparse.Namespace:
    ap = build_parser(prog) if prog else build_parser()
    args = ap.parse_args(argv)
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set must be KEY=VALUE; got {item!r}")
    if args.n_train < 2 or args.n_val < 1:
        ap.error(f"--n-train must be >= 2 and --n-val >= 1; got {args.n_train} and {args.n_val}")
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in --out and --overwrite replaces it; pass one")
    return args


def config_for(args: argparse.Namespace, method: str) -> Any:
    """The run's :class:`agcl.pipeline.PipelineConfig` (``domain="image2d"``) for ``method``."""
    changes: dict[str, Any] = {
        "seed": args.seed,
        "pretrain.method": method,
        "coarse.source": args.attention,
    }
    if args.color_distortion is not None:
        changes["pretrain.aug_color_distortion"] = args.color_distortion
    if args.epochs is not None:
        changes.update({"pretrain.epochs": args.epochs, "segment.epochs": args.epochs})
    if args.coarse_epochs is not None:
        changes["coarse2d.epochs"] = args.coarse_epochs
    return make_config(args.preset, "image2d", changes, args.set, flags=FLAG_FIELDS)


class _Split:
    """The first ``limit`` images of a VOC split (lazy; ids and file paths kept)."""

    def __init__(self, ds: Any, limit: int | None) -> None:
        n = len(ds) if limit is None else min(limit, len(ds))
        self.ds, self.n = ds, n
        self.ids, self.image_paths, self.mask_paths = (
            ds.ids[:n],
            ds.image_paths[:n],
            ds.mask_paths[:n],
        )

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Any:
        if not -self.n <= i < self.n:
            raise IndexError(f"index must lie in [0, {self.n}); got {i}")
        return self.ds[i % self.n]


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """``agcl train-2d``; returns the exit status."""
    return user_errors("train-2d", lambda: _main(parse_args(argv, prog=prog)))


def _main(args: argparse.Namespace) -> int:
    import agcl.pipeline as pl
    from agcl.data import VOC_CLASSES, VOCSegmentation
    from agcl.data.synthetic2d import SYNTHETIC2D_CLASSES, ensure_voc_like
    from agcl.pipeline.run import RunFolder

    start = time.perf_counter()
    device = check_device(args.device)
    config_for(args, args.pretrain)  # a bad --set is refused before any data is read
    rank, _ = pl.init_distributed(device)
    out = Path(args.out)
    cache = Path(
        args.cache_dir
        or Path.home()
        / ".cache"
        / "agcl"
        / f"scenes-n{args.n_train}-{args.n_val}-s{args.image_size}-seed{args.seed}"
    )
    if rank == 0 and args.data_dir is None:
        ensure_voc_like(cache, args.n_train, args.n_val, seed=args.seed, size=args.image_size)
    pl.barrier()
    devkit = Path(args.data_dir) if args.data_dir else cache / "VOCdevkit"
    names = list(VOC_CLASSES if args.data_dir else SYNTHETIC2D_CLASSES)
    train = _Split(VOCSegmentation(devkit, args.train_split), args.max_train)
    val = _Split(VOCSegmentation(devkit, args.val_split), args.max_val)
    if rank == 0:
        print(
            f"{len(train)} training and {len(val)} held-out images from {devkit}; "
            f"{len(names) - 1} classes; preset {args.preset}; out {out}",
            flush=True,
        )
    methods = [args.pretrain] + (
        [m for m in METHOD_ORDER if m != args.pretrain] if args.ablation else []
    )
    runs: dict[str, dict[str, Any]] = {}
    for method in methods:
        t0 = time.perf_counter()
        run_dir = out if method == args.pretrain else out / "ablation" / method
        shared = method != args.pretrain
        if shared:
            share_stage1(
                out,
                run_dir,
                stage1="coarse2d",
                resume=args.resume,
                overwrite=args.overwrite,
                main=rank == 0,
            )
        result = pl.run_pipeline(
            train,
            val,
            config_for(args, method),
            run_dir,
            class_names=names,
            resume=args.resume or shared,
            overwrite=args.overwrite and not shared,
            device=device,
        )
        if shared and rank == 0:
            RunFolder.open(out, resume=True).own_run(run_dir)
        if not result:
            continue
        result.update(method=method, runtime_s=round(time.perf_counter() - t0, 1))
        runs[method] = result
        if rank == 0 and method == args.pretrain:
            coarse = result["coarse"]
            print(
                f"stage 1: held-out mIoU {fmt(coarse['miou'])} ("
                + ", ".join(f"{n} {fmt(v)}" for n, v in coarse["per_class"].items())
                + ")"
            )
        print(f"\n== pre-training {method!r}: held-out IoU per class ==")
        for n, v in result["per_class"].items():
            print(f"  {n:14s} {fmt(v['iou'])}")
        print(
            f"  {'mean':14s} {fmt(result['mean']['miou'])}   (stage-1 coarse mIoU "
            f"{fmt(result['coarse']['miou'])}; {result['runtime_s']} s)"
        )
        if method == args.pretrain and not args.no_figures:
            write_figures(result, val, names, run_dir, method, device)
    if not runs:
        return 0
    main_result = runs[args.pretrain]
    main_result["total_runtime_s"] = round(time.perf_counter() - start, 1)
    data = args.data_dir or (
        f"synthetic scenes ({args.n_train} train / {args.n_val} val, {args.image_size} px, "
        f"seed {args.seed})"
    )
    notes = [
        f"Preset `{args.preset}`, pre-training `{args.pretrain}`, {len(train)} training / "
        f"{len(val)} held-out images, device `{args.device}`, seed {args.seed}; data: {data}.",
        "IoU accumulated over all held-out images (one confusion matrix), void (255) ignored; "
        "the mean is over classes with a non-empty union (background included, as in VOC).",
        f"Total runtime {main_result['total_runtime_s']} s.",
    ]
    ablation = {m: runs[m] for m in METHOD_ORDER if m in runs} if args.ablation else None
    json_path, md_path = write_report(out, main_result, ablation, notes)
    RunFolder.open(out, resume=True).own(json_path, md_path, save=True)
    print(f"\nwrote {json_path}, {md_path} and {len(val)} predictions under {out / 'predictions'}")
    print(f"total runtime {time.perf_counter() - start:.1f} s")
    return 0
