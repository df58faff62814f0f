"""A streaming, bounded-memory source of attention-guided patches for ``torch.utils.data``.

:class:`PatchStream` is an ``IterableDataset`` of ready minibatches (:class:`PatchBatch`) that
never holds an epoch's patches, nor all of one volume's: for each volume it draws the centres
of every patch (a few bytes each, :meth:`AttentionPatchSampler.plan`) and cuts the windows in
small chunks (:meth:`AttentionPatchSampler.cut`) as the batches need them.

How the patches are mixed (contrastive learning needs negatives from many volumes, organs and
modalities in every batch):

* each epoch the volumes are shuffled (seeded by ``seed`` and the epoch); under
  ``torch.distributed`` rank ``r`` of ``R`` takes every ``R``-th of them;
* a rank's volumes are dealt to ``shards`` shards; a shard keeps ``streams`` volumes open at a
  time, each with its centres in a random order, and moves chunks of ``chunk_size`` patches
  from its open volumes, in turn, into a shuffle buffer of ``buffer_size`` patches; a batch is
  ``batch_size`` patches drawn at random from the full buffer (the buffer is drained at the
  end of the shard);
* the batches of the shards are interleaved round-robin.

Every random draw comes from a generator seeded by ``(seed, epoch, shard or volume)``, and with
:meth:`PatchStream.loader` shard ``s`` runs in worker ``s % num_workers``, its batches merged back
in the same round-robin order, so the batches are the same for any ``num_workers`` (and a run
resumed at an epoch boundary repeats them).

Memory per process: ``shards_in_process * streams`` open volumes (the dict that ``volumes[i]``
returns) plus one buffer of ``buffer_size`` patches per shard.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from agcl._validation import check_int, check_int_sequence
from agcl.sampling._shard_merge import Tagged, identity, merge, round_robin
from agcl.sampling._shuffle_buffer import ShuffleBuffer
from agcl.sampling.attention_patches import AttentionPatchSampler
from agcl.sampling.patch_batch import PatchBatch

__all__ = ["PatchStream"]


class PatchStream(IterableDataset):
    """Minibatches of attention-guided patches streamed from volumes loaded one at a time.

    Args:
        volumes: a sequence; ``volumes[i]`` returns a dict ``{"image": (D0, D1, D2) or
            (C, D0, D1, D2) float array, "attention": label map, (K, D0, D1, D2) stack or sparse
            {code: (box, mask)} (see :meth:`AttentionPatchSampler.plan`), "label": integer label
            map or None, "modality": int}`` and optionally ``"ignore"``: a bool map of pixels
            to leave out of the loss, cut into ``PatchBatch.ignore`` with the labels). It is
            called once per volume per epoch, in the process (worker) that samples the volume;
            loading lazily there (with a bounded cache, e.g. :class:`agcl.data.VolumeCache`)
            keeps memory bounded.
        sampler: the :class:`AttentionPatchSampler` whose options are used (its own generator is
            not: every volume gets one seeded from ``(seed, epoch, volume)``).
        batch_size: patches per minibatch.
        with_label: cut each patch's ground-truth mask too (``PatchBatch.label``).
        targets: organ codes to sample (default: every code of each volume's attention).
        shards: independent sub-streams (the unit of work of a DataLoader worker).
        streams: volumes each shard samples from at the same time.
        buffer_size: patches in each shard's shuffle buffer (at least ``batch_size``).
        chunk_size: patches cut from a volume at a time.
        seed: base seed, any int ``>= 0``.
        rank, world_size: this process's share of the volumes under ``torch.distributed``
            (default: from the initialised process group, else 0 and 1).
        drop_last: drop a shard's last batch when it has fewer than ``batch_size`` patches.

    Shape:
        Each item: a :class:`PatchBatch` of at most ``batch_size`` patches, image
        ``(B, C, h, w)``, attention (and label) ``(B, 1, h, w)`` float 0/1.

    Raises:
        TypeError: ``volumes`` a dict (``volumes[i]`` would look up the key ``i``) or not a
            sequence; a non-integer option, target or volume ``"modality"`` (named with the
            volume's index).
        ValueError: options out of range (``seed`` must be ``>= 0``; every seed gives its own
            patches); volumes with different numbers of image channels, naming the volumes and
            their counts: all of them here when ``volumes`` is a list or tuple, otherwise each
            volume when it is first read (so at the latest when its patches are cut).

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((16, 16, 4), np.int16); lab[4:9, 4:9, :] = 1; lab[10:14, 2:6, 1:3] = 2
        >>> vols = [{"image": np.random.rand(16, 16, 4).astype("float32"), "attention": lab,
        ...          "label": lab, "modality": m} for m in (0, 1, 0)]
        >>> stream = PatchStream(vols, AttentionPatchSampler(patch_size=8, patches_per_slice=3),
        ...                      batch_size=8, with_label=True, buffer_size=16)
        >>> sizes = [len(b) for b in stream]
        >>> sum(sizes), max(sizes)  # 3 volumes x (4 + 2 slices) x 3 patches
        (54, 8)
    """

    def __init__(
        self,
        volumes: Sequence[Mapping[str, Any]],
        sampler: AttentionPatchSampler,
        *,
        batch_size: int,
        with_label: bool = False,
        targets: Sequence[int] | None = None,
        shards: int = 2,
        streams: int = 2,
        buffer_size: int = 1024,
        chunk_size: int = 128,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = False,
    ) -> None:
        if not isinstance(sampler, AttentionPatchSampler):
            raise TypeError(
                f"sampler must be an AttentionPatchSampler; got {type(sampler).__name__}"
            )
        if isinstance(volumes, Mapping):  # volumes[i] would look up the key i
            raise TypeError(
                "volumes must be a sequence indexed 0 .. n-1 (e.g. a list of volume dicts); got a "
                f"{type(volumes).__name__} with keys {_few(list(volumes))}: pass "
                "list(volumes.values())"
            )
        if not hasattr(volumes, "__len__") or not hasattr(volumes, "__getitem__"):
            raise TypeError(
                f"volumes must be a sequence (len and indexing); got {type(volumes).__name__}"
            )
        if len(volumes) == 0:
            raise ValueError("volumes must hold at least one volume; got none")
        batch_size, shards, streams, chunk_size = (
            check_int(name, value, low=1)
            for name, value in (
                ("batch_size", batch_size),
                ("shards", shards),
                ("streams", streams),
                ("chunk_size", chunk_size),
            )
        )
        buffer_size = check_int("buffer_size", buffer_size, low=batch_size)
        # SeedSequence takes any non-negative int: every seed gives its own stream
        seed = check_int("seed", seed, low=0)
        if rank is None or world_size is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            rank = (dist.get_rank() if on else 0) if rank is None else rank
            world_size = (dist.get_world_size() if on else 1) if world_size is None else world_size
        world_size = check_int("world_size", world_size, low=1)
        rank = check_int("rank", rank, low=0, high=world_size - 1)
        self.volumes = volumes
        self.sampler = sampler
        self.batch_size, self.with_label = batch_size, bool(with_label)
        self.targets = None if targets is None else check_int_sequence("targets", targets)
        self.shards, self.streams, self.buffer_size, self.chunk_size = (
            shards,
            streams,
            buffer_size,
            chunk_size,
        )
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.drop_last = bool(drop_last)
        self.epoch = 0
        self._channels: tuple[int, int] | None = None  # (volume, image channels) first read here
        if isinstance(volumes, (list, tuple)):  # held in memory: check every volume now
            _check_channels({i: _channel_count(v) for i, v in enumerate(volumes)})

    def set_epoch(self, epoch: int) -> None:
        """Shuffle and sample afresh for ``epoch`` (call before iterating, as with
        ``DistributedSampler``)."""
        self.epoch = check_int("epoch", epoch, low=0)

    def rank_volumes(self) -> list[int]:
        """The indices of the volumes this rank samples in the current epoch, in order."""
        n = len(self.volumes)
        order = torch.randperm(n, generator=_generator(self.seed, self.epoch, -1)).tolist()
        return order[self.rank :: self.world_size]

    def shard_volumes(self, shard: int) -> list[int]:
        """The volumes of shard ``shard`` in the current epoch."""
        return self.rank_volumes()[shard :: self.shards]

    def _my_shards(self) -> list[int]:
        """The shards this process runs: shard ``s`` in DataLoader worker ``s % num_workers``."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        return [s for s in range(self.shards) if s % workers == worker]

    def __iter__(self) -> Iterator[Any]:
        return round_robin([self._shard(s) for s in self._my_shards()])

    def loader(
        self, num_workers: int = 0, *, pin_memory: bool = False, prefetch_factor: int | None = None
    ) -> Iterator[PatchBatch]:
        """The epoch's batches through a ``DataLoader`` with ``num_workers`` worker processes.

        The batches (and their order) are those of iterating the stream itself, for any
        ``num_workers``: shard ``s`` runs in worker ``s % num_workers`` and the shards' batches
        are merged back round-robin. ``pin_memory`` pins each batch (for CUDA).
        """
        from torch.utils.data import DataLoader

        num_workers = check_int("num_workers", num_workers, low=0)
        if num_workers == 0 and not pin_memory:
            yield from self
            return
        tagged = Tagged(self)
        kw: dict[str, Any] = {
            "batch_size": None,
            "num_workers": num_workers,
            "pin_memory": pin_memory,
            "collate_fn": identity,
        }
        if num_workers > 0 and prefetch_factor is not None:
            kw["prefetch_factor"] = prefetch_factor
        items = iter(DataLoader(tagged, **kw))
        first: tuple[list[int], int] | None = None
        for batch in merge(items, self.shards if num_workers > 0 else None):
            # each worker checks the volumes it reads; across workers, the batches are compared
            vols, c = sorted(set(batch.volume_index.tolist())), batch.image.shape[1]
            if first is None:
                first = (vols, c)
            elif c != first[1]:
                _check_channels({first[0][0]: first[1], vols[0]: c})
            yield batch

    # ----------------------------------------------------------------------------------
    def _volume(self, index: int) -> tuple[Any, Any, Any, int, Any]:
        vol = self.volumes[index]
        if not isinstance(vol, Mapping) or "image" not in vol or "attention" not in vol:
            raise TypeError(
                f"volumes[{index}] must be a dict with 'image' and 'attention'; got "
                f"{sorted(vol) if isinstance(vol, Mapping) else type(vol).__name__}"
            )
        label = vol.get("label")
        if self.with_label and label is None:
            raise ValueError(
                f"with_label=True needs a 'label' in every volume; volumes[{index}] has none"
            )
        ignore = vol.get("ignore") if self.with_label else None
        modality = check_int(f"volumes[{index}]['modality']", vol.get("modality", 0), low=0)
        return vol["image"], vol["attention"], label if self.with_label else None, modality, ignore

    def _volume_chunks(self, index: int) -> Iterator[PatchBatch]:
        image, attention, label, modality, ignore = self._volume(index)
        gen = _generator(self.seed, self.epoch, index)
        img = self.sampler._image(image)
        if self._channels is None:
            self._channels = (index, img.shape[0])
        else:  # volumes read lazily: each is checked when it is first read
            _check_channels({self._channels[0]: self._channels[1], index: img.shape[0]})
        centres, target = self.sampler.plan(attention, img.shape[1:], self.targets, generator=gen)
        order = torch.randperm(centres.shape[0], generator=gen)
        centres, target = centres[order], target[order]
        if isinstance(
            attention, Mapping
        ):  # pad each mask once, then every window is a strided read
            attention = self.sampler.pad_attention(attention, img.shape[1:])
        pad = self.sampler.image_pad_value
        pad = float(img.min()) if pad is None and img.numel() else pad
        for s in range(0, centres.shape[0], self.chunk_size):
            yield self.sampler.cut(
                img,
                attention,
                centres[s : s + self.chunk_size],
                target[s : s + self.chunk_size],
                label=label,
                modality=modality,
                volume_index=index,
                targets=self.targets,
                pad_value=pad,
                ignore=ignore,
            )

    def _shard(self, shard: int) -> Iterator[PatchBatch]:
        todo = deque(self.shard_volumes(shard))
        gen = _generator(self.seed, self.epoch, 1_000_000 + shard)
        open_: deque[Iterator[PatchBatch]] = deque()
        buffer: ShuffleBuffer | None = None
        pending: PatchBatch | None = None  # a chunk that did not fit yet
        while True:
            while len(open_) < self.streams and todo:
                open_.append(self._volume_chunks(todo.popleft()))
            if pending is None:
                if not open_:
                    break
                stream = open_.popleft()
                chunk = next(stream, None)
                if chunk is None:
                    continue  # that volume is done; open the next one
                open_.append(stream)
                if len(chunk) == 0:
                    continue
                pending = chunk
            if buffer is None:
                buffer = ShuffleBuffer(
                    self.buffer_size,
                    pending.image.shape[1],
                    tuple(pending.image.shape[2:]),
                    self.with_label,
                )
            while pending is not None and buffer.room() > 0:
                k = min(len(pending), buffer.room())
                buffer.put(pending[:k])
                pending = pending[k:] if k < len(pending) else None
            if buffer.room() == 0:
                yield buffer.take(self.batch_size, gen)
        while buffer is not None and buffer.n > 0:
            if self.drop_last and buffer.n < self.batch_size:
                break
            yield buffer.take(self.batch_size, gen)

    def __len__(self) -> int:  # an IterableDataset has no length; refuse politely
        raise TypeError(
            "PatchStream has no length (the number of patches is known only after sampling); "
            "use steps_per_epoch or iterate"
        )


def _few(items: Sequence[Any], n: int = 5) -> str:
    more = f", ... ({len(items)} in all)" if len(items) > n else ""
    return ", ".join(map(repr, items[:n])) + more


def _channel_count(vol: Any) -> int | None:
    """Image channels of a volume dict from its image's shape alone (``None`` if unknown)."""
    shape = getattr(vol.get("image"), "shape", None) if isinstance(vol, Mapping) else None
    if shape is None or len(shape) not in (3, 4):
        return None  # reading the volume reports it
    return 1 if len(shape) == 3 else int(shape[0])


def _check_channels(counts: Mapping[int, int | None]) -> None:
    """``ValueError`` naming the volumes and their counts unless every known count is equal."""
    groups: dict[int, list[int]] = {}
    for index, c in counts.items():
        if c is not None:
            groups.setdefault(c, []).append(index)
    if len(groups) > 1:
        parts = "; ".join(
            f"{c} channel(s) in volumes[{_few(ix)}]"
            if len(ix) > 1
            else f"{c} channel(s) in volumes[{ix[0]}]"
            for c, ix in sorted(groups.items())
        )
        raise ValueError(
            f"volumes must all have the same number of image channels (one batch "
            f"holds patches of many volumes); got {parts}"
        )


def _generator(seed: int, epoch: int, key: int) -> torch.Generator:
    entropy = [int(seed), int(epoch), int(key) + 2]
    state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state >> np.uint64(1)))
