"""Private helpers for saving and loading torch objects safely.

Writes go to a temporary file in the destination folder and are renamed over the target, so a
run killed mid-write never leaves a truncated checkpoint where a good one was. Loads use
``weights_only=True`` and turn unreadable files into errors that name the path.

A saved dict carries a SHA-256 digest of its contents (every tensor's dtype, shape and bytes,
and the plain values, in order) under :data:`DIGEST_KEY`; loading recomputes it, so a flipped
byte inside a tensor record (which ``torch.load`` reads without complaint) is refused. Loads
also refuse floating tensors holding NaN or inf (the weights of a diverged run) unless the
caller says such values are expected. Files written without a digest still load.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["DIGEST_KEY", "DamagedFileError", "atomic_save", "payload_digest", "safe_load"]

#: The key under which :func:`atomic_save` stores the digest of a saved dict.
DIGEST_KEY = "agcl_digest"


def _leaves(obj: Any, where: str = "") -> Iterator[tuple[str, Any]]:
    """``(where, value)`` for every tensor and plain value of ``obj``, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield where, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _leaves(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)) and not isinstance(obj, torch.Size):
        for i, value in enumerate(obj):
            yield from _leaves(value, f"{where}[{i}]")
    elif isinstance(obj, (set, frozenset)):  # no order of its own: sort the representations
        yield where, "{" + ", ".join(sorted(repr(v) for v in obj)) + "}"
    else:
        yield where, obj


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    t = t.detach()
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_quantized:
        t = t.int_repr()
    flat = t.cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def payload_digest(obj: Any) -> str:
    """SHA-256 over ``obj``'s tensors (dtype, shape, bytes) and plain values, as ``sha256:<hex>``.

    The same object gives the same digest before saving and after loading (any device).

    Examples:
        >>> a = payload_digest({"w": torch.ones(2), "epoch": 3})
        >>> same = payload_digest({"w": torch.ones(2), "epoch": 3})
        >>> a == same, a == payload_digest({"w": torch.ones(2)})
        (True, False)
    """
    h = hashlib.sha256()
    for where, value in _leaves(obj):
        if isinstance(value, torch.Tensor):
            h.update(f"{where}:tensor:{value.dtype}:{tuple(value.shape)}\n".encode())
            if value.device.type != "meta":
                h.update(_tensor_bytes(value))
        else:
            h.update(f"{where}:{type(value).__name__}:{value!r}\n".encode())
    return "sha256:" + h.hexdigest()


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` ``obj`` to ``path`` atomically (temporary file + ``os.replace``).

    The file gets the mode the user's umask gives (``0o666 & ~umask``), as ``torch.save`` would.
    A dict is saved with its digest (:func:`payload_digest`) under :data:`DIGEST_KEY` (a shallow
    copy is saved; ``obj`` is not changed), which :func:`safe_load` checks and removes.

    Returns:
        The path written, as a ``Path``.

    Raises:
        ValueError: ``obj`` is a dict that already holds :data:`DIGEST_KEY`.
    """
    path = Path(path)
    if isinstance(obj, dict):
        if DIGEST_KEY in obj:
            raise ValueError(
                f"obj must not hold the key {DIGEST_KEY!r} (atomic_save stores the "
                f"digest there); saving to {path}"
            )
        digest = payload_digest(obj)
        obj = copy.copy(obj)  # keeps the type and attributes (a state_dict's _metadata)
        obj[DIGEST_KEY] = digest
    from agcl._atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


class DamagedFileError(ValueError):
    """A file agcl wrote cannot be read back: cut short, corrupt, changed, or holding NaN/inf
    weights (the message names the file)."""


def _check_finite(obj: Any, path: Path) -> None:
    for where, value in _leaves(obj):
        if isinstance(value, torch.Tensor) and (value.is_floating_point() or value.is_complex()):
            if value.device.type == "meta" or value.layout != torch.strided:
                continue
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise DamagedFileError(
                    f"checkpoint {path} holds non-finite values: {bad} NaN/inf of {value.numel()} "
                    f"in {where or 'the tensor'} {tuple(value.shape)}; the run that wrote it "
                    "diverged or the file is damaged (pass allow_non_finite=True where such "
                    "values are expected)"
                )


def safe_load(
    path: str | os.PathLike[str], *, map_location: Any = "cpu", allow_non_finite: bool = False
) -> Any:
    """``torch.load`` with ``weights_only=True``; errors name the path.

    A dict saved by :func:`atomic_save` has its digest checked and removed; a file without one
    (written by ``torch.save`` or an older agcl) loads without that check.

    Args:
        path: the file.
        map_location: passed to ``torch.load``.
        allow_non_finite: accept floating tensors holding NaN or inf (refused by default: a
            diverged run's weights).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DamagedFileError: (a ``ValueError``) the file is truncated, corrupt (its digest does not
            match) or holds more than tensors and plain data; or a floating tensor holds NaN/inf.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise DamagedFileError(
            f"could not load {path}: {type(exc).__name__}: {exc}. The file may be truncated or "
            "corrupt, or hold Python objects that weights_only=True refuses."
        ) from exc
    if isinstance(obj, dict) and DIGEST_KEY in obj:
        stored = obj.pop(DIGEST_KEY)
        found = payload_digest(obj)
        if stored != found:
            raise DamagedFileError(
                f"checkpoint {path} is damaged: the digest of its contents ({found[:23]}...) "
                f"differs from the one stored when it was written ({str(stored)[:23]}...); "
                "restore it from a copy or write it again"
            )
    if not allow_non_finite:
        _check_finite(obj, path)
    return obj
