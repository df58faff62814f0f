"""Private: what ``agcl train`` prints and writes after its runs: the per-organ tables, the
per-case records of an ablation, ``results.json``/``.md``, the ablation's statistics and the
figures."""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

from agcl.cli._common import METHOD_ORDER

__all__ = ["case_records", "recall_line", "report_run", "write_outputs"]


def case_records(
    result: dict[str, Any], test: list[Any], run_dir: Path, *, method: str, seed_value: int
) -> list[dict[str, Any]]:
    """Per held-out case measures of a run: ``[{"method", "seed", "case", "dice", "per_organ",
    "dice_stage3", "probe_knn", "probe_linear"}]``; ``dice`` the mean over the organs the case's
    ground truth holds (from the run's prediction files), ``dice_stage3`` the same for stage 3
    alone, ``probe_*`` the encoder probe's (modality, organ) accuracy on the case's patches."""
    import agcl.data as adata
    import agcl.pipeline as pl

    codes = result["config"]["organs"] or sorted(adata.BTCV_ORGANS)
    organs = {int(k): adata.BTCV_ORGANS[int(k)] for k in codes}
    rows = []
    for case, _ in test:
        stem = adata.case_stem(case)
        pred = adata.load_volume(run_dir / "predictions" / f"{stem}.nii.gz", kind="label").array
        label = adata.load_case(case)[1].array
        per_organ = pl.case_dice(pred, label, organs)
        present = [v for v in per_organ.values() if v is not None]
        probe = ((result.get("probe") or {}).get("per_case") or {}).get(stem, {})
        rows.append(
            {
                "method": method,
                "seed": seed_value,
                "case": stem,
                "dice": sum(present) / len(present) if present else None,
                "per_organ": per_organ,
                "dice_stage3": (result.get("stage3_cases") or {}).get(stem),
                "probe_knn": probe.get("knn", {}).get("modality_organ"),
                "probe_linear": probe.get("linear", {}).get("modality_organ"),
            }
        )
    return rows


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def recall_line(lowest: dict[str, float | None]) -> str | None:
    """The console line on ``{organ: lowest held-out recall}`` (the attention bounds what stage 3
    can find: an organ part outside it is lost); ``None`` when no organ has a value."""
    values = {k: v for k, v in lowest.items() if v is not None}
    if not values:
        return None
    organ = min(values, key=lambda k: values[k])
    below = [k for k, v in values.items() if v < 0.95]
    return (
        f"attention recall, lowest held-out case: {organ} {values[organ]:.3f} | organs below "
        f"0.95 in some case: {', '.join(below) if below else 'none'}"
    )


def report_run(name: str, result: dict[str, Any]) -> None:
    from agcl.metrics import format_table

    print(f"\n== {name}: held-out cases (Dice, HD95 and ASSD/MSD in mm) ==")
    print(format_table({"per_organ": result["per_organ"], "mean": result["mean"]}))
    m, c, alone = result["mean"], result["coarse_mean"], result["stage3_only"]["mean"]
    print(
        f"mean Dice {_num(m['dice'], '.3f')} | mean HD95 {_num(m['hd95'], '.2f')} mm | "
        f"mean MSD {_num(m['assd'], '.2f')} mm | missed organs {m['missed']} | "
        f"false positives {m['false_positive']} | "
        f"stage-1 coarse mean Dice {_num(c['dice'], '.3f')} | "
        f"stage 3 alone {_num(alone['dice'], '.3f')}"
    )
    line = recall_line(result.get("attention_recall_min") or {})
    if line:
        print(line)
    probe = result.get("probe")
    if probe:
        print(
            "encoder probe (held-out patches, k-NN / linear): "
            + ", ".join(
                f"{k} {probe['knn'][k]:.3f} / {probe['linear'][k]:.3f}" for k in probe["knn"]
            )
            + f" | organ silhouette {_num(probe['silhouette'], '.3f')}"
        )


def write_outputs(
    args: argparse.Namespace,
    out: Path,
    runs: dict[str, Any],
    records: list[dict[str, Any]],
    seeds: list[int],
    train: list[Any],
    test: list[Any],
    modalities: list[str],
    start: float,
) -> None:
    import agcl.data as adata
    import agcl.pipeline as pl
    from agcl.pipeline.run import RunFolder

    folder = RunFolder.open(out, resume=True)
    main_result = runs[args.pretrain]
    entry = pl.results_entry(main_result, time.perf_counter() - start)
    ablation = (
        {m: pl.results_entry(runs[m], runs[m]["runtime_s"]) for m in METHOD_ORDER if m in runs}
        if args.ablation
        else None
    )
    cfg = main_result["config"]["pretrain"]
    encoder = f"{cfg['encoder']} (width {cfg['base_width']})"
    notes = [
        f"Preset `{args.preset}`, {len(train)} training / {len(test)} held-out cases, "
        f"modalities {modalities}, device `{args.device}`, seed {args.seed}; "
        f"data: {', '.join(args.data_dir) or 'synthetic phantoms'}.",
        "Stage-1 coarse mean Dice on the held-out cases: "
        f"{_num(main_result['coarse_mean']['dice'], '.3f')}; "
        "stage 3 alone (segment.coarse_weight = 0): "
        f"{_num(main_result['stage3_only']['mean']['dice'], '.3f')}.",
        "Means leave out every (case, organ) pair whose ground truth lacks the organ (n/a); "
        "predicting it there counts as a false positive.",
    ]
    written = list(pl.write_results(out, entry, ablation=ablation, encoder=encoder, notes=notes))
    if ablation is not None:
        print("\n== ablation (Dice; the paper's Table 1 layout) ==")
        print(pl.ablation_table(ablation, encoder=encoder))
        records.sort(
            key=lambda r: METHOD_ORDER.index(r["method"])
        )  # Table 1's order (stable within a method)
        stats = pl.ablation_statistics(records, reference="agcl")
        measures = {
            v: pl.ablation_statistics(records, reference="agcl", value=v)
            for v in ("dice_stage3", "probe_knn", "probe_linear")
            if any(r[v] is not None for r in records)
        }
        abl_notes = [
            notes[0].replace(f"seed {args.seed}", f"seeds {seeds}"),
            "Stage 1 trained once per seed and shared by that seed's methods; "
            f"{len(test)} held-out cases x {len(seeds)} seeds = {len(test) * len(seeds)} "
            "(case, seed) pairs per method.",
            f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores "
            f"({platform.processor() or 'cpu'}), device `{args.device}`; "
            f"whole ablation {time.perf_counter() - start:.0f} s.",
        ]
        written += list(pl.write_ablation(out, records, stats, notes=abl_notes, measures=measures))
        print("\n== ablation statistics (mean Dice per held-out case; Wilcoxon against agcl) ==")
        print(pl.ablation_markdown(stats))
        for extra in measures.values():
            print()
            print(pl.ablation_markdown(extra))
    if not args.no_figures:
        emb = main_result["embeddings"]
        if emb is not None:
            written.append(
                pl.plot_embeddings(
                    emb["embedding"],
                    emb["target"],
                    emb["modality"],
                    out / "fig3_embeddings_pca.png",
                    organ_names=adata.BTCV_ORGANS,
                    modality_names=modalities,
                    title=f"PCA of projected embeddings ({args.pretrain}, held-out patches)",
                )
            )
        for ex in main_result["examples"]:
            written.append(
                pl.plot_overlays(
                    ex["image"],
                    ex["label"],
                    ex["pred"],
                    out / f"fig4_overlay_{ex['case']}.png",
                    title=f"{ex['case']}: ground truth (top) vs prediction (bottom)",
                )
            )
    folder.own(*[p for p in written if p is not None], save=True)
    print(
        f"\nwrote {written[0]}, {written[1]} and {len(main_result['predictions'])} predictions "
        f"under {out / 'predictions'}"
    )
    print(f"total runtime {time.perf_counter() - start:.1f} s")
