"""Stage checkpoints: atomic writes, the one loader every run file goes through, RNG state.

A stage checkpoint is a dict of tensors and plain Python data only: ``{"stage", "epoch",
"epochs", "complete", "config", "model", "optimizer", "rng", "extra"}`` (``config`` is the
stage's fingerprint, :mod:`agcl.pipeline.toolkit.fingerprint`). It is written after every epoch
with :func:`agcl._io.atomic_save` (temporary file + rename), so a killed run loses at most the
epoch in progress, and read back by :func:`load_checkpoint` (``weights_only=True``; a missing,
damaged or foreign file is an error naming its path). :func:`load_weights` puts a state dict
into a model and names the checkpoint when they do not fit.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agcl._io import atomic_save, safe_load

__all__ = [
    "STAGE_KEYS",
    "capture_rng",
    "check_payload",
    "describe_changes",
    "load_checkpoint",
    "load_stage",
    "load_weights",
    "restore_rng",
    "save_stage",
    "seed_everything",
]


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
            raise TypeError(
                f"generators[{name!r}] must be a torch.Generator or numpy Generator; "
                f"got {type(gen).__name__}"
            )
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
STAGE_KEYS: tuple[str, ...] = (
    "stage",
    "epoch",
    "epochs",
    "complete",
    "config",
    "model",
    "optimizer",
    "rng",
    "extra",
)


def check_payload(ckpt: Any, path: Any, keys: Sequence[str]) -> dict[str, Any]:
    """Raise ``ValueError`` naming ``path`` unless ``ckpt`` is a dict holding ``keys``."""
    if not isinstance(ckpt, dict):
        raise ValueError(
            f"checkpoint {path} must hold a dict with keys {list(keys)}; "
            f"got a {type(ckpt).__name__}"
        )
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise ValueError(
            f"checkpoint {path} misses the keys {missing} (expected {list(keys)}); it was not "
            "written by this version of agcl's pipeline or is damaged"
        )
    return ckpt


def load_checkpoint(
    checkpoint: str | os.PathLike[str] | Mapping[str, Any],
    *,
    stage: str | Sequence[str] | None = None,
    keys: Sequence[str] = ("stage", "model", "extra"),
    extra_keys: Sequence[str] = (),
) -> dict[str, Any]:
    """Load a run file (a path, or a dict already loaded) and check what it holds.

    The one loader of every torch file agcl writes into a run folder: ``weights_only=True``,
    and every failure names the file.

    Args:
        checkpoint: the path (or the loaded dict, for callers that already hold it).
        stage: the stage name(s) the checkpoint must belong to (``None``: any).
        keys: top-level keys it must hold.
        extra_keys: keys its ``"extra"`` dict must hold.

    Raises:
        FileNotFoundError: no file at the path.
        ValueError: unreadable, damaged or unsafe file; missing keys; another stage's checkpoint.
    """
    where = "(dict)" if isinstance(checkpoint, Mapping) else str(checkpoint)
    ckpt = dict(checkpoint) if isinstance(checkpoint, Mapping) else safe_load(checkpoint)
    check_payload(ckpt, where, keys)
    if stage is not None:
        wanted = (stage,) if isinstance(stage, str) else tuple(stage)
        if ckpt.get("stage") not in wanted:
            raise ValueError(
                f"checkpoint {where} must be a {' or '.join(map(repr, wanted))} checkpoint; "
                f"it holds stage {ckpt.get('stage')!r}"
            )
    if extra_keys:
        check_payload(ckpt.get("extra"), f"{where} ['extra']", extra_keys)
    return ckpt


def load_weights(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: Any
) -> torch.nn.Module:
    """``model.load_state_dict(state)``, with the checkpoint ``source`` named when they do not fit.

    Raises:
        ValueError: missing or unexpected keys, or tensors of other shapes (the first few are
            listed): the checkpoint was written for another architecture or configuration.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        for k in own
        if k in state
        and hasattr(state[k], "shape")
        and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for what, items in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", shapes),
        ):
            if items:
                parts.append(
                    f"{len(items)} {what} "
                    f"({', '.join(items[:4])}{', ...' if len(items) > 4 else ''})"
                )
        raise ValueError(
            f"the weights in {source} do not fit the {type(model).__name__} its configuration "
            f"builds: {'; '.join(parts)}; the file was written by another model or configuration"
        )
    model.load_state_dict(state)
    return model


def load_stage(
    path: str | os.PathLike[str], *, stage: str, config: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Load a stage checkpoint for resuming; ``None`` when there is none at ``path``.

    Raises:
        ValueError: the file is corrupt, is not a dict with the keys of :data:`STAGE_KEYS`,
            belongs to another stage, or was written with a different ``config`` (the differing
            fields are listed; use a new output folder or the same options to resume).
    """
    path = Path(path)
    if not path.exists():
        return None
    ckpt = load_checkpoint(path, stage=stage, keys=STAGE_KEYS)
    if config is not None:
        diff = describe_changes(ckpt.get("config", {}), config)
        if diff:
            raise ValueError(
                f"cannot resume {stage} from {path}: it was written with different settings "
                f"({diff}); resume with the same options or write to a new output folder"
            )
    return ckpt


def describe_changes(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> str:
    """``"a.b: 1 -> 2, c: 'x' -> 'y'"`` for the keys whose values differ (nested dicts flattened;
    a fingerprint's ``"fields"`` level is left out of the names).

    Examples:
        >>> describe_changes({"coarse": {"epochs": 2}, "seed": 0},
        ...                  {"coarse": {"epochs": 4}, "seed": 0})
        'coarse.epochs: 2 -> 4'
        >>> describe_changes({"fields": {"coarse.epochs": 2}}, {"fields": {"coarse.epochs": 4}})
        'coarse.epochs: 2 -> 4'
    """
    parts = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            # a fingerprint's config fields are named as the user sets them ("coarse.epochs")
            inner = describe_changes(a, b, prefix if key == "fields" else f"{prefix}{key}.")
            if inner:
                parts.append(inner)
        elif a != b:
            parts.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return ", ".join(parts)
