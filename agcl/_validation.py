"""Private helpers that turn bad input into errors that explain themselves.

Every message names the argument, what was expected and what arrived, so that a user can fix
the call without reading agcl's source. Use these instead of ``assert`` on user input.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch

__all__ = [
    "check_choice",
    "check_generator",
    "check_has_data",
    "check_in_range",
    "check_int",
    "check_integer_tensor",
    "check_ndim",
    "check_output_stride",
    "check_positive",
    "check_tensor",
    "shape_of",
]


def shape_of(value: Any) -> str:
    """A short description of ``value`` for error messages: its shape if it has one."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)}"
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (list, tuple)) else (
        f"{type(value).__name__} of length {len(value)}"
    )


def check_tensor(name: str, value: Any) -> torch.Tensor:
    """Raise ``TypeError`` unless ``value`` is a ``torch.Tensor``."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    return value


def check_has_data(name: str, value: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` for a tensor on the ``meta`` device (it has a shape but no values)."""
    if value.device.type == "meta":
        raise ValueError(
            f"{name} is on the meta device and holds no values; move it to a real device "
            f"(e.g. .to('cpu')) first; got shape {tuple(value.shape)} on meta"
        )
    return value


def check_generator(name: str, value: Any) -> torch.Generator | None:
    """Raise ``TypeError`` unless ``value`` is ``None`` or a ``torch.Generator``."""
    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(
            f"{name} must be None or a torch.Generator (e.g. torch.Generator().manual_seed(0)); "
            f"got {type(value).__name__}"
        )
    return value


def check_ndim(name: str, value: torch.Tensor, ndims: Sequence[int], layout: str = "") -> None:
    """Raise ``ValueError`` unless ``value.ndim`` is one of ``ndims``.

    ``layout`` describes the expected shape(s) in the message, e.g. ``"(B, V, D) or (M, D)"``.
    """
    if value.ndim not in ndims:
        want = layout or " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {want}; got shape {tuple(value.shape)}")


def check_integer_tensor(
    name: str, value: Any, *, numel: int | None = None, what: str = "", nonnegative: bool = True
) -> torch.Tensor:
    """Check an integer label tensor: 1-D, integer dtype, optional length, no negatives.

    Args:
        name: the argument's name, used in messages.
        value: what the user passed.
        numel: the required number of entries, if any.
        what: what the entries correspond to, e.g. ``"one per sample of features (B=8)"``.
        nonnegative: reject negative entries.
    """
    check_tensor(name, value)
    if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long or another int dtype); got {value.dtype}")
    check_has_data(name, value)
    if value.ndim != 1:
        raise ValueError(f"{name} must be 1-D with one entry {what or 'per row'}; got shape {tuple(value.shape)}")
    if numel is not None and value.numel() != numel:
        raise ValueError(f"{name} must have {numel} entries ({what}); got {value.numel()}")
    if nonnegative and value.numel() > 0 and bool((value < 0).any()):
        raise ValueError(f"{name} must be non-negative; got minimum {int(value.min())}")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Raise unless ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    ok = value >= 0 if allow_zero else value > 0
    if not math.isfinite(value) or not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {value}")
    return float(value)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Raise unless ``value`` is a Python ``int`` (not ``bool``) within ``[low, high]``; return it.

    ``TypeError`` for another type, ``ValueError`` for a value out of range.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}]; got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an int <= {high}; got {value}")
    return value


def check_in_range(name: str, value: Any, low: float, high: float) -> float:
    """Raise unless ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    if not (low <= value <= high):
        raise ValueError(f"{name} must lie in [{low}, {high}]; got {value}")
    return float(value)


def check_choice(name: str, value: Any, options: Iterable[str]) -> str:
    """Raise ``ValueError`` listing the valid options unless ``value`` is one of them."""
    opts = tuple(options)
    if value not in opts:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in opts)}; got {value!r}")
    return value


def check_output_stride(value: Any) -> int:
    """Raise ``ValueError`` unless ``value`` is 8, 16 or 32; return it."""
    if isinstance(value, bool) or value not in (8, 16, 32):
        raise ValueError(f"output_stride must be one of 8, 16, 32; got {value!r}")
    return int(value)
