"""Volumes and datasets: NIfTI loading in RAS, BTCV and nnU-Net discovery, body masks,
preprocessing, cohorts.

``agcl.data.synthetic`` (a submodule, imported on its own) generates abdominal CT phantoms in
the BTCV or the nnU-Net layout; ``agcl.data.synthetic2d`` 2-D scenes in the PASCAL VOC layout (read by
:class:`VOCSegmentation`; Pillow, the ``agcl[voc]`` extra, is imported only to read or write
images). This subpackage imports nibabel and scipy; ``import agcl`` does not load it.
"""

from __future__ import annotations

from agcl.data.body import body_mask
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
from agcl.data.images2d import IMAGE_MEAN, IMAGE_STD, ImageVolumes, image_tensor, image_volume
from agcl.data.labels import load_coarse_labels, remap_labels
from agcl.data.nifti import Volume, load_volume, save_like
from agcl.data.nnunet import btcv_code_of, discover_nnunet, is_nnunet_dataset, nnunet_label_map
from agcl.data.prepared import PreparedCase, PreparedCases, prepare_case, resample
from agcl.data.preprocessing import (
    HU_WINDOW,
    PERCENTILES,
    clip_hu,
    percentile_normalize,
    preprocess_ct,
)
from agcl.data.voc import (
    VOC_CLASSES,
    VOC_VOID,
    VOCSegmentation,
    find_voc_root,
    load_voc_image,
    load_voc_mask,
    read_voc_split,
    save_voc_mask,
    voc_palette,
)
from agcl.data.volumes import TrainingVolumes, case_stem, find_coarse_file

__all__ = [
    "BTCV_ORGANS",
    "BTCV_ORGAN_CODES",
    "BTCV_ORGAN_NAMES",
    "HU_WINDOW",
    "IMAGE_MEAN",
    "IMAGE_STD",
    "ImageVolumes",
    "VOC_CLASSES",
    "VOC_VOID",
    "VOCSegmentation",
    "PERCENTILES",
    "Case",
    "Cohort",
    "PreparedCase",
    "PreparedCases",
    "TrainingVolumes",
    "Volume",
    "VolumeCache",
    "body_mask",
    "btcv_code_of",
    "build_cohort",
    "case_stem",
    "check_label_codes",
    "clip_hu",
    "discover_btcv",
    "discover_nnunet",
    "find_coarse_file",
    "find_voc_root",
    "image_tensor",
    "image_volume",
    "is_nnunet_dataset",
    "load_case",
    "load_coarse_labels",
    "load_datalist",
    "load_volume",
    "load_voc_image",
    "load_voc_mask",
    "nbytes_of",
    "nnunet_label_map",
    "percentile_normalize",
    "prepare_case",
    "preprocess_ct",
    "read_voc_split",
    "remap_labels",
    "resample",
    "save_like",
    "save_voc_mask",
    "voc_palette",
]
