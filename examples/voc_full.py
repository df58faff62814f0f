"""AGCL on natural images (PASCAL VOC 2012 layout): the three stages in 2-D, evaluated in IoU.

With no arguments it writes built-in synthetic 2-D scenes (four object classes with their own
colours, textures and shapes on cluttered backgrounds, void bands along the outlines) in the VOC
layout into a cache folder, reads them back through the VOC reader and runs the ``quick``
preset (minutes on a 2-core CPU), printing IoU per class on the held-out (val) images.

    python examples/voc_full.py                                     # synthetic scenes, quick
    python examples/voc_full.py --data-dir /data/VOCdevkit --preset paper --device cuda
    python examples/voc_full.py --ablation                          # all five pre-trainings
    python examples/voc_full.py --resume                            # continue an interrupted run
    torchrun --nproc_per_node=2 examples/voc_full.py                # stages 2-3 distributed

Stage 1: a DeepLabV3+ segmenter (library ResNet + DeepLabV3PlusDecoder) on whole images; class
k's attention is where its probability reaches the threshold, else its most probable region,
dilated. Stage 2: patches per class inside the attention (images as single-slice volumes), two
views with colour distortion, the modal-target loss (T = 0.07; one modality). Stage 3: the
frozen encoder + ASPP decoder, run on the whole image once per class with that class's attention
channel; per-class probabilities fused into one label map. Void (255) is ignored throughout.

Outputs in ``--out``: results.json (``{"mean": {"miou"}, "per_class": {name: {"iou"}}, ...}``),
results.md, predictions/<id>.png (VOC palette), coarse/<id>.png (stage-1 arg-max),
checkpoints/, epochs.jsonl and, with matplotlib, fig_overlays.png and fig_embeddings_pca.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import agcl.pipeline as pl
from agcl import AttentionPatchSampler
from agcl.data.synthetic2d import SYNTHETIC2D_CLASSES, write_voc_like
from agcl.data.voc import VOC_CLASSES, VOCSegmentation, save_voc_mask, voc_palette
from agcl.metrics import confusion_matrix, iou_from_confusion, mean_iou
from agcl.pipeline.toolkit import distributed as dd
from agcl.sampling.coarse_attention import attention_recall
from agcl.pipeline import parse_overrides
from agcl.pipeline.image2d import (
    Coarse2DConfig,
    ImageVolumes,
    attention_2d,
    load_coarse_2d,
    predict_probabilities_2d,
    segment_image_2d,
    train_coarse_2d,
)

METHOD_ORDER = ("none", "sscl", "supcon", "ce", "agcl")

# quick: slim ResNet-18s, 48 x 48 patches, few epochs, larger learning rates (CPU minutes).
# paper: ResNet-50, batch 8, SGD 1e-3 for the coarse model, T = 0.07, Adam 1e-4 for 10 decoder epochs.
PRESETS: dict[str, dict] = {
    "quick": {
        "coarse2d": {"encoder": "resnet18", "base_width": 16, "output_stride": 16, "aspp_channels": 48,
                     "decoder_channels": 32, "low_level_reduced": 16, "epochs": 20, "optimizer": "adam", "lr": 2e-3, "weight_decay": 0.0, "batch_size": 8,
                     "crop_size": 96, "margin_px": 6.0},
        "pipeline": {"pretrain.temperature": 0.07, "pretrain.patch_size": 48, "pretrain.patches_per_slice": 6,
                     "pretrain.epochs": 4, "pretrain.batch_size": 64, "pretrain.lr": 0.05,
                     "pretrain.output_stride": 8, "segment.patches_per_slice": 6, "segment.epochs": 8,
                     "segment.lr": 1e-3, "segment.batch_size": 32, "segment.stride": 48,
                     "segment.aspp_channels": 64, "segment.decoder": "aspp",  # as measured in docs/results.md
                     "pretrain.aug_color_distortion": 0.5},
    },
    "paper": {
        "coarse2d": {"encoder": "resnet50", "base_width": 64, "output_stride": 16, "aspp_channels": 256,
                     "epochs": 30, "optimizer": "sgd", "lr": 1e-3, "batch_size": 8, "crop_size": 321,
                     "margin_px": 16.0},
        "pipeline": {"pretrain.temperature": 0.07, "pretrain.batch_size": 8, "segment.batch_size": 8,
                     "segment.epochs": 10, "segment.lr": 1e-4, "pretrain.aug_color_distortion": 0.5},
    },
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None, metavar="PATH",
                    help="an extracted VOCdevkit (VOC2012/JPEGImages, SegmentationClass, ImageSets/Segmentation); "
                         "default: the built-in synthetic scenes")
    ap.add_argument("--train-split", default="train", help="default: %(default)s")
    ap.add_argument("--val-split", default="val", help="held-out split (default: %(default)s)")
    ap.add_argument("--max-train", type=int, default=None, help="use only the first N training images")
    ap.add_argument("--max-val", type=int, default=None, help="evaluate only the first N held-out images")
    ap.add_argument("--out", default="runs/voc_full", help="the run folder (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    ap.add_argument("--preset", choices=tuple(PRESETS), default="quick", help="default: %(default)s")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of stages 2 and 3 (default: the preset's)")
    ap.add_argument("--coarse-epochs", type=int, default=None, help="epochs of stage 1 (default: the preset's)")
    ap.add_argument("--pretrain", choices=METHOD_ORDER, default="agcl", help="pre-training (default: %(default)s)")
    ap.add_argument("--ablation", action="store_true", help="run all five pre-trainings and print a table")
    ap.add_argument("--resume", action="store_true", help="continue every stage from its last completed epoch")
    ap.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    ap.add_argument("--attention", choices=("coarse", "gt"), default="coarse",
                    help="training attention: stage-1 predictions or the ground truth (default: %(default)s)")
    ap.add_argument("--color-distortion", type=float, default=None,
                    help="PairAug colour-distortion strength in stage 2 (default: the preset's)")
    ap.add_argument("--cache-dir", default=None, help="where the synthetic devkit is written/reused")
    ap.add_argument("--n-train", type=int, default=48, help="synthetic training scenes (default: %(default)s)")
    ap.add_argument("--n-val", type=int, default=16, help="synthetic held-out scenes (default: %(default)s)")
    ap.add_argument("--image-size", type=int, default=96, help="synthetic scene size (default: %(default)s)")
    ap.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field: coarse2d.*, pretrain.*, segment.* (values are JSON; repeatable), "
                         "e.g. --set coarse2d.epochs=5 --set segment.lr=3e-4")
    args = ap.parse_args(argv)
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set must be KEY=VALUE; got {item!r}")
    if args.n_train < 2 or args.n_val < 1:
        ap.error(f"--n-train must be >= 2 and --n-val >= 1; got {args.n_train} and {args.n_val}")
    return args


def make_configs(args: argparse.Namespace, method: str) -> tuple[Coarse2DConfig, pl.PipelineConfig]:
    """Stage 1's :class:`Coarse2DConfig` and the :class:`PipelineConfig` of stages 2-3 (RGB:
    ``pretrain.image_channels`` 3; flips allowed on natural images)."""
    preset = PRESETS[args.preset]
    coarse = dict(preset["coarse2d"])
    changes = {"seed": args.seed, "pretrain.method": method, "pretrain.image_channels": 3,
               "pretrain.aug_hflip": True, **preset["pipeline"]}
    if args.color_distortion is not None:
        changes["pretrain.aug_color_distortion"] = args.color_distortion
    if args.epochs is not None:
        changes.update({"pretrain.epochs": args.epochs, "segment.epochs": args.epochs})
    if args.coarse_epochs is not None:
        coarse["epochs"] = args.coarse_epochs
    for key, value in parse_overrides(args.set).items():
        if key.startswith("coarse2d."):
            coarse[key[len("coarse2d."):]] = value
        else:
            changes[key] = value
    try:
        coarse_cfg = Coarse2DConfig(**coarse)
    except TypeError as err:
        raise SystemExit(f"--set coarse2d.*: {err}") from err
    return coarse_cfg, pl.PipelineConfig.preset_named(args.preset).override(**changes)


def synthetic_devkit(args: argparse.Namespace) -> Path:
    root = Path(args.cache_dir or Path.home() / ".cache" / "agcl" /
                f"voc-synthetic-n{args.n_train}-{args.n_val}-s{args.image_size}-seed{args.seed}")
    devkit = root / "VOCdevkit"
    try:
        if len(VOCSegmentation(devkit, "train")) == args.n_train and len(VOCSegmentation(devkit, "val")) == args.n_val:
            return devkit
    except (FileNotFoundError, ValueError):
        pass
    print(f"synthetic scenes: writing {args.n_train} + {args.n_val} to {devkit} ...", flush=True)
    return write_voc_like(root, args.n_train, args.n_val, seed=args.seed, size=args.image_size)


class _SplitView(Sequence):
    """The images (``part=0``) or masks (``part=1``) of a split, read from disk on access."""

    def __init__(self, ds: VOCSegmentation, n: int, part: int) -> None:
        self.ds, self.n, self.part = ds, n, part

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        if not -self.n <= i < self.n:
            raise IndexError(f"index must lie in [0, {self.n}); got {i}")
        return self.ds[i % self.n][self.part]


def load_split(devkit: Path, split: str, limit: int | None):
    """``(ids, images, masks)`` of a split; images and masks are lazy views (nothing held in memory)."""
    ds = VOCSegmentation(devkit, split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return ds.ids[:n], _SplitView(ds, n, 0), _SplitView(ds, n, 1)


def gt_attention(mask: np.ndarray, class_ids, margin_px: float):
    """Attention from the ground truth (``--attention gt``): each present class, dilated."""
    k = len(class_ids)
    prob = np.zeros((k + 1, *mask.shape), np.float32)
    for i, c in enumerate(class_ids, start=1):
        prob[i] = mask == c
    prob[0] = 1 - prob[1:].max(0)
    return attention_2d(prob, class_ids, Coarse2DConfig(margin_px=margin_px, attention_threshold=0.5))


def evaluate(preds, masks, num_classes):
    cm = sum(confusion_matrix(p, m, num_classes) for p, m in zip(preds, masks))
    ious = iou_from_confusion(cm)
    return ious, mean_iou(ious)


def overlay_figure(images, masks, preds, ids, path: Path, title: str) -> Path | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        print("matplotlib not installed: no overlay figure (pip install 'agcl[viz]')")
        return None
    pal = voc_palette()
    n = min(4, len(images))
    fig = Figure(figsize=(7.5, 2.5 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for r in range(n):
        for c, (arr, name) in enumerate(((images[r], "image"), (pal[masks[r]], "ground truth"), (pal[preds[r]], "prediction"))):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(arr)
            else:
                ax.imshow(images[r])
                ax.imshow(arr, alpha=0.6, interpolation="nearest")
            ax.set_title(f"{ids[r]}: {name}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def run_method(method, args, val, class_ids, names, out_dir: Path, volumes, val_volumes, *, figures: bool):
    """Stages 2 and 3 through the CT pipeline's own functions (PatchStream), then whole-image inference."""
    _, cfg = make_configs(args, method)
    t0 = time.perf_counter()
    log = pl.EpochLog(out_dir / "epochs.jsonl", enabled=dd.is_main())
    pre = pl.pretrain_encoder(volumes, cfg, class_ids, out_dir, num_modalities=1, resume=args.resume,
                              device=args.device, log=log)
    seg = pl.train_segmenter(volumes, cfg, class_ids, out_dir, pretrain_checkpoint=pre, resume=args.resume,
                             device=args.device, log=log)
    if not dd.is_main():
        return None
    model, _, _ = pl.load_segment_model(seg, args.device)
    ids, images, masks, attention = val
    preds = []
    for i, image, att in zip(ids, images, attention):
        pred, _ = segment_image_2d(model, image, att, class_ids, threshold=cfg.segment.threshold, device=args.device)
        save_voc_mask(out_dir / "predictions" / f"{i}.png", pred)
        preds.append(pred)
    ious, miou = evaluate(preds, masks, len(names))
    result = {"method": method, "mean": {"miou": miou},
              "per_class": {n: {"iou": v} for n, v in zip(names, ious)},
              "runtime_s": round(time.perf_counter() - t0, 1), "config": cfg.to_dict()}
    if figures:
        overlay_figure(images, masks, preds, ids, out_dir / "fig_overlays.png",
                       f"{method}: held-out images, ground truth vs prediction (mIoU {miou:.3f})")
        if pre is not None and method != "ce":
            sampler = AttentionPatchSampler(patch_size=cfg.pretrain.patch_size, patches_per_slice=4, seed=0)
            batches = [sampler.sample(v["image"], v["attention"], None, v["modality"], volume_index=k)
                       for k, v in enumerate(val_volumes) if v["attention"]]
            x = torch.cat([b.inputs() for b in batches if len(b)])[:800]
            target = torch.cat([b.target for b in batches if len(b)])[:800]
            emb = pl.embed_patches(pl.load_pretrain_model(pre, args.device), x, device=args.device)
            pl.plot_embeddings(emb.numpy(), target.numpy(), np.zeros(len(target), int),
                               out_dir / "fig_embeddings_pca.png", organ_names=dict(zip(class_ids, names[1:])),
                               modality_names=["rgb"],
                               title=f"PCA of projected embeddings ({method}, held-out patches)")
    return result


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_report(out: Path, main: dict, coarse: dict, ablation: dict | None, notes: list[str]) -> tuple[Path, Path]:
    payload = {"mean": {"miou": main["mean"]["miou"], "coarse_miou": coarse["miou"]},
               "per_class": {n: {"iou": v["iou"], "coarse_iou": coarse["per_class"][n],
                                 "attention_recall": coarse["recall"].get(n)} for n, v in main["per_class"].items()},
               "method": main["method"], "runtime_s": main["total_runtime_s"], "notes": notes, "config": main["config"],
               "coarse2d": coarse["config"]}
    if ablation:
        payload["ablation"] = {m: {"miou": r["mean"]["miou"], "per_class": {n: v["iou"] for n, v in r["per_class"].items()},
                                   "runtime_s": r["runtime_s"]} for m, r in ablation.items()}
    json_path = out / "results.json"
    tmp = json_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(json_path)
    lines = ["# voc_full results", "", *notes, "", "| class | IoU | stage-1 IoU | attention recall |", "|---|---|---|---|"]
    for n, v in payload["per_class"].items():
        lines.append(f"| {n} | {_fmt(v['iou'])} | {_fmt(v['coarse_iou'])} | {_fmt(v['attention_recall'])} |")
    lines.append(f"| **mean** | **{_fmt(payload['mean']['miou'])}** | {_fmt(payload['mean']['coarse_miou'])} | |")
    if ablation:
        lines += ["", "## Pre-training ablation (mIoU, same stage 1)", "", "| pre-training | mIoU |", "|---|---|"]
        lines += [f"| {m} | {_fmt(r['mean']['miou'])} |" for m, r in ablation.items()]
    md_path = out / "results.md"
    md_path.write_text("\n".join(lines) + "\n")
    return json_path, md_path


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    rank, _ = pl.init_distributed(args.device)
    out = Path(args.out)
    if rank == 0 and args.data_dir is None:
        synthetic_devkit(args)
    pl.barrier()
    devkit = Path(args.data_dir) if args.data_dir else synthetic_devkit(args)
    names = list(VOC_CLASSES if args.data_dir else SYNTHETIC2D_CLASSES)
    class_ids = list(range(1, len(names)))
    train_ids, train_images, train_masks = load_split(devkit, args.train_split, args.max_train)
    val_ids, val_images, val_masks = load_split(devkit, args.val_split, args.max_val)
    coarse_cfg, _ = make_configs(args, args.pretrain)
    if rank == 0:
        print(f"{len(train_ids)} training and {len(val_ids)} held-out images from {devkit}; {len(class_ids)} classes; "
              f"preset {args.preset}; out {out}", flush=True)
        train_coarse_2d(train_images, train_masks, coarse_cfg, len(names), out, seed=args.seed, resume=args.resume,
                        device=args.device, log=pl.EpochLog(out / "epochs.jsonl"))
    pl.barrier()
    coarse_model, _, _ = load_coarse_2d(out / "checkpoints" / "coarse2d.pt", args.device)

    def attend(images, *, with_preds: bool):
        """Each image's sparse attention (and its uint8 arg-max map); no probability map is kept."""
        atts, preds = [], []
        for im in images:
            p = predict_probabilities_2d(coarse_model, im, device=args.device)
            atts.append(attention_2d(p, class_ids, coarse_cfg))
            if with_preds:
                preds.append(p.argmax(0).numpy().astype(np.uint8))
        return atts, preds

    if args.attention == "gt":
        train_att = [gt_attention(m, class_ids, coarse_cfg.margin_px) for m in train_masks]
    else:
        train_att, _ = attend(train_images, with_preds=False)
    val_att, coarse_preds = attend(val_images, with_preds=True)
    ious, miou = evaluate(coarse_preds, val_masks, len(names))
    recall_sum: dict[int, list[float]] = {c: [] for c in class_ids}
    for att, m in zip(val_att, val_masks):
        for c, r in attention_recall({k: (b[:2], mk[..., 0]) for k, (b, mk) in att.items()}, m, class_ids).items():
            if r is not None:
                recall_sum[c].append(r)
    coarse = {"miou": miou, "per_class": dict(zip(names, ious)), "config": coarse_cfg.to_dict(),
              "recall": {names[c]: (float(np.mean(v)) if v else None) for c, v in recall_sum.items()}}
    if rank == 0:
        for i, p in zip(val_ids, coarse_preds):
            save_voc_mask(out / "coarse" / f"{i}.png", p)
        print(f"stage 1: held-out mIoU {_fmt(miou)} (" + ", ".join(f"{n} {_fmt(v)}" for n, v in zip(names, ious)) + ")")
    volumes = ImageVolumes(train_images, train_att, train_masks)  # float32 volumes made on access
    val_volumes = ImageVolumes(val_images, val_att, val_masks)
    val = (val_ids, val_images, val_masks, val_att)
    methods = [args.pretrain] + ([m for m in METHOD_ORDER if m != args.pretrain] if args.ablation else [])
    runs: dict[str, dict] = {}
    for method in methods:
        run_dir = out if method == args.pretrain else out / "ablation" / method
        result = run_method(method, args, val, class_ids, names, run_dir, volumes, val_volumes,
                            figures=not args.no_figures and method == args.pretrain)
        if result is None:
            continue
        runs[method] = result
        print(f"\n== pre-training {method!r}: held-out IoU per class ==")
        for n, v in result["per_class"].items():
            print(f"  {n:14s} {_fmt(v['iou'])}")
        print(f"  {'mean':14s} {_fmt(result['mean']['miou'])}   (stage-1 coarse mIoU {_fmt(miou)}; {result['runtime_s']} s)")
    if not runs:
        return 0
    main_result = runs[args.pretrain]
    main_result["total_runtime_s"] = round(time.perf_counter() - start, 1)
    data = args.data_dir or f"synthetic scenes ({args.n_train} train / {args.n_val} val, {args.image_size} px, seed {args.seed})"
    notes = [f"Preset `{args.preset}`, pre-training `{args.pretrain}`, {len(train_ids)} training / {len(val_ids)} held-out "
             f"images, device `{args.device}`, seed {args.seed}; data: {data}.",
             "IoU accumulated over all held-out images (one confusion matrix), void (255) ignored; the mean is over "
             "classes with a non-empty union (background included, as in VOC).",
             f"Total runtime {main_result['total_runtime_s']} s."]
    ablation = {m: runs[m] for m in METHOD_ORDER if m in runs} if args.ablation else None
    json_path, md_path = write_report(out, main_result, coarse, ablation, notes)
    print(f"\nwrote {json_path}, {md_path} and {len(val_ids)} predictions under {out / 'predictions'}")
    print(f"total runtime {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
