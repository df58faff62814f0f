"""A least-recently-used cache of loaded volumes, bounded in bytes."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import numpy as np
import torch

from agcl._validation import check_int

__all__ = ["VolumeCache", "nbytes_of"]

T = TypeVar("T")


def nbytes_of(value: Any) -> int:
    """Bytes held by the arrays and tensors in ``value`` (dicts, sequences and dataclasses are
    walked; a broadcast view with zero strides counts as its base only).

    Examples:
        >>> import numpy as np
        >>> nbytes_of({"image": np.zeros((4, 4), np.float32),
        ...            "box": (slice(0, 2), np.zeros(3, bool))})
        67
    """
    if isinstance(value, np.ndarray):
        return (
            int(value.nbytes)
            if all(s != 0 for s in value.strides) or value.size == 0
            else int(value.itemsize)
        )
    if isinstance(value, torch.Tensor):
        return int(value.untyped_storage().nbytes())
    if isinstance(value, Mapping):
        return sum(nbytes_of(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes_of(v) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes_of(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


class VolumeCache:
    """Keep the most recently used loaded volumes while their total size stays under a limit.

    Args:
        max_bytes: the limit (``0`` keeps nothing). An item larger than the limit is returned
            but not kept.

    A cache is per process: a ``DataLoader`` worker starts with an empty copy (pickling a cache
    drops its contents), so ``num_workers`` workers hold up to ``num_workers * max_bytes``.

    Examples:
        >>> import numpy as np
        >>> cache = VolumeCache(max_bytes=100)
        >>> a = cache.get("a", lambda: np.zeros(10, np.float32))  # 40 bytes, loaded
        >>> b = cache.get("b", lambda: np.zeros(20, np.float32))  # 80 bytes: "a" is evicted
        >>> list(cache), cache.nbytes
        (['b'], 80)
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = check_int("max_bytes", max_bytes, low=0)
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, load: Callable[[], T]) -> T:
        """The item of ``key``, from the cache or from ``load()`` (then kept if it fits)."""
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key][0]
        self.misses += 1
        item = load()
        size = nbytes_of(item)
        if size <= self.max_bytes:
            self._items[key] = (item, size)
            self.nbytes += size
            while self.nbytes > self.max_bytes:
                _, (_, gone) = self._items.popitem(last=False)
                self.nbytes -= gone
        return item

    def clear(self) -> None:
        """Drop every item."""
        self._items.clear()
        self.nbytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __iter__(self):
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __getstate__(self) -> dict[str, Any]:  # a worker gets an empty cache, not a copy of ours
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"VolumeCache(max_bytes={self.max_bytes}, items={len(self)}, nbytes={self.nbytes})"
