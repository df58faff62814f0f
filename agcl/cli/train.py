"""``agcl train``: the CT pipeline (stage 1, AGCL pre-training, segmentation) in a run folder.

With no arguments it writes a small synthetic two-modality BTCV-like dataset into a cache folder
(reused on later runs), reads it back through the same loading code as real data and runs the
three stages with the ``quick`` preset (a few minutes on a 2-core CPU), printing per-organ Dice,
MSD (ASSD) and HD95 on the held-out cases.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any

from agcl.cli._common import (
    FLAG_FIELDS,
    METHOD_ORDER,
    UserError,
    add_run_arguments,
    check_device,
    make_config,
    positive_int,
    seed,
    share_stage1,
    user_errors,
)
from agcl.cli._train_data import load_cohorts, synthetic_dataset
from agcl.cli._train_report import case_records, recall_line, report_run, write_outputs

__all__ = [
    "METHOD_ORDER",
    "UserError",
    "ablation_dir",
    "build_parser",
    "case_records",
    "config_for",
    "load_cohorts",
    "main",
    "parse_args",
    "recall_line",
    "report_run",
    "synthetic_dataset",
]

EPILOG = """\
examples:
  agcl train                                   built-in synthetic CT phantoms, quick preset, CPU
  agcl train --data-dir /data/BTCV/RawData --preset paper --device cuda
  agcl train --data-dir /data/nnUNet_raw/Dataset017_BTCV --preset paper --device cuda
  agcl train --data-dir /data/ce --modality contrast --data-dir /data/nce --modality non-contrast
  agcl train --ablation --seeds 3              none / SSCL / SupCon / CE / AGCL, Wilcoxon vs AGCL
  agcl train --resume                          continue an interrupted run (checked with run.json)
  agcl train --overwrite                       replace the run in --out (only its own files)
  torchrun --nproc_per_node=2 -m agcl train    stages 2 and 3 data-parallel
  agcl train --domain image2d --help           the 2-D pipeline (PASCAL VOC) and its options

data (--data-dir, repeatable): a BTCV folder (RawData/Training/img, label), a MONAI datalist
JSON, or an nnU-Net raw dataset (Dataset001_X with dataset.json; channel _0000 is the CT; organs
matched to BTCV codes by their names, --labels for anything else).

files written in --out:
  run.json                 what every stage was made from (settings, inputs and their digests)
  results.json, results.md the held-out Dice, HD95 and ASSD per organ, stage 3 alone, recall
  checkpoints/             coarse.pt, pretrain.pt, segment.pt (per-epoch)
  coarse/, predictions/    stage-1 maps and final label maps (NIfTI, the scan's own header)
  epochs.jsonl             one line per epoch of every stage
  fig3_*.png, fig4_*.png   the embeddings' PCA and overlays (with matplotlib)
  ablation/, ablation.*    with --ablation

exit status: 0 done; 2 a usage or input error (the message says what), e.g. --out holding an
earlier run without --resume or --overwrite.
"""


def build_parser(prog: str = "agcl train") -> argparse.ArgumentParser:
    """The parser of ``agcl train`` (also used by ``examples/btcv_full.py``)."""
    from agcl.pipeline import PRETRAIN_METHODS

    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0].split(": ", 1)[1] + "\n\n" + __doc__.split("\n\n")[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--domain",
        choices=("ct", "image2d"),
        default="ct",
        help="ct: CT volumes (these options); image2d: 2-D images, see agcl train --domain "
        "image2d --help",
    )
    ap.add_argument(
        "--data-dir",
        action="append",
        default=[],
        metavar="PATH",
        help="a BTCV folder, a MONAI datalist JSON or an nnU-Net raw dataset (repeat for cohorts)",
    )
    ap.add_argument(
        "--modality",
        action="append",
        default=[],
        metavar="NAME",
        help="the modality name of each --data-dir, in the same order (default: contrast)",
    )
    ap.add_argument(
        "--labels",
        default=None,
        metavar="FILE.json",
        help="{their_code: btcv_code} for an nnU-Net dataset whose label names agcl does not know",
    )
    add_run_arguments(ap, out="runs/btcv_full")
    ap.add_argument(
        "--pretrain",
        choices=PRETRAIN_METHODS,
        default="agcl",
        help="pre-training of the encoder (default: %(default)s)",
    )
    ap.add_argument(
        "--ablation", action="store_true", help="run all five pre-trainings (the paper's Table 1)"
    )
    ap.add_argument(
        "--seeds",
        type=positive_int,
        default=None,
        metavar="K",
        help="with --ablation: seeds --seed ... --seed+K-1 (stage 1 trained once per seed), with "
        "mean +/- std and paired Wilcoxon p-values against agcl in ablation.json/.md (default: 1)",
    )
    ap.add_argument("--seed", type=seed, default=0, help="default: %(default)s")
    ap.add_argument(
        "--cache-dir",
        default=None,
        help="where the synthetic dataset is written/reused (default: ~/.cache/agcl/phantoms-...); "
        "a non-empty folder agcl did not make is refused, never replaced",
    )
    ap.add_argument(
        "--n-cases", type=int, default=5, help="synthetic cases per modality (default: %(default)s)"
    )
    ap.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="held-out fraction of each cohort, at least one case (default: %(default)s)",
    )
    ap.add_argument(
        "--coarse-dir", default=None, help="a folder of your own coarse label maps (skips stage 1)"
    )
    ap.add_argument(
        "--coarse-labels",
        default=None,
        metavar="FILE.json",
        help="{their_code: btcv_code} JSON translating the label codes of --coarse-dir's maps "
        "(e.g. TotalSegmentator's); unmapped codes become background (with a warning)",
    )
    ap.add_argument(
        "--attention",
        choices=("coarse", "gt"),
        default="coarse",
        help="training attention: coarse predictions or ground truth (default: %(default)s)",
    )
    ap.add_argument("--no-figures", action="store_true", help="do not draw the figures")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set segment.epochs=5 --set coarse.spacing_mm=[4,4,5] "
        "(values are JSON; repeatable)",
    )
    ap.add_argument(
        "--synthetic-shape",
        type=positive_int,
        nargs=3,
        default=None,
        metavar=("X", "Y", "Z"),
        help="grid of the synthetic phantoms (default: the generator's)",
    )
    ap.add_argument(
        "--synthetic-spacing",
        type=float,
        nargs=3,
        default=None,
        metavar=("SX", "SY", "SZ"),
        help="voxel size of the synthetic phantoms in mm (default: the generator's)",
    )
    return ap


def parse_args(argv: list[str] | None = None, *, prog: str | None = None) -> argparse.Namespace:
    ap = build_parser(prog) if prog else build_parser()
    args = ap.parse_args(argv)
    if args.modality and len(args.modality) != len(args.data_dir):
        ap.error(
            f"--modality must be given once per --data-dir; got {len(args.modality)} names for "
            f"{len(args.data_dir)} folders"
        )
    if not 0 < args.test_fraction < 1:
        ap.error(f"--test-fraction must lie in (0, 1); got {args.test_fraction}")
    if args.coarse_labels and not args.coarse_dir:
        ap.error("--coarse-labels needs --coarse-dir (it translates the codes of those maps)")
    for item in args.set:
        if "=" not in item:
            ap.error(f"--set must be KEY=VALUE; got {item!r}")
    if args.seeds is not None and not args.ablation:
        ap.error("--seeds needs --ablation (it repeats the ablation over K seeds)")
    if args.seeds is not None and args.seed + args.seeds - 1 > 2**32 - 1:
        ap.error(
            f"--seed + --seeds - 1 must be at most {2**32 - 1}; got {args.seed + args.seeds - 1}"
        )
    if args.n_cases < 2:
        ap.error(f"--n-cases must be at least 2 (one to train, one to test); got {args.n_cases}")
    if args.resume and args.overwrite:
        ap.error("--resume continues the run in --out and --overwrite replaces it; pass one")
    if args.synthetic_spacing is not None and not all(
        math.isfinite(v) and v > 0 for v in args.synthetic_spacing
    ):
        ap.error(
            "--synthetic-spacing must be three positive voxel sizes in mm; "
            f"got {args.synthetic_spacing}"
        )
    seen: dict[str, str] = {}
    for d in args.data_dir:
        key = str(Path(d).resolve())
        if key in seen:
            ap.error(
                f"--data-dir {d} is given twice (as {seen[key]!r} and {d!r}); a case would be "
                "trained and held out at once"
            )
        seen[key] = d
    return args


def config_for(args: argparse.Namespace, method: str, seed_value: int | None = None) -> Any:
    """The run's :class:`agcl.pipeline.PipelineConfig` for ``method`` (and ``seed_value``)."""
    changes: dict[str, Any] = {
        "seed": args.seed if seed_value is None else seed_value,
        "pretrain.method": method,
        "coarse.source": args.attention,
    }
    if args.epochs is not None:
        changes.update({"pretrain.epochs": args.epochs, "segment.epochs": args.epochs})
    if args.coarse_epochs is not None:
        changes["coarse.epochs"] = args.coarse_epochs
    flags = dict(FLAG_FIELDS)
    if args.ablation:  # the ablation gives each of its runs a seed
        flags["seed"] = "--seed and --seeds (an ablation runs seeds --seed ... --seed+K-1)"
    return make_config(args.preset, "ct", changes, args.set, flags=flags)


def ablation_dir(
    out: Path, method: str, seed_value: int, *, main_method: str, first_seed: int
) -> Path:
    """The run folder of ``method`` at ``seed_value``: ``out`` (the main run),
    ``out/ablation/<method>`` (the first seed's other methods) or
    ``out/ablation/seed<seed>/<method>`` (the later seeds)."""
    if seed_value == first_seed:
        return out if method == main_method else out / "ablation" / method
    return out / "ablation" / f"seed{seed_value}" / method


def main(argv: list[str] | None = None, *, prog: str | None = None) -> int:
    """``agcl train``; returns the exit status."""
    return user_errors("train", lambda: _main(parse_args(argv, prog=prog)))


def _main(args: argparse.Namespace) -> int:
    import agcl.data as adata
    import agcl.pipeline as pl
    from agcl.pipeline.run import RunFolder

    start = time.perf_counter()
    device = check_device(args.device)  # before any data is read
    config_for(args, args.pretrain)  # a bad --set is refused before any data is read, too
    rank, _ = pl.init_distributed(device)  # torchrun: stages 2-3 run on every process
    if rank == 0 and not args.data_dir:
        synthetic_dataset(args)
    pl.barrier()
    train, test, modalities = load_cohorts(args)
    out = Path(args.out)
    print(
        f"{len(train)} training and {len(test)} held-out cases; modalities {modalities}; "
        f"preset {args.preset}; out {out}",
        flush=True,
    )
    coarse_labels = adata.load_coarse_labels(args.coarse_labels) if args.coarse_labels else None
    methods = (
        [m for m in METHOD_ORDER if m != args.pretrain] + [args.pretrain]
        if args.ablation
        else [args.pretrain]
    )
    main_method = args.pretrain
    seeds = [args.seed + i for i in range(args.seeds or 1)]
    runs: dict[str, dict[str, Any]] = {}  # the first seed's runs (results.json, the Table-1 layout)
    records: list[dict[str, Any]] = []  # per (method, seed, held-out case) Dice, for ablation.json
    # per seed, the first run trains stage 1 and writes coarse/; the seed's other methods share it
    order = [main_method] + [m for m in methods if m != main_method]
    for seed_value in seeds:
        first_dir = None
        for method in order:
            t0 = time.perf_counter()
            run_dir = ablation_dir(
                out, method, seed_value, main_method=main_method, first_seed=seeds[0]
            )
            shared = first_dir is not None and args.coarse_dir is None
            if shared:
                share_stage1(
                    first_dir,
                    run_dir,
                    stage1="coarse",
                    resume=args.resume,
                    overwrite=args.overwrite,
                    main=rank == 0,
                )
            result = pl.run_pipeline(
                train,
                test,
                config_for(args, method, seed_value),
                run_dir,
                resume=args.resume or shared,
                overwrite=args.overwrite and not shared,
                device=device,
                coarse_dir=args.coarse_dir,
                coarse_labels=coarse_labels,
            )
            if run_dir != out and rank == 0:
                RunFolder.open(out, resume=True).own_run(run_dir)
            first_dir = first_dir or run_dir
            if not result:  # a non-zero rank under torchrun
                continue
            result["runtime_s"] = time.perf_counter() - t0
            if seed_value == seeds[0]:
                runs[method] = result
            if args.ablation:
                records += case_records(result, test, run_dir, method=method, seed_value=seed_value)
            report_run(
                f"pre-training {method!r}" + (f", seed {seed_value}" if len(seeds) > 1 else ""),
                result,
            )
    if not runs:
        return 0
    write_outputs(args, out, runs, records, seeds, train, test, modalities, start)
    return 0
