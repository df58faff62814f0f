"""A map-style ``torch.utils.data`` dataset: the attention-guided patches of one volume per item.

It reads the same volumes as :class:`agcl.sampling.PatchStream` and the pipeline: a sequence
whose item ``i`` is ``{"image", "attention", "label", "modality"}`` (e.g.
:class:`agcl.data.TrainingVolumes` over :class:`agcl.data.PreparedCases`, loaded on demand into a
:class:`agcl.data.VolumeCache` bounded in bytes). Given cases (or a Cohort) it builds exactly
that. Item ``i`` is the :class:`PatchBatch` of volume ``i``, sampled afresh on each access with a
generator seeded from ``(seed, epoch, i)``, so results do not depend on the number of workers or
on the order in which they run. Where :class:`~agcl.sampling.PatchStream` mixes volumes into
ready minibatches, this dataset gives whole volumes' patches for a ``DataLoader`` of your own:

    loader = DataLoader(ds, batch_size=2, shuffle=True, num_workers=2,
                        collate_fn=collate_patch_batches)
    for batch in loader:              # the patches of 2 volumes in one PatchBatch
        for mb in minibatches(batch, 256, generator=g):
            ...
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from agcl._validation import check_int
from agcl.sampling.attention_patches import AttentionPatchSampler
from agcl.sampling.patch_batch import PatchBatch

__all__ = ["AttentionPatchDataset", "collate_patch_batches", "minibatches"]


class AttentionPatchDataset(Dataset):
    """Patches from a list of cases, volumes or in-memory arrays, one :class:`PatchBatch` per
    volume.

    Args:
        cases: one of: a sequence of :class:`agcl.data.Case` or an :class:`agcl.data.Cohort`
            (loaded and preprocessed on demand through :class:`agcl.data.PreparedCases`); a
            volumes sequence such as :class:`agcl.data.TrainingVolumes` (items with an
            ``"attention"``); or in-memory dictionaries ``{"image": array, "label": array or
            None, "modality": int}`` (canonical orientation; images already preprocessed).
        sampler: the :class:`AttentionPatchSampler` (its options are used; its generator is
            not: every item gets its own, see ``seed``).
        attention: for cases and dictionaries: ``None`` uses each case's ground-truth label map
            (the paper's experiments); otherwise one entry per case, a label-map path (loaded
            with :func:`agcl.data.load_volume`) or an array.
        modality_ids: one integer per case. Default: a Cohort's ids, or the cases' modality
            names numbered in order of first appearance (``0`` for dictionaries without a
            ``"modality"`` key).
        targets: the organ codes to sample (default: every code in the attention).
        preprocess: apply :func:`agcl.data.preprocess_ct` (paper window and percentiles) to
            images loaded from files.
        cache_mb: prepared cases kept in memory per process (worker), in MiB.
        unknown_labels: passed to :func:`agcl.data.load_case`.
        seed: base seed of the per-item generators.

    Raises:
        ValueError: ``attention`` or ``modality_ids`` of the wrong length, ``cache_mb < 0``, no
            cases.

    Examples:
        >>> import numpy as np
        >>> lab = np.zeros((12, 12, 3), np.int16); lab[3:7, 3:7, 1] = 1
        >>> vols = [{"image": np.random.rand(12, 12, 3).astype("float32"), "label": lab}] * 2
        >>> sampler = AttentionPatchSampler(patch_size=8, patches_per_slice=5)
        >>> ds = AttentionPatchDataset(vols, sampler)
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
        cache_mb: int = 256,
        unknown_labels: Literal["error", "warn"] = "error",
        seed: int = 0,
    ) -> None:
        from agcl.data.cache import VolumeCache
        from agcl.data.prepared import PreparedCases
        from agcl.data.volumes import TrainingVolumes

        if not isinstance(sampler, AttentionPatchSampler):
            raise TypeError(
                f"sampler must be an AttentionPatchSampler; got {type(sampler).__name__}"
            )
        check_int("cache_mb", cache_mb, low=0)
        self.sampler = sampler
        self.targets = (
            None
            if targets is None
            else [check_int(f"targets[{i}]", t) for i, t in enumerate(targets)]
        )
        self.seed = check_int("seed", seed, low=0, high=2**63 - 1)
        self.epoch = 0
        if isinstance(cases, TrainingVolumes) or (
            not hasattr(cases, "cases") and len(cases) and _is_volume(cases[0])
        ):
            if attention is not None or modality_ids is not None:
                raise ValueError(
                    "attention and modality_ids come with the volumes; pass them only with cases"
                )
            self.volumes: Sequence[Mapping[str, Any]] = cases
            return
        ids_from_cohort = getattr(cases, "modality_ids", None)
        items = list(getattr(cases, "cases", cases))
        if not items:
            raise ValueError("cases must hold at least one case or volume; got none")
        if attention is not None and len(attention) != len(items):
            raise ValueError(
                f"attention must have one entry per case ({len(items)}); got {len(attention)}"
            )
        if modality_ids is None:
            modality_ids = (
                ids_from_cohort if ids_from_cohort is not None else _ids_from_names(items)
            )
        if len(modality_ids) != len(items):
            raise ValueError(
                f"modality_ids must have one entry per case ({len(items)}); got {len(modality_ids)}"
            )
        ids = [check_int(f"modality_ids[{i}]", m, low=0) for i, m in enumerate(modality_ids)]
        given = None if attention is None else list(attention)
        if all(isinstance(item, Mapping) for item in items):
            self.volumes = _ArrayVolumes(items, given, ids)
            return
        window = {} if preprocess else {"clip_hu": None, "percentiles": None}
        prepared = PreparedCases(items, ids, unknown_labels=unknown_labels, **window)
        self.volumes = TrainingVolumes(
            prepared, _GivenAttention(items, given), cache=VolumeCache(cache_mb * 2**20)
        )

    def __len__(self) -> int:
        return len(self.volumes)

    def set_epoch(self, epoch: int) -> None:
        """Draw different patches in each epoch (call before iterating; workers see it when the
        loader is re-created or with ``persistent_workers=False``)."""
        self.epoch = check_int("epoch", epoch, low=0)

    def __getitem__(self, index: int) -> PatchBatch:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int; got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index must lie in [0, {len(self)}); got {index}")
        index = int(index) % len(self)
        vol = self.volumes[index]
        gen = torch.Generator().manual_seed(_mix(self.seed, self.epoch, index))
        return self.sampler.sample(
            vol["image"],
            vol["attention"],
            label=vol.get("label"),
            modality=int(vol.get("modality", 0)),
            targets=self.targets,
            volume_index=index,
            generator=gen,
        )


def _is_volume(item: Any) -> bool:
    return isinstance(item, Mapping) and "attention" in item


class _GivenAttention:
    """Attention for a prepared case: its ground truth (``None``) or the entry given for it."""

    def __init__(self, items: Sequence[Any], given: list[Any] | None) -> None:
        self.index = {(str(c.modality), str(c.case_id)): i for i, c in enumerate(items)}
        self.given = given

    def __call__(self, case: Any) -> Any:
        if self.given is None:
            if case.label is None:
                raise ValueError(
                    f"case {case.case_id} has no label and no attention was given; pass attention="
                )
            return case.label
        return _load_attention(
            self.given[self.index[(case.modality_name, case.case_id)]],
            case.image.shape,
            case.case_id,
        )


class _ArrayVolumes(Sequence):
    """In-memory dictionaries as volumes (attention: the given entry or the label map)."""

    def __init__(
        self, items: list[Mapping[str, Any]], given: list[Any] | None, ids: list[int]
    ) -> None:
        self.items, self.given, self.ids = items, given, ids

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        item = self.items[index]
        if "image" not in item:
            raise ValueError(f"cases[{index}] must have an 'image' entry; got keys {sorted(item)}")
        image = np.asarray(item["image"], dtype=np.float32)
        label = None if item.get("label") is None else np.asarray(item["label"])
        if self.given is not None:
            att = _load_attention(self.given[index], image.shape, f"cases[{index}]")
        elif label is None:
            raise ValueError(
                f"cases[{index}] has no label and no attention was given; pass attention="
            )
        else:
            att = label
        return {"image": image, "attention": att, "label": label, "modality": self.ids[index]}


def _load_attention(src: Any, shape: tuple[int, ...], name: str) -> np.ndarray:
    if isinstance(src, (str, os.PathLike)):
        from agcl.data import load_volume

        att = load_volume(src, kind="label").array
    else:
        att = np.asarray(src)
    if att.shape[-3:] != tuple(shape[-3:]):
        raise ValueError(
            f"attention of {name} must match its image shape {tuple(shape)}; got {att.shape}"
        )
    return att


def _ids_from_names(items: list[Any]) -> list[int]:
    names: list[str] = []
    ids = []
    for item in items:
        name = (
            item.get("modality", "") if isinstance(item, Mapping) else getattr(item, "modality", "")
        )
        if isinstance(name, (int, np.integer)):
            ids.append(int(name))
            continue
        if name not in names:
            names.append(name)
        ids.append(names.index(name))
    return ids


def _mix(seed: int, epoch: int, index: int) -> int:
    return int(
        np.random.SeedSequence([seed, epoch, index]).generate_state(1, dtype=np.uint64)[0] >> 1
    )


def collate_patch_batches(batches: Sequence[PatchBatch]) -> PatchBatch:
    """``collate_fn`` for a ``DataLoader`` over :class:`AttentionPatchDataset`: concatenate.

    Examples:
        >>> len(collate_patch_batches([PatchBatch.empty(4), PatchBatch.empty(4)]))
        0
    """
    return PatchBatch.cat(list(batches))


def minibatches(
    batch: PatchBatch,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
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
        idx = order[s : s + batch_size]
        if drop_last and idx.numel() < batch_size:
            break
        yield batch[idx]
