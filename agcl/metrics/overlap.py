"""Overlap metrics on binary masks: the Dice similarity coefficient."""

from __future__ import annotations

from typing import Any

import numpy as np

from agcl.metrics._masks import as_mask_pair

__all__ = ["dice"]


def dice(pred: Any, gt: Any) -> float:
    """Dice similarity coefficient ``2 |P & G| / (|P| + |G|)`` of two binary masks.

    Conventions (pinned, tested): both masks empty gives 1.0 (nothing to find, nothing found);
    exactly one empty gives 0.0.

    Args:
        pred: predicted mask, numpy array or torch tensor, boolean or 0/1, any number of axes.
        gt: ground-truth mask of the same shape.

    Shape:
        pred, gt: any shape, the same for both.

    Returns:
        The Dice coefficient in [0, 1], a Python float.

    Raises:
        TypeError: a mask that is neither a numpy array nor a tensor, or has a non-numeric dtype.
        ValueError: shapes differ, or values other than 0/1.

    References:
        L. R. Dice, "Measures of the amount of ecologic association between species", Ecology 1945.

    Examples:
        >>> import numpy as np
        >>> a = np.zeros((4, 4), bool); a[:2] = True
        >>> b = np.zeros((4, 4), bool); b[1:3] = True
        >>> dice(a, b)
        0.5
        >>> dice(np.zeros(3, bool), np.zeros(3, bool))
        1.0
    """
    p, g = as_mask_pair(pred, gt)
    total = int(np.count_nonzero(p)) + int(np.count_nonzero(g))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(p & g)) / total
