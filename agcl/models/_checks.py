"""Option checks shared by the model builders (private)."""

from __future__ import annotations

from typing import Any

from agcl._validation import check_int as _check_int

__all__ = ["check_int", "check_output_stride"]


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``agcl._validation.check_int`` with the models' usual lower bound of 1."""
    return _check_int(name, value, low=low)


def check_output_stride(value: Any) -> int:
    """Raise ``ValueError`` unless ``value`` is 8, 16 or 32; return it."""
    if isinstance(value, bool) or value not in (8, 16, 32):
        raise ValueError(f"output_stride must be one of 8, 16, 32; got {value!r}")
    return int(value)
