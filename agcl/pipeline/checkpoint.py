"""Per-epoch stage checkpoints (atomic, ``weights_only`` loadable), RNG capture, the epoch log.

A stage checkpoint is a dict of tensors and plain Python data only: ``{"stage", "epoch",
"epochs", "complete", "config", "model", "optimizer", "rng", "extra"}``. It is written after
every epoch with :func:`agcl._io.atomic_save` (temporary file + rename), so a killed run loses at
most the epoch in progress, and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agcl._io import atomic_save, safe_load

__all__ = ["EpochLog", "capture_rng", "load_stage", "restore_rng", "save_stage", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's global and torch's default generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(generators: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """RNG states as tensors and strings: torch's default CPU generator plus named generators.

    ``generators`` maps names to ``torch.Generator`` or ``numpy.random.Generator`` objects.
    """
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            state[name] = gen.get_state()
        elif isinstance(gen, np.random.Generator):
            state[name] = json.dumps(gen.bit_generator.state)
        else:
            raise TypeError(f"generators[{name!r}] must be a torch.Generator or numpy Generator; got {type(gen).__name__}")
    return state


def restore_rng(state: Mapping[str, Any], generators: Mapping[str, Any] | None = None) -> None:
    """Undo :func:`capture_rng`: restore torch's default generator and the named ones present."""
    torch.set_rng_state(state["torch"])
    for name, gen in (generators or {}).items():
        if name not in state:
            continue
        if isinstance(gen, torch.Generator):
            gen.set_state(state[name])
        else:
            gen.bit_generator.state = json.loads(state[name])


def save_stage(
    path: str | os.PathLike[str],
    *,
    stage: str,
    epoch: int,
    epochs: int,
    config: Mapping[str, Any],
    model: Mapping[str, torch.Tensor],
    optimizer: Mapping[str, Any] | None = None,
    rng: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Atomically write the checkpoint of ``stage`` after ``epoch`` (1-based) of ``epochs``."""
    payload = {
        "stage": stage,
        "epoch": int(epoch),
        "epochs": int(epochs),
        "complete": int(epoch) >= int(epochs),
        "config": dict(config),
        "model": dict(model),
        "optimizer": dict(optimizer) if optimizer is not None else {},
        "rng": dict(rng) if rng is not None else {},
        "extra": dict(extra) if extra is not None else {},
    }
    return atomic_save(payload, path)


#: The keys every stage checkpoint written by :func:`save_stage` holds.
STAGE_KEYS: tuple[str, ...] = ("stage", "epoch", "epochs", "complete", "config", "model", "optimizer", "rng", "extra")


def check_payload(ckpt: Any, path: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    """Raise ``ValueError`` naming ``path`` unless ``ckpt`` is a dict holding ``keys``."""
    if not isinstance(ckpt, dict):
        raise ValueError(f"checkpoint {path} must hold a dict with keys {list(keys)}; got a {type(ckpt).__name__}")
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(
            f"checkpoint {path} misses the keys {missing} (expected {list(keys)}); it was not written "
            "by this version of agcl's pipeline or is damaged"
        )
    return ckpt


def load_stage(
    path: str | os.PathLike[str], *, stage: str, config: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Load a stage checkpoint for resuming; ``None`` when there is none at ``path``.

    Raises:
        ValueError: the file is corrupt, is not a dict with the keys of :data:`STAGE_KEYS`,
            belongs to another stage, or was written with a
            different ``config`` (the differing keys are listed; use a new output folder or
            the same options to resume).
    """
    path = Path(path)
    if not path.exists():
        return None
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict) or ckpt.get("stage") != stage:
        found = ckpt.get("stage") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not a {stage!r} checkpoint (found {found!r})")
    check_payload(ckpt, path, STAGE_KEYS)
    if config is not None:
        stored = ckpt.get("config", {})
        diff = sorted(k for k in set(stored) | set(config) if stored.get(k) != config.get(k))
        if diff:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {config.get(k)!r}" for k in diff)
            raise ValueError(
                f"cannot resume {stage} from {path}: it was written with different settings ({details}); "
                "resume with the same options or write to a new output folder"
            )
    return ckpt


class EpochLog:
    """Append-only JSON-lines log: one record per epoch of every stage.

    Examples:
        >>> import tempfile, pathlib
        >>> log = EpochLog(pathlib.Path(tempfile.mkdtemp()) / "epochs.jsonl")
        >>> log.write(stage="pretrain", epoch=1, loss=1.5)
        >>> [r["loss"] for r in log.read()]
        [1.5]
    """

    def __init__(self, path: str | os.PathLike[str], *, enabled: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        """Append ``record`` (plus a UTC timestamp) as one JSON line, flushed to disk."""
        if not self.enabled:
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **record}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()

    def read(self) -> list[dict[str, Any]]:
        """Every record written so far (an empty list when the file does not exist)."""
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
