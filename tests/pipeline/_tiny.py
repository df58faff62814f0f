"""A tiny synthetic cohort and config so the whole pipeline runs in seconds in tests."""

from __future__ import annotations

from pathlib import Path

import agcl.data as adata
from agcl.data.synthetic import write_btcv_like
from agcl.pipeline import PipelineConfig

TINY_SHAPE = (48, 48, 12)
TINY_SPACING = (7.3, 7.3, 16.0)

#: ``agcl train``'s built-in phantoms at the tiny size (two per modality)
TINY_DATA_ARGS = [
    "--n-cases",
    "2",
    "--synthetic-shape",
    *(str(n) for n in TINY_SHAPE),
    "--synthetic-spacing",
    *(str(s) for s in TINY_SPACING),
]
#: ``agcl train`` settings of :func:`tiny_config`'s size (a run takes seconds), ground-truth
#: attention, figures drawn
TINY_RUN_ARGS = [
    "--attention",
    "gt",
    "--coarse-epochs",
    "2",
    "--epochs",
    "1",
    *(
        item
        for field in (
            "organs=[1,6,7]",
            "coarse.spacing_mm=[21.9,21.9,24]",
            "coarse.crop_shape=[12,12,8]",
            "coarse.base_channels=2",
            "coarse.depth=1",
            "pretrain.base_width=4",
            "pretrain.patch_size=16",
            "pretrain.patches_per_slice=1",
            "pretrain.max_patches_per_volume=12",
            "pretrain.batch_size=8",
            "segment.patches_per_slice=1",
            "segment.max_patches_per_volume=12",
            "segment.aspp_channels=8",
            "segment.stride=16",
        )
        for item in ("--set", field)
    ),
]
#: both: ``agcl train`` (and ``examples/btcv_full.py``) end to end in seconds
TINY_ARGS = [*TINY_DATA_ARGS, *TINY_RUN_ARGS]
#: ``agcl train-2d`` (and ``examples/voc_full.py``) on a few small synthetic scenes
TINY_2D_ARGS = [
    "--n-train",
    "6",
    "--n-val",
    "3",
    "--image-size",
    "48",
    "--coarse-epochs",
    "2",
    "--epochs",
    "1",
    "--set",
    "pretrain.patch_size=24",
    "--set",
    "pretrain.batch_size=16",
    "--set",
    "segment.batch_size=16",
    "--set",
    "segment.stride=24",
]


def tiny_cohort(root: Path):
    """Two cases per modality: case 0001 of each trains, case 0002 is held out."""
    written = write_btcv_like(root, 2, shape=TINY_SHAPE, spacing=TINY_SPACING, seed=3)
    cohort = adata.build_cohort(written)
    pairs = list(cohort)
    train = [p for p in pairs if p[0].case_id == "0001"]
    test = [p for p in pairs if p[0].case_id == "0002"]
    return train, test


def tiny_config(**changes) -> PipelineConfig:
    base = PipelineConfig.quick().override(
        **{
            "organs": (1, 6, 7),
            # 21.9 x 21.9 x 24 mm voxels: the 48 x 48 x 12 phantoms become 16 x 16 x 8
            # (2 x 2 windows)
            "coarse.spacing_mm": (21.9, 21.9, 24.0),
            "coarse.crop_shape": (12, 12, 8),
            "coarse.shape": (16, 16, 8),
            "coarse.base_channels": 2,
            "coarse.depth": 1,
            "coarse.epochs": 2,
            "coarse.batch_size": 2,
            "pretrain.base_width": 4,
            "pretrain.patch_size": 16,
            "pretrain.patches_per_slice": 1,
            "pretrain.max_patches_per_volume": 12,
            "pretrain.epochs": 2,
            "pretrain.batch_size": 8,
            "pretrain.projection_dim": 8,
            "segment.patches_per_slice": 1,
            "segment.max_patches_per_volume": 12,
            "segment.aspp_channels": 8,
            "segment.epochs": 2,
            "segment.batch_size": 8,
            "segment.stride": 16,
            # float32 everywhere, so results do not depend on whether the CPU has bf16 kernels
            # (mixed precision has its own tests)
            "coarse.amp": "off",
            "pretrain.amp": "off",
            "segment.amp": "off",
        }
    )
    return base.override(**changes) if changes else base


def read_tiny_cohort(root: Path):
    """The ``(train, test)`` of :func:`tiny_cohort` read back from ``root`` (written there before),
    e.g. in a fresh process, without writing the files again."""
    pairs = list(
        adata.build_cohort(
            {m: adata.discover_btcv(root / m, modality=m) for m in ("contrast", "non-contrast")}
        )
    )
    train = [p for p in pairs if p[0].case_id == "0001"]
    return train, [p for p in pairs if p[0].case_id == "0002"]
