"""Private: tile sizes and launch settings of the Triton kernels of :mod:`agcl.kernels`.

The autotuner's candidate tiles (pruned for wide rows), the fixed tiles used under the
interpreter, the ``tl.dot`` input precision that matches torch's own matmul, the launch grid
and the CUDA device a launch runs on. Imports ``triton``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import triton

__all__ = [
    "MAX_TILE",
    "autotuned",
    "cuda_configs",
    "dot_precision",
    "fixed_tiles",
    "launch_grid",
    "on_device",
    "prune_configs",
]


def cuda_configs(stages: tuple[int, ...]) -> list[Any]:
    """A few (BLOCK_M, BLOCK_N, num_warps, num_stages) candidates for the autotuner."""
    shapes = [(64, 64, 4), (128, 64, 4), (64, 128, 4), (128, 128, 8), (32, 64, 4), (32, 32, 4)]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=st)
        for bm, bn, w in shapes
        for st in stages
    ]


# Tiles of up to 128 x 256 elements per operand (the D = 256 of the paper's projection head
# with 128-row blocks); wider rows keep only the narrower tiles, and the narrowest always stays.
MAX_TILE = 128 * 256


def prune_configs(configs: list[Any], named_args: dict, **kwargs: Any) -> list[Any]:
    width = kwargs["BLOCK_D"]
    kept = [c for c in configs if max(c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"]) * width <= MAX_TILE]
    return kept or [min(configs, key=lambda c: c.kwargs["BLOCK_M"] * c.kwargs["BLOCK_N"])]


def autotuned(kernel: Any, stages: tuple[int, ...]) -> Any:
    # Tuned per (M, D), plus the tensors' dtypes that triton appends to the key: the best tile
    # depends on the row width and on how many programs M gives the GPU. A training run with a
    # fixed batch size tunes once (and once more for a smaller last batch).
    return triton.autotune(
        configs=cuda_configs(stages),
        key=["M", "D"],
        prune_configs_by={"early_config_prune": prune_configs},
    )(kernel)


def dot_precision(dtype: torch.dtype) -> str:
    """The ``tl.dot`` input precision: for fp32, the same as torch's own CUDA matmul.

    fp32 tiles use IEEE fp32 unless the user allowed TF32 for torch's matmuls
    (``torch.backends.cuda.matmul.allow_tf32``, which also reflects
    ``torch.set_float32_matmul_precision("high")``). For fp16/bf16 tiles the setting has no
    effect; "tf32" is Triton's CUDA default, i.e. the same as not passing it.
    """
    if dtype != torch.float32 or torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


def fixed_tiles(blocks: tuple[int, int] | None) -> tuple[dict[str, int], int | None]:
    """Keyword tile sizes for a fixed launch, and the grid's BLOCK_M (None: the autotuner's)."""
    if blocks is None:
        return {}, None
    return {"BLOCK_M": blocks[0], "BLOCK_N": blocks[1]}, blocks[0]


def launch_grid(rows: int, block_m: int | None) -> Any:
    if block_m is None:
        return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]),)
    return (triton.cdiv(rows, block_m),)


def on_device(z: torch.Tensor) -> Any:
    """Triton launches on the current CUDA device: make it z's for the call."""
    return torch.cuda.device(z.device) if z.is_cuda else contextlib.nullcontext()
