"""The whole AGCL pipeline end to end: coarse attention, contrastive pre-training, segmentation.

With no arguments it writes a small synthetic two-modality BTCV-like dataset into a cache
folder (reused on later runs), reads it back through the same loading code as real data and
runs the three stages with the ``quick`` preset (a few minutes on a 2-core CPU), printing
per-organ Dice, MSD (ASSD) and HD95 on the held-out cases.

    python examples/btcv_full.py                                   # synthetic, quick preset
    python examples/btcv_full.py --data-dir /data/BTCV --preset paper --device cuda
    python examples/btcv_full.py --data-dir /data/ce --modality contrast \
                                 --data-dir /data/nce --modality non-contrast
    python examples/btcv_full.py --ablation                        # all five pre-trainings
    torchrun --nproc_per_node=2 examples/btcv_full.py              # stages 2-3 distributed

Outputs in ``--out``: results.json, results.md, checkpoints/, coarse/ and predictions/ NIfTI
files (with the input's affine and header), epochs.jsonl and, with matplotlib, the PCA plot of
the projected embeddings (paper Fig. 3) and overlays of prediction vs ground truth (Fig. 4).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import agcl.data as adata
import agcl.data.synthetic as synthetic
import agcl.pipeline as pl
from agcl.metrics import format_table

METHOD_ORDER = ("none", "sscl", "supcon", "ce", "agcl")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", action="append", default=[], metavar="PATH",
                    help="a BTCV-layout folder or a MONAI-style datalist JSON (repeat for several cohorts)")
    ap.add_argument("--modality", action="append", default=[], metavar="NAME",
                    help="the modality name of each --data-dir, in the same order (default: contrast)")
    ap.add_argument("--out", default="runs/btcv_full", help="the run folder (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=None, help="epochs of stages 2 and 3 (default: the preset's)")
    ap.add_argument("--coarse-epochs", type=int, default=None, help="epochs of stage 1 (default: the preset's)")
    ap.add_argument("--preset", choices=("quick", "paper"), default="quick", help="default: %(default)s")
    ap.add_argument("--pretrain", choices=pl.PRETRAIN_METHODS, default="agcl",
                    help="pre-training of the encoder (default: %(default)s)")
    ap.add_argument("--ablation", action="store_true", help="run all five pre-trainings and print a Table-1-like table")
    ap.add_argument("--resume", action="store_true", help="continue every stage from its last completed epoch")
    ap.add_argument("--seed", type=int, default=0, help="default: %(default)s")
    ap.add_argument("--cache-dir", default=None,
                    help="where the synthetic dataset is written/reused (default: ~/.cache/agcl/synthetic-...)")
    ap.add_argument("--n-cases", type=int, default=5, help="synthetic cases per modality (default: %(default)s)")
    ap.add_argument("--test-fraction", type=float, default=0.2,
                    help="held-out fraction of each cohort, at least one case (default: %(default)s)")
    ap.add_argument("--coarse-dir", default=None, help="a folder of your own coarse label maps (skips stage 1)")
    ap.add_argument("--coarse-labels", default=None, metavar="FILE.json",
                    help="{their_code: btcv_code} JSON translating the label codes of --coarse-dir's maps "
                         "(e.g. TotalSegmentator's); unmapped codes become background (with a warning)")
    ap.add_argument("--attention", choices=("coarse", "gt"), default="coarse",
                    help="training attention: coarse predictions or ground truth (default: %(default)s)")
    ap.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set segment.epochs=5 --set coarse.spacing_mm=[4,4,5] "
                         "(values are JSON; repeatable)")
    ap.add_argument("--synthetic-shape", type=int, nargs=3, default=None, metavar=("X", "Y", "Z"),
                    help="grid of the synthetic phantoms (default: the generator's)")
    ap.add_argument("--synthetic-spacing", type=float, nargs=3, default=None, metavar=("SX", "SY", "SZ"),
                    help="voxel size of the synthetic phantoms in mm (default: the generator's)")
    args = ap.parse_args(argv)
    if args.modality and len(args.modality) != len(args.data_dir):
        ap.error(f"--modality must be given once per --data-dir; got {len(args.modality)} names for "
                 f"{len(args.data_dir)} folders")
    if not 0 < args.test_fraction < 1:
        ap.error(f"--test-fraction must lie in (0, 1); got {args.test_fraction}")
    if args.coarse_labels and not args.coarse_dir:
        ap.error("--coarse-labels needs --coarse-dir (it translates the codes of those maps)")
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set must be KEY=VALUE; got {item!r}")
    if args.n_cases < 2:
        ap.error(f"--n-cases must be at least 2 (one to train, one to test); got {args.n_cases}")
    return args


def synthetic_dataset(args: argparse.Namespace, *, quiet: bool = False) -> list[tuple[str, Path]]:
    """Write (once) and return the synthetic two-modality dataset: ``[(modality, folder)]``."""
    modalities = ("contrast", "non-contrast")
    grid = {}
    if args.synthetic_shape:
        grid["shape"] = tuple(args.synthetic_shape)
    if args.synthetic_spacing:
        grid["spacing"] = tuple(args.synthetic_spacing)
    tag = "".join(f"-{k}{'x'.join(f'{v:g}' for v in val)}" for k, val in grid.items())
    root = Path(args.cache_dir or Path.home() / ".cache" / "agcl" / f"synthetic-n{args.n_cases}-seed{args.seed}{tag}")
    if all((root / m / "RawData" / "Training" / "img").is_dir() for m in modalities) and all(
            len(adata.discover_btcv(root / m, modality=m)) == args.n_cases for m in modalities):
        if not quiet:
            print(f"synthetic data: reusing {root}")
    else:
        print(f"synthetic data: writing {args.n_cases} cases x {len(modalities)} modalities to {root} ...", flush=True)
        root.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
        synthetic.write_btcv_like(tmp, args.n_cases, modalities=modalities, seed=args.seed, **grid)
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    return [(m, root / m) for m in modalities]


def load_cohorts(args: argparse.Namespace):
    """Discover every dataset and split each into train/test; returns (train, test, modality names)."""
    sources = ([(m, Path(d)) for m, d in zip(args.modality or ["contrast"] * len(args.data_dir), args.data_dir)]
               if args.data_dir else synthetic_dataset(args, quiet=True))
    datasets = []
    for modality, path in sources:
        if path.suffix == ".json":
            cases = [adata.Case(c.case_id, c.image_path, c.label_path, modality) for c in adata.load_datalist(path)]
        else:
            cases = adata.discover_btcv(path, modality=modality)
        datasets.append((modality, cases))
    cohort = adata.build_cohort(datasets)
    train, test = [], []
    for name in cohort.modalities:
        pairs = [(c, m) for c, m in cohort if c.modality == name]
        if len(pairs) < 2:
            raise SystemExit(f"modality {name!r} has {len(pairs)} case(s); at least 2 are needed (train + test)")
        n_test = min(len(pairs) - 1, max(1, math.ceil(len(pairs) * args.test_fraction)))
        train += pairs[: len(pairs) - n_test]
        test += pairs[len(pairs) - n_test:]
    return train, test, list(cohort.modalities)


def make_config(args: argparse.Namespace, method: str) -> pl.PipelineConfig:
    changes = {"seed": args.seed, "pretrain.method": method, "coarse.source": args.attention}
    if args.epochs is not None:
        changes.update({"pretrain.epochs": args.epochs, "segment.epochs": args.epochs})
    if args.coarse_epochs is not None:
        changes["coarse.epochs"] = args.coarse_epochs
    for item in args.set:
        key, _, text = item.partition("=")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare string such as resnet50
        changes[key.strip()] = tuple(value) if isinstance(value, list) else value
    return pl.PipelineConfig.preset_named(args.preset).override(**changes)


def report_run(name: str, result: dict) -> None:
    print(f"\n== {name}: held-out cases (Dice, HD95 and ASSD/MSD in mm) ==")
    print(format_table({"per_organ": result["per_organ"], "mean": result["mean"]}))
    m, c = result["mean"], result["coarse_mean"]
    print(f"mean Dice {_num(m['dice'], '.3f')} | mean HD95 {_num(m['hd95'], '.2f')} mm | "
          f"mean MSD {_num(m['assd'], '.2f')} mm | missed organs {m['missed']} | "
          f"false positives {m['false_positive']} | stage-1 coarse mean Dice {_num(c['dice'], '.3f')}")


def _num(value, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    rank, _ = pl.init_distributed(args.device)  # torchrun: stages 2-3 run on every process
    if rank == 0 and not args.data_dir:
        synthetic_dataset(args)
    pl.barrier()
    train, test, modalities = load_cohorts(args)
    out = Path(args.out)
    print(f"{len(train)} training and {len(test)} held-out cases; modalities {modalities}; preset {args.preset}; "
          f"out {out}", flush=True)
    coarse_labels = pl.load_coarse_labels(args.coarse_labels) if args.coarse_labels else None
    methods = [m for m in METHOD_ORDER if m != args.pretrain] + [args.pretrain] if args.ablation else [args.pretrain]
    main_method = args.pretrain
    runs: dict[str, dict] = {}
    # the main run first: it trains stage 1 and writes coarse/ for every case
    order = [main_method] + [m for m in methods if m != main_method]
    for method in order:
        t0 = time.perf_counter()
        run_dir = out if method == main_method else out / "ablation" / method
        coarse_dir = args.coarse_dir if method == main_method else (args.coarse_dir or out / "coarse")
        result = pl.run_pipeline(train, test, make_config(args, method), run_dir, resume=args.resume,
                                 device=args.device, coarse_dir=coarse_dir,
                                 coarse_labels=coarse_labels if args.coarse_dir else None)
        if not result:  # a non-zero rank under torchrun
            continue
        result["runtime_s"] = time.perf_counter() - t0
        runs[method] = result
        report_run(f"pre-training {method!r}", result)
    if not runs:
        return 0
    main_result = runs[main_method]
    entry = pl.results_entry(main_result, time.perf_counter() - start)
    ablation = {m: pl.results_entry(runs[m], runs[m]["runtime_s"]) for m in METHOD_ORDER if m in runs} \
        if args.ablation else None
    cfg = main_result["config"]["pretrain"]
    encoder = f"{cfg['encoder']} (width {cfg['base_width']})"
    notes = [f"Preset `{args.preset}`, {len(train)} training / {len(test)} held-out cases, modalities {modalities}, "
             f"device `{args.device}`, seed {args.seed}; data: {', '.join(args.data_dir) or 'synthetic phantoms'}.",
             f"Stage-1 coarse mean Dice on the held-out cases: {_num(main_result['coarse_mean']['dice'], '.3f')}.",
             "Means leave out every (case, organ) pair whose ground truth lacks the organ (n/a); predicting it "
             "there counts as a false positive."]
    json_path, md_path = pl.write_results(out, entry, ablation=ablation, encoder=encoder, notes=notes)
    if ablation is not None:
        print("\n== ablation (Dice; the paper's Table 1 layout) ==")
        print(pl.ablation_table(ablation, encoder=encoder))
    if not args.no_figures:
        emb = main_result["embeddings"]
        if emb is not None:
            pl.plot_embeddings(emb["embedding"], emb["target"], emb["modality"], out / "fig3_embeddings_pca.png",
                               organ_names=adata.BTCV_ORGANS, modality_names=modalities,
                               title=f"PCA of projected embeddings ({main_method}, held-out patches)")
        for ex in main_result["examples"]:
            pl.plot_overlays(ex["image"], ex["label"], ex["pred"], out / f"fig4_overlay_{ex['case']}.png",
                             title=f"{ex['case']}: ground truth (top) vs prediction (bottom)")
    print(f"\nwrote {json_path}, {md_path} and {len(main_result['predictions'])} predictions under {out / 'predictions'}")
    print(f"total runtime {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
