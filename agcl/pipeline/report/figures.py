"""Figures of a run: the PCA of projected embeddings (paper Fig. 3) and prediction overlays
(Fig. 4).

matplotlib is optional (``pip install agcl[viz]``): it is imported when a figure is drawn, and
without it the functions print a message and return ``None``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["pca_2d", "plot_embeddings", "plot_overlays"]


_SAID_MISSING = False


def _matplotlib() -> Any:
    """The ``matplotlib`` module, or ``None`` (with a one-time message) when it is not installed."""
    global _SAID_MISSING
    try:
        import matplotlib
        import matplotlib.figure  # noqa: F401  (Figure draws without pyplot or a backend switch)
    except ImportError:
        if not _SAID_MISSING:
            print("matplotlib is not installed: figures skipped (pip install agcl[viz])")
            _SAID_MISSING = True
        return None
    return matplotlib


def _save(fig: Any, path: str | os.PathLike[str], *, dpi: int) -> Path:
    """Save a figure atomically (a temporary PNG in the same folder, then renamed)."""
    from agcl._atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return Path(path)


def pca_2d(x: Any) -> np.ndarray:
    """The first two principal components of the rows of ``x`` (centred), ``(N, 2)``.

    Examples:
        >>> import numpy as np
        >>> x = np.array([[0.0, 0.0, 1.0], [2.0, 0.0, 1.0], [4.0, 0.0, 1.0]])
        >>> np.round(np.abs(pca_2d(x)), 6).tolist()  # all variance on the first axis
        [[2.0, 0.0], [0.0, 0.0], [2.0, 0.0]]
    """
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"x must be (N >= 2, D) embeddings; got shape {a.shape}")
    a = a - a.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(a, full_matrices=False)
    comps = a @ vt[:2].T
    if comps.shape[1] < 2:
        comps = np.concatenate([comps, np.zeros((len(a), 2 - comps.shape[1]))], 1)
    return comps


def plot_embeddings(
    embedding: Any,
    target: Any,
    modality: Any,
    path: str | os.PathLike[str],
    *,
    organ_names: Mapping[int, str] | None = None,
    modality_names: Sequence[str] | None = None,
    title: str = "PCA of projected embeddings",
) -> Path | None:
    """Scatter the 2-D PCA of L2-normalised embeddings, colour = organ, marker = modality."""
    mpl = _matplotlib()
    if mpl is None:
        return None
    z = np.asarray(
        embedding.detach().cpu().numpy() if hasattr(embedding, "detach") else embedding, np.float64
    )
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    pts = pca_2d(z)
    t = np.asarray(target).reshape(-1)
    m = np.asarray(modality).reshape(-1)
    fig = mpl.figure.Figure(figsize=(7, 6))
    ax = fig.subplots()
    cmap = mpl.colormaps["tab20"]
    markers = ["o", "^", "s", "D"]
    for ci, organ in enumerate(np.unique(t)):
        for mod in np.unique(m):
            sel = (t == organ) & (m == mod)
            if not sel.any():
                continue
            name = organ_names.get(int(organ), str(organ)) if organ_names else str(organ)
            mname = (
                modality_names[int(mod)]
                if modality_names and int(mod) < len(modality_names)
                else str(mod)
            )
            ax.scatter(
                pts[sel, 0],
                pts[sel, 1],
                s=12,
                color=cmap(ci % 20),
                marker=markers[int(mod) % 4],
                label=f"{name} ({mname})",
                alpha=0.75,
            )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=2, loc="best", markerscale=1.2)
    fig.tight_layout()
    return _save(fig, path, dpi=120)


def plot_overlays(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike[str],
    *,
    n_slices: int = 3,
    title: str = "",
) -> Path | None:
    """Axial slices (the ones with most labelled voxels): ground truth (top) vs prediction
    (bottom)."""
    mpl = _matplotlib()
    if mpl is None:
        return None
    counts = (label > 0).sum(axis=(0, 1))
    order = np.argsort(counts)[::-1]
    chosen = sorted(int(z) for z in order[: max(1, n_slices)] if counts[z] > 0) or [
        label.shape[2] // 2
    ]
    chosen = chosen[:: max(1, len(chosen) // n_slices)][:n_slices]
    fig = mpl.figure.Figure(figsize=(3.2 * len(chosen), 6.4))
    axes = fig.subplots(2, len(chosen), squeeze=False)
    top = max(int(label.max()), int(pred.max()), 1)
    for j, z in enumerate(chosen):
        for i, (lab, name) in enumerate(((label, "ground truth"), (pred, "prediction"))):
            ax = axes[i, j]
            ax.imshow(np.rot90(image[:, :, z]), cmap="gray")
            masked = np.ma.masked_equal(np.rot90(lab[:, :, z]), 0)
            ax.imshow(
                masked, cmap="tab20", vmin=1, vmax=max(top, 13), alpha=0.55, interpolation="nearest"
            )
            ax.set_title(f"{name}, slice {z}", fontsize=8)
            ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path, dpi=110)
