"""Stage 1 alone on the synthetic phantoms: held-out coarse Dice and per-organ attention recall.

Trains the coarse U-Net with a preset (``--preset quick`` by default) on the training split that
``examples/btcv_full.py`` uses (the same cached phantoms, same split), then prints, per organ,
the held-out coarse Dice (arg-max map on the full grid) and attention recall (the fraction of
the organ's voxels inside its attention: probability >= ``coarse.attention_threshold`` or its
most probable region, dilated by ``coarse.margin_mm``), and the training / prediction times.
Writes ``coarse_eval.json`` into ``--out``. Much cheaper than a whole pipeline run for comparing
stage-1 settings, e.g. the fixed-shape mode against the voxel-size mode:

    python benchmarks/bench_coarse.py --out /tmp/c_fixed --set coarse.spacing_mm=null --set coarse.batch_size=1
    python benchmarks/bench_coarse.py --out /tmp/c_mm
    python benchmarks/bench_coarse.py --out /tmp/c_mm --eval-only     # the latest checkpoint in --out

``--set`` takes the same ``section.field=JSON`` overrides as ``examples/btcv_full.py``.
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
sys.path.insert(0, str(ROOT / "examples"))

import btcv_full as example  # noqa: E402

import agcl.pipeline as pl  # noqa: E402
from agcl._io import safe_load  # noqa: E402
from agcl.data import BTCV_ORGANS, PreparedCases  # noqa: E402
from agcl.metrics import dice  # noqa: E402
from agcl.pipeline import stage1_coarse as s1  # noqa: E402
from agcl.pipeline._coarse_attention import attention_from_probabilities, attention_recall  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="run folder (checkpoints/coarse.pt, coarse_eval.json)")
    ap.add_argument("--preset", choices=("quick", "paper"), default="quick")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the checkpoint already in --out")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args(argv)
    args = example.parse_args(["--preset", a.preset] + sum((["--set", s] for s in a.set), []))
    train, test, _ = example.load_cohorts(args)
    cfg = example.make_config(args, "agcl")
    organ_ids = sorted(BTCV_ORGANS)
    kw = {"clip_hu": cfg.clip_hu, "percentiles": cfg.percentiles, "organs": dict(BTCV_ORGANS)}
    train_cases = PreparedCases([c for c, _ in train], [m for _, m in train], **kw)
    test_cases = PreparedCases([c for c, _ in test], [m for _, m in test], **kw)
    t0 = time.perf_counter()
    ckpt = Path(a.out) / "checkpoints" / "coarse.pt"
    if not a.eval_only:
        ckpt = pl.train_coarse(train_cases, cfg, organ_ids, a.out, device=a.device)
    train_s = time.perf_counter() - t0
    epoch = safe_load(ckpt)["epoch"]
    model, ids, loaded = s1.load_coarse(ckpt, a.device)
    c = loaded.coarse
    cases = {}
    t1 = time.perf_counter()
    for i in range(len(test_cases)):
        case = test_cases[i]
        prob = s1.coarse_probabilities(model, case.image, c, spacing=case.spacing, device=a.device).half().float()
        labels = s1.labels_from_probabilities(prob, ids, case.image.shape)
        att = attention_from_probabilities(prob, ids, case.image.shape, spacing=case.spacing,
                                           margin_mm=cfg.coarse.margin_mm, threshold=cfg.coarse.attention_threshold)
        recall = attention_recall(att, case.label, ids)
        cases[f"{case.modality_name}_{case.case_id}"] = {
            "grid": list(prob.shape[1:]),
            "dice": {BTCV_ORGANS[k]: dice(labels == k, case.label == k) if (case.label == k).any() else None
                     for k in ids},
            "recall": {BTCV_ORGANS[k]: v for k, v in recall.items()},
        }
    predict_s = time.perf_counter() - t1
    print(f"checkpoint epoch {epoch}/{c.epochs}; train {train_s:.1f} s, predict {predict_s:.1f} s "
          f"({len(cases)} held-out cases); coarse grids {[v['grid'] for v in cases.values()]}")
    print(f"{'organ':26s} {'dice':>6s} {'recall':>7s} {'min':>6s}")
    dices, recalls = [], []
    for k in ids:
        name = BTCV_ORGANS[k]
        d = [v["dice"][name] for v in cases.values() if v["dice"][name] is not None]
        r = [v["recall"][name] for v in cases.values() if v["recall"][name] is not None]
        if d:
            dices.append(float(np.mean(d)))
            recalls.append(float(np.mean(r)))
            print(f"{name:26s} {np.mean(d):6.3f} {np.mean(r):7.3f} {min(r):6.3f}")
    print(f"{'mean':26s} {np.mean(dices):6.3f} {np.mean(recalls):7.3f} {min(recalls):6.3f} (lowest organ)")
    out = {"epoch": epoch, "train_s": train_s, "predict_s": predict_s, "coarse": loaded.to_dict()["coarse"],
           "mean_dice": float(np.mean(dices)), "mean_recall": float(np.mean(recalls)),
           "min_recall": float(min(recalls)), "cases": cases, "threads": torch.get_num_threads()}
    path = Path(a.out) / ("coarse_eval_partial.json" if a.eval_only else "coarse_eval.json")
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
