"""What the frozen encoder of a finished CT run knows, and whether stage 3 uses it.

For each run folder (``agcl train --out``) it rebuilds the run's training and held-out cases
from ``run.json`` and reports:

* the encoder probe (k-NN and linear-probe accuracy of organ, modality and (modality, organ),
  organ silhouette; :mod:`agcl.pipeline.domains.probe`) of the run's frozen encoder, and the same
  for ``--random-seeds K`` randomly initialised encoders of the same architecture (the baseline
  any pre-training must beat);
* the same probe of :class:`IntensityQuantiles`, a hand-made feature of each patch's intensity
  distribution with nothing learnt (how much the data give away by intensity alone);
* with ``--ablate``, the held-out mean Dice of stage 3 alone (``coarse_weight = 0``) and blended
  when, at inference, the encoder's features are replaced by zeros (does the decoder use them?),
  the encoder by a random one (does it need *these* features?), or the image channel by zeros
  (does the attention channel carry the segmentation by itself?);
* with ``--curve E``, stage 2 retrained for ``E`` epochs on the run's training cases (the run's
  settings and attention), the probe after every epoch (is stage 2 long enough?).

    python benchmarks/bench_representation.py runs/btcv_full --random-seeds 3 --ablate
    python benchmarks/bench_representation.py runs/abl/ablation/none runs/abl --curve 12

Writes ``representation.json`` and ``representation.md`` into ``--out`` (default: the current
folder; never into a run folder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import agcl.data as adata
from agcl._atomic import write_json, write_text
from agcl.pipeline import PipelineConfig, load_segment_model
from agcl.pipeline.domains.probe import probe_domain

DIAGNOSES = ("trained", "zero_features", "random_encoder", "zero_image")


def _cases(records: list[dict[str, Any]]) -> list[tuple[Any, int]]:
    modalities: list[str] = []
    out = []
    for r in records:
        if r["modality"] not in modalities:
            modalities.append(r["modality"])
        label = None if r.get("label") is None else Path(r["label"]["path"])
        out.append(
            (
                adata.Case(r["case_id"], Path(r["image"]["path"]), label, r["modality"]),
                modalities.index(r["modality"]),
            )
        )
    return out


def load_cases(run: Path) -> tuple[list[tuple[Any, int]], list[tuple[Any, int]], PipelineConfig]:
    """``(train, test, config)`` of a finished run, from its ``run.json``."""
    manifest = json.loads((run / "run.json").read_text())
    segment = manifest.get("stages", {}).get("segment")
    if not segment or not segment.get("complete") or "evaluation" not in manifest:
        raise SystemExit(
            f"{run} holds no finished run (run.json without a complete stage 3 and its evaluation)"
        )
    names = [r["modality"] for r in segment["inputs"]["cases"]]
    order = list(dict.fromkeys(names + [r["modality"] for r in manifest["evaluation"]["cases"]]))
    train, test = _cases(segment["inputs"]["cases"]), _cases(manifest["evaluation"]["cases"])
    # one modality numbering for both (first appearance over train, then test)
    train = [(c, order.index(c.modality)) for c, _ in train]
    test = [(c, order.index(c.modality)) for c, _ in test]
    return train, test, PipelineConfig.from_dict(manifest["evaluation"]["config"])


class _ZeroFeatures(nn.Module):
    """An encoder whose feature maps are all zeros (same shapes)."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.inner = encoder

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.zeros_like(f) for f in self.inner.forward_features(x)]


class IntensityQuantiles(nn.Module):
    """A hand-made, untrained "encoder": quantiles of the image channel, nothing learnt.

    ``forward_features(x)`` returns one ``(N, 2 q, 1, 1)`` map: ``q`` quantiles (evenly spaced
    in [0.05, 0.95]) of the image channel (``x[:, 0]``) over the whole patch, and ``q`` over its
    central quarter (stage-2 patches are centred on a voxel inside the organ's attention), each
    minus the patch's median, and the median itself. Probed like an encoder, it measures how much
    of (modality, organ) a patch's intensity distribution gives away with no learning at all: if
    it matches a trained encoder, the data hold little beyond intensity for the encoder to learn.
    """

    def __init__(self, quantiles: int = 8) -> None:
        super().__init__()
        self.register_buffer("q", torch.linspace(0.05, 0.95, quantiles))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        img = x[:, 0].float()
        h, w = img.shape[-2:]
        centre = img[:, h // 4 : h - h // 4, w // 4 : w - w // 4]
        whole = torch.quantile(img.flatten(1), self.q, dim=1).T
        inner = torch.quantile(centre.flatten(1), self.q, dim=1).T
        median = img.flatten(1).median(dim=1).values[:, None]
        feats = torch.cat([whole - median, inner - median, median], dim=1)
        return [feats[:, :, None, None]]


class _ZeroImage(nn.Module):
    """The model with the image channels of its input set to 0 (the attention channel kept)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        x[:, :-1] = 0.0
        return self.model(x)


def _random_encoder(config: PipelineConfig, seed: int) -> nn.Module:
    from agcl.pipeline import build_encoder

    torch.manual_seed(seed)
    return build_encoder(config).eval()


def _domain(run: Path, device: str) -> Any:
    from agcl.pipeline.domains.ct import CTDomain

    train, test, config = load_cases(run)
    domain = CTDomain(train, test, config)
    domain.use_coarse_maps(run / "coarse")
    return domain, config


def _dice(
    domain: Any, model: nn.Module, config: PipelineConfig, device: str
) -> dict[str, float | None]:
    from agcl.metrics import evaluate_labels, summarize_cases
    from agcl.pipeline.segment import segment_as_configured

    names = {k: domain.names[k] for k in domain.organ_ids}
    blended, alone = [], []
    for i in range(len(domain.test_cases)):
        case = domain.test_cases[i]
        prob, ids = domain.coarse.probabilities(case)
        sparse = domain.coarse(case, probabilities=(prob, ids))
        pred, only = segment_as_configured(
            model,
            case.image,
            sparse,
            domain.organ_ids,
            config,
            device=device,
            coarse_probability=prob,
            coarse_ids=ids,
            unblended=True,
        )
        blended.append(evaluate_labels(pred, case.label, spacing=case.spacing, organs=names))
        alone.append(evaluate_labels(only, case.label, spacing=case.spacing, organs=names))
    return {
        "blended": summarize_cases(blended)["mean"]["dice"],
        "stage3_only": summarize_cases(alone)["mean"]["dice"],
    }


def _probe(
    domain: Any, encoder: nn.Module, config: PipelineConfig, device: str
) -> dict[str, Any] | None:
    return probe_domain(domain, encoder, config, device=device)


def _curve(
    run: Path, domain: Any, config: PipelineConfig, epochs: int, device: str, out: Path
) -> list[dict]:
    """Stage 2 retrained (the run's settings) for ``epochs``; the probe after every epoch."""
    from agcl.data import VolumeCache
    from agcl.pipeline import build_pretrain_model, pretrain_encoder

    cfg = config.override(**{"pretrain.epochs": epochs})
    if cfg.pretrain.method == "none":
        raise SystemExit(
            f"{run} was trained without pre-training (method none): no stage 2 to repeat"
        )
    model = build_pretrain_model(
        cfg, num_modalities=domain.num_modalities, num_organs=len(domain.organ_ids)
    )
    rows: list[dict] = []

    def after_epoch(stage: str, epoch: int, record: dict) -> None:
        probe = _probe(domain, model.encoder, cfg, device)
        rows.append({"epoch": epoch, "loss": record["loss"], "probe": probe})
        print(
            f"  epoch {epoch}: loss {record['loss']:.4f}, k-NN (modality, organ) "
            f"{probe['knn']['modality_organ']:.3f}"
            if probe
            else f"  epoch {epoch}: no probe",
            flush=True,
        )

    volumes = domain.training_volumes(VolumeCache(cfg.data.cache_mb * 2**20))
    pretrain_encoder(
        volumes,
        cfg,
        domain.organ_ids,
        out / f"curve_{run.name}",
        num_modalities=domain.num_modalities,
        model=model,
        device=device,
        callback=after_epoch,
    )
    return rows


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="finished CT run folders")
    ap.add_argument(
        "--random-seeds",
        type=int,
        default=3,
        help="random encoders probed as the baseline (default 3)",
    )
    ap.add_argument(
        "--ablate", action="store_true", help="held-out Dice with the encoder or image taken away"
    )
    ap.add_argument(
        "--curve",
        type=int,
        default=0,
        metavar="E",
        help="retrain stage 2 for E epochs, probe each epoch",
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--out", type=Path, default=Path("."), help="where representation.json/.md go (default: .)"
    )
    args = ap.parse_args(argv)
    if args.random_seeds < 0 or args.curve < 0:
        ap.error("--random-seeds and --curve must be >= 0")
    report: dict[str, Any] = {"runs": {}, "argv": sys.argv[1:] if argv is None else list(argv)}
    t0 = time.perf_counter()
    for run in args.runs:
        out, root = args.out.resolve(), run.resolve()
        if out == root or root in out.parents:
            ap.error(f"--out {args.out} lies inside the run folder {run}: give another folder")
        domain, config = _domain(run, args.device)
        model, _, _ = load_segment_model(run / "checkpoints" / "segment.pt", args.device)
        entry: dict[str, Any] = {
            "method": config.pretrain.method,
            "seed": config.seed,
            "probe": _probe(domain, model.encoder, config, args.device),
        }
        entry["random"] = [
            _probe(domain, _random_encoder(config, 1000 + s), config, args.device)
            for s in range(args.random_seeds)
        ]
        entry["intensity"] = _probe(domain, IntensityQuantiles(), config, args.device)
        if args.ablate:
            variants = {
                "trained": model,
                "zero_features": model,
                "random_encoder": model,
                "zero_image": _ZeroImage(model),
            }
            dice = {}
            for name in DIAGNOSES:
                m = variants[name]
                keep = model.encoder
                if name == "zero_features":
                    model.encoder = _ZeroFeatures(keep)
                elif name == "random_encoder":
                    model.encoder = _random_encoder(config, 2024)
                try:
                    dice[name] = _dice(domain, m, config, args.device)
                finally:
                    model.encoder = keep
            entry["dice"] = dice
        if args.curve:
            entry["curve"] = _curve(run, domain, config, args.curve, args.device, args.out)
        report["runs"][str(run)] = entry
        p = entry["probe"] or {}
        print(
            f"{run}: {entry['method']} probe k-NN (modality, organ) "
            f"{_fmt((p.get('knn') or {}).get('modality_organ'))}"
            " | random "
            f"{[_fmt((r or {}).get('knn', {}).get('modality_organ')) for r in entry['random']]}",
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "representation.json", report)
    lines = [
        "# Encoder representation",
        "",
        f"`{' '.join(report['argv'])}` ({report['seconds']} s)",
        "",
        "| run | method | k-NN organ | k-NN modality | k-NN (mod, organ) | linear (mod, organ) "
        "| silhouette | random k-NN (mod, organ) "
        "| intensity quantiles k-NN / linear (mod, organ) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run, e in report["runs"].items():
        p = e["probe"] or {"knn": {}, "linear": {}}
        it = e.get("intensity") or {"knn": {}, "linear": {}}
        rnd = ", ".join(_fmt((r or {}).get("knn", {}).get("modality_organ")) for r in e["random"])
        lines.append(
            f"| {run} | {e['method']} | {_fmt(p['knn'].get('organ'))} | "
            f"{_fmt(p['knn'].get('modality'))} | {_fmt(p['knn'].get('modality_organ'))} | "
            f"{_fmt(p['linear'].get('modality_organ'))} | {_fmt(p.get('silhouette'))} | {rnd} | "
            f"{_fmt(it['knn'].get('modality_organ'))} / "
            f"{_fmt(it['linear'].get('modality_organ'))} |"
        )
    if any("dice" in e for e in report["runs"].values()):
        lines += [
            "",
            "| run | " + " | ".join(f"{d} (blended / alone)" for d in DIAGNOSES) + " |",
            "|---|" + "---|" * len(DIAGNOSES),
        ]
        for run, e in report["runs"].items():
            if "dice" in e:
                lines.append(
                    f"| {run} | "
                    + " | ".join(
                        f"{_fmt(e['dice'][d]['blended'])} / {_fmt(e['dice'][d]['stage3_only'])}"
                        for d in DIAGNOSES
                    )
                    + " |"
                )
    write_text(args.out / "representation.md", "\n".join(lines) + "\n")
    print(f"wrote {args.out / 'representation.json'} and {args.out / 'representation.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
