"""What a run reports: ``results.json``/``results.md``, the ablation's statistics and tables,
figures."""

from __future__ import annotations

from agcl.pipeline.report.ablation import (
    ablation_markdown,
    ablation_statistics,
    case_dice,
    write_ablation,
)
from agcl.pipeline.report.figures import pca_2d, plot_embeddings, plot_overlays
from agcl.pipeline.report.results import ablation_table, results_entry, write_results

__all__ = [
    "ablation_markdown",
    "ablation_statistics",
    "ablation_table",
    "case_dice",
    "pca_2d",
    "plot_embeddings",
    "plot_overlays",
    "results_entry",
    "write_ablation",
    "write_results",
]
