"""Stage 1 alone on the synthetic phantoms: held-out coarse Dice and per-organ attention recall.

Trains the coarse U-Net with a preset (``--preset quick`` by default) on the training split that
``agcl train`` (and ``examples/btcv_full.py``, which calls it) uses (the same cached phantoms,
same split), then prints, per organ, the held-out coarse Dice (arg-max map on the full grid) and
attention recall (the fraction of the organ's voxels inside its attention: probability >=
``coarse.attention_threshold`` or its most probable region, dilated by ``coarse.margin_mm``), and
the training / prediction times. Writes ``coarse_eval.json`` into ``--out``. Much cheaper than a
whole pipeline run for comparing stage-1 settings, e.g. the fixed-shape mode against the
voxel-size mode:

    python benchmarks/bench_coarse.py --out /tmp/c_fixed --set coarse.spacing_mm=null \
        --set coarse.batch_size=1
    python benchmarks/bench_coarse.py --out /tmp/c_mm
    python benchmarks/bench_coarse.py --out /tmp/c_mm --eval-only   # the latest checkpoint in --out
    python benchmarks/bench_coarse.py --out /tmp/c_mm --eval-only --extra-cases 10 \
        --attention 0.1:15

``--extra-cases N`` also evaluates on N more phantoms per modality that no split trains on (the
two held-out cases of the demo's split are too few to tell how often an organ is missed), and
``--attention T:M`` adds recall at probability threshold T and margin M mm to the table.

``--set`` takes the same ``section.field=JSON`` overrides as ``agcl train``; ``--n-cases N`` and
``--seed S`` are its own (N phantoms per modality, the same split rule; the seed of the phantoms
and of training), e.g. to see whether more training phantoms at the same crops per epoch help
stage 1:

    python benchmarks/bench_coarse.py --out /tmp/c_n9 --n-cases 9 --set coarse.crops_per_case=3 \
        --extra-cases 6

``--out`` is this script's own folder: one holding a pipeline run (its ``run.json``) is refused
for training, whose checkpoint would replace the run's stage 1 (``--eval-only`` reads it).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

import agcl.pipeline as pl
from agcl.cli import train as cli
from agcl.data import BTCV_ORGANS, PreparedCases
from agcl.metrics import dice
from agcl.pipeline.run import MANIFEST
from agcl.sampling import attention_from_probabilities, attention_recall


def _setting(text: str) -> tuple[float, float]:
    try:
        threshold, margin = (float(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected THRESHOLD:MARGIN_MM, e.g. 0.1:15; got {text!r}"
        ) from None
    if not 0.0 < threshold <= 1.0 or margin < 0:
        raise argparse.ArgumentTypeError(
            f"expected a threshold in (0, 1] and a margin >= 0 mm; got {text!r}"
        )
    return threshold, margin


def example_args(
    preset: str, sets=(), *, n_cases: int | None = None, seed: int = 0
) -> argparse.Namespace:
    """The arguments ``agcl train`` would parse for this preset, ``--set`` list, ``--n-cases``
    (``None``: its default) and ``--seed``: the same phantoms and split."""
    return cli.parse_args(
        ["--preset", preset, "--seed", str(seed)]
        + ([] if n_cases is None else ["--n-cases", str(n_cases)])
        + [arg for s in sets for arg in ("--set", s)]
    )


def extra_cases(args, n_extra: int, root: Path | None = None):
    """``n_extra`` more phantoms per modality, never trained on: the demo's phantoms are cases
    ``1..n_cases`` of the same seed, so a dataset of ``n_cases + n_extra`` cases holds them
    unchanged and these after them. ``root``: where that dataset is written (default: ``agcl
    train``'s cache folder for ``n_cases + n_extra`` cases). Returns ``[(case, modality_id)]``."""
    from agcl import data as adata

    extended = argparse.Namespace(
        **{**vars(args), "n_cases": args.n_cases + n_extra, "cache_dir": root}
    )
    datasets = [
        (m, adata.discover_btcv(path, modality=m)) for m, path in cli.synthetic_dataset(extended)
    ]
    return [(c, m) for c, m in adata.build_cohort(datasets) if int(c.case_id) > args.n_cases]


def evaluate(model, ids, loaded, cases, settings, device) -> dict:
    """Per case: the coarse grid, per-organ Dice and, per ``(threshold, margin)``, attention recall
    and the attention's size (summed over organs) over the foreground's."""
    out = {}
    for i in range(len(cases)):
        case = cases[i]
        prob = pl.coarse_probabilities(
            model, case.image, loaded.coarse, spacing=case.spacing, device=device
        )
        labels = pl.labels_from_probabilities(prob, ids, case.image.shape)  # as the run writes them
        prob = prob.half().float()  # the attention: from the float16 probabilities the run stores
        row = {
            "grid": list(prob.shape[1:]),
            "dice": {
                BTCV_ORGANS[k]: dice(labels == k, case.label == k)
                if (case.label == k).any()
                else None
                for k in ids
            },
            "recall": {},
            "attention_size": {},
        }
        for threshold, margin in settings:
            att = attention_from_probabilities(
                prob,
                ids,
                case.image.shape,
                spacing=case.spacing,
                margin_mm=margin,
                threshold=threshold,
            )
            key = f"{threshold:g}:{margin:g}"
            recall = attention_recall(att, case.label, ids)
            row["recall"][key] = {BTCV_ORGANS[k]: v for k, v in recall.items()}
            foreground = max(1, int((case.label > 0).sum()))
            row["attention_size"][key] = sum(int(m.sum()) for _, m in att.values()) / foreground
        out[f"{case.modality_name}_{case.case_id}"] = row
    return out


def report(title: str, cases: dict, ids, settings) -> dict:
    """Print per organ the mean Dice and, per setting, mean/min recall; return the summary."""
    keys = [f"{t:g}:{m:g}" for t, m in settings]
    size = {k: float(np.mean([c["attention_size"][k] for c in cases.values()])) for k in keys}
    print(f"\n{title} ({len(cases)} cases)")
    print(
        f"{'organ':26s} {'dice':>6s} "
        + " ".join(f"{'recall ' + k + ' mean/min':>22s}" for k in keys)
    )
    dices, summary = [], {k: {"mean": [], "min": [], "below_0.95": 0} for k in keys}
    for k in ids:
        name = BTCV_ORGANS[k]
        d = [v["dice"][name] for v in cases.values() if v["dice"][name] is not None]
        if not d:
            continue
        dices.append(float(np.mean(d)))
        cells = []
        for key in keys:
            r = [
                v["recall"][key][name] for v in cases.values() if v["recall"][key][name] is not None
            ]
            summary[key]["mean"].append(float(np.mean(r)))
            summary[key]["min"].append(float(min(r)))
            summary[key]["below_0.95"] += sum(x < 0.95 for x in r)
            cells.append(f"{np.mean(r):14.3f}/{min(r):.3f}")
        print(f"{name:26s} {np.mean(d):6.3f} " + " ".join(cells))
    print(
        f"{'mean (lowest organ)':26s} {np.mean(dices):6.3f} "
        + " ".join(
            f"{np.mean(summary[k]['mean']):14.3f}/{min(summary[k]['min']):.3f}" for k in keys
        )
    )
    for key in keys:
        print(
            f"  {key}: {summary[key]['below_0.95']} (case, organ) pairs below recall 0.95; "
            f"attention {size[key]:.2f} x the foreground's voxels"
        )
    return {
        "mean_dice": float(np.mean(dices)),
        "settings": {
            k: {
                "mean_recall": float(np.mean(v["mean"])),
                "min_recall": float(min(v["min"])),
                "below_0.95": int(v["below_0.95"]),
                "attention_size": size[k],
            }
            for k, v in summary.items()
        },
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out",
        required=True,
        help="this script's folder (checkpoints/coarse.pt, coarse_eval.json)",
    )
    ap.add_argument("--preset", choices=("quick", "paper"), default="quick")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument(
        "--eval-only", action="store_true", help="evaluate the checkpoint already in --out"
    )
    ap.add_argument(
        "--extra-cases",
        type=int,
        default=0,
        metavar="N",
        help="also evaluate on N more phantoms per modality that no split trains on (default: 0)",
    )
    ap.add_argument(
        "--attention",
        type=_setting,
        action="append",
        default=[],
        metavar="T:M",
        help="also report recall with threshold T and margin M mm (repeatable), e.g. 0.1:15",
    )
    ap.add_argument(
        "--n-cases",
        type=int,
        default=None,
        metavar="N",
        help="phantoms per modality of the demo's split (default: agcl train's)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="agcl train's --seed: its phantoms and the training seed (default: %(default)s)",
    )
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if a.extra_cases < 0:
        ap.error(f"--extra-cases must be >= 0; got {a.extra_cases}")
    if a.n_cases is not None and a.n_cases < 2:
        ap.error(f"--n-cases must be >= 2 (a training and a held-out case); got {a.n_cases}")
    out_dir = Path(a.out)
    ckpt = out_dir / "checkpoints" / "coarse.pt"
    if a.eval_only and not ckpt.is_file():
        ap.error(f"--eval-only: {ckpt} not found (train first, without --eval-only)")
    if not a.eval_only and (out_dir / MANIFEST).is_file():
        ap.error(
            f"{out_dir} holds a pipeline run ({MANIFEST}); training would replace its stage-1 "
            "checkpoint. Choose another --out, or add --eval-only to evaluate it"
        )
    args = example_args(a.preset, a.set, n_cases=a.n_cases, seed=a.seed)
    try:
        cfg = cli.config_for(args, "agcl")  # a bad --set is refused before any data is read
        train, test, _ = cli.load_cohorts(args)
    except cli.UserError as err:
        ap.error(str(err))
    # the run's organs: config.organs when set, else every BTCV organ (as agcl train)
    organ_ids = sorted(int(k) for k in (cfg.organs if cfg.organs is not None else BTCV_ORGANS))
    kw = {"clip_hu": cfg.clip_hu, "percentiles": cfg.percentiles, "organs": dict(BTCV_ORGANS)}
    train_cases = PreparedCases([c for c, _ in train], [m for _, m in train], **kw)
    test_cases = PreparedCases([c for c, _ in test], [m for _, m in test], **kw)
    t0 = time.perf_counter()
    if not a.eval_only:
        ckpt = pl.train_coarse(train_cases, cfg, organ_ids, out_dir, device=a.device)
    train_s = time.perf_counter() - t0
    epoch = pl.load_checkpoint(ckpt, stage="coarse")["epoch"]
    model, ids, loaded = pl.load_coarse(ckpt, a.device)
    settings = list(
        dict.fromkeys([(cfg.coarse.attention_threshold, cfg.coarse.margin_mm), *a.attention])
    )
    t1 = time.perf_counter()
    cases = evaluate(model, ids, loaded, test_cases, settings, a.device)
    predict_s = time.perf_counter() - t1
    print(
        f"checkpoint epoch {epoch}/{loaded.coarse.epochs}; train {train_s:.1f} s, "
        f"predict {predict_s:.1f} s ({len(cases)} held-out cases); "
        f"coarse grids {[v['grid'] for v in cases.values()]}"
    )
    out = {
        "epoch": epoch,
        "train_s": train_s,
        "predict_s": predict_s,
        "coarse": loaded.to_dict()["coarse"],
        "threads": torch.get_num_threads(),
        "cases": cases,
        "held_out": report("held-out cases of the demo's split", cases, ids, settings),
    }
    if a.extra_cases:
        extra = extra_cases(args, a.extra_cases)
        extra_prepared = PreparedCases([c for c, _ in extra], [m for _, m in extra], **kw)
        out["extra_cases"] = evaluate(model, ids, loaded, extra_prepared, settings, a.device)
        out["extra"] = report(
            f"{a.extra_cases} extra phantoms per modality (never trained on)",
            out["extra_cases"],
            ids,
            settings,
        )
    first = out["held_out"]["settings"][f"{settings[0][0]:g}:{settings[0][1]:g}"]
    out.update(
        mean_dice=out["held_out"]["mean_dice"],
        mean_recall=first["mean_recall"],
        min_recall=first["min_recall"],
    )  # the config's own setting, as before
    path = out_dir / ("coarse_eval_partial.json" if a.eval_only else "coarse_eval.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
