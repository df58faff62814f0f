"""Private helpers that turn bad input into errors that explain themselves.

Every message names the argument, what was expected and what arrived, so that a user can fix
the call without reading agcl's source. Use these instead of ``assert`` on user input.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = [
    "check_choice",
    "check_finite_real",
    "check_generator",
    "check_has_data",
    "check_in_range",
    "check_int",
    "check_int_sequence",
    "check_integer_tensor",
    "check_ndim",
    "check_output_stride",
    "check_positive",
    "check_real_sequence",
    "check_tensor",
    "is_int",
    "is_real",
    "shape_of",
]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an integer scalar: a Python ``int`` or a numpy integer, not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def is_real(value: Any) -> bool:
    """Whether ``value`` is a real scalar: a Python or numpy int or float, not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def shape_of(value: Any) -> str:
    """A short description of ``value`` for error messages: its shape if it has one."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"shape {tuple(shape)}"
    return (
        f"{type(value).__name__} {value!r}"
        if not isinstance(value, (list, tuple))
        else (f"{type(value).__name__} of length {len(value)}")
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
        raise TypeError(
            f"{name} must be an integer tensor (torch.long or another int dtype); got {value.dtype}"
        )
    check_has_data(name, value)
    if value.ndim != 1:
        raise ValueError(
            f"{name} must be 1-D with one entry {what or 'per row'}; got shape {tuple(value.shape)}"
        )
    if numel is not None and value.numel() != numel:
        raise ValueError(f"{name} must have {numel} entries ({what}); got {value.numel()}")
    if nonnegative and value.numel() > 0 and bool((value < 0).any()):
        raise ValueError(f"{name} must be non-negative; got minimum {int(value.min())}")
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """Raise unless ``value`` is a finite real number > 0 (or >= 0 with ``allow_zero``).

    Python and numpy ints and floats are accepted; the value comes back as a Python float.
    """
    if not is_real(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not math.isfinite(value) or not ok:
        raise ValueError(
            f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}; got {value}"
        )
    return float(value)


def check_finite_real(name: str, value: Any) -> float:
    """Raise unless ``value`` is a finite real number (Python or numpy); return a float."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite; got {value}")
    return float(value)


def check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Raise unless ``value`` is an integer (Python or numpy, not ``bool``) within ``[low, high]``.

    ``TypeError`` for another type (a float is never truncated), ``ValueError`` for a value out
    of range. Returns the value as a Python ``int``.
    """
    if not is_int(value):
        raise TypeError(f"{name} must be an int; got {type(value).__name__} {value!r}")
    value = int(value)
    if low is not None and high is not None and not low <= value <= high:
        raise ValueError(f"{name} must lie in [{low}, {high}]; got {value}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be an int >= {low}; got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be an int <= {high}; got {value}")
    return value


def check_int_sequence(name: str, values: Any, *, low: int | None = None) -> list[int]:
    """Check a sequence of integers (list, tuple, 1-D array or tensor); return Python ints.

    Raises ``TypeError`` naming the first entry that is not an integer (``2.7`` is refused, not
    truncated to 2) and ``ValueError`` for an entry below ``low``.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iu":
            raise TypeError(
                f"{name} must be a 1-D sequence of ints; got {shape_of(values)} of "
                f"dtype {values.dtype}"
            )
        values = values.tolist()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a sequence of ints; got {type(values).__name__}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype.is_floating_point is False:
            v = v.item() if v.dtype != torch.bool else v
        if not is_int(v):
            raise TypeError(
                f"{name} must hold integers; got {name}[{i}] = {v!r} ({type(v).__name__})"
            )
        if low is not None and v < low:
            raise ValueError(f"{name} must hold integers >= {low}; got {name}[{i}] = {v}")
        out.append(int(v))
    return out


def check_real_sequence(
    name: str, values: Any, *, length: int | None = None, positive: bool = False
) -> tuple[float, ...]:
    """Check a sequence of real numbers (Python or numpy; a 1-D array or tensor too).

    Strings and bools are refused (``float("1.5")`` would accept a string); with ``positive``
    every entry must be finite and > 0. Returns Python floats.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        if values.ndim != 1 or values.dtype.kind not in "iuf":
            raise TypeError(
                f"{name} must be a 1-D sequence of numbers; got {shape_of(values)} of "
                f"dtype {values.dtype}"
            )
        values = values.tolist()
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable):
        raise TypeError(
            f"{name} must be a sequence of numbers; got {type(values).__name__} {values!r}"
        )
    out = list(values)
    for i, v in enumerate(out):
        if not is_real(v):
            raise TypeError(
                f"{name} must hold numbers; got {name}[{i}] = {v!r} ({type(v).__name__})"
            )
    floats = tuple(float(v) for v in out)
    if length is not None and len(floats) != length:
        raise ValueError(f"{name} must hold {length} numbers; got {len(floats)}: {floats}")
    if positive and not all(math.isfinite(v) and v > 0 for v in floats):
        raise ValueError(f"{name} must hold finite numbers > 0; got {floats}")
    return floats


def check_in_range(name: str, value: Any, low: float, high: float) -> float:
    """Raise unless ``low <= value <= high`` (Python or numpy numbers); return a float."""
    if not is_real(value):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__}")
    value = float(value)
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
