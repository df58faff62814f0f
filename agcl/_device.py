"""Turn a user's device argument into a ``torch.device`` that exists on this machine.

``torch.device("cuda:7")`` parses on any machine; the mistake shows up later, as a CUDA error
deep inside the first ``.to(device)``, or on a CPU-only build as "Torch not compiled with CUDA
enabled". :func:`resolve_device` checks the device up front and says what this machine has.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["available_devices", "resolve_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _xpu_available() -> bool:
    xpu = getattr(torch, "xpu", None)
    return bool(xpu is not None and xpu.is_available())


def _xpu_count() -> int:
    return int(torch.xpu.device_count()) if _xpu_available() else 0


def available_devices() -> list[str]:
    """The devices this process can use: ``"cpu"``, ``"cuda:0"`` ..., ``"mps"``, ``"xpu:0"`` ...

    Examples:
        >>> available_devices()[0]
        'cpu'
    """
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    out += [f"xpu:{i}" for i in range(_xpu_count())]
    return out


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return (
            f"this torch build ({torch.__version__}) has no CUDA support; install a CUDA "
            "build of torch"
        )
    return (
        f"torch {torch.__version__} is built for CUDA {torch.version.cuda} but sees no GPU "
        "(check the NVIDIA driver with nvidia-smi, and CUDA_VISIBLE_DEVICES)"
    )


def resolve_device(value: Any, *, name: str = "device") -> torch.device:
    """``value`` as a ``torch.device``, refused unless it exists on this machine.

    Accepts ``"cpu"``, ``"cuda"`` (the current GPU), ``"cuda:N"`` for a GPU that exists,
    ``"mps"`` and ``"xpu[:N]"`` where available, and ``torch.device`` objects (checked the same
    way). ``"cuda"`` stays ``device(type='cuda')`` (no index is added).

    Args:
        value: a device string or ``torch.device``.
        name: the argument's name in error messages (e.g. ``"--device"``).

    Returns:
        The ``torch.device``.

    Raises:
        TypeError: ``value`` is neither a string nor a ``torch.device``.
        ValueError: ``value`` does not parse as a device, or names a device this machine does
            not have (CUDA on a torch built without it or with no visible GPU, a GPU index past
            the last one, MPS or XPU where unavailable, a device type such as ``"meta"`` that
            cannot run a pipeline). The message lists the devices that exist.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
        >>> resolve_device(torch.device("cpu"))
        device(type='cpu')
        >>> resolve_device("bogus")
        Traceback (most recent call last):
        ...
        ValueError: device must be a device such as 'cpu', 'cuda' or 'cuda:0'; got 'bogus' ...
    """
    if isinstance(value, torch.device):
        dev = value
    elif isinstance(value, str):
        try:
            dev = torch.device(value.strip())
        except (RuntimeError, ValueError):
            raise ValueError(
                f"{name} must be a device such as 'cpu', 'cuda' or 'cuda:0'; got {value!r} "
                f"(devices here: {', '.join(available_devices())})"
            ) from None
    else:
        raise TypeError(
            f"{name} must be a device string (e.g. 'cuda:0') or a torch.device; got "
            f"{type(value).__name__} {value!r}"
        )
    here = ", ".join(available_devices())
    if dev.type == "cpu":
        if dev.index not in (None, 0):
            raise ValueError(f"{name} must be 'cpu' (there is one CPU device); got {str(dev)!r}")
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"{name}={str(dev)!r} needs CUDA, but {_why_no_cuda()}. Devices here: {here}"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ValueError(
                f"{name}={str(dev)!r} names GPU {dev.index}, but this machine has "
                f"{count} CUDA device(s). Devices here: {here}"
            )
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise ValueError(
                f"{name}={str(dev)!r} needs Apple's MPS backend, which this torch "
                f"or machine does not have. Devices here: {here}"
            )
        return dev
    if dev.type == "xpu":
        count = _xpu_count()
        if count == 0 or (dev.index is not None and dev.index >= count):
            raise ValueError(
                f"{name}={str(dev)!r} names an Intel XPU that this machine does "
                f"not have ({count} found). Devices here: {here}"
            )
        return dev
    raise ValueError(
        f"{name} must be one of the devices here ({here}); got {str(dev)!r}, a "
        f"{dev.type!r} device, which agcl cannot compute on"
    )
