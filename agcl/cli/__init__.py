"""The ``agcl`` command: train the pipeline, apply a trained run to new scans, score any
segmenter's output.

    agcl train      [--domain ct|image2d] ...   the pipeline (CT; or 2-D images)
    agcl train-2d   ...                         the 2-D pipeline (same as train --domain image2d)
    agcl predict    --run RUN --input PATH --out DIR ...
    agcl evaluate   --pred DIR --gt DIR --out DIR ...

``agcl <command> --help`` describes each; ``python -m agcl`` is the same command. Every
sub-command is a function of this package (``agcl.cli.train.main(argv)`` ...), which the example
scripts call too.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agcl.cli._common import UserError

__all__ = ["COMMANDS", "UserError", "main"]

#: sub-command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": (
        "agcl.cli.train",
        "train the pipeline in a run folder (CT; --domain image2d for 2-D images)",
    ),
    "train-2d": ("agcl.cli.train2d", "train the 2-D pipeline (PASCAL VOC layout) in a run folder"),
    "predict": (
        "agcl.cli.predict",
        "apply a finished run to new scans (NIfTI), with a report per scan",
    ),
    "evaluate": (
        "agcl.cli.evaluate",
        "score label maps against ground truth: Dice, HD95, ASSD per organ",
    ),
}

_USAGE = "usage: agcl {" + ",".join(COMMANDS) + "} [--help] ...\n"


def _help() -> str:
    import agcl

    lines = [
        _USAGE,
        f"agcl {agcl.__version__}: attention-guided supervised contrastive learning for "
        "multi-object segmentation.",
        "",
        "commands:",
    ]
    lines += [f"  {name:10s} {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += [
        "",
        "Run 'agcl <command> --help' for a command's options, examples, files and exit status.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``agcl`` command line ``argv`` (default ``sys.argv[1:]``); returns the exit
    status."""
    import importlib

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(_help())
        return 0 if args else 2
    if args[0] == "--version":
        import agcl

        print(f"agcl {agcl.__version__}")
        return 0
    command, rest = args[0], args[1:]
    if command not in COMMANDS:
        print(
            _USAGE + f"agcl: error: unknown command {command!r}; commands: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    if command == "train" and _domain(rest) == "image2d":
        command = "train-2d"
    module = importlib.import_module(COMMANDS[command][0])
    try:
        return int(module.main(rest) or 0)
    except SystemExit as stop:  # argparse: --help (0) and usage errors (2)
        return int(stop.code or 0) if not isinstance(stop.code, str) else 2


def _domain(args: list[str]) -> str:
    for i, item in enumerate(args):
        if item == "--domain" and i + 1 < len(args):
            return args[i + 1]
        if item.startswith("--domain="):
            return item.split("=", 1)[1]
    return "ct"
