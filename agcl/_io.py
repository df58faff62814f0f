"""Private helpers for saving and loading torch objects safely.

Writes go to a temporary file in the destination folder and are renamed over the target, so a
run killed mid-write never leaves a truncated checkpoint where a good one was. Loads use
``weights_only=True`` and turn unreadable files into errors that name the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["atomic_save", "safe_load"]


def _umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file + ``os.replace``).

    The file gets the mode the user's umask gives (``0o666 & ~umask``), as ``torch.save`` would.

    Returns:
        The path written, as a ``Path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode open() would
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def safe_load(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; errors name the path.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is truncated, corrupt or holds more than tensors and plain data.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ValueError(
            f"could not load {path}: {type(exc).__name__}: {exc}. The file may be truncated or "
            "corrupt, or hold Python objects that weights_only=True refuses."
        ) from exc
