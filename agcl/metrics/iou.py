"""Intersection over union per class for multi-class label maps, with a void label ignored.

The PASCAL VOC convention: pixels whose ground truth is ``ignore_index`` (255, the void band
along object outlines) count nowhere; class ``k``'s IoU is ``TP / (TP + FP + FN)`` accumulated
over every image of the set (one confusion matrix, not a mean of per-image IoUs); the mean IoU
averages the classes whose union is not empty (present in the ground truth or predicted).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agcl._validation import check_in_range, check_int

__all__ = ["confusion_matrix", "iou_from_confusion", "iou_per_class", "mean_iou"]


def _as_array(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    if not isinstance(value, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array or a torch tensor; got {type(value).__name__}"
        )
    if value.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold integer class ids; got dtype {value.dtype}")
    return value


def confusion_matrix(
    pred: Any, target: Any, num_classes: int, *, ignore_index: int | None = 255
) -> np.ndarray:
    """``cm[t, p]``: the number of pixels of true class ``t`` predicted as ``p``.

    Args:
        pred: predicted class ids in ``[0, num_classes)``.
        target: true class ids in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: the number of classes, background included.
        ignore_index: the void label of ``target`` (its pixels are skipped), or ``None``.

    Shape:
        pred, target: any shape, the same for both; output ``(num_classes, num_classes)`` int64.

    Raises:
        TypeError: non-integer inputs. ValueError: shapes differ, or ids out of range.

    Examples:
        >>> import numpy as np
        >>> confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 255, 1]), 2)
        array([[1, 0],
               [1, 1]])
    """
    k = check_int("num_classes", num_classes, low=1)
    p, t = _as_array("pred", pred), _as_array("target", target)
    if p.shape != t.shape:
        raise ValueError(
            f"pred and target must have the same shape; got pred {p.shape} and target {t.shape}"
        )
    p, t = p.reshape(-1).astype(np.int64), t.reshape(-1).astype(np.int64)
    if ignore_index is not None:
        keep = t != check_int("ignore_index", ignore_index)
        p, t = p[keep], t[keep]
    for name, arr in (("pred", p), ("target", t)):
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= k):
            raise ValueError(
                f"{name} must hold class ids in [0, {k}) (num_classes={k}; target may also hold "
                f"ignore_index={ignore_index}); got values in [{int(arr.min())}, {int(arr.max())}]"
            )
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def iou_from_confusion(cm: np.ndarray) -> list[float | None]:
    """Per-class IoU from a confusion matrix; ``None`` where the class's union is empty.

    Raises:
        ValueError: ``cm`` not square, or holding a negative, non-finite or fractional count.
        TypeError: ``cm`` not numeric.

    Examples:
        >>> import numpy as np
        >>> iou_from_confusion(np.array([[3, 1, 0], [1, 1, 0], [0, 0, 0]]))
        [0.6, 0.3333333333333333, None]
    """
    if hasattr(cm, "detach") and hasattr(cm, "cpu"):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (K, K) confusion matrix; got shape {cm.shape}")
    if cm.dtype.kind not in "iuf":
        raise TypeError(f"cm must hold pixel counts (integers); got dtype {cm.dtype}")
    if cm.size and not (np.isfinite(cm).all() and (cm >= 0).all() and (cm == np.round(cm)).all()):
        bad = cm[~(np.isfinite(cm) & (cm >= 0) & (cm == np.round(cm)))][0]
        raise ValueError(f"cm must hold pixel counts (whole numbers >= 0); got {bad}")
    tp = np.diag(cm).astype(np.int64)
    union = cm.sum(0) + cm.sum(1) - tp
    return [None if u == 0 else float(t) / float(u) for t, u in zip(tp.tolist(), union.tolist())]


def iou_per_class(
    pred: Any, target: Any, num_classes: int, ignore_index: int | None = 255
) -> list[float | None]:
    """IoU of every class of one label map pair (or of a stacked set), void ignored.

    Class ``k``'s IoU is ``|P_k & T_k| / |P_k | T_k|`` over the pixels whose target is not
    ``ignore_index``; ``None`` when the class is neither in the target nor predicted there.

    Shape:
        pred, target: ``(H, W)`` or ``(N, H, W)`` (any shape), the same for both; output a list
        of ``num_classes`` values.

    Examples:
        >>> import numpy as np
        >>> t = np.array([[0, 0, 1], [1, 255, 2]]); p = np.array([[0, 1, 1], [1, 2, 0]])
        >>> iou_per_class(p, t, 4)
        [0.3333333333333333, 0.6666666666666666, 0.0, None]
    """
    return iou_from_confusion(
        confusion_matrix(pred, target, num_classes, ignore_index=ignore_index)
    )


def mean_iou(ious: Any) -> float | None:
    """The mean of the per-class IoUs that are not ``None`` (``None`` if all are).

    Raises:
        TypeError, ValueError: an entry that is neither ``None`` nor a number in [0, 1] (NaN
            included), named by its index.

    Examples:
        >>> mean_iou([0.5, None, 1.0])
        0.75
    """
    vals = [check_in_range(f"ious[{i}]", v, 0.0, 1.0) for i, v in enumerate(ious) if v is not None]
    return None if not vals else float(np.mean(vals))
