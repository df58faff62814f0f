"""Private: warnings attributed to the user's own call site, however deep inside agcl."""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

import torch

__all__ = ["warn_user"]

_AGCL_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep  # the agcl package folder
_TORCH_NN_DIR = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "nn") + os.sep


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` attributed to the first frame outside agcl and ``torch.nn``, so that
    Python's default filter shows it once per user call site (however deep the call)."""
    level, frame = 2, sys._getframe(1)
    frame_or_none: FrameType | None = frame
    while frame_or_none is not None:
        name = os.path.abspath(frame_or_none.f_code.co_filename)
        if not (name.startswith(_AGCL_DIR) or name.startswith(_TORCH_NN_DIR)):
            break
        frame_or_none, level = frame_or_none.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)
