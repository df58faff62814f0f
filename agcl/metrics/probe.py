"""Encoder probes: how well frozen embeddings separate labels, independent of any decoder.

A probe measures the encoder alone (issue 28): patches are embedded by a frozen encoder
(:func:`pooled_features`), a *fit* set (training cases) labels a *score* set (held-out cases),
and three numbers say how much label information the embedding holds:

* :func:`knn_accuracy` (:mod:`agcl.metrics.knn`): k-nearest-neighbour classification (cosine
  similarity, majority vote); no training at all, so it reads the geometry of the embedding as
  it is;
* :func:`linear_probe_accuracy` (:mod:`agcl.metrics.linear_probe`): a multinomial logistic
  regression on the standardised features; what a linear read-out can extract;
* :func:`~agcl.metrics.silhouette_score`: how compact and apart the label clusters are (Rousseeuw).

:func:`probe_embeddings` runs all three for several label sets (organ, modality, ...) and
returns the ``"probe"`` entry of a run's ``results.json``. docs/metrics.md explains how to read
the numbers.

Examples:
    >>> import torch
    >>> fit = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> labels = torch.tensor([0, 0, 1, 1])
    >>> knn_accuracy(fit, labels, fit, labels, k=1)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from agcl._validation import check_choice, check_has_data, check_int, check_positive, check_tensor
from agcl.metrics._embeddings import METRICS, Metric, check_pair
from agcl.metrics.knn import BLOCK, knn_accuracy, knn_predict
from agcl.metrics.linear_probe import linear_predict, linear_probe_accuracy
from agcl.metrics.silhouette import silhouette_score

__all__ = ["knn_accuracy", "linear_probe_accuracy", "pooled_features", "probe_embeddings"]


def probe_embeddings(
    fit_z: torch.Tensor,
    fit_labels: Mapping[str, torch.Tensor],
    score_z: torch.Tensor,
    score_labels: Mapping[str, torch.Tensor],
    *,
    k: int = 20,
    silhouette_key: str | None = "organ",
    metric: Metric = "cosine",
    max_iter: int = 100,
    weight_decay: float = 1e-3,
    max_samples: int = 5000,
    seed: int = 0,
    return_predictions: bool = False,
) -> dict[str, Any]:
    """k-NN and linear-probe accuracy per label set, and the silhouette of one label set.

    The ``"probe"`` entry of a run's ``results.json``: for every label set (e.g. ``"organ"``,
    ``"modality"``, ``"modality_organ"``) :func:`knn_accuracy` and
    :func:`linear_probe_accuracy` with ``fit_z`` labelling ``score_z``, and the
    :func:`silhouette_score` of the score set's ``silhouette_key`` clusters (``None`` when the
    score set holds fewer than two of those labels, or ``silhouette_key`` is ``None``). The
    k-NN neighbours are found once for all label sets.

    Args:
        fit_z: embeddings of the fit (training) rows.
        fit_labels: label-set name -> integer labels of the fit rows.
        score_z: embeddings of the score (held-out) rows.
        score_labels: the same names -> labels of the score rows.
        k, metric: for :func:`knn_accuracy` (``metric`` also for the silhouette).
        silhouette_key: the label set whose clusters the silhouette measures, or ``None``.
        max_iter, weight_decay: for :func:`linear_probe_accuracy`.
        max_samples, seed: for :func:`silhouette_score`.
        return_predictions: also return each score row's predicted label,
            ``"predictions": {"knn": {name: (N_score,)}, "linear": {...}}`` (e.g. to compare two
            encoders on the same rows, or to group the accuracy by case).

    Shape:
        - fit_z: ``(N_fit, D)``; each fit label tensor ``(N_fit,)``.
        - score_z: ``(N_score, D)``; each score label tensor ``(N_score,)``.

    Returns:
        ``{"knn": {name: acc}, "linear": {name: acc}, "silhouette": s or None,
        "patches": N_score}`` with accuracies in ``[0, 1]``, names in ``fit_labels``' order.

    Raises:
        TypeError: labels not given as a mapping, or bad tensors (see the functions above).
        ValueError: no label set, names that differ between fit and score, an unknown
            ``silhouette_key``, or bad tensors or options.

    Examples:
        >>> fit = torch.tensor([[1.0, 0.0], [0.9, 0.2], [0.0, 1.0], [0.2, 0.9]])
        >>> labels = {"organ": torch.tensor([0, 0, 1, 1]), "modality": torch.tensor([0, 1, 0, 1])}
        >>> out = probe_embeddings(fit, labels, fit, labels, k=1)
        >>> out["knn"], out["patches"]
        ({'organ': 1.0, 'modality': 1.0}, 4)
    """
    for name, labels in (("fit_labels", fit_labels), ("score_labels", score_labels)):
        if not isinstance(labels, Mapping):
            raise TypeError(
                f"{name} must be a mapping of label-set name -> (N,) integer "
                f"tensor; got {type(labels).__name__}"
            )
    if not fit_labels:
        raise ValueError("fit_labels must hold at least one label set; got an empty mapping")
    if set(fit_labels) != set(score_labels):
        raise ValueError(
            f"score_labels must have the same label sets as fit_labels; got "
            f"{sorted(score_labels)} and {sorted(fit_labels)}"
        )
    if silhouette_key is not None and silhouette_key not in score_labels:
        raise ValueError(
            f"silhouette_key must be None or one of {sorted(score_labels)}; got {silhouette_key!r}"
        )
    names = list(fit_labels)
    checked = {n: check_pair(fit_z, fit_labels[n], score_z, score_labels[n]) for n in names}
    fz, _, sz, _ = checked[names[0]]
    check_int("k", k, low=1)
    check_choice("metric", metric, METRICS)
    check_int("max_iter", max_iter, low=1)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    check_int("max_samples", max_samples, low=2)
    check_int("seed", seed)
    preds = knn_predict(fz, [checked[n][1] for n in names], sz, k, metric, BLOCK)
    knn = {n: float((p == checked[n][3]).double().mean()) for n, p in zip(names, preds)}
    linear = {}
    linear_preds = {}
    for n in names:
        pred = linear_predict(fz, checked[n][1], sz, max_iter, float(weight_decay))
        linear[n] = float((pred == checked[n][3]).double().mean())
        linear_preds[n] = pred
    silhouette = None
    if silhouette_key is not None and len(torch.unique(checked[silhouette_key][3])) >= 2:
        silhouette = silhouette_score(
            sz, checked[silhouette_key][3], metric=metric, max_samples=max_samples, seed=seed
        )
    out: dict[str, Any] = {
        "knn": knn,
        "linear": linear,
        "silhouette": silhouette,
        "patches": sz.shape[0],
    }
    if return_predictions:
        out["predictions"] = {"knn": dict(zip(names, preds)), "linear": linear_preds}
    return out


def pooled_features(encoder: nn.Module, x: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
    """Global-average-pooled deepest feature map of ``encoder`` for every row of ``x``.

    The "pooled backbone features" that a probe reads: ``encoder.forward_features(x)[-1]``
    (the agcl encoder contract, e.g. :class:`agcl.models.ResNet`) averaged over its spatial
    axes, in batches of ``batch_size``, in eval mode (batch-norm uses its running statistics)
    under ``torch.no_grad()``. The encoder's training mode is restored afterwards and the
    encoder is not moved: each batch goes to the device of the encoder's first parameter
    (CPU for a parameter-free encoder); the result is returned on ``x``'s device.

    Args:
        encoder: a module with ``forward_features(x) -> [maps, shallow to deep]``.
        x: the inputs, e.g. ``(N, 2, h, w)`` image + attention patches.
        batch_size: rows per forward pass, >= 1.

    Shape:
        - x: ``(N, C_in, *spatial)``.
        - output: ``(N, C)``, ``C`` the channels of the deepest map (``encoder.num_features``).

    Raises:
        TypeError: ``encoder`` lacks ``forward_features`` or ``x`` is not a floating tensor.
        ValueError: ``x`` is empty, has no spatial axes or holds non-finite values, or the
            encoder returns no maps.

    Examples:
        >>> from agcl.models import resnet18
        >>> enc = resnet18(in_chans=2, base_width=4)
        >>> pooled_features(enc, torch.randn(5, 2, 32, 32), batch_size=2).shape
        torch.Size([5, 32])
    """
    if not isinstance(encoder, nn.Module) or not callable(
        getattr(encoder, "forward_features", None)
    ):
        raise TypeError(
            f"encoder must be an nn.Module with forward_features(x) returning its "
            f"feature maps (an agcl encoder); got {type(encoder).__name__}"
        )
    check_tensor("x", x)
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor; got dtype {x.dtype}")
    check_has_data("x", x)
    if x.ndim < 3 or x.shape[0] == 0:
        raise ValueError(f"x must be (N, C_in, *spatial) with N >= 1; got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x must hold finite values; got NaN or inf")
    check_int("batch_size", batch_size, low=1)
    param = next(iter(encoder.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = encoder.training
    encoder.eval()
    out = []
    try:
        with torch.no_grad():
            for start in range(0, x.shape[0], batch_size):
                maps = encoder.forward_features(x[start : start + batch_size].to(device))
                if not isinstance(maps, (list, tuple)) or not maps:
                    raise ValueError(
                        f"encoder.forward_features must return a non-empty list "
                        f"of feature maps; got {type(maps).__name__}"
                    )
                deep = maps[-1]
                out.append(deep.mean(dim=tuple(range(2, deep.ndim))).to(x.device))
    finally:
        encoder.train(was_training)
    return torch.cat(out)
