"""A ``torch.utils.data`` dataset that samples attention-guided patches from a list of volumes.

Item ``i`` is the :class:`PatchBatch` of volume ``i``, sampled afresh on each access with a
generator seeded from ``(seed, epoch, i)``, so results do not depend on the number of
workers or on the order in which they run. Volumes are loaded lazily, in the worker that
first needs them, and kept in a small per-worker LRU cache.

Use it with :func:`collate_patch_batches`::

    loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2,
                        collate_fn=collate_patch_batches)
    for batch in loader:              # the patches of 2 volumes in one PatchBatch
        for mb in minibatches(batch, 256, generator=g):
            ...
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from agcl._validation import check_int
from agcl.sampling.attention_patches import AttentionPatchSampler, PatchBatch

__all__ = ["AttentionPatchDataset", "collate_patch_batches", "minibatches"]


class AttentionPatchDataset(Dataset):
    """Patches from a list of cases (or in-memory volumes), one :class:`PatchBatch` per volume.

    Args:
        cases: a sequence of :class:`agcl.data.Case`, an :class:`agcl.data.Cohort`, or
            in-memory volumes as dictionaries ``{"image": array, "label": array or None}``
            (canonical orientation; images already preprocessed).
        sampler: the :class:`AttentionPatchSampler` (its options are used; its generator is
            not: every item gets its own, see ``seed``).
        attention: where the attention comes from: ``None`` uses the ground-truth label (the
            paper's experiments); otherwise one entry per case, each a label-map path
            (loaded with :func:`agcl.data.load_volume`) or an array.
        modality_ids: one integer per case. Default: a Cohort's ids, or the cases' modality
            names numbered in order of first appearance (``0`` for dictionaries without a
            ``"modality"`` key).
        targets: the organ codes to sample (default: every code in the attention).
        preprocess: apply :func:`agcl.data.preprocess_ct` (paper window and percentiles) to
            images loaded from files.
        cache_size: volumes kept in memory per worker.
        unknown_labels: passed to :func:`agcl.data.load_case`.
        seed: base seed of the per-item generators.

    Raises:
        ValueError: ``attention`` or ``modality_ids`` of the wrong length, ``cache_size < 1``,
            no cases.

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((12, 12, 3), np.int16); lab[3:7, 3:7, 1] = 1
        >>> vols = [{"image": np.random.rand(12, 12, 3).astype("float32"), "label": lab}] * 2
        >>> ds = AttentionPatchDataset(vols, AttentionPatchSampler(patch_size=8, patches_per_slice=5))
        >>> batch = collate_patch_batches([ds[0], ds[1]])
        >>> len(batch), batch.volume_index.tolist()[::5]
        (10, [0, 1])
    """

    def __init__(
        self,
        cases: Sequence[Any],
        sampler: AttentionPatchSampler,
        *,
        attention: Sequence[str | os.PathLike[str] | np.ndarray] | None = None,
        modality_ids: Sequence[int] | None = None,
        targets: Sequence[int] | None = None,
        preprocess: bool = True,
        cache_size: int = 2,
        unknown_labels: Literal["error", "warn"] = "error",
        seed: int = 0,
    ) -> None:
        if not isinstance(sampler, AttentionPatchSampler):
            raise TypeError(f"sampler must be an AttentionPatchSampler; got {type(sampler).__name__}")
        ids_from_cohort = getattr(cases, "modality_ids", None)
        items = list(getattr(cases, "cases", cases))
        if not items:
            raise ValueError("cases must hold at least one case or volume; got none")
        if attention is not None and len(attention) != len(items):
            raise ValueError(f"attention must have one entry per case ({len(items)}); got {len(attention)}")
        check_int("cache_size", cache_size, low=1)
        if modality_ids is None:
            modality_ids = ids_from_cohort if ids_from_cohort is not None else _ids_from_names(items)
        if len(modality_ids) != len(items):
            raise ValueError(f"modality_ids must have one entry per case ({len(items)}); got {len(modality_ids)}")
        self.items = items
        self.sampler = sampler
        self.attention = None if attention is None else list(attention)
        self.modality_ids = [int(m) for m in modality_ids]
        self.targets = None if targets is None else [int(t) for t in targets]
        self.preprocess = preprocess
        self.cache_size = cache_size
        self.unknown_labels = unknown_labels
        self.seed = int(seed)
        self.epoch = 0
        self._cache: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = OrderedDict()

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in each epoch (call before iterating; workers see it when the
        loader is re-created or with ``persistent_workers=False``)."""
        self.epoch = int(epoch)

    def volume(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(image, attention, label)`` of volume ``index``, loaded on first use and cached."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        vol = self._load(index)
        self._cache[index] = vol
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return vol

    def _load(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        item = self.items[index]
        if isinstance(item, dict):
            if "image" not in item:
                raise ValueError(f"cases[{index}] must have an 'image' entry; got keys {sorted(item)}")
            image = np.asarray(item["image"], dtype=np.float32)
            label = None if item.get("label") is None else np.asarray(item["label"])
        else:
            from agcl.data import load_case, preprocess_ct  # nibabel/scipy only when files are read

            img_vol, lab_vol = load_case(item, unknown_labels=self.unknown_labels)
            image = preprocess_ct(img_vol.array, source=getattr(item, "image_path", None)) if self.preprocess else img_vol.array
            label = None if lab_vol is None else lab_vol.array
        if self.attention is None:
            if label is None:
                raise ValueError(f"cases[{index}] has no label and no attention was given; pass attention=")
            att = label
        else:
            src = self.attention[index]
            if isinstance(src, (str, os.PathLike)):
                from agcl.data import load_volume

                att = load_volume(src, kind="label").array
            else:
                att = np.asarray(src)
        if att.shape[-3:] != image.shape:
            raise ValueError(f"attention of cases[{index}] must match its image shape {image.shape}; got {att.shape}")
        return image, att, label

    def __getitem__(self, index: int) -> PatchBatch:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index %= len(self)
        image, att, label = self.volume(index)
        gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        return self.sampler.sample(
            image, att, label=label, modality=self.modality_ids[index], targets=self.targets,
            volume_index=index, generator=gen,
        )


def _ids_from_names(items: list[Any]) -> list[int]:
    names: list[str] = []
    ids = []
    for item in items:
        name = item.get("modality", "") if isinstance(item, dict) else getattr(item, "modality", "")
        if isinstance(name, (int, np.integer)):
            ids.append(int(name))
            continue
        if name not in names:
            names.append(name)
        ids.append(names.index(name))
    return ids


def _mix(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def collate_patch_batches(batches: Sequence[PatchBatch]) -> PatchBatch:
    """``collate_fn`` for a ``DataLoader`` over :class:`AttentionPatchDataset`: concatenate.

    Examples:
        >>> len(collate_patch_batches([PatchBatch.empty(4), PatchBatch.empty(4)]))
        0
    """
    return PatchBatch.cat(list(batches))


def minibatches(
    batch: PatchBatch, batch_size: int, *, generator: torch.Generator | None = None, drop_last: bool = False
) -> Iterator[PatchBatch]:
    """Split a :class:`PatchBatch` into shuffled minibatches of ``batch_size`` patches.

    Args:
        batch: the patches.
        batch_size: patches per minibatch.
        generator: the shuffle's generator; ``None`` keeps the order.
        drop_last: drop a final smaller minibatch.

    Examples:
        >>> b = PatchBatch.empty(4)
        >>> list(minibatches(b, 8))
        []
    """
    check_int("batch_size", batch_size, low=1)
    n = len(batch)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for s in range(0, n, batch_size):
        idx = order[s:s + batch_size]
        if drop_last and idx.numel() < batch_size:
            break
        yield batch[idx]
