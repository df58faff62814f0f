"""Private: the round-robin order of :class:`agcl.sampling.PatchStream`'s shards, in one
process or merged back from ``DataLoader`` workers.

Shard ``s`` runs in worker ``s % num_workers``; each worker yields ``(shard, batch)`` items and
``(shard, None)`` when a shard ends, and :func:`merge` puts the items back in the order of
iterating the stream in one process, so the batches are the same for any ``num_workers``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from torch.utils.data import IterableDataset

from agcl.sampling.patch_batch import PatchBatch

__all__ = ["Tagged", "identity", "merge", "round_robin", "tagged_round_robin"]


def round_robin(iterators: list[Iterator[PatchBatch]]) -> Iterator[PatchBatch]:
    active = deque(iterators)
    while active:
        it = active.popleft()
        item = next(it, None)
        if item is None:
            continue
        yield item
        active.append(it)


def tagged_round_robin(
    shards: dict[int, Iterator[PatchBatch]],
) -> Iterator[tuple[int, PatchBatch | None]]:
    """The worker side of :meth:`PatchStream.loader`: ``(shard, batch)`` items, ``(shard, None)``
    at a shard's end."""
    active = deque(shards.items())
    while active:
        s, it = active.popleft()
        item = next(it, None)
        if item is None:
            yield s, None
            continue
        yield s, item
        active.append((s, it))


def merge(
    items: Iterator[tuple[int, PatchBatch | None]], shards: int | None
) -> Iterator[PatchBatch]:
    """Re-order the workers' ``(shard, batch)`` items into the shards' round-robin order."""
    if shards is None:  # one process: already in order
        for _, b in items:
            if b is not None:
                yield b
        return
    pending: dict[int, deque[PatchBatch | None]] = {s: deque() for s in range(shards)}
    active = deque(range(shards))
    while active:
        s = active[0]
        while not pending[s]:
            got = next(items, None)
            if got is None:  # the loader ended: every shard has said so
                for rest in active:
                    pending[rest].append(None)
                break
            pending[int(got[0])].append(got[1])
        b = pending[s].popleft()
        active.popleft()
        if b is not None:
            yield b
            active.append(s)


def identity(x: Any) -> Any:
    return x


class Tagged(IterableDataset):
    """A view of a stream whose iterator yields ``(shard, batch)`` (for the workers' merge)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[int, PatchBatch | None]]:
        return tagged_round_robin({k: self.stream._shard(k) for k in self.stream._my_shards()})
