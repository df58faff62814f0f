"""Private: the sparse attention form ``{code: (box, mask)}`` of the patch sampler.

A sparse attention holds, per organ code, a box (three slices into the volume) and the organ's
mask inside it (bool, or float values in ``[0, 1]`` for a graded attention), so no dense map of
every organ is ever built. This module checks its entries, draws patch centres inside its masks
and pads the masks once per volume so that every window is one strided read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from agcl._validation import check_int_sequence, is_int
from agcl.sampling._centres import attention_groups, draw_centres
from agcl.sampling.windows import as_tensor

__all__ = [
    "PaddedSparse",
    "check_unit_range",
    "pad_sparse",
    "plan_sparse",
    "sparse_codes",
    "sparse_entry",
]


class PaddedSparse(dict):
    """``{code: (origin (3,) in (slice, i, j) order, padded mask)}`` from :func:`pad_sparse`."""


def sparse_codes(attention: Mapping[Any, Any]) -> list[int]:
    """The organ codes (keys) of a sparse attention, which must be integers (2.7 is refused,
    not truncated to 2)."""
    codes = list(attention)
    bad = [k for k in codes if not is_int(k)]
    if bad:
        raise TypeError(
            f"a sparse attention's keys must be integer organ codes; got {bad[0]!r} "
            f"({type(bad[0]).__name__})"
        )
    return [int(k) for k in codes]


def sparse_entry(
    attention: Mapping[int, Any], code: int, shape: tuple[int, ...]
) -> tuple[tuple[slice, ...], torch.Tensor]:
    """``(box, mask)`` of ``code`` in a sparse attention, checked against the volume ``shape``.

    The mask comes back bool (integer masks: non-zero), or float16 for a float (graded) mask.
    """
    entry = attention[code]
    if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
        raise TypeError(f"attention[{code}] must be a (box, mask) pair; got {type(entry).__name__}")
    box, mask = entry
    if len(box) != 3 or not all(isinstance(s, slice) for s in box):
        raise TypeError(f"attention[{code}]'s box must be a tuple of three slices; got {box!r}")
    if any(s.step not in (None, 1) for s in box):
        raise ValueError(f"attention[{code}]'s box must use unit steps; got {box!r}")
    box = tuple(slice(*s.indices(n)[:2]) for s, n in zip(box, shape))
    m = as_tensor(f"attention[{code}] mask", mask).cpu()
    want = tuple(s.stop - s.start for s in box)
    if tuple(m.shape) != want:
        raise ValueError(
            f"attention[{code}]'s mask must have its box's shape {want}; got {tuple(m.shape)}"
        )
    if m.is_floating_point():
        check_unit_range(m, f"attention[{code}]'s")
        return box, m.to(torch.float16)
    return box, m if m.dtype == torch.bool else m != 0


def check_unit_range(values: torch.Tensor, name: str) -> None:
    """A graded (float) attention holds values in [0, 1] (NaN is refused too)."""
    ok = (values >= 0) & (values <= 1)
    if values.numel() and not bool(ok.all()):
        raise ValueError(
            f"{name} float mask must hold values in [0, 1] (a graded attention); "
            f"got {values[~ok][0].item()}"
        )


def plan_sparse(
    attention: Mapping[int, Any],
    shape: tuple[int, ...],
    targets: Sequence[int] | None,
    gen: torch.Generator,
    *,
    axis: int,
    margin: int,
    per_slice: int,
    mode: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(centres (P, 3), target (P,))`` drawn inside each organ's mask, organ by organ (sorted
    codes, or the order of ``targets``), as :meth:`AttentionPatchSampler.plan` describes."""
    codes = sorted(sparse_codes(attention)) if targets is None else list(targets)
    a = axis
    b, c = (d for d in range(3) if d != a)
    out_c, out_t = [torch.zeros(0, 3, dtype=torch.long)], [torch.zeros(0, dtype=torch.long)]
    for code in codes:
        if code not in attention:
            continue
        box, mask = sparse_entry(attention, code, shape)
        mask = mask != 0  # where patches may be centred (a graded mask: wherever it is > 0)
        # grow the box in-plane by the margin so that the margin is not clipped at its edge
        grown = [
            slice(
                max(box[d].start - (margin if d != a else 0), 0),
                min(box[d].stop + (margin if d != a else 0), shape[d]),
            )
            for d in range(3)
        ]
        if grown != list(box):
            big = torch.zeros([g.stop - g.start for g in grown], dtype=torch.bool)
            big[
                tuple(
                    slice(box[d].start - grown[d].start, box[d].stop - grown[d].start)
                    for d in range(3)
                )
            ] = mask
            mask = big
        sub = tuple(int(g.stop - g.start) for g in grown)
        groups, flat, starts, counts = attention_groups(mask, None, a)
        cen, _ = draw_centres(
            groups,
            flat,
            starts,
            counts,
            sub,
            gen,
            axis=a,
            per_slice=per_slice,
            mode=mode,
            margin=margin,
        )
        out_c.append(cen + torch.tensor([grown[a].start, grown[b].start, grown[c].start]))
        out_t.append(torch.full((cen.shape[0],), code, dtype=torch.long))
    return torch.cat(out_c), torch.cat(out_t)


def pad_sparse(
    attention: Mapping[int, Any],
    shape: tuple[int, ...],
    *,
    axis: int,
    patch_size: tuple[int, int],
    codes: Any = None,
) -> PaddedSparse:
    """Each mask of a sparse attention zero-padded in-plane by half a patch (``codes``: those
    organs only), with its origin, as :meth:`AttentionPatchSampler.pad_attention` describes."""
    a = axis
    b, c = (d for d in range(3) if d != a)
    grow = {a: 0, b: patch_size[0] // 2 + 1, c: patch_size[1] // 2 + 1}
    wanted = (
        None if codes is None else set(check_int_sequence("codes", torch.as_tensor(codes).unique()))
    )
    out = PaddedSparse()
    for code in sparse_codes(attention):
        if wanted is not None and int(code) not in wanted:
            continue
        box, mask = sparse_entry(attention, int(code), shape)
        big = torch.zeros([mask.shape[d] + 2 * grow[d] for d in range(3)], dtype=mask.dtype)
        big[tuple(slice(grow[d], grow[d] + mask.shape[d]) for d in range(3))] = mask
        origin = torch.tensor(
            [box[a].start - grow[a], box[b].start - grow[b], box[c].start - grow[c]]
        )
        out[int(code)] = (origin, big)
    return out
