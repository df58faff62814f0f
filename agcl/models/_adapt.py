"""Adapt a pretrained first convolution to a different number of input channels.

Published ImageNet weights expect RGB input; AGCL feeds 2 channels (image + attention), a CT
slice alone has 1. Instead of re-initialising the first convolution (which throws its pretrained
filters away) :func:`adapt_input_conv` rewrites the 3-channel kernel so that an input whose
channels are all equal gives exactly the output the original conv gives on the same image in RGB.
"""

from __future__ import annotations

import logging

import torch

from agcl._validation import check_int, check_ndim, check_tensor

__all__ = ["adapt_input_conv"]

logger = logging.getLogger("agcl.models")


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Return a copy of a first-conv kernel rewritten for ``in_chans`` input channels.

    With ``C = weight.shape[1]`` pretrained input channels (3 for ImageNet):

    * ``in_chans == C``: the weights are returned unchanged (a copy).
    * ``in_chans == 1``: the kernels are summed over the input channels (a grey image repeated to
      RGB gives the same response).
    * otherwise: the input channels are repeated cyclically up to ``in_chans`` and rescaled by
      ``C / in_chans``; when ``in_chans`` is not a multiple of ``C`` the residual
      ``sum_c W[:, c] - sum_j W'[:, j]`` is spread evenly over the new channels, so the sum over
      input channels is preserved exactly for every ``in_chans`` (for multiples of ``C`` the
      residual is zero and this is plain repeat-and-rescale).

    Hence ``conv(x.repeat(1, in_chans, 1, 1), W') == conv(x.repeat(1, C, 1, 1), W)`` for a
    one-channel ``x``, up to rounding. What was done is logged on the ``agcl.models`` logger (INFO).
    The arithmetic runs in float64 and the result is cast back to ``weight.dtype``.

    Args:
        weight: the pretrained kernel.
        in_chans: the number of input channels wanted (>= 1).

    Shape:
        - weight: ``(O, C, kh, kw)`` (or any ``(O, C, *k)``).
        - output: ``(O, in_chans, kh, kw)``.

    Returns:
        The adapted kernel (a new tensor; ``weight`` is not modified).

    Raises:
        TypeError: ``weight`` is not a tensor or ``in_chans`` is not an int.
        ValueError: ``weight`` has fewer than 3 dimensions or ``in_chans < 1``.

    References:
        H. H. Lee et al., Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation (AGCL): 2-channel (image, attention) input to an ImageNet-style ResNet.

    Examples:
        >>> w = torch.ones(4, 3, 7, 7)
        >>> adapt_input_conv(w, 1).shape, float(adapt_input_conv(w, 1)[0, 0, 0, 0])
        (torch.Size([4, 1, 7, 7]), 3.0)
        >>> float(adapt_input_conv(w, 2).sum(1)[0, 0, 0])
        3.0
    """
    check_tensor("weight", weight)
    check_ndim("weight", weight, (3, 4, 5), "(out_channels, in_channels, *kernel_size)")
    in_chans = check_int("in_chans", in_chans, low=1)
    src = int(weight.shape[1])
    w = weight.detach().to(torch.float64)
    if in_chans == src:
        logger.info("adapt_input_conv: kernel already has %d input channels; unchanged", src)
        return weight.detach().clone()
    if in_chans == 1:
        out = w.sum(dim=1, keepdim=True)
        logger.info("adapt_input_conv: summed %d pretrained input channels into 1", src)
    else:
        reps = -(-in_chans // src)  # ceil
        repeat = [1] * w.ndim
        repeat[1] = reps
        out = w.repeat(*repeat)[:, :in_chans] * (src / in_chans)
        residual = w.sum(dim=1, keepdim=True) - out.sum(dim=1, keepdim=True)
        out = out + residual / in_chans
        logger.info(
            "adapt_input_conv: repeated %d pretrained input channels to %d, rescaled by %d/%d%s",
            src,
            in_chans,
            src,
            in_chans,
            "" if in_chans % src == 0 else " and spread the residual so channel sums are kept",
        )
    return out.to(weight.dtype)
