"""Volumes and datasets: NIfTI loading in RAS, BTCV discovery, preprocessing, cohorts.

``agcl.data.synthetic`` (a submodule, imported on its own) generates abdominal CT phantoms in
the BTCV layout. This subpackage imports nibabel and scipy; ``import agcl`` does not load it.
"""

from __future__ import annotations

from agcl.data.btcv import (
    BTCV_ORGAN_CODES,
    BTCV_ORGAN_NAMES,
    BTCV_ORGANS,
    Case,
    check_label_codes,
    discover_btcv,
    load_case,
    load_datalist,
)
from agcl.data.cache import VolumeCache, nbytes_of
from agcl.data.cohort import Cohort, build_cohort
from agcl.data.nifti import Volume, load_volume, save_like
from agcl.data.prepared import PreparedCase, PreparedCases, prepare_case, resample
from agcl.data.preprocessing import (
    HU_WINDOW,
    PERCENTILES,
    clip_hu,
    percentile_normalize,
    preprocess_ct,
)

__all__ = [
    "BTCV_ORGANS",
    "BTCV_ORGAN_CODES",
    "BTCV_ORGAN_NAMES",
    "HU_WINDOW",
    "PERCENTILES",
    "Case",
    "Cohort",
    "PreparedCase",
    "PreparedCases",
    "Volume",
    "VolumeCache",
    "build_cohort",
    "check_label_codes",
    "clip_hu",
    "discover_btcv",
    "load_case",
    "load_datalist",
    "load_volume",
    "nbytes_of",
    "percentile_normalize",
    "prepare_case",
    "preprocess_ct",
    "resample",
    "save_like",
]
