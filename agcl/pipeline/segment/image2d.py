"""Stage 3's inference on 2-D images: the whole image once per class with its attention, then
fusion.

The frozen encoder + ASPP decoder is fully convolutional, so each class runs once on the whole
image with its attention channel; the per-class foreground probabilities (0 outside the
attention) are fused by :func:`agcl.pipeline.fuse_labels`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from agcl.data.images2d import image_tensor
from agcl.pipeline.segment.fusion import fuse_labels

__all__ = ["segment_image_2d"]


def _attention_map(attention: Mapping[int, Any], code: int, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*shape, 1), bool)
    if code in attention:
        box, mask = attention[code]
        out[box] = mask
    return out[..., 0]


@torch.no_grad()
def segment_image_2d(
    model: nn.Module,
    image: np.ndarray,
    attention: Mapping[int, Any],
    class_ids: Sequence[int],
    *,
    threshold: float = 0.5,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Stage-3 inference on one whole image: one pass per class with its attention, then fusion.

    Args:
        model: the stage-3 model (input image channels + 1 attention channel, 2 outputs).
        image: RGB uint8 ``(H, W, 3)``.
        attention: ``{code: (box, mask)}`` as :func:`attention_2d` returns.
        class_ids: the foreground class codes.
        threshold: the fusion threshold on the foreground probability.

    Shape:
        Output ``(labels (H, W) uint8, probabilities (K, H, W) float32)``; a class's
        probability is 0 outside its attention.
    """
    model.eval()
    x = image_tensor(image)
    shape = (int(x.shape[1]), int(x.shape[2]))
    probs = np.zeros((len(class_ids), *shape), np.float32)
    for k, code in enumerate(class_ids):
        att = _attention_map(attention, int(code), shape)
        if not att.any():
            continue
        inp = torch.cat([x, torch.from_numpy(att.astype(np.float32))[None]], 0)[None].to(device)
        fg = torch.softmax(model(inp), 1)[0, 1].float().cpu().numpy()
        probs[k] = np.where(att, fg, 0.0)
    labels = fuse_labels(probs, [int(c) for c in class_ids], threshold=threshold)
    return labels.astype(np.uint8), probs
