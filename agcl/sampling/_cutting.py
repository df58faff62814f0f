"""Private: the windows of a volume's attention, ground truth and ignore map at planned centres.

:meth:`agcl.sampling.AttentionPatchSampler.cut` checks its inputs and assembles the
:class:`~agcl.sampling.PatchBatch`; the functions here cut the per-patch masks: the target
organ's attention (from a label map, a ``(K, ...)`` stack or a padded sparse attention), its
ground truth and the pixels to leave out of the loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from agcl.sampling._sparse_attention import check_unit_range
from agcl.sampling.windows import as_tensor, gather_windows

__all__ = [
    "cut_dense_attention",
    "cut_image",
    "cut_ignore",
    "cut_label",
    "cut_sparse_attention",
    "label_tensor",
]


def label_tensor(
    label: Any, attention: Any, att: Any, shape: tuple[int, ...]
) -> torch.Tensor | None:
    """``label`` as a checked CPU tensor (``att`` itself when the label is the attention)."""
    if label is None:
        return None
    if label is attention and not isinstance(attention, Mapping):
        lab = att
    else:
        lab = as_tensor("label", label).cpu()
    if tuple(lab.shape) != shape:
        raise ValueError(f"label must have the image's shape {shape}; got shape {tuple(lab.shape)}")
    if lab.is_floating_point():
        raise TypeError(f"label must be an integer label map; got dtype {lab.dtype}")
    return lab


def cut_image(
    img: torch.Tensor,
    centres: torch.Tensor,
    axis: int,
    patch_size: tuple[int, int],
    pad: Any,
) -> torch.Tensor:
    """``(P, C, h, w)`` float32 windows of a ``(C, D0, D1, D2)`` image, ``pad`` outside it (a
    value, or a callable giving it, called only when some window crosses the border)."""
    return torch.stack(
        [gather_windows(img[ch], axis, centres, patch_size, pad) for ch in range(img.shape[0])], 1
    ).float()


def cut_sparse_attention(
    padded: Mapping[int, Any],
    centres: torch.Tensor,
    target: torch.Tensor,
    axis: int,
    patch_size: tuple[int, int],
) -> torch.Tensor:
    """``(P, h, w)`` windows of each patch's organ from a padded sparse attention: bool, or
    float16 with the values of a graded one."""
    wanted = torch.unique(target).tolist()
    graded = any(padded[int(c)][1].is_floating_point() for c in wanted if int(c) in padded)
    out = torch.zeros(
        (centres.shape[0], *patch_size), dtype=torch.float16 if graded else torch.bool
    )
    for code in wanted:
        if int(code) not in padded:
            raise ValueError(f"target {code} has no entry in the sparse attention")
        origin, mask = padded[int(code)]
        sel = torch.nonzero(target == code).squeeze(1)
        rel = centres[sel] - origin
        inside = (rel[:, 0] >= 0) & (rel[:, 0] < mask.shape[axis])
        if not bool(inside.all()):
            raise ValueError(
                f"centres of organ {code} must lie on the slices of its attention box; "
                "got some outside"
            )
        out[sel] = gather_windows(mask, axis, rel, patch_size, 0 if graded else False).to(out.dtype)
    return out


def cut_dense_attention(
    att: torch.Tensor,
    centres: torch.Tensor,
    target: torch.Tensor,
    targets: Sequence[int] | None,
    axis: int,
    patch_size: tuple[int, int],
) -> torch.Tensor:
    """``(P, h, w)`` windows of each patch's organ from a label map (bool) or a ``(K, ...)``
    stack (bool, or float32 with a float stack's values; ``targets`` the code of each map)."""
    if att.ndim != 4:
        return equals(gather_windows(att, axis, centres, patch_size, 0), target)
    graded = att.is_floating_point()  # a float stack is cut with its values
    out = torch.empty(
        (centres.shape[0], *patch_size), dtype=torch.float32 if graded else torch.bool
    )
    if targets is not None and len(targets) != att.shape[0]:
        raise ValueError(
            f"targets must give one code per attention map (K={att.shape[0]}); got {len(targets)}"
        )
    codes = torch.arange(1, att.shape[0] + 1) if targets is None else torch.tensor(targets)
    for ch in range(att.shape[0]):  # one gather per organ map
        sel = torch.nonzero(target == codes[ch]).squeeze(1)
        if sel.numel():
            w = gather_windows(att[ch], axis, centres[sel], patch_size, 0)
            if graded:
                check_unit_range(w, f"attention map {ch}'s")
            out[sel] = w.float() if graded else w != 0
    return out


def cut_label(
    lab: torch.Tensor,
    centres: torch.Tensor,
    target: torch.Tensor,
    axis: int,
    patch_size: tuple[int, int],
) -> torch.Tensor:
    """``(P, 1, h, w)`` float 0/1 ground truth of each patch's own organ."""
    return equals(gather_windows(lab, axis, centres, patch_size, 0), target).float().unsqueeze(1)


def cut_ignore(
    ignore: Any,
    shape: tuple[int, ...],
    centres: torch.Tensor,
    axis: int,
    patch_size: tuple[int, int],
) -> torch.Tensor:
    """``(P, 1, h, w)`` bool windows of an ignore map (outside the volume: ignored)."""
    ign = as_tensor("ignore", ignore).cpu()
    if tuple(ign.shape) != shape:
        raise ValueError(
            f"ignore must have the image's shape {shape}; got shape {tuple(ign.shape)}"
        )
    mask = ign if ign.dtype == torch.bool else ign != 0
    return gather_windows(mask, axis, centres, patch_size, True).unsqueeze(1)


def equals(windows: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``windows == target`` per patch, compared in the windows' own dtype (no upcast)."""
    if windows.dtype == torch.bool:
        return windows & (target == 1).view(-1, 1, 1)
    return windows == target.to(windows.dtype).view(-1, 1, 1)
