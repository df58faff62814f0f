"""What the ``agcl`` sub-commands share: argument types, the device check, ``--set``, the run
folder's shared stage 1, and errors that end a command with a message instead of a traceback."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "FLAG_FIELDS",
    "METHOD_ORDER",
    "SEED_MAX",
    "UserError",
    "add_run_arguments",
    "check_device",
    "make_config",
    "positive_int",
    "seed",
    "share_stage1",
    "user_errors",
]

#: the pre-trainings in the order of the paper's Table 1 (the method compared against last)
METHOD_ORDER = ("none", "sscl", "supcon", "ce", "agcl")

#: the largest ``--seed`` (the seed is mixed into every generator's seed; numpy takes 32 bits)
SEED_MAX = 2**32 - 1


class UserError(Exception):
    """An input the command cannot work with; ``main`` prints it and exits with status 2."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a seed in ``[0, 2**32 - 1]``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed; got {text!r}") from None
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, {SEED_MAX}]; got {value}")
    return value


def check_device(value: str) -> str:
    """The device string, refused before any data is read when this machine has no such device.

    Raises:
        UserError: an unknown device string, CUDA on a torch without CUDA or without a GPU,
            ``cuda:N`` beyond the GPUs present (the message says what exists).
    """
    try:
        from agcl._device import resolve_device
    except ImportError:  # pragma: no cover - the checker ships with agcl
        resolve_device = None
    try:
        if resolve_device is not None:
            return str(resolve_device(value, name="--device"))
        import torch

        return str(torch.device(value))
    except (ValueError, RuntimeError, TypeError) as err:
        raise UserError(str(err)) from None


#: the config fields a flag of ``agcl train``/``train-2d`` owns (a ``--set`` of them is refused)
FLAG_FIELDS = {
    "pretrain.method": "--pretrain (and --ablation)",
    "coarse.source": "--attention",
}


def add_run_arguments(ap: argparse.ArgumentParser, *, out: str) -> None:
    """The run-folder and schedule flags both training commands share: ``--out`` (default
    ``out``), ``--overwrite``, ``--resume``, ``--device``, ``--preset``, ``--epochs``,
    ``--coarse-epochs``."""
    ap.add_argument("--out", default=out, help="the run folder (default: %(default)s)")
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run in --out: its own files are removed first, anything else is kept",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: a stage whose settings or inputs changed is redone",
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    ap.add_argument(
        "--preset", choices=("quick", "paper"), default="quick", help="default: %(default)s"
    )
    ap.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs of stages 2 and 3 (default: preset)",
    )
    ap.add_argument(
        "--coarse-epochs",
        type=positive_int,
        default=None,
        help="epochs of stage 1 (default: preset)",
    )


def make_config(
    preset: str,
    domain: str,
    changes: dict[str, Any],
    sets: Sequence[str],
    *,
    flags: Mapping[str, str] | None = None,
) -> Any:
    """``PipelineConfig.preset_named(preset, domain=domain)`` with ``changes`` and the ``--set``
    items applied (in that order: a ``--set`` item wins over a flag's value of the same field,
    e.g. ``--epochs 4 --set segment.epochs=6``).

    ``flags`` names the fields only a flag may set (``{field: "--flag"}``, e.g. the pre-training
    method of ``--pretrain``, or the seed an ablation varies): a ``--set`` of one of them is
    refused, naming the flag, rather than silently giving every run of an ablation one value.

    Raises:
        UserError: a ``--set`` item that is not ``KEY=VALUE``, an unknown section or field, a
            value the field refuses (the message names the field), or a field of ``flags``.
    """
    from agcl.pipeline import PipelineConfig, parse_overrides

    try:
        overrides = parse_overrides(sets)
    except (ValueError, TypeError) as err:
        raise UserError(f"--set: {err}") from None
    # the fields the items set, a whole section's value counting as each field it names
    fields = {
        f"{key}.{name}" if isinstance(value, Mapping) else key
        for key, value in overrides.items()
        for name in (value if isinstance(value, Mapping) else (None,))
    }
    owned = sorted(fields & set(flags or {}))
    if owned:
        raise UserError(
            f"--set {owned[0]}=...: this field is set by {flags[owned[0]]} (use that flag instead)"
        )
    try:
        base = PipelineConfig.preset_named(preset, domain=domain).override(**changes)
        return base.override(**overrides)
    except (ValueError, TypeError) as err:
        raise UserError(f"--set: {err}") from None


def user_errors(command: str, run: Callable[[], int]) -> int:
    """Run a command; a :class:`UserError`, an unusable run or cache folder, a missing or
    damaged file ends it with ``agcl <command>: error: ...`` on stderr and exit status 2."""
    from agcl._io import DamagedFileError
    from agcl._owned import FolderNotOwnedError
    from agcl.pipeline.run import RunFolderError

    try:
        return run()
    except (
        UserError,
        RunFolderError,
        FolderNotOwnedError,
        FileNotFoundError,
        DamagedFileError,
    ) as err:
        print(f"agcl {command}: error: {err}", file=sys.stderr)
        return 2


def share_stage1(
    src: Path, dst: Path, *, stage1: str, resume: bool, overwrite: bool, main: bool = True
) -> None:
    """Give the run folder ``dst`` the finished stage 1 of the run in ``src`` (its checkpoint,
    CT coarse maps and their records), so every method of an ablation seed builds its attention
    from the same stage 1.

    Files are hard-linked where the file system allows (else copied) and become ``dst``'s own;
    ``dst`` is opened as a run folder (``resume``/``overwrite`` as the command was given). Only
    ``main`` (rank 0) touches files; every rank waits for it.
    """
    from agcl.pipeline import barrier
    from agcl.pipeline.run import MANIFEST, RunFolder

    if main:
        source = RunFolder.open(src, resume=True)
        folder = RunFolder.open(dst, resume=resume, overwrite=overwrite)
        record = source.manifest.stage(stage1)
        if record is None or not record.get("complete"):
            raise UserError(f"{src} has no finished stage 1 to share (its {MANIFEST} lists none)")
        files = [Path("checkpoints") / f"{stage1}.pt"]
        maps = source.manifest.data.get("maps", {})
        for entry in maps.values():
            files += [Path(rel) for rel in entry.get("files", {})]
        for rel in files:
            target = dst / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists() or target.is_symlink():
                folder.remove(
                    [target]
                )  # ours (an earlier share), else left alone and refused below
            if target.exists():
                raise UserError(
                    f"{target} exists and is not a file of the run in {dst}; not replacing it"
                )
            try:
                os.link(src / rel, target)
            except OSError:
                shutil.copy2(src / rel, target)
            folder.own(target)
        folder.manifest.data["stages"][stage1] = record
        folder.manifest.data["maps"] = dict(maps)
        folder.save()
    barrier()
