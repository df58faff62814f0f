"""Private: the cases of ``agcl train``: the ``--data-dir`` folders (BTCV, MONAI datalist or
nnU-Net raw layout) or the built-in synthetic phantoms, each cohort split into training and
held-out cases."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from agcl.cli._common import UserError

__all__ = ["load_cohorts", "synthetic_dataset"]


def synthetic_dataset(args: argparse.Namespace, *, quiet: bool = False) -> list[tuple[str, Path]]:
    """Write (once) and return the synthetic two-modality dataset: ``[(modality, folder)]``."""
    from agcl.data.synthetic import DEFAULT_SHAPE, DEFAULT_SPACING, ensure_btcv_like

    grid: dict[str, Any] = {}
    if args.synthetic_shape:
        grid["shape"] = tuple(args.synthetic_shape)
    if args.synthetic_spacing:
        grid["spacing"] = tuple(args.synthetic_spacing)
    tag = "".join(f"-{k}{'x'.join(f'{v:g}' for v in val)}" for k, val in grid.items())
    root = Path(
        args.cache_dir
        or Path.home() / ".cache" / "agcl" / f"phantoms-n{args.n_cases}-seed{args.seed}{tag}"
    )
    folders = ensure_btcv_like(
        root,
        args.n_cases,
        ("contrast", "non-contrast"),
        args.seed,
        shape=grid.get("shape", DEFAULT_SHAPE),
        spacing=grid.get("spacing", DEFAULT_SPACING),
        quiet=quiet,
    )
    return list(folders.items())


def _discover(path: Path, modality: str, labels: str | None) -> list[Any]:
    import agcl.data as adata

    if path.suffix == ".json" and path.is_file() and not adata.is_nnunet_dataset(path):
        if labels:
            raise UserError(
                "--labels maps the label names of an nnU-Net dataset; a datalist has BTCV codes"
            )
        return [
            adata.Case(c.case_id, c.image_path, c.label_path, modality)
            for c in adata.load_datalist(path)
        ]
    if adata.is_nnunet_dataset(path):
        return adata.discover_nnunet(path, split="train", modality=modality, labels=labels)
    if labels:
        raise UserError(
            f"--labels maps the label names of an nnU-Net dataset; {path} is a BTCV folder"
        )
    return adata.discover_btcv(path, modality=modality)


def load_cohorts(args: argparse.Namespace) -> tuple[list[Any], list[Any], list[str]]:
    """Discover every dataset and split each into train/test; returns ``(train, test, modality
    names)``."""
    import agcl.data as adata

    sources = (
        [
            (m, Path(d))
            for m, d in zip(args.modality or ["contrast"] * len(args.data_dir), args.data_dir)
        ]
        if args.data_dir
        else synthetic_dataset(args, quiet=True)
    )
    datasets = [(modality, _discover(path, modality, args.labels)) for modality, path in sources]
    try:
        cohort = adata.build_cohort(datasets)
    except ValueError as err:
        raise UserError(str(err)) from None
    train, test = [], []
    for name in cohort.modalities:
        pairs = [(c, m) for c, m in cohort if c.modality == name]
        if len(pairs) < 2:
            raise UserError(
                f"modality {name!r} has {len(pairs)} case(s); at least 2 are needed (train + test)"
            )
        n_test = min(len(pairs) - 1, max(1, math.ceil(len(pairs) * args.test_fraction)))
        train += pairs[: len(pairs) - n_test]
        test += pairs[len(pairs) - n_test :]
    return train, test, list(cohort.modalities)
