"""``agcl evaluate``: score any segmenter's label maps against ground truth, with agcl's metrics.

Dice, HD95 and ASSD per organ and case (docs/metrics.md: a missed organ has an infinite
distance and counts as missed; an organ absent from a case's ground truth is left out of its
means, and predicting it there counts as a false positive), in ``results.json`` and
``results.md`` in ``--out`` (the same keys as a run's: ``per_organ``, ``mean``; plus ``cases``).
Predictions and ground truths are matched by case id (the file name without ``.nii.gz``/``.nii``
and without BTCV's ``img``/``label`` prefix); every prediction needs its ground truth, and
predictions and ground truths must share a grid.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path
from typing import Any

from agcl.cli._common import UserError, user_errors

__all__ = ["build_parser", "label_files", "main", "match_cases"]

EPILOG = """\
examples:
  agcl evaluate --pred runs/btcv_full/predictions --gt contrast=/data/ce/labelsTr \\
      --gt non-contrast=/data/nce/labelsTr --out eval/
  agcl evaluate --pred nnunet_out/ --gt /data/nnUNet_raw/Dataset017_BTCV/labelsTr --out eval/
  agcl evaluate --pred totalseg_out/ --gt /data/BTCV/RawData/Training/label \\
      --labels totalseg_to_btcv.json --out eval/

--gt DIR, or MODALITY=DIR (repeatable): the ground truths of folder DIR get ids <MODALITY>_<id>,
as a run names its predictions (<modality>_<case>.nii.gz). --labels maps another segmenter's
label codes to BTCV's ({"their_code": btcv_code}, see the TotalSegmentator table in
docs/pipeline.md); codes it does not name become background (listed in a warning). --organs
restricts the scores to some organs (names or BTCV codes).

exit status: 0 done; 2 a usage or input error (a prediction without its ground truth, grids
that differ, an unreadable file: the message names it).
"""

_PREFIX = re.compile(r"^(img|label)(?=\d)")


def _id(path: Path) -> str:
    from agcl.cli.predict import case_id

    return _PREFIX.sub("", case_id(path))


def label_files(folder: Path, modality: str | None = None) -> dict[str, Path]:
    """``{case id: path}`` of the NIfTI files in ``folder`` (ids prefixed ``<modality>_``).

    Raises:
        UserError: no such folder, no NIfTI file, two files with one id.
    """
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder of label maps")
    out: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name.endswith((".nii", ".nii.gz")):
            key = f"{modality}_{_id(f)}" if modality else _id(f)
            if key in out:
                raise UserError(f"{out[key]} and {f} have the same case id {key!r}")
            out[key] = f
    if not out:
        raise UserError(f"{folder} holds no NIfTI label map (.nii or .nii.gz)")
    return out


def match_cases(pred: dict[str, Path], gt: dict[str, Path]) -> list[tuple[str, Path, Path]]:
    """``[(case id, prediction, ground truth)]``; a prediction id also matches a ground truth
    whose id is its own without a ``<modality>_`` prefix, when that is unambiguous.

    Raises:
        UserError: predictions without ground truth (named).
    """
    out, missing = [], []
    for key, p in sorted(pred.items()):
        if key in gt:
            out.append((key, p, gt[key]))
            continue
        tail = [g for g in gt if key.endswith(f"_{g}")]
        if len(tail) == 1:
            out.append((key, p, gt[tail[0]]))
        else:
            missing.append(str(p))
    if missing:
        raise UserError(
            f"{len(missing)} prediction(s) have no ground truth with their case id: "
            f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}; the ground truths' "
            f"ids are {', '.join(sorted(gt)[:8])}{' ...' if len(gt) > 8 else ''}"
        )
    return out


def build_parser(prog: str = "agcl evaluate") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split(": ", 1)[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--pred", required=True, metavar="DIR", help="the predicted label maps")
    ap.add_argument(
        "--gt",
        required=True,
        action="append",
        metavar="[MODALITY=]DIR",
        help="the ground-truth label maps (repeatable)",
    )
    ap.add_argument(
        "--out", required=True, metavar="DIR", help="where results.json and results.md are written"
    )
    ap.add_argument(
        "--labels",
        default=None,
        metavar="MAP.json",
        help="{their_code: btcv_code} translating the predictions' codes to BTCV's",
    )
    ap.add_argument(
        "--organs",
        nargs="+",
        default=None,
        metavar="ORGAN",
        help="score only these organs (BTCV names or codes; default: every organ of the ground "
        "truth)",
    )
    ap.add_argument(
        "--overwrite", action="store_true", help="replace results.json/results.md in --out"
    )
    return ap


def _organs(items: list[str] | None) -> dict[int, str]:
    from agcl.data import BTCV_ORGAN_CODES, BTCV_ORGANS

    if not items:
        return dict(BTCV_ORGANS)
    out = {}
    for item in items:
        if item.isdigit() and int(item) in BTCV_ORGANS:
            out[int(item)] = BTCV_ORGANS[int(item)]
        elif item in BTCV_ORGAN_CODES:
            out[BTCV_ORGAN_CODES[item]] = item
        else:
            raise UserError(
                f"--organs: {item!r} is no BTCV organ; the organs are "
                + ", ".join(f"{c} {n}" for c, n in sorted(BTCV_ORGANS.items()))
            )
    return out


def main(argv: list[str] | None = None) -> int:
    """``agcl evaluate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return user_errors("evaluate", lambda: _main(args))


def evaluate_folders(
    pred_dir: Path,
    gts: list[str],
    *,
    labels: str | None = None,
    organs: dict[int, str] | None = None,
) -> dict[str, Any]:
    """Score the label maps of ``pred_dir`` against the ground truths (see :func:`main`); returns
    ``{"per_organ", "mean", "cases"}`` (``cases``: one table per case id)."""
    import warnings

    import numpy as np

    from agcl.data import BTCV_ORGANS, load_coarse_labels, load_volume, remap_labels
    from agcl.metrics import evaluate_labels, summarize_cases

    gt: dict[str, Path] = {}
    for item in gts:
        modality, sep, folder = item.partition("=")
        files = label_files(Path(folder), modality) if sep else label_files(Path(item))
        clash = set(files) & set(gt)
        if clash:
            raise UserError(
                f"--gt folders share the case ids {sorted(clash)[:5]}; give them MODALITY= prefixes"
            )
        gt.update(files)
    pairs = match_cases(label_files(pred_dir), gt)
    mapping = load_coarse_labels(labels) if labels else None
    names = organs or dict(BTCV_ORGANS)
    tables, cases, unmapped = [], {}, set()
    for key, p, g in pairs:
        pv, gv = load_volume(p, kind="label"), load_volume(g, kind="label")
        if pv.shape != gv.shape or not np.allclose(pv.affine, gv.affine, atol=1e-3):
            raise UserError(
                f"{p} and {g} are not on one grid: shapes {pv.shape} and {gv.shape}, affines "
                f"differ by {abs(pv.affine - gv.affine).max():.4g} mm"
            )
        pred = pv.array
        if mapping is not None:
            pred, missing = remap_labels(pred, mapping)
            unmapped |= missing
        table = evaluate_labels(pred, gv.array, spacing=gv.spacing, organs=names)
        tables.append(table)
        cases[key] = table
    if unmapped:
        warnings.warn(
            f"--labels maps no BTCV organ to the codes {sorted(unmapped)} found in the "
            "predictions; they were scored as background (map a code to 0 to silence this)",
            UserWarning,
            stacklevel=2,
        )
    summary = summarize_cases(tables)
    return {
        "per_organ": summary["per_organ"],
        "mean": summary["mean"],
        "cases": cases,
        "pairs": [{"case": k, "pred": str(p), "gt": str(g)} for k, p, g in pairs],
    }


def _main(args: argparse.Namespace) -> int:
    from agcl._atomic import write_json, write_text
    from agcl.metrics import format_table
    from agcl.pipeline import results_entry

    start = time.perf_counter()
    out = Path(args.out)
    existing = [p for p in (out / "results.json", out / "results.md") if p.exists()]
    if existing and not args.overwrite:
        raise UserError(
            f"--out {out} already holds {', '.join(map(str, existing))}; pass --overwrite to "
            "replace them, or choose another --out"
        )
    result = evaluate_folders(
        Path(args.pred), args.gt, labels=args.labels, organs=_organs(args.organs)
    )
    entry = results_entry(
        {
            **result,
            "config": {
                "pred": args.pred,
                "gt": args.gt,
                "labels": args.labels,
                "organs": args.organs,
            },
        },
        time.perf_counter() - start,
    )
    entry["cases"] = {
        k: results_entry({**t, "config": {}}, 0.0)["per_organ"] for k, t in result["cases"].items()
    }
    entry["pairs"] = result["pairs"]
    write_json(out / "results.json", entry)
    table = format_table({"per_organ": result["per_organ"], "mean": result["mean"]})
    write_text(
        out / "results.md",
        f"# agcl evaluate\n\n{len(result['pairs'])} cases: predictions {args.pred}, "
        f"ground truth {', '.join(args.gt)}.\n\n{table}\n",
    )
    print(table)
    print(f"wrote {out / 'results.json'} and {out / 'results.md'} ({len(result['pairs'])} cases)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
