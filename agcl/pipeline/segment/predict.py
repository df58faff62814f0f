"""Stage 3's inference: sliding windows inside each organ's attention, then label fusion.

For each organ and each axial slice where its attention is present, windows of the training
patch size slide over the attention's bounding box in that slice with ``stride`` (<= the patch
size; a box smaller than a window gets one centred window). The two-channel windows (image,
attention; the image padded with its minimum, the attention with 0 outside the volume) go
through the segmentation model; the organ probabilities of overlapping windows are averaged and
kept only inside the attention. Label fusion then gives every voxel the organ with the highest
probability, or background when none exceeds the threshold (:func:`agcl.pipeline.fuse_labels`,
computed incrementally here so only one probability map is held at a time). Where the stage-1
probabilities are at hand, each organ's stage-3 probability is first blended with its coarse
probability (``segment.coarse_weight``, an ensemble of the two stages; see
:func:`segment_with_attention`), and overlapping windows can be weighted by a Gaussian
(``segment.window``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from agcl._validation import check_in_range, check_int
from agcl.pipeline.segment.fusion import check_threshold
from agcl.pipeline.toolkit.windows import WINDOW_WEIGHTS, sliding_window, window_starts
from agcl.sampling.attention_maps import organ_bboxes

__all__ = ["segment_as_configured", "segment_with_attention", "upsample_in_box"]


def upsample_in_box(
    coarse: np.ndarray | torch.Tensor, full_shape: Sequence[int], box: Sequence[slice]
) -> np.ndarray:
    """Trilinear upsampling of a coarse-grid map to ``full_shape``, computed only inside ``box``.

    Equal to ``F.interpolate(coarse, size=full_shape, mode="trilinear", align_corners=False)``
    cropped to ``box`` (the rule stage 1's resampling uses), without building the full-size
    volume: for a 512 x 512 x 200 scan and 13 organs that would be 2.7 GB of float32.

    Shape:
        coarse: ``(x, y, z)``; output: the box's shape, float32.

    Examples:
        >>> import numpy as np
        >>> c = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
        >>> upsample_in_box(c, (4, 4, 4), (slice(0, 4), slice(1, 2), slice(0, 1)))[:, 0, 0].tolist()
        [0.5, 1.5, 3.5, 4.5]
    """
    c = (
        coarse.detach().cpu().float().numpy()
        if isinstance(coarse, torch.Tensor)
        else np.asarray(coarse, np.float32)
    )
    if c.ndim != 3 or len(full_shape) != 3 or len(box) != 3:
        raise ValueError(
            f"coarse must be (x, y, z) and full_shape/box have 3 entries; got {c.shape}, "
            f"{tuple(full_shape)}, {len(box)} slices"
        )
    out = c
    for axis, (n_c, n_f, sl) in enumerate(zip(c.shape, full_shape, box)):
        i = np.arange(sl.start, sl.stop, dtype=np.float64)
        src = np.maximum((i + 0.5) * n_c / n_f - 0.5, 0.0)
        i0 = np.minimum(np.floor(src).astype(np.int64), n_c - 1)
        i1 = np.minimum(i0 + 1, n_c - 1)
        lam = (src - i0).astype(np.float32)
        shape = [1, 1, 1]
        shape[axis] = len(i)
        lam = lam.reshape(shape)
        out = np.take(out, i0, axis=axis) * (1 - lam) + np.take(out, i1, axis=axis) * lam
    return out.astype(np.float32)


@torch.no_grad()
def _organ_probability(
    model,
    image: np.ndarray,
    att: np.ndarray,
    box: tuple[slice, ...],
    *,
    patch: int,
    stride: int,
    batch_size: int,
    device,
    pad_value: float,
    weight: str = "uniform",
):
    """Weighted mean of the window probabilities of one organ inside ``box`` (grown by the window),
    0 outside the attention; returns ``(probability, region)`` with ``region`` the slices of the
    grown box (which may reach outside the image)."""
    half = patch // 2 + 1
    x0, x1 = box[0].start - half, box[0].stop + half
    y0, y1 = box[1].start - half, box[1].stop + half
    zsl = box[2]
    region = (slice(x0, x1), slice(y0, y1), zsl)
    # the part of the grown box inside the image; windows reaching out are padded by sliding_window
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x1, image.shape[0]), min(y1, image.shape[1])
    sub_att = np.asarray(att[sx0:sx1, sy0:sy1, zsl], np.float32)
    corners = []
    for z in range(sub_att.shape[2]):
        sl = sub_att[:, :, z] > 0
        if not sl.any():
            continue
        rows, cols = np.flatnonzero(sl.any(1)), np.flatnonzero(sl.any(0))
        for r in window_starts(int(rows[0]), int(rows[-1]), patch, stride):
            for c in window_starts(int(cols[0]), int(cols[-1]), patch, stride):
                corners.append((r, c, z))
    out = np.zeros((x1 - x0, y1 - y0, zsl.stop - zsl.start), np.float32)
    if not corners:
        return out, region
    inputs = torch.stack(
        [
            torch.from_numpy(np.ascontiguousarray(image[sx0:sx1, sy0:sy1, zsl], np.float32)),
            torch.from_numpy(sub_att),
        ]
    )

    def predict(
        batch: torch.Tensor,
    ) -> torch.Tensor:  # (B, 2, p, p, 1) windows -> organ probability
        return torch.softmax(model(batch[..., 0].to(device)).float(), 1)[:, 1:2, ..., None].cpu()

    prob = sliding_window(
        predict,
        inputs,
        (patch, patch, 1),
        corners,
        weight=weight,
        pad_value=(pad_value, 0.0),
        batch_size=batch_size,
    )
    inside = (slice(sx0 - x0, sx1 - x0), slice(sy0 - y0, sy1 - y0), slice(None))
    out[inside] = (prob[0] * (inputs[1] > 0)).numpy()
    return out, region


def segment_with_attention(
    model: torch.nn.Module,
    image: np.ndarray,
    attention: np.ndarray,
    organ_ids: Sequence[int],
    *,
    patch_size: int,
    stride: int,
    threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    window: str = "uniform",
    coarse_probability: np.ndarray | torch.Tensor | None = None,
    coarse_ids: Sequence[int] | None = None,
    coarse_weight: float = 0.0,
    unblended: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Segment a preprocessed volume with a trained stage-3 model and per-organ attention.

    Organ ``k``'s score at a voxel inside its attention is
    ``(1 - coarse_weight) * p3 + coarse_weight * pc``: ``p3`` the stage-3 probability (windows
    averaged), ``pc`` the stage-1 probability of the organ upsampled trilinearly (an ensemble of
    the two stages; ``coarse_weight=0``, or no ``coarse_probability``, is the paper's fusion of
    ``p3`` alone). With the weight 0.5 and the threshold 0.5 a voxel passes where
    ``p3 + pc > 1``: one where stage 3 is sure (``p3 = 1``) stays the organ wherever the coarse
    probability is above 0, one where stage 3 is sure of background (``p3 = 0``) stays background
    whatever the coarse map says, and in between the two stages must agree. That removes stage
    3's stray false positives far from the coarse organ, while an organ that loses the coarse
    arg-max (a low ``pc``) keeps what stage 3 is confident of. Outside its attention
    an organ's score is 0. Fusion: the highest score wins, background where none exceeds
    ``threshold``.

    Args:
        model: maps ``(B, 2, patch, patch)`` windows to ``(B, 2, patch, patch)`` logits.
        image: the preprocessed image.
        attention: one attention map per organ, ``(K, X, Y, Z)``, or sparse
            ``{code: (box, mask)}`` (:mod:`agcl.sampling.attention_maps`; only one organ's
            full-grid mask exists at a time). Non-zero is inside; a float (graded) map's values
            are what the model's attention channel sees, as in training.
        organ_ids: the organ code of each attention map.
        patch_size: the window size (the training patch size).
        stride: the window step, ``1 <= stride <= patch_size``.
        threshold: label fusion threshold on the foreground probability.
        batch_size: windows per forward pass.
        device: where the model runs.
        window: how overlapping windows are averaged, ``"uniform"`` or ``"gaussian"``
            (:func:`agcl.pipeline.toolkit.window_weight`).
        coarse_probability: stage-1 softmax probabilities on the coarse grid, channel 0 the
            background and channel ``i`` organ ``coarse_ids[i - 1]`` (as
            :func:`agcl.pipeline.stage1_coarse.coarse_probabilities` gives them), or ``None``.
        coarse_ids: the organ code of each coarse channel ``1..C`` (default ``organ_ids``); an
            organ of ``organ_ids`` without a coarse channel is scored by stage 3 alone.
        coarse_weight: in ``[0, 1]``, the weight of the coarse probability in each organ's score.
        unblended: also return stage 3's own label map (``coarse_weight = 0``), fused from the
            same window probabilities (no second pass of the model), so what the encoder and
            decoder give can be scored apart from the coarse ensemble.

    Shape:
        image: ``(X, Y, Z)`` (axial slices along the last axis); attention: ``(K, X, Y, Z)``;
        coarse_probability: ``(C + 1, x, y, z)``; output ``(X, Y, Z)`` int16 organ codes (with
        ``unblended``: a pair of them, the blended map first).

    Raises:
        TypeError: non-int ``patch_size``/``stride``/``batch_size``, a non-number threshold or
            coarse_weight.
        ValueError: shapes that disagree, a stride outside ``[1, patch_size]``, a threshold
            outside ``[0, 1)`` or NaN, ``batch_size < 1``, an unknown ``window``, a
            ``coarse_weight`` outside ``[0, 1]``, ``coarse_ids`` of the wrong length.
    """
    check_int("patch_size", patch_size, low=1)
    check_int("stride", stride, low=1, high=patch_size)
    check_threshold(threshold)
    check_int("batch_size", batch_size, low=1)
    if window not in WINDOW_WEIGHTS:
        raise ValueError(f"window must be one of {WINDOW_WEIGHTS}; got {window!r}")
    weight_c = check_in_range("coarse_weight", coarse_weight, 0.0, 1.0)
    channel: dict[int, int] = {}
    if coarse_probability is not None:
        cp = coarse_probability
        if isinstance(cp, torch.Tensor):
            cp = cp.detach().cpu().float().numpy()
        coarse_probability = np.asarray(cp, np.float32)
        ids_c = list(organ_ids) if coarse_ids is None else [int(i) for i in coarse_ids]
        if coarse_probability.ndim != 4 or coarse_probability.shape[0] != len(ids_c) + 1:
            raise ValueError(
                "coarse_probability must be (C + 1, x, y, z) with C = len(coarse_ids) = "
                f"{len(ids_c)}; got shape {coarse_probability.shape}"
            )
        channel = {organ: i + 1 for i, organ in enumerate(ids_c)}
    image = np.asarray(image, dtype=np.float32)
    sparse = isinstance(attention, Mapping)
    if not sparse:
        attention = np.asarray(attention)
        if attention.shape[1:] != image.shape or attention.shape[0] != len(organ_ids):
            raise ValueError(
                f"attention must be (K={len(organ_ids)}, *image.shape) with image {image.shape}; "
                f"got attention {attention.shape}"
            )
    if not (1 <= stride <= patch_size):
        raise ValueError(f"stride must lie in [1, patch_size={patch_size}]; got {stride}")
    model.eval()
    best = np.zeros(image.shape, np.float32)
    labels = np.zeros(image.shape, np.int16)
    best3 = np.zeros(image.shape, np.float32) if unblended else None
    labels3 = np.zeros(image.shape, np.int16) if unblended else None
    pad_value = float(image.min()) if image.size else 0.0
    for k, organ in enumerate(organ_ids):
        if sparse:  # one organ's full-grid mask at a time, never a (K, X, Y, Z) stack
            if int(organ) not in attention:
                continue
            sbox, smask = attention[int(organ)]
            smask = np.asarray(smask)
            att_k = np.zeros(
                image.shape, np.float16 if smask.dtype.kind == "f" else bool
            )  # graded: its values
            att_k[tuple(sbox)] = smask
            inner = organ_bboxes((smask != 0).astype(np.uint8), [1]).get(
                1
            )  # tight box inside the stored one
            box = (
                None
                if inner is None
                else tuple(slice(o.start + i.start, o.start + i.stop) for o, i in zip(sbox, inner))
            )
        else:
            att_k = attention[k]
            box = organ_bboxes((att_k != 0).astype(np.int16), [1]).get(1)
        if box is None:
            continue
        prob, region = _organ_probability(
            model,
            image,
            att_k,
            box,
            patch=patch_size,
            stride=stride,
            batch_size=batch_size,
            device=device,
            pad_value=pad_value,
            weight=window,
        )
        # crop the padded region back to the image
        lo = [max(s.start, 0) for s in region[:2]]
        hi = [min(s.stop, n) for s, n in zip(region[:2], image.shape[:2])]
        p = prob[
            lo[0] - region[0].start : hi[0] - region[0].start,
            lo[1] - region[1].start : hi[1] - region[1].start,
        ]
        view = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), region[2])
        if best3 is not None and labels3 is not None:
            better3 = p > best3[view]
            best3[view] = np.where(better3, p, best3[view])
            labels3[view] = np.where(better3, np.int16(organ), labels3[view])
        if weight_c > 0 and int(organ) in channel:
            pc = upsample_in_box(coarse_probability[channel[int(organ)]], image.shape, view)  # type: ignore[index]
            p = ((1.0 - weight_c) * p + weight_c * pc) * (att_k[view] != 0)
        better = p > best[view]
        best[view] = np.where(better, p, best[view])
        labels[view] = np.where(better, np.int16(organ), labels[view])
    labels[best <= threshold] = 0
    if best3 is not None and labels3 is not None:
        labels3[best3 <= threshold] = 0
        return labels, labels3
    return labels


def segment_as_configured(
    model,
    image: np.ndarray,
    attention: Any,
    organ_ids: Sequence[int],
    config: Any,
    *,
    device: str | torch.device = "cpu",
    coarse_probability: Any = None,
    coarse_ids: Sequence[int] | None = None,
    unblended: bool = False,
) -> Any:
    """:func:`segment_with_attention` with a run's stage-3 inference settings (``config.segment``:
    stride, threshold, window, batch size, coarse weight; the training patch size): the one call
    that the pipeline's evaluation, :func:`agcl.pipeline.predict_volume` and
    ``benchmarks/bench_heldout.py`` share."""
    s = config.segment
    return segment_with_attention(
        model,
        image,
        attention,
        organ_ids,
        patch_size=config.pretrain.patch_size,
        stride=s.stride,
        threshold=s.threshold,
        batch_size=s.inference_batch_size,
        device=device,
        window=s.window,
        coarse_probability=coarse_probability,
        coarse_ids=coarse_ids,
        coarse_weight=s.coarse_weight,
        unblended=unblended,
    )
