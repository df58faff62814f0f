"""Private: what ``agcl train-2d`` writes after its runs: ``results.json``/``.md`` (IoU per
class, stage 1 beside it, the ablation) and the figures (overlays, the embeddings' PCA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["fmt", "overlay_figure", "write_figures", "write_report"]


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write_report(
    out: Path, main: dict[str, Any], ablation: dict[str, Any] | None, notes: list[str]
) -> tuple[Path, Path]:
    """``results.json`` and ``results.md`` of a 2-D run (and its ablation)."""
    from agcl._atomic import write_json, write_text

    coarse = main["coarse"]
    payload: dict[str, Any] = {
        "mean": {"miou": main["mean"]["miou"], "coarse_miou": coarse["miou"]},
        "per_class": {
            n: {
                "iou": v["iou"],
                "coarse_iou": coarse["per_class"][n],
                "attention_recall": coarse["recall"].get(n),
            }
            for n, v in main["per_class"].items()
        },
        "method": main["method"],
        "runtime_s": main["total_runtime_s"],
        "notes": notes,
        "config": main["config"],
        "coarse2d": main["config"]["coarse2d"],
        "run_id": main.get("run_id"),
    }
    if ablation:
        payload["ablation"] = {
            m: {
                "miou": r["mean"]["miou"],
                "per_class": {n: v["iou"] for n, v in r["per_class"].items()},
                "runtime_s": r["runtime_s"],
            }
            for m, r in ablation.items()
        }
    json_path = write_json(out / "results.json", payload)
    lines = [
        "# 2-D pipeline results",
        "",
        *notes,
        "",
        "| class | IoU | stage-1 IoU | attention recall |",
        "|---|---|---|---|",
    ]
    for n, v in payload["per_class"].items():
        lines.append(
            f"| {n} | {fmt(v['iou'])} | {fmt(v['coarse_iou'])} | {fmt(v['attention_recall'])} |"
        )
    lines.append(
        f"| **mean** | **{fmt(payload['mean']['miou'])}** | "
        f"{fmt(payload['mean']['coarse_miou'])} | |"
    )
    if ablation:
        lines += [
            "",
            "## Pre-training ablation (mIoU, same stage 1)",
            "",
            "| pre-training | mIoU |",
            "|---|---|",
        ]
        lines += [f"| {m} | {fmt(r['mean']['miou'])} |" for m, r in ablation.items()]
    md_path = write_text(out / "results.md", "\n".join(lines) + "\n")
    return json_path, md_path


def overlay_figure(
    images: Any, masks: Any, preds: Any, ids: Any, path: Path, title: str
) -> Path | None:
    """Held-out images, ground truth and prediction side by side (VOC palette); ``None``
    without matplotlib."""
    from agcl.data import voc_palette
    from agcl.pipeline.report.figures import _matplotlib, _save

    mpl = _matplotlib()
    if mpl is None:
        return None
    pal = voc_palette()
    n = min(4, len(preds))
    fig = mpl.figure.Figure(figsize=(7.5, 2.5 * n))
    axes = fig.subplots(n, 3, squeeze=False)
    for r in range(n):
        for c, (arr, name) in enumerate(
            ((images[r], "image"), (pal[masks[r]], "ground truth"), (pal[preds[r]], "prediction"))
        ):
            ax = axes[r, c]
            ax.imshow(arr if c == 0 else images[r])
            if c:
                ax.imshow(arr, alpha=0.6, interpolation="nearest")
            ax.set_title(f"{ids[r]}: {name}", fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=100)


def write_figures(
    result: dict[str, Any], val: Any, names: list[str], run_dir: Path, method: str, device: str
) -> None:
    import numpy as np
    import torch

    import agcl.pipeline as pl
    from agcl.pipeline.run import RunFolder

    written = []
    ex = result["examples"]
    items = [val[i] for i in range(len(ex["preds"]))]
    written.append(
        overlay_figure(
            [im for im, _ in items],
            [m for _, m in items],
            ex["preds"],
            ex["ids"],
            run_dir / "fig_overlays.png",
            f"{method}: held-out images, ground truth vs prediction (mIoU "
            f"{fmt(result['mean']['miou'])})",
        )
    )
    pre = result["checkpoints"]["pretrain"]
    if pre is not None and method != "ce":
        from agcl.data.images2d import image_volume
        from agcl.sampling import AttentionPatchSampler

        cfg = pl.PipelineConfig.from_dict(result["config"])
        sampler = AttentionPatchSampler(
            patch_size=cfg.pretrain.patch_size, patches_per_slice=4, seed=0
        )
        batches = []
        for k, att in enumerate(result["attention"][:64]):
            if att:
                v = image_volume(val[k][0], att)
                batches.append(sampler.sample(v["image"], v["attention"], None, 0, volume_index=k))
        batches = [b for b in batches if len(b)]
        if batches:
            x = torch.cat([b.inputs() for b in batches])[:800]
            target = torch.cat([b.target for b in batches])[:800]
            emb = pl.embed_patches(pl.load_pretrain_model(pre, device), x, device=device)
            written.append(
                pl.plot_embeddings(
                    emb.numpy(),
                    target.numpy(),
                    np.zeros(len(target), int),
                    run_dir / "fig_embeddings_pca.png",
                    organ_names=dict(enumerate(names)),
                    modality_names=["rgb"],
                    title=f"PCA of projected embeddings ({method}, held-out patches)",
                )
            )
    RunFolder.open(run_dir, resume=True).own(*[p for p in written if p is not None], save=True)
