"""A finished demo run evaluated on more held-out phantoms than the demo's two.

The demo's split holds out two phantoms, too few to tell two settings apart or to see how often
an organ is missed. This script takes a run folder of ``agcl train`` (or ``examples/btcv_full.py``,
which calls it; its stage-1 and stage-3 checkpoints), writes ``--extra-cases N`` more phantoms per
modality that no split trains on (cases after the demo's, same seed; see
``bench_coarse.extra_cases``) and scores the run on them exactly as the run scores its own
held-out cases: the coarse probabilities (float16, as the run stores them) and their label map,
the attention (the checkpoint's threshold, margin and channel), stage 3 with the coarse blend,
and the metrics of ``agcl.metrics.evaluate_labels``. It prints per organ the mean Dice of the
final and of the coarse maps, the cases where the organ was missed and the lowest attention
recall, and writes ``heldout_eval.json`` into ``--out`` (default: ``<run>_heldout`` next to the
run folder, or next to the outermost run folder holding it, e.g. an ablation's sub-run):

    agcl train --out /tmp/run
    python benchmarks/bench_heldout.py --run /tmp/run --extra-cases 10   # /tmp/run_heldout/

The run folder is only read (it belongs to its run: an ``--out`` inside it is refused), and a
run whose ``run.json`` does not record stages 1 and 3 as finished is refused.
``--include-demo`` adds the demo's own held-out cases. ``--set segment.coarse_weight=0.6`` (and
the other inference-only fields: ``segment.threshold``, ``segment.stride``, ``segment.window``)
re-scores the same checkpoints with another fusion.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_coarse  # noqa: E402

from agcl.cli import train as cli  # noqa: E402
from agcl.data import BTCV_ORGANS, PreparedCases  # noqa: E402
from agcl.metrics import evaluate_labels, summarize_cases  # noqa: E402
from agcl.pipeline import (  # noqa: E402
    coarse_probabilities,
    labels_from_probabilities,
    load_coarse,
    load_segment_model,
)
from agcl.pipeline.run import MANIFEST, Manifest  # noqa: E402
from agcl.pipeline.segment import segment_as_configured  # noqa: E402
from agcl.sampling import attention_from_probabilities, attention_recall  # noqa: E402

INFERENCE_FIELDS = (
    "segment.coarse_weight",
    "segment.threshold",
    "segment.stride",
    "segment.window",
)


def score_cases(run: Path, cases, *, overrides: dict, device: str = "cpu") -> list[dict]:
    """Per case ``{"case", "final", "coarse", "recall"}``: the final and coarse per-organ tables
    of :func:`agcl.metrics.evaluate_labels` and the attention recall per organ code. ``cases``
    carry their body mask (``PreparedCases(..., body=True)``) when the run bounds its attention
    by it (``coarse.body_mask``), as :func:`main` prepares them."""
    model, organ_ids, config = load_segment_model(run / "checkpoints" / "segment.pt", device)
    config = config.override(**overrides) if overrides else config
    coarse_model, coarse_ids, coarse_cfg = load_coarse(run / "checkpoints" / "coarse.pt", device)
    # trained as the checkpoint says, predicted with the run's sliding-window overlap
    coarse_cfg = coarse_cfg.override(**{"coarse.overlap": config.coarse.overlap})
    c = config.coarse
    names = {k: BTCV_ORGANS[k] for k in organ_ids}
    rows = []
    for i in range(len(cases)):
        case = cases[i]
        full = coarse_probabilities(
            coarse_model, case.image, coarse_cfg.coarse, spacing=case.spacing, device=device
        )
        # the run writes the label map from these and stores them as float16, then builds the
        # attention and the blend from the stored ones
        coarse_labels = labels_from_probabilities(full, coarse_ids, case.image.shape)
        prob = full.half().float()
        att = attention_from_probabilities(
            prob,
            coarse_ids,
            case.image.shape,
            spacing=case.spacing,
            margin_mm=c.margin_mm,
            threshold=c.attention_threshold,
            channel=c.attention_channel,
            body=case.body,
        )
        pred = segment_as_configured(
            model,
            case.image,
            att,
            organ_ids,
            config,
            device=device,
            coarse_probability=prob,
            coarse_ids=coarse_ids,
        )
        rows.append(
            {
                "case": f"{case.modality_name}_{case.case_id}",
                "final": evaluate_labels(pred, case.label, spacing=case.spacing, organs=names),
                "coarse": evaluate_labels(
                    coarse_labels, case.label, spacing=case.spacing, organs=names
                ),
                "recall": attention_recall(att, case.label, organ_ids),
            }
        )
    return rows


def summarize(rows: list[dict]) -> dict:
    """Per organ: mean final and coarse Dice, cases missed, lowest recall; and the means."""
    final = summarize_cases([r["final"] for r in rows])
    coarse = summarize_cases([r["coarse"] for r in rows])
    organs = {}
    for name, entry in final["per_organ"].items():
        code = next(k for k, v in BTCV_ORGANS.items() if v == name)
        recalls = [r["recall"][code] for r in rows if r["recall"].get(code) is not None]
        organs[name] = {
            "dice": entry["dice"],
            "coarse_dice": coarse["per_organ"][name]["dice"],
            "missed": entry.get("missed"),
            "min_recall": min(recalls) if recalls else None,
        }
    return {
        "cases": len(rows),
        "mean_dice": final["mean"]["dice"],
        "coarse_mean_dice": coarse["mean"]["dice"],
        "missed": final["mean"].get("missed"),
        "per_organ": organs,
    }


def outermost_run(run: Path) -> Path:
    """The outermost run folder holding ``run`` (``run`` itself unless it is a sub-run, such as
    an ablation's ``<out>/ablation/<method>``, inside a folder with its own manifest)."""
    top = run.resolve()
    for parent in top.parents:
        if (parent / MANIFEST).is_file():
            top = parent
    return top


def default_out(run: Path) -> Path:
    """``<run>_heldout`` next to the run folder; for a sub-run, the same relative place under
    ``<outermost run>_heldout`` (never inside a run folder).

    Examples:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> default_out(root / "run") == root / "run_heldout"
        True
    """
    top, resolved = outermost_run(run), run.resolve()
    return top.parent / f"{top.name}_heldout" / resolved.relative_to(top)


def unfinished_stages(run: Path) -> list[str]:
    """The stages (``coarse``, ``segment``) that ``run``'s manifest does not record as finished;
    ``[]`` for a run written before manifests existed (its checkpoints are all there is).

    Raises:
        ValueError: a ``run.json`` that is not a run manifest (its path named).
    """
    path = run / MANIFEST
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ValueError(f"{path} is not a readable run manifest ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise ValueError(f"{path} does not hold a run manifest (a JSON object with 'stages')")
    manifest = Manifest(data)
    return [s for s in ("coarse", "segment") if not (manifest.stage(s) or {}).get("complete")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run",
        required=True,
        type=Path,
        help="a finished run folder of agcl train (examples/btcv_full.py)",
    )
    ap.add_argument(
        "--extra-cases",
        type=int,
        default=10,
        metavar="N",
        help="phantoms per modality that no split trains on (default: %(default)s)",
    )
    ap.add_argument(
        "--include-demo", action="store_true", help="also score the demo's own held-out cases"
    )
    ap.add_argument(
        "--seed", type=int, default=0, help="the run's --seed (its phantoms; default: 0)"
    )
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="where the extended phantom set is written (default: agcl train's cache)",
    )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override an inference-only field ({', '.join(INFERENCE_FIELDS)})",
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=None,
        help="where heldout_eval.json goes (default: <run>_heldout next to the run "
        "folder; never inside it)",
    )
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    if a.extra_cases < 0:
        ap.error(f"--extra-cases must be >= 0; got {a.extra_cases}")
    overrides = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep or key not in INFERENCE_FIELDS:
            ap.error(
                f"--set takes one of {', '.join(INFERENCE_FIELDS)} as KEY=JSON; got {item!r} "
                "(the other fields are fixed by the run's checkpoints)"
            )
        overrides[key] = json.loads(value)
    for name in ("segment.pt", "coarse.pt"):
        if not (a.run / "checkpoints" / name).is_file():
            ap.error(
                f"{a.run / 'checkpoints' / name} not found: --run must be a finished run "
                "with its own stage 1"
            )
    try:
        unfinished = unfinished_stages(a.run)
    except ValueError as err:
        ap.error(str(err))
    if unfinished:
        ap.error(
            f"{a.run / MANIFEST} records stage(s) {', '.join(unfinished)} as not finished; "
            "finish the run first (agcl train --resume with its --out)"
        )
    top = outermost_run(a.run)
    out_dir = (a.out or default_out(a.run)).resolve()
    if out_dir == top or top in out_dir.parents:
        ap.error(
            f"--out {a.out} lies inside the run folder {top}, which belongs to its run; "
            "choose a folder outside it"
        )
    args = cli.parse_args(["--seed", str(a.seed)])
    _, _, cfg_run = load_segment_model(a.run / "checkpoints" / "segment.pt")
    # the body mask bounds the attention at inference, as the run's own evaluation does
    kw = {
        "clip_hu": cfg_run.clip_hu,
        "percentiles": cfg_run.percentiles,
        "organs": dict(BTCV_ORGANS),
        "body": cfg_run.coarse.body_mask,
    }
    try:
        pairs = bench_coarse.extra_cases(args, a.extra_cases, a.cache_dir) if a.extra_cases else []
        if a.include_demo:
            pairs = list(cli.load_cohorts(args)[1]) + pairs
    except cli.UserError as err:
        ap.error(str(err))
    if not pairs:
        ap.error("nothing to score: give --extra-cases N > 0 or --include-demo")
    cases = PreparedCases([c for c, _ in pairs], [m for _, m in pairs], **kw)
    t0 = time.perf_counter()
    rows = score_cases(a.run, cases, overrides=overrides, device=a.device)
    summary = summarize(rows)
    print(
        f"{summary['cases']} held-out phantoms, {time.perf_counter() - t0:.0f} s; run {a.run}"
        + (f"; {overrides}" if overrides else "")
    )
    print(f"{'organ':26s} {'Dice':>6s} {'coarse':>6s} {'missed':>6s} {'min recall':>10s}")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for name, o in summary["per_organ"].items():
        print(
            f"{name:26s} {fmt(o['dice']):>6s} {fmt(o['coarse_dice']):>6s} "
            f"{o['missed'] or 0:6d} {fmt(o['min_recall']):>10s}"
        )
    print(
        f"{'mean':26s} {fmt(summary['mean_dice']):>6s} {fmt(summary['coarse_mean_dice']):>6s} "
        f"{summary['missed'] or 0:6d}"
    )
    out = out_dir / "heldout_eval.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    per_case = [
        {"case": r["case"], "dice": {k: v["dice"] for k, v in r["final"]["per_organ"].items()}}
        for r in rows
    ]
    out.write_text(
        json.dumps(
            {
                "summary": summary,
                "overrides": overrides,
                "threads": torch.get_num_threads(),
                "cases": per_case,
            },
            indent=1,
            default=float,
        )
    )
    print(f"wrote {out}")
    return 0 if summary["mean_dice"] is not None and np.isfinite(summary["mean_dice"]) else 1


if __name__ == "__main__":
    sys.exit(main())
