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
    python examples/btcv_full.py --ablation --seeds 3              # ... over 3 seeds, with Wilcoxon tests
    torchrun --nproc_per_node=2 examples/btcv_full.py              # stages 2-3 distributed

Outputs in ``--out``: results.json, results.md, checkpoints/, coarse/ and predictions/ NIfTI
files (with the input's affine and header), epochs.jsonl and, with matplotlib, the PCA plot of
the projected embeddings (paper Fig. 3) and overlays of prediction vs ground truth (Fig. 4).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import agcl.data as adata
import agcl.data.synthetic as synthetic
import agcl.pipeline as pl
from agcl.metrics import format_table
from agcl.pipeline import parse_overrides

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
    ap.add_argument("--seeds", type=_positive_int, default=None, metavar="K",
                    help="with --ablation: run every method with seeds --seed ... --seed+K-1 (stage 1 trained once "
                         "per seed and shared by its methods) and write ablation.json/.md with mean +/- std and "
                         "paired Wilcoxon p-values against agcl (default: 1)")
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
    if args.seeds is not None and not args.ablation:
        ap.error("--seeds needs --ablation (it repeats the ablation over K seeds)")
    if args.n_cases < 2:
        ap.error(f"--n-cases must be at least 2 (one to train, one to test); got {args.n_cases}")
    return args


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


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


def make_config(args: argparse.Namespace, method: str, seed: int | None = None) -> pl.PipelineConfig:
    changes = {"seed": args.seed if seed is None else seed, "pretrain.method": method, "coarse.source": args.attention}
    if args.epochs is not None:
        changes.update({"pretrain.epochs": args.epochs, "segment.epochs": args.epochs})
    if args.coarse_epochs is not None:
        changes["coarse.epochs"] = args.coarse_epochs
    changes.update(parse_overrides(args.set))
    return pl.PipelineConfig.preset_named(args.preset).override(**changes)


def ablation_dir(out: Path, method: str, seed: int, *, main_method: str, first_seed: int) -> Path:
    """The run folder of ``method`` at ``seed``: ``out`` (the main run), ``out/ablation/<method>`` (the
    first seed's other methods) or ``out/ablation/seed<seed>/<method>`` (the later seeds)."""
    if seed == first_seed:
        return out if method == main_method else out / "ablation" / method
    return out / "ablation" / f"seed{seed}" / method


def share_stage1(src: Path, dst: Path, *, fresh: bool, main: bool = True) -> None:
    """Give ``dst`` the stage-1 checkpoint and coarse maps (labels and probabilities) of ``src``.

    Hard links where the file system allows (else copies), so every method of a seed builds its
    attention from the same coarse probabilities; ``fresh`` removes ``dst``'s stage-2/3
    checkpoints, so those stages start over as in a new run. Only ``main`` (rank 0) touches the
    files; every rank waits for it.
    """
    if main:
        (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
        (dst / "coarse").mkdir(parents=True, exist_ok=True)
        files = [Path("checkpoints") / "coarse.pt", *(p.relative_to(src) for p in sorted((src / "coarse").iterdir()))]
        for rel in files:
            target = dst / rel
            if target.exists() or target.is_symlink():
                target.unlink()
            try:
                os.link(src / rel, target)
            except OSError:
                shutil.copy2(src / rel, target)
        if fresh:
            for name in ("pretrain.pt", "segment.pt"):
                (dst / "checkpoints" / name).unlink(missing_ok=True)
    pl.barrier()


def case_records(result: dict, test, run_dir: Path, *, method: str, seed: int) -> list[dict]:
    """Per held-out case Dice of a run (from its prediction files): ``[{"method", "seed", "case",
    "dice", "per_organ"}]``; ``dice`` the mean over the organs the case's ground truth holds."""
    codes = result["config"]["organs"] or sorted(adata.BTCV_ORGANS)
    organs = {int(k): adata.BTCV_ORGANS[int(k)] for k in codes}
    rows = []
    for case, _ in test:
        stem = f"{case.modality}_{case.case_id}"
        pred = adata.load_volume(run_dir / "predictions" / f"{stem}.nii.gz", kind="label").array
        label = adata.load_volume(case.label_path, kind="label").array
        per_organ = pl.case_dice(pred, label, organs)
        present = [v for v in per_organ.values() if v is not None]
        rows.append({"method": method, "seed": seed, "case": stem,
                     "dice": sum(present) / len(present) if present else None, "per_organ": per_organ})
    return rows


def report_run(name: str, result: dict) -> None:
    print(f"\n== {name}: held-out cases (Dice, HD95 and ASSD/MSD in mm) ==")
    print(format_table({"per_organ": result["per_organ"], "mean": result["mean"]}))
    m, c = result["mean"], result["coarse_mean"]
    print(f"mean Dice {_num(m['dice'], '.3f')} | mean HD95 {_num(m['hd95'], '.2f')} mm | "
          f"mean MSD {_num(m['assd'], '.2f')} mm | missed organs {m['missed']} | "
          f"false positives {m['false_positive']} | stage-1 coarse mean Dice {_num(c['dice'], '.3f')}")
    line = recall_line(result.get("attention_recall_min") or {})
    if line:
        print(line)


def recall_line(lowest: dict) -> str | None:
    """The console line on ``{organ: lowest held-out recall}`` (the attention bounds what stage 3
    can find: an organ part outside it is lost); ``None`` when no organ has a value."""
    lowest = {k: v for k, v in lowest.items() if v is not None}
    if not lowest:
        return None
    organ = min(lowest, key=lowest.get)
    below = [k for k, v in lowest.items() if v < 0.95]
    return (f"attention recall, lowest held-out case: {organ} {lowest[organ]:.3f} | organs below 0.95 in "
            f"some case: {', '.join(below) if below else 'none'}")


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
    seeds = [args.seed + i for i in range(args.seeds or 1)]
    runs: dict[str, dict] = {}  # the first seed's runs (results.json, the Table-1 layout)
    records: list[dict] = []  # per (method, seed, held-out case) Dice, for ablation.json
    # per seed, the main run first: it trains stage 1 and writes coarse/; the seed's other methods share it
    order = [main_method] + [m for m in methods if m != main_method]
    for seed in seeds:
        first_dir = None
        for method in order:
            t0 = time.perf_counter()
            run_dir = ablation_dir(out, method, seed, main_method=main_method, first_seed=seeds[0])
            resume = args.resume
            if first_dir is not None and args.coarse_dir is None:
                share_stage1(first_dir, run_dir, fresh=not args.resume, main=rank == 0)
                resume = True  # stage 1 complete (shared); stages 2-3 start fresh unless --resume
            result = pl.run_pipeline(train, test, make_config(args, method, seed), run_dir, resume=resume,
                                     device=args.device, coarse_dir=args.coarse_dir,
                                     coarse_labels=coarse_labels if args.coarse_dir else None)
            first_dir = first_dir or run_dir
            if not result:  # a non-zero rank under torchrun
                continue
            result["runtime_s"] = time.perf_counter() - t0
            if seed == seeds[0]:
                runs[method] = result
            if args.ablation:
                records += case_records(result, test, run_dir, method=method, seed=seed)
            report_run(f"pre-training {method!r}" + (f", seed {seed}" if len(seeds) > 1 else ""), result)
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
        records.sort(key=lambda r: METHOD_ORDER.index(r["method"]))  # Table 1's order (stable within a method)
        stats = pl.ablation_statistics(records, reference="agcl")
        abl_notes = [notes[0].replace(f"seed {args.seed}", f"seeds {seeds}"),
                     f"Stage 1 trained once per seed and shared by that seed's methods; {len(test)} held-out cases x "
                     f"{len(seeds)} seeds = {len(test) * len(seeds)} (case, seed) pairs per method.",
                     f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores ({platform.processor() or 'cpu'}), "
                     f"device `{args.device}`; whole ablation {time.perf_counter() - start:.0f} s."]
        pl.write_ablation(out, records, stats, notes=abl_notes)
        print("\n== ablation statistics (mean Dice per held-out case; Wilcoxon against agcl) ==")
        print(pl.ablation_markdown(stats))
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
