"""Linear-probe accuracy of labelled embeddings (an encoder probe, :mod:`agcl.metrics.probe`).

A multinomial logistic regression on the standardised fit features, scored on held-out rows:
what a linear read-out can extract from the embedding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from agcl._validation import check_int, check_positive
from agcl.metrics._embeddings import check_pair

__all__ = ["linear_probe_accuracy"]


def linear_probe_accuracy(
    fit_z: torch.Tensor,
    fit_y: torch.Tensor,
    score_z: torch.Tensor,
    score_y: torch.Tensor,
    *,
    max_iter: int = 100,
    weight_decay: float = 1e-3,
) -> float:
    """Accuracy of a multinomial logistic regression fit on ``fit_z`` and scored on ``score_z``.

    Features are standardised with the fit set's mean and (population) standard deviation; a
    feature constant over the fit set is only centred. The model ``softmax(x W + b)`` over the
    labels of ``fit_y`` minimises ``mean cross-entropy + weight_decay / 2 * ||W||^2`` (the
    bias is not penalised) by full-batch L-BFGS with a strong-Wolfe line search from zero
    weights, at most ``max_iter`` iterations. With ``weight_decay > 0`` the problem is strictly
    convex, so there is no seed: the result is a function of the data (scikit-learn's
    ``LogisticRegression(C=1 / (weight_decay * N_fit))`` solves the same problem). A score
    label absent from ``fit_y`` is never predicted: it counts as an error; with a single fit
    label every score row is predicted as that label. Runs on ``fit_z``'s device, with
    autograd enabled even when called under ``torch.no_grad()`` or inference mode.

    Args:
        fit_z, fit_y: training embeddings and their integer labels.
        score_z, score_y: held-out embeddings and their true labels.
        max_iter: L-BFGS iterations (full passes over the fit set), >= 1.
        weight_decay: L2 penalty on ``W``, >= 0.

    Shape:
        - fit_z: ``(N_fit, D)``; fit_y: ``(N_fit,)``.
        - score_z: ``(N_score, D)``; score_y: ``(N_score,)``.

    Returns:
        The fraction of score rows classified correctly, in ``[0, 1]``.

    Raises:
        TypeError: a non-tensor, floating labels or integer embeddings.
        ValueError: bad shapes, lengths that differ, an empty set, non-finite values or a bad
            ``max_iter`` / ``weight_decay``.

    Examples:
        >>> fit = torch.tensor([[0.0, 1.0], [0.2, 1.0], [3.0, 1.0], [3.2, 1.0]])
        >>> y = torch.tensor([0, 0, 1, 1])
        >>> linear_probe_accuracy(fit, y, torch.tensor([[0.1, 5.0], [2.9, -4.0]]),
        ...                       torch.tensor([0, 1]))
        1.0
    """
    fit_z, fit_y, score_z, score_y = check_pair(fit_z, fit_y, score_z, score_y)
    check_int("max_iter", max_iter, low=1)
    check_positive("weight_decay", weight_decay, allow_zero=True)
    pred = linear_predict(fit_z, fit_y, score_z, max_iter, float(weight_decay))
    return float((pred == score_y).double().mean())


def linear_predict(
    fit_z: torch.Tensor,
    fit_y: torch.Tensor,
    score_z: torch.Tensor,
    max_iter: int,
    weight_decay: float,
) -> torch.Tensor:
    classes, target = torch.unique(fit_y, return_inverse=True)
    if len(classes) == 1:
        return classes.expand(score_z.shape[0])
    with torch.inference_mode(False), torch.enable_grad():
        # standardisation ignores a global scale: divide by it first so huge values cannot
        # overflow the variance
        scale = fit_z.abs().max()
        scale = scale if scale > 0 else torch.ones_like(scale)
        fit_x, score_x = fit_z.clone() / scale, score_z.clone() / scale
        std, mean = torch.std_mean(fit_x, dim=0, correction=0)
        std = torch.where(std > 0, std, torch.ones_like(std))
        fit_x, score_x = (fit_x - mean) / std, (score_x - mean) / std
        target = target.clone()
        w = torch.zeros(
            fit_x.shape[1], len(classes), dtype=fit_x.dtype, device=fit_x.device, requires_grad=True
        )
        b = torch.zeros(len(classes), dtype=fit_x.dtype, device=fit_x.device, requires_grad=True)
        opt = torch.optim.LBFGS(
            [w, b],
            lr=1.0,
            max_iter=max_iter,
            history_size=20,
            tolerance_grad=1e-9,
            tolerance_change=1e-12,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(fit_x @ w + b, target) + 0.5 * weight_decay * (w * w).sum()
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return classes[(score_x @ w + b).argmax(dim=1)]
