"""Segmentation metrics: Dice, Hausdorff distance (max / HD95) and ASSD in mm, per organ; IoU per
class.

Also the encoder probes (:mod:`agcl.metrics.probe`): k-NN and linear-probe accuracy and the
silhouette of labelled embeddings, which measure a frozen encoder apart from any decoder.

Conventions are pinned in :mod:`agcl.metrics.surface` and :mod:`agcl.metrics.evaluate` and
documented in docs/metrics.md: HD95 is the larger of the two directed 95th percentiles; ASSD
pools both directions; both-empty masks give Dice 1 and distance 0, exactly one empty gives Dice 0
and distance ``inf``; the per-organ evaluation leaves an organ absent from a case's ground truth
out of the means (``None``) and counts a prediction of it as a false positive, and aggregates
count the missed organs instead of dropping them.

Examples:
    >>> import numpy as np
    >>> from agcl.metrics import dice, hausdorff_distance
    >>> a = np.zeros((5, 5), bool); a[1:3, 1:3] = True
    >>> dice(a, a), hausdorff_distance(a, a, spacing=(0.8, 0.8), percentile=95)
    (1.0, 0.0)
"""

from __future__ import annotations

from agcl.metrics.evaluate import evaluate_labels, format_table, summarize_cases
from agcl.metrics.iou import confusion_matrix, iou_from_confusion, iou_per_class, mean_iou
from agcl.metrics.knn import knn_accuracy
from agcl.metrics.linear_probe import linear_probe_accuracy
from agcl.metrics.overlap import dice
from agcl.metrics.probe import pooled_features, probe_embeddings
from agcl.metrics.silhouette import silhouette_score
from agcl.metrics.surface import average_surface_distance, hausdorff_distance, surface_distances

__all__ = [
    "average_surface_distance",
    "confusion_matrix",
    "dice",
    "evaluate_labels",
    "format_table",
    "hausdorff_distance",
    "iou_from_confusion",
    "iou_per_class",
    "knn_accuracy",
    "linear_probe_accuracy",
    "mean_iou",
    "pooled_features",
    "probe_embeddings",
    "silhouette_score",
    "summarize_cases",
    "surface_distances",
]
