"""A small explicit registry of model builders: ``create_model(name, **kwargs)``.

Every entry point (``resnet50``, ``unet3d``, ...) registers itself by name with
:func:`register_model`; :func:`create_model` looks the name up and calls the builder with the
keyword arguments given. Unknown names raise with the list of valid ones; registering a name twice
raises instead of silently replacing the first builder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

__all__ = ["create_model", "list_models", "register_model"]

_F = TypeVar("_F", bound=Callable[..., nn.Module])
_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[_F], _F]:
    """Decorator that registers a model builder under ``name``.

    Args:
        name: the registry key (a non-empty string, unique).

    Returns:
        A decorator that records the builder and returns it unchanged.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: ``name`` is empty or already registered.

    Examples:
        >>> from torch import nn
        >>> @register_model("_doctest_linear")
        ... def _doctest_linear(*, features: int = 2) -> nn.Module:
        ...     return nn.Linear(features, features)
        >>> create_model("_doctest_linear", features=3).in_features
        3
        >>> unregister = _REGISTRY.pop("_doctest_linear")  # keep the registry clean
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str; got {type(name).__name__}")
    if not name:
        raise ValueError("name must be a non-empty string; got ''")

    def decorator(fn: _F) -> _F:
        if name in _REGISTRY:
            raise ValueError(
                f"name {name!r} is already registered (by {_REGISTRY[name].__module__}."
                f"{_REGISTRY[name].__qualname__}); choose another name"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """The registered model names, sorted.

    Examples:
        >>> {"resnet50", "unet3d"} <= set(list_models())
        True
    """
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the registered model ``name`` with the builder's keyword arguments.

    Args:
        name: a name from :func:`list_models`.
        **kwargs: passed to the builder (e.g. ``in_chans=2, output_stride=16`` for a ResNet).

    Returns:
        The freshly built ``nn.Module``.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names).

    Examples:
        >>> enc = create_model("resnet18", in_chans=2, base_width=8)
        >>> enc.num_features
        64
    """
    if name not in _REGISTRY:
        raise ValueError(f"name must be one of {', '.join(map(repr, list_models()))}; got {name!r}")
    return _REGISTRY[name](**kwargs)
