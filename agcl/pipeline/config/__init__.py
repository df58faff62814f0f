"""The pipeline's configuration: one dataclass per stage (sections) inside :class:`PipelineConfig`.

* :mod:`~agcl.pipeline.config.sections`: ``coarse`` (stage 1 on CT), ``pretrain`` (stage 2),
  ``segment`` (stage 3) and ``data`` (how stages 2-3 stream their patches);
* :mod:`~agcl.pipeline.config.image2d`: ``coarse2d`` (stage 1 on 2-D images);
* :mod:`~agcl.pipeline.config.pipeline`: :class:`PipelineConfig`, its presets and
  :func:`parse_overrides` (a command line's ``--set KEY=VALUE``);
* :mod:`~agcl.pipeline.config.rules`: the field rules every section is checked with.
"""

from __future__ import annotations

from agcl.pipeline.config.image2d import Coarse2DConfig
from agcl.pipeline.config.pipeline import DOMAINS, PipelineConfig, parse_overrides
from agcl.pipeline.config.sections import (
    AMP_CHOICES,
    PRETRAIN_METHODS,
    CoarseConfig,
    DataConfig,
    PretrainConfig,
    PretrainMethod,
    SegmentConfig,
)

__all__ = [
    "AMP_CHOICES",
    "DOMAINS",
    "PRETRAIN_METHODS",
    "Coarse2DConfig",
    "CoarseConfig",
    "DataConfig",
    "PipelineConfig",
    "PretrainConfig",
    "PretrainMethod",
    "SegmentConfig",
    "parse_overrides",
]
