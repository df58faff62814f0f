"""Private centre drawing for the attention patch sampler: group voxels, draw centres (of a
dense attention: :func:`plan_dense`; the sparse form: ``agcl.sampling._sparse_attention``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["attention_groups", "draw_centres", "plan_dense"]


class _Sorted:
    """Flat indices seen through a permutation, gathered only where they are read."""

    def __init__(self, flat: torch.Tensor, perm: torch.Tensor) -> None:
        self.flat, self.perm = flat, perm

    def __getitem__(self, idx: torch.Tensor) -> torch.Tensor:
        return self.flat[self.perm[idx]]

    def gather_all(self) -> torch.Tensor:
        return self.flat[self.perm]


def _needs_modulo(axis: int) -> bool:
    """Whether a slice index needs a modulo after the division by its stride."""
    return axis != 0


def attention_groups(
    att: torch.Tensor, targets: Sequence[int] | None, axis: int
) -> tuple[torch.Tensor, _Sorted, torch.Tensor, torch.Tensor]:
    """Attention voxels grouped by (code, slice) with one nonzero and one small-key sort.

    Returns ``groups`` (the non-empty wanted group ids ``code_slot * n_slices + slice``),
    the flat voxel indices into the 3-D volume in group order (lazily permuted) and
    per-group ``starts`` and ``counts`` into them. For a stack, ``code_slot`` is the map
    index.
    """
    shape = att.shape[-3:]
    n_sl = shape[axis]
    vol_numel = shape[0] * shape[1] * shape[2]
    src = att if att.is_contiguous() else att.contiguous()
    flat = torch.nonzero(src.reshape(-1)).squeeze(1)
    if att.ndim == 4:
        k = att.shape[0]
        if targets is not None and len(targets) != k:
            raise ValueError(
                f"targets must give one code per attention map (K={k}); got {len(targets)}"
            )
        slot, flat = flat // vol_numel, flat % vol_numel
        n_slots, wanted = k, None
    else:
        slot = src.reshape(-1)[flat].long()
        if slot.numel() and int(slot.min()) < 0:
            raise ValueError(
                f"attention label map must hold codes >= 0; got minimum {int(slot.min())}"
            )
        if targets is not None and any(int(t) <= 0 for t in targets):
            raise ValueError(f"targets must be positive organ codes; got {list(targets)}")
        n_slots = int(slot.max()) + 1 if slot.numel() else 1
        wanted = (
            None
            if targets is None
            else torch.tensor(
                sorted({int(t) for t in targets if int(t) < n_slots}), dtype=torch.long
            )
        )
    stride = int(torch.tensor(shape[axis + 1 :]).prod()) if axis < 2 else 1
    sl = flat if stride == 1 else flat // stride
    key = slot * n_sl + (sl % n_sl if _needs_modulo(axis) else sl)
    n_keys = n_slots * n_sl
    key = key.to(torch.int16 if n_keys < 2**15 else torch.int32)  # radix-friendly small keys
    if key.device.type == "cpu":  # numpy's stable sort of 16-bit keys is a radix sort
        kn = key.numpy()
        perm = torch.from_numpy(np.argsort(kn, kind="stable"))
        counts = torch.from_numpy(np.bincount(kn, minlength=n_keys).astype(np.int64))
    else:
        perm = torch.sort(key, stable=True).indices
        counts = torch.bincount(key.long(), minlength=n_keys)
    ordered = _Sorted(flat, perm)  # stable: voxels stay row-major within a group
    starts = torch.cumsum(counts, 0) - counts
    present = counts > 0
    if wanted is not None:
        keep = torch.zeros(n_slots, dtype=torch.bool)
        keep[wanted] = True
        present &= keep.repeat_interleave(n_sl)
    return torch.nonzero(present).squeeze(1), ordered, starts, counts


def draw_centres(
    groups: torch.Tensor,
    flat: _Sorted,
    starts: torch.Tensor,
    counts: torch.Tensor,
    shape: tuple[int, ...],
    gen: torch.Generator,
    *,
    axis: int,
    per_slice: int,
    mode: str,
    margin: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres ``(P, 3)`` as (slice, i, j) and the group of each, ``per_slice`` per group."""
    a = axis
    b, c = (d for d in range(3) if d != a)
    n_sl, k, m = shape[a], per_slice, margin
    strides = [shape[1] * shape[2], shape[2], 1]

    def split(f: torch.Tensor) -> torch.Tensor:
        return torch.stack([(f // strides[d]) % shape[d] for d in (a, b, c)], -1)

    if mode == "mask" and m > 0:
        return draw_dilated(
            groups,
            flat,
            starts,
            counts,
            shape,
            gen,
            split,
            axis=axis,
            per_slice=per_slice,
            margin=margin,
        )
    g = groups.shape[0]
    if mode == "mask":
        u = torch.rand(g, k, generator=gen, dtype=torch.float64)
        cnt = counts[groups].unsqueeze(1)
        idx = starts[groups].unsqueeze(1) + torch.minimum((u * cnt).long(), cnt - 1)
        centres = split(flat[idx.reshape(-1)])
    else:
        lut = torch.full((counts.shape[0],), -1, dtype=torch.long)
        lut[groups] = torch.arange(g)
        owner = lut[torch.repeat_interleave(torch.arange(counts.shape[0]), counts)]
        keep = owner >= 0
        owner, coords = owner[keep], split(flat.gather_all()[keep])[:, 1:]
        lo = torch.full((g, 2), max(shape), dtype=torch.long).scatter_reduce(
            0, owner.unsqueeze(1).expand(-1, 2), coords, "amin"
        )
        hi = torch.zeros((g, 2), dtype=torch.long).scatter_reduce(
            0, owner.unsqueeze(1).expand(-1, 2), coords, "amax"
        )
        lo = (lo - m).clamp(min=0)
        hi = torch.minimum(hi + m, torch.tensor([shape[b] - 1, shape[c] - 1]))
        u = torch.rand(g, k, 2, generator=gen, dtype=torch.float64)
        span = (hi - lo + 1).unsqueeze(1)
        inplane = lo.unsqueeze(1) + torch.minimum((u * span).long(), span - 1)
        sl = (groups % n_sl).view(-1, 1, 1).expand(-1, k, 1)
        centres = torch.cat([sl, inplane], 2).reshape(-1, 3)
    return centres, groups.repeat_interleave(k)


def draw_dilated(
    groups: torch.Tensor,
    flat: _Sorted,
    starts: torch.Tensor,
    counts: torch.Tensor,
    shape: tuple[int, ...],
    gen: torch.Generator,
    split: Callable[[torch.Tensor], torch.Tensor],
    *,
    axis: int,
    per_slice: int,
    margin: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``"mask"`` mode with a margin: draw inside each group's in-plane dilated attention."""
    a = axis
    b, c = (d for d in range(3) if d != a)
    n_sl, k, m = shape[a], per_slice, margin
    slots = torch.unique(groups // n_sl)
    out_c, out_g = [], []
    for slot in slots.tolist():  # one loop per organ
        mine = groups[groups // n_sl == slot]
        sel = torch.cat(
            [torch.arange(s, s + n) for s, n in zip(starts[mine].tolist(), counts[mine].tolist())]
        )
        coords = split(flat[sel])  # one arange per (organ, slice)
        lo = (coords.min(0).values - torch.tensor([0, m, m])).clamp(min=0)
        hi = torch.minimum(
            coords.max(0).values + torch.tensor([0, m, m]),
            torch.tensor([n_sl - 1, shape[b] - 1, shape[c] - 1]),
        )
        block = torch.zeros(*(hi - lo + 1).tolist())
        rel = coords - lo
        block[rel[:, 0], rel[:, 1], rel[:, 2]] = 1.0
        grown = (
            torch.nonzero(
                F.max_pool2d(block.unsqueeze(1), 2 * m + 1, stride=1, padding=m).squeeze(1)
            )
            + lo
        )
        sl_counts = torch.bincount(grown[:, 0], minlength=n_sl)  # grown is sorted by slice
        sl_starts = torch.cumsum(sl_counts, 0) - sl_counts
        sls = mine % n_sl
        cnt = sl_counts[sls].unsqueeze(1)
        u = torch.rand(sls.shape[0], k, generator=gen, dtype=torch.float64)
        idx = sl_starts[sls].unsqueeze(1) + torch.minimum((u * cnt).long(), cnt - 1)
        out_c.append(grown[idx.reshape(-1)])
        out_g.append(mine.repeat_interleave(k))
    if not out_c:
        return torch.zeros(0, 3, dtype=torch.long), groups[:0]
    return torch.cat(out_c), torch.cat(out_g)


def plan_dense(
    att: torch.Tensor,
    shape: tuple[int, ...],
    targets: Sequence[int] | None,
    gen: torch.Generator,
    *,
    axis: int,
    margin: int,
    per_slice: int,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centres (P, 3), target (P,))`` of a label map (``targets``: the codes to sample) or a
    ``(K, *shape)`` stack (``targets``: the code of each map, default ``1..K``)."""
    groups, flat, starts, counts = attention_groups(att, targets, axis)
    centres, group = draw_centres(
        groups,
        flat,
        starts,
        counts,
        shape,
        gen,
        axis=axis,
        per_slice=per_slice,
        mode=mode,
        margin=margin,
    )
    slot = group // shape[axis]
    if att.ndim != 4:
        return centres, slot
    codes = torch.arange(1, att.shape[0] + 1) if targets is None else torch.tensor(targets)
    return centres, codes[slot] if slot.numel() else slot
