"""The patch streams of stages 2 and 3: one :class:`agcl.sampling.PatchStream` per stage."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from agcl.pipeline.toolkit import distributed as dd

__all__ = ["epoch_batches", "patch_stream"]


def patch_stream(
    volumes: Sequence[Mapping[str, Any]], config: Any, organ_ids: Sequence[int], *, stage: str
) -> Any:
    """The :class:`agcl.sampling.PatchStream` of ``stage`` (``"pretrain"``: no labels;
    ``"segment"``: each patch's organ mask as its label).

    Per-rank batches of ``batch_size // world_size`` patches; the seed differs per stage. The
    sampler's patch size is ``pretrain.patch_size`` in both stages (stage 3's encoder is stage
    2's).
    """
    from agcl.sampling import AttentionPatchSampler, PatchStream

    p, d = config.pretrain, config.data
    s = config.pretrain if stage == "pretrain" else config.segment
    sampler = AttentionPatchSampler(
        patch_size=p.patch_size,
        patches_per_slice=s.patches_per_slice,
        max_patches=s.max_patches_per_volume,
        seed=0,
    )
    world = dd.world_size()
    return PatchStream(
        volumes,
        sampler,
        batch_size=max(1, s.batch_size // world),
        with_label=stage == "segment",
        targets=list(organ_ids),
        shards=d.shards,
        streams=d.streams,
        buffer_size=max(d.shuffle_buffer, s.batch_size),
        chunk_size=d.chunk_size,
        seed=config.seed * 1009 + (0 if stage == "pretrain" else 7),
        rank=dd.rank(),
        world_size=world,
        drop_last=world > 1,
    )


def epoch_batches(
    stream: Any, config: Any, epoch: int, device: str | torch.device
) -> Iterator[Any]:
    """The batches of one epoch (the stream reseeded for ``epoch``; pinned memory on CUDA)."""
    stream.set_epoch(epoch)
    return stream.loader(config.data.num_workers, pin_memory=torch.device(device).type == "cuda")
