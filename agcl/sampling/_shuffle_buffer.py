"""Private: the shuffle buffer of :class:`agcl.sampling.PatchStream`'s shards.

A shard moves chunks of patches from its open volumes into the buffer; a batch is drawn at
random from the full buffer, and the holes it leaves are filled from the buffer's tail. Patches
are held compactly: image float32, attention float16 (0/1 or graded values), label and ignore
bool, provenance as one ``(capacity, 6)`` long table.
"""

from __future__ import annotations

import torch

from agcl.sampling.patch_batch import PatchBatch

__all__ = ["ShuffleBuffer"]


class ShuffleBuffer:
    """A fixed-capacity shuffle buffer of patches (image float32, attention float16, label bool)."""

    def __init__(
        self, capacity: int, channels: int, patch: tuple[int, int], with_label: bool
    ) -> None:
        self.capacity, self.n = capacity, 0
        self.image = torch.empty(capacity, channels, *patch)
        self.attention = torch.empty(
            capacity, 1, *patch, dtype=torch.float16
        )  # 0/1 or graded values
        self.label = torch.empty(capacity, 1, *patch, dtype=torch.bool) if with_label else None
        self.ignore: torch.Tensor | None = None  # allocated when a volume brings an ignore map
        self.meta = torch.empty(
            capacity, 6, dtype=torch.long
        )  # target, modality, volume, slice, centre i, j

    def room(self) -> int:
        return self.capacity - self.n

    def put(self, b: PatchBatch) -> None:
        k = len(b)
        s = slice(self.n, self.n + k)
        self.image[s] = b.image
        self.attention[s] = b.attention
        if self.label is not None:
            if b.label is None:
                raise ValueError("with_label=True needs volumes with a 'label'; a volume gave none")
            self.label[s] = b.label > 0.5
        if b.ignore is not None and self.ignore is None:
            self.ignore = torch.zeros(self.capacity, 1, *self.image.shape[2:], dtype=torch.bool)
        if self.ignore is not None:
            self.ignore[s] = b.ignore if b.ignore is not None else False
        self.meta[s] = torch.stack(
            [b.target, b.modality, b.volume_index, b.slice_index, b.centre[:, 0], b.centre[:, 1]], 1
        )
        self.n += k

    def take(self, count: int, gen: torch.Generator) -> PatchBatch:
        """``count`` random patches out of the buffer (the holes are filled from its tail)."""
        count = min(count, self.n)
        idx = torch.randperm(self.n, generator=gen)[:count]
        m = self.meta[idx]
        out = PatchBatch(
            image=self.image[idx],
            attention=self.attention[idx].float(),
            label=None if self.label is None else self.label[idx].float(),
            target=m[:, 0],
            modality=m[:, 1],
            volume_index=m[:, 2],
            slice_index=m[:, 3],
            centre=m[:, 4:6],
            ignore=None if self.ignore is None else self.ignore[idx],
        )
        tail = self.n - count
        chosen = torch.zeros(self.n, dtype=torch.bool)
        chosen[idx] = True
        holes = idx[idx < tail]
        movers = torch.nonzero(~chosen[tail:]).squeeze(1) + tail
        for t in (self.image, self.attention, self.label, self.ignore, self.meta):
            if t is not None and holes.numel():
                t[holes] = t[movers]
        self.n = tail
        return out
